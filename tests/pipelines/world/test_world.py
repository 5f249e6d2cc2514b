"""The world: deterministic scenes whose label maps say exactly what was drawn."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from pipelines.cli import main
from pipelines.evaluation.datasets import list_samples, load_sample
from pipelines.world import objects
from pipelines.world.generate import (
    MAX_AREA_FRACTION,
    WorldSpec,
    anomaly_map,
    drive_log_scene,
    split_frame,
    write_world,
)
from pipelines.world.layout import ANOMALY_ID, OUTLIER_ID, VOID_ID, list_keys, read_frame

WORLD_CLASSES = {0, 1, 2, 5, 7, 8, 9, 10, 11, 13}


def test_the_same_seed_and_index_draw_the_same_frame_and_another_seed_does_not() -> None:
    first = split_frame(3, "test", 5)
    again = split_frame(3, "test", 5)
    other = split_frame(4, "test", 5)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert (first[0] != other[0]).any()


@pytest.mark.parametrize("index", range(4))
def test_train_frames_hold_only_cityscapes_classes_and_no_objects(index: int) -> None:
    image, semantic, instances = split_frame(0, "train", index)
    assert image.shape == (256, 512, 3)
    assert image.dtype == np.uint8
    assert set(np.unique(semantic).tolist()) <= WORLD_CLASSES | {VOID_ID}
    assert not instances.any()


@pytest.mark.parametrize("index", range(4))
def test_ood_frames_label_their_pasted_outliers_as_instances(index: int) -> None:
    _, semantic, instances = split_frame(0, "ood", index)
    assert ANOMALY_ID not in semantic
    np.testing.assert_array_equal(instances > 0, semantic == OUTLIER_ID)


@pytest.mark.parametrize("index", range(6))
def test_anomaly_frames_have_instance_ids_exactly_on_anomaly_pixels(index: int) -> None:
    _, semantic, instances = split_frame(0, "test", index)
    assert OUTLIER_ID not in semantic
    np.testing.assert_array_equal(instances > 0, semantic == ANOMALY_ID)
    labels = anomaly_map(semantic)
    assert set(np.unique(labels).tolist()) <= {0, 1, 255}
    np.testing.assert_array_equal(labels == 1, semantic == ANOMALY_ID)
    ids, areas = np.unique(instances[instances > 0], return_counts=True)
    assert 1 <= ids.size <= 6
    assert areas.max() <= MAX_AREA_FRACTION * instances.size


def test_the_anomaly_and_outlier_families_are_disjoint_and_have_six_kinds_each() -> None:
    assert len(objects.ANOMALY_KINDS) == 6
    assert len(objects.OUTLIER_KINDS) == 6
    assert not set(objects.ANOMALY_KINDS) & set(objects.OUTLIER_KINDS)


def test_test_split_has_touching_anomalies_that_stay_separate_instances() -> None:
    # Over a few frames some anomaly touches another one: their union is one 8-connected
    # component but two instance ids.
    import cv2

    found = False
    for index in range(40):
        _, semantic, instances = split_frame(0, "test", index)
        count, components = cv2.connectedComponents(
            (semantic == ANOMALY_ID).astype(np.uint8), connectivity=8
        )
        for component in range(1, count):
            if np.unique(instances[components == component]).size > 1:
                found = True
                break
        if found:
            break
    assert found


@pytest.fixture(scope="module")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("world")
    spec = WorldSpec(
        seed=1, train=2, ood=2, val=1, test=3, logs=1, log_frames=24, anomaly_fraction=0.2
    )
    write_world(root, spec)
    return root


def test_written_frames_read_back_as_generated(small_world: Path) -> None:
    assert list_keys(small_world, "test") == ["test_00000", "test_00001", "test_00002"]
    frame = read_frame(small_world, "test", "test_00001")
    image, semantic, instances = split_frame(1, "test", 1)
    np.testing.assert_array_equal(frame.image, image)
    np.testing.assert_array_equal(frame.semantic, semantic)
    np.testing.assert_array_equal(frame.instances, instances)
    np.testing.assert_array_equal(frame.anomaly, anomaly_map(semantic))
    assert read_frame(small_world, "train", "train_00000").anomaly is None
    meta = json.loads((small_world / "world.json").read_text())
    assert meta["seed"] == 1
    assert meta["splits"]["test"] == 3
    assert meta["splits"]["logs"] == {"count": 1, "frames": 24}


def test_a_second_write_keeps_every_file(small_world: Path) -> None:
    stamps = {p: p.stat().st_mtime_ns for p in small_world.rglob("*.png")}
    spec = WorldSpec(
        seed=1, train=2, ood=2, val=1, test=3, logs=1, log_frames=24, anomaly_fraction=0.2
    )
    write_world(small_world, spec)
    assert {p: p.stat().st_mtime_ns for p in small_world.rglob("*.png")} == stamps


def test_evaluate_reads_a_world_split_with_its_own_instance_ids(small_world: Path) -> None:
    entries = list_samples("world", small_world / "test")
    assert [e.name for e in entries] == ["test_00000", "test_00001", "test_00002"]
    sample = load_sample(entries[1])
    _, semantic, instances = split_frame(1, "test", 1)
    np.testing.assert_array_equal(sample.labels, anomaly_map(semantic))
    np.testing.assert_array_equal(sample.instance_ids, instances.astype(np.int32))


def test_the_drive_log_ground_truth_lists_every_visible_anomaly_with_its_mask(
    small_world: Path,
) -> None:
    gt = json.loads((small_world / "logs" / "drive_00_gt.json").read_text())
    frames = sorted((small_world / "logs" / "drive_00" / "images").glob("*.png"))
    assert len(frames) == gt["frames"] == 24
    assert (small_world / "logs" / "drive_00.avi").is_file()
    rows = gt["instances"]
    assert rows, "a 24-frame log at 20 % anomaly frames holds anomalies"
    for row in rows:
        frame = read_frame(small_world / "logs", "drive_00", f"frame_{row['frame_index']:06d}")
        rle = {"size": list(frame.instances.shape), "counts": row["rle"].encode()}
        mask = mask_utils.decode(rle).astype(bool)
        np.testing.assert_array_equal(mask, frame.instances == row["instance_id"])
        assert row["area"] == mask.sum()
        assert row["frame_key"] == f"drive_00/{row['frame_index']:06d}"
        assert row["kind"] in objects.ANOMALY_KINDS
    # Each object, once more than a speck at the horizon, persists over consecutive frames
    # and grows as the car approaches it.
    for track in {row["track_id"] for row in rows}:
        seen = sorted(
            (r["frame_index"], r["area"])
            for r in rows
            if r["track_id"] == track and r["area"] >= 20
        )
        if not seen:
            continue
        indices = [i for i, _ in seen]
        assert indices == list(range(indices[0], indices[0] + len(indices)))
        assert seen[-1][1] > seen[0][1]


def test_drive_logs_hold_anomalies_on_about_the_requested_fraction_of_frames() -> None:
    scene = drive_log_scene(0, 0, 200, 0.05)
    tracks = {o.track_id for o in scene.objects if o.family == "anomaly"}
    assert 1 <= len(tracks) <= 6


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("train", -1),
        ("ood", -1),
        ("val", -1),
        ("test", -1),
        ("logs", -1),
        ("log_frames", 0),
        ("height", 31),
        ("width", 16),
        ("anomaly_fraction", -0.1),
        ("anomaly_fraction", 1.5),
    ],
)
def test_a_world_spec_out_of_range_names_its_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"^{field} must be") as error:
        WorldSpec(**{field: value})
    assert "\n" not in str(error.value)


def test_a_world_spec_accepts_its_limits() -> None:
    WorldSpec(train=0, ood=0, val=0, test=0, logs=0, log_frames=1, height=32, width=32)
    WorldSpec(anomaly_fraction=0.0)
    WorldSpec(anomaly_fraction=1.0)


def test_world_generate_reports_a_bad_spec_in_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "world"
    assert main(["world", "generate", "--out", str(out), "--test", "-1"]) == 2
    assert capsys.readouterr().err.splitlines() == ["ugains world: test must be >= 0, not -1"]
    assert not out.exists()


def test_world_generate_refuses_to_resume_a_world_of_another_seed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = ["--train", "0", "--ood", "0", "--val", "0", "--test", "0", "--logs", "0"]
    out = str(tmp_path / "world")
    assert main(["world", "generate", "--out", out, "--seed", "0", *empty]) == 0
    capsys.readouterr()
    assert main(["world", "generate", "--out", out, "--seed", "1", *empty]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"ugains world: world {out} has seed 0, not 1")
