"""Planning sources: keys, ordering, video frame selection, manifests, failures."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.config import ImageSource, ManifestSource, VideoSource
from pipelines.elements import FrameRef, ReadUnit, split_video_uri
from pipelines.mining.sources import SourceError, frame_key, plan_sources, write_plan


def write_png(path: Path, size: tuple[int, int] = (40, 60)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((*size, 3), 128, np.uint8))
    return path


def write_video(path: Path, frames: int, fps: float = 10.0, size=(48, 64)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size[::-1])
    for index in range(frames):
        writer.write(np.full((*size, 3), index * 10, np.uint8))
    writer.release()
    return path


def refs_of(units: list[ReadUnit]) -> list[FrameRef]:
    return [ref for unit in units for ref in unit.refs]


def test_image_folder_keys_follow_sorted_paths_and_skip_non_images(tmp_path: Path) -> None:
    for name in ("b.png", "a.jpg", "c.PNG"):
        write_png(tmp_path / "drive_1" / name)
    (tmp_path / "drive_1" / "notes.txt").write_text("not a frame")

    plan = plan_sources([ImageSource(path=str(tmp_path / "drive_1"))])

    refs = refs_of(plan.units)
    assert [Path(r.uri).name for r in refs] == ["a.jpg", "b.png", "c.PNG"]
    assert [r.key for r in refs] == ["drive_1/000000", "drive_1/000001", "drive_1/000002"]
    assert {r.log_id for r in refs} == {"drive_1"}
    assert all(len(unit.refs) == 1 for unit in plan.units)
    assert all(r.timestamp is None for r in refs)
    assert plan.failures == []
    assert plan.num_frames == 3


def test_glob_over_folders_makes_one_log_per_folder(tmp_path: Path) -> None:
    write_png(tmp_path / "x" / "0.png")
    write_png(tmp_path / "y" / "0.png")
    write_png(tmp_path / "y" / "1.png")

    refs = refs_of(plan_sources([ImageSource(path=str(tmp_path / "*" / "*.png"))]).units)

    assert [r.key for r in refs] == ["x/000000", "y/000000", "y/000001"]


def test_video_stride_start_end_and_max_frames_select_frame_indices(tmp_path: Path) -> None:
    video = write_video(tmp_path / "cam.avi", frames=20, fps=10.0)
    source = VideoSource(path=str(video), stride=3, start=2, end=15, max_frames=4)

    plan = plan_sources([source], video_run_length=3)

    refs = refs_of(plan.units)
    assert [r.frame_index for r in refs] == [2, 5, 8, 11]
    assert [r.key for r in refs] == ["cam/000002", "cam/000005", "cam/000008", "cam/000011"]
    assert refs[0].uri == f"{video}#frame=2"
    assert refs[0].video_uri == str(video)
    assert refs[1].timestamp == pytest.approx(0.5)
    assert [len(unit.refs) for unit in plan.units] == [3, 1]  # runs of at most 3 frames


def test_unreadable_video_is_one_read_failure_and_planning_goes_on(tmp_path: Path) -> None:
    (tmp_path / "broken.avi").write_bytes(b"RIFF" + bytes(100))
    write_png(tmp_path / "imgs" / "0.png")

    plan = plan_sources(
        [VideoSource(path=str(tmp_path / "broken.avi")), ImageSource(path=str(tmp_path / "imgs"))]
    )

    assert len(plan.failures) == 1
    failure = plan.failures[0]
    assert failure.ref.key == "broken/000000"
    assert failure.stage == "read"
    assert "cannot be opened" in failure.reason
    assert [r.key for r in refs_of(plan.units)] == ["imgs/000000"]
    assert plan.num_frames == 2
    # Once the ledger has the failure, a rerun skips the video and counts it as skipped.
    again = plan_sources(
        [VideoSource(path=str(tmp_path / "broken.avi"))], skip_uris={str(tmp_path / "broken.avi")}
    )
    assert (again.num_frames, again.skipped) == (0, 1)


def test_log_id_shared_by_several_videos_is_refused(tmp_path: Path) -> None:
    write_video(tmp_path / "a.avi", 2)
    write_video(tmp_path / "b.avi", 2)
    with pytest.raises(SourceError, match=r"sources\.0 .*2 videos match"):
        plan_sources([VideoSource(path=str(tmp_path / "*.avi"), log_id="cam")])


def test_colliding_keys_across_sources_are_refused(tmp_path: Path) -> None:
    write_png(tmp_path / "a" / "0.png")
    write_png(tmp_path / "b" / "0.png")
    sources = [
        ImageSource(path=str(tmp_path / "a"), log_id="same"),
        ImageSource(path=str(tmp_path / "b"), log_id="same"),
    ]
    with pytest.raises(SourceError, match=r"sources\.1 .*'same/000000'"):
        plan_sources(sources)


def test_source_matching_nothing_names_the_source(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"sources\.0 .*no image files match"):
        plan_sources([ImageSource(path=str(tmp_path / "*.png"))])


def test_skip_uris_leaves_out_ledger_frames(tmp_path: Path) -> None:
    first = write_png(tmp_path / "log" / "0.png")
    write_png(tmp_path / "log" / "1.png")

    plan = plan_sources([ImageSource(path=str(tmp_path / "log"))], skip_uris={str(first)})

    assert [r.key for r in refs_of(plan.units)] == ["log/000001"]
    assert plan.skipped == 1


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_manifest_orders_each_log_by_timestamp_then_uri(tmp_path: Path, fmt: str) -> None:
    rows = {
        "log_id": ["l2", "l1", "l1", "l1"],
        "frame_uri": ["z.png", "b.png", "clip.mp4#frame=7", str(tmp_path / "a.png")],
        "timestamp": [1.0, 2.0, 0.5, None],
    }
    path = tmp_path / f"manifest.{fmt}"
    if fmt == "csv":
        lines = ["log_id,frame_uri,timestamp"]
        lines += [
            f"{log},{uri},{'' if ts is None else ts}"
            for log, uri, ts in zip(*rows.values(), strict=True)
        ]
        path.write_text("\n".join(lines) + "\n")
    else:
        pq.write_table(pa.table(rows), path)

    plan = plan_sources([ManifestSource(path=str(path))])
    refs = sorted(refs_of(plan.units), key=lambda r: r.key)

    # Relative URIs are relative to the manifest's folder.
    assert [(r.key, r.uri, r.timestamp) for r in refs] == [
        ("l1/000000", f"{tmp_path}/clip.mp4#frame=7", 0.5),
        ("l1/000001", f"{tmp_path}/b.png", 2.0),
        ("l1/000002", f"{tmp_path}/a.png", None),
        ("l2/000000", f"{tmp_path}/z.png", 1.0),
    ]
    assert (refs[0].video_uri, refs[0].video_frame) == (f"{tmp_path}/clip.mp4", 7)


def test_manifest_without_required_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("log,uri\nx,y\n")
    with pytest.raises(SourceError, match=r"lacks column\(s\) \['frame_uri', 'log_id'\]"):
        plan_sources([ManifestSource(path=str(path))])


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_bad_manifest_rows_are_failures_and_the_good_rows_are_planned(
    tmp_path: Path, fmt: str
) -> None:
    rows = {
        "log_id": ["l1", "l1", None, "l1", "l1"],
        "frame_uri": ["b.png", "a.png", "c.png", None, "d.png"],
        "timestamp": ["2", "x", "1", "3", "1"],
    }
    path = tmp_path / f"m.{fmt}"
    if fmt == "csv":
        lines = ["log_id,frame_uri,timestamp"]
        lines += [",".join(v or "" for v in row) for row in zip(*rows.values(), strict=True)]
        path.write_text("\n".join(lines) + "\n")
    else:
        pq.write_table(pa.table(rows), path)

    plan = plan_sources([ManifestSource(path=str(path))], skip_uris={f"{tmp_path}/d.png"})
    again = plan_sources([ManifestSource(path=str(path))], skip_uris={f"{tmp_path}/a.png"})
    assert (again.skipped, len(again.failures)) == (1, 2)  # failed rows in the ledger count

    assert [(r.key, r.uri) for r in refs_of(plan.units)] == [("l1/000001", f"{tmp_path}/b.png")]
    assert plan.skipped == 1
    failed = {(f.ref.key, f.ref.uri, f.stage): f.reason for f in plan.failures}
    where = f"sources.0 ({path})"
    assert failed == {
        ("l1/000002", f"{tmp_path}/a.png", "read"): (
            f"{where}: row 3 has a timestamp that is not a number: 'x'"
        ),
        ("l1/000003", f"{path}#row=5", "read"): f"{where}: row 5 has no frame_uri",
        ("m/000000", f"{tmp_path}/c.png", "read"): f"{where}: row 4 has no log_id",
    }
    assert plan.num_frames == 4  # + the one the ledger has: every row is one frame


@pytest.mark.parametrize(
    "source",
    [
        ImageSource(path="hdfs://cluster/logs/*.png"),
        VideoSource(path="hdfs://cluster/clip.mp4"),
        ManifestSource(path="hdfs://cluster/manifest.csv"),
    ],
)
def test_a_source_that_cannot_be_listed_is_a_source_error(source) -> None:
    # Beam's HDFS extra is not installed: the filesystem refuses the scheme at once. (No gs://
    # or s3:// case: the gcp extra and FiftyOne's boto3 are installed, so listing would try
    # the network: a gs:// case spent 93 s in credential lookups before failing.)
    with pytest.raises(SourceError, match=r"sources\.0 \(.*\): cannot be listed: "):
        plan_sources([source])


def test_frame_key_and_video_uri_helpers() -> None:
    assert frame_key("drive", 12) == "drive/000012"
    assert split_video_uri("gs://b/v.mp4#frame=30") == ("gs://b/v.mp4", 30)
    assert split_video_uri("gs://b/f.png") is None


def test_a_plan_file_round_trips_every_unit(tmp_path) -> None:
    units = [
        ReadUnit((FrameRef("a/000000", "/logs/a/0.png", "a", 0, 12.5),)),
        ReadUnit(
            tuple(
                FrameRef(f"v/{i:06d}", f"/v é.mp4#frame={i}", "v", i, None, "/v é.mp4", i)
                for i in range(3)
            )
        ),
    ]
    path = str(tmp_path / "plan" / "units.jsonl")
    write_plan(units, path)
    lines = (tmp_path / "plan" / "units.jsonl").read_text().splitlines()
    assert [ReadUnit.from_json(line) for line in lines] == units
