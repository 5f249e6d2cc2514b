"""``ugains review build/export/pool`` against the real mongod, from a run's Parquet tables."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pipelines import cli
from pipelines.outlier_pool import OutlierPool
from pipelines.review import (
    CITYSCAPES_CLASSES,
    BuildSummary,
    ReviewError,
    build_dataset,
    export_tagged,
    heatmap_scores,
    mask_iou,
    read_run,
    tagged_view,
    write_pool,
)
from pipelines.review.fields import SIMILARITY_KEY
from tests.pipelines.review.helpers import detections_by_instance, full_mask, rle_mask, table_rows
from tests.pipelines.review.synthetic_run import (
    DUPLICATES,
    HEIGHT,
    WIDTH,
    Blob,
    FrameSpec,
    SyntheticRun,
    default_frames,
    frame_image,
    write_run,
)

TOP_K = 3


@pytest.fixture
def built(run_a: SyntheticRun, dataset_name: str) -> Any:
    """The dataset built from ``run_a`` through the command line."""
    import fiftyone as fo

    argv = ["review", "build", "--run", str(run_a.path), "--dataset", dataset_name]
    assert cli.main([*argv, "--top-k", str(TOP_K)]) == 0
    return fo.load_dataset(dataset_name)


def test_review_takes_set_overrides_and_prints_its_result_once(
    run_a: SyntheticRun,
    dataset_name: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    import fiftyone as fo

    argv = ["review", "build", "--run", str(run_a.path), "--set", f"review.dataset={dataset_name}"]
    assert cli.main([*argv, "--set", "review.top_k=2"]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"dataset {dataset_name}: 4 frames added, 0 updated, 0 unchanged\n"
    assert "Summary(" not in captured.err
    assert dataset_name not in captured.err
    assert "top-2" in fo.load_dataset(dataset_name).list_saved_views()
    assert cli.main(["review", "build", "--run", str(run_a.path), "--set", "review.top_k"]) == 2
    assert caplog.messages[-1] == "--set expects KEY=VALUE, got 'review.top_k'"


def test_one_persistent_sample_per_frame_with_candidates_one_detection_per_candidate(
    built: Any, run_a: SyntheticRun
) -> None:
    candidates = table_rows(run_a.path, "candidates")
    assert built.persistent
    assert sorted(built.values("frame_key")) == sorted({r["frame_key"] for r in candidates})
    assert "drive_a/2" not in built.values("frame_key")  # processed, no candidates
    assert built.count("anomalies.detections") == len(candidates) == 5
    assert built.distinct("anomalies.detections.label") == ["anomaly"]


def test_boxes_masks_and_scores_round_trip_pixel_for_pixel(built: Any, run_a: SyntheticRun) -> None:
    detections = detections_by_instance(built)
    candidates = table_rows(run_a.path, "candidates")
    assert sorted(detections) == sorted(r["instance_id"] for r in candidates)
    for row in candidates:
        sample, det = detections[row["instance_id"]]
        assert sample.frame_key == row["frame_key"]
        box = np.array(det.bounding_box) * [WIDTH, HEIGHT, WIDTH, HEIGHT]
        expected_box = [row["bbox_x"], row["bbox_y"], row["bbox_w"], row["bbox_h"]]
        np.testing.assert_allclose(box, expected_box, rtol=0, atol=1e-9)
        assert det.mask.shape == (row["bbox_h"], row["bbox_w"])
        np.testing.assert_array_equal(full_mask(det, WIDTH, HEIGHT), rle_mask(row))
        assert det.confidence == np.float32(row["score"])
        assert det.sam_iou == np.float32(row["sam_iou"])
        assert (det.rank, det.area) == (row["rank"], row["area"])


def test_heatmap_is_in_score_units_with_the_runs_png_beside_it(
    built: Any, run_a: SyntheticRun
) -> None:
    frames = {r["frame_key"]: r for r in table_rows(run_a.path, "frames")}
    for sample in built:
        frame = frames[sample.frame_key]
        heatmap = sample.anomaly_map
        lo, hi = frame["fused_map_min"], frame["fused_map_max"]
        assert heatmap.png_path == str(run_a.path / frame["fused_map_uri"])
        assert heatmap.map_path is None
        # the App's colour bar and hover values are scores: range = the frame's score range
        assert heatmap.range == pytest.approx([lo, hi])
        assert (heatmap.score_min, heatmap.score_max) == (np.float32(lo), np.float32(hi))
        png = cv2.imread(heatmap.png_path, cv2.IMREAD_UNCHANGED).astype(np.float32)
        scores = lo + png / 255 * (hi - lo)
        np.testing.assert_allclose(heatmap_scores(heatmap), scores, atol=1e-6)
        # small maps are shown at the run's resolution, pixel for pixel
        assert heatmap.map.dtype == np.float32
        np.testing.assert_allclose(heatmap.map, scores, atol=1e-6)
        # the map is the fused score: the best object's pixels hold its score
        assert heatmap.map.max() == pytest.approx(sample.max_score, abs=1e-6)


def test_large_heatmaps_are_shown_area_averaged_to_512_pixels() -> None:
    from pipelines.review.samples import display_scores

    png = np.zeros((1024, 2048), dtype=np.uint8)
    png[100:300, 400:800] = 255  # an object on a 4x4-aligned block
    shown = display_scores(png, -1.0, 2.0)
    assert shown.shape == (256, 512)
    assert shown.dtype == np.float32
    assert shown[25:75, 100:200].min() == pytest.approx(2.0)
    assert shown[0:25].max() == pytest.approx(-1.0)
    assert float(shown.mean()) == pytest.approx(float((-1 + png / 255 * 3).mean()), abs=1e-5)
    assert display_scores(png[:512, :512], -1.0, 2.0).shape == (512, 512)


def test_semantic_segmentation_has_cityscapes_mask_targets(built: Any, run_a: SyntheticRun) -> None:
    frames = {r["frame_key"]: r for r in table_rows(run_a.path, "frames")}
    targets = built.mask_targets["semantic"]
    assert targets == {**dict(enumerate(CITYSCAPES_CLASSES)), 255: "ignore"}
    assert (targets[0], targets[10], targets[18], len(targets)) == ("road", "sky", "bicycle", 20)
    for sample in built:
        assert sample.semantic.mask_path == frames[sample.frame_key]["semantic_uri"]


def test_semantic_field_is_absent_when_the_run_stored_none(
    runs_root: Path, dataset_name: str
) -> None:
    import fiftyone as fo

    run = write_run(runs_root, "run-no-semantic", default_frames(), semantic=False)
    build_dataset(run.path, dataset_name)
    dataset = fo.load_dataset(dataset_name)
    assert "semantic" not in dataset.get_field_schema()
    assert "semantic" not in dataset.mask_targets


def test_a_second_run_updates_a_dataset_built_with_every_optional_output_off(
    runs_root: Path, dataset_name: str
) -> None:
    """Day two: mine, build, mine again, build from the new run (no maps, no semantic)."""
    import fiftyone as fo

    first = write_run(runs_root, "bare-1", default_frames(), semantic=False, maps=False)
    second = write_run(runs_root, "bare-2", default_frames(1), semantic=False, maps=False)
    build_dataset(first.path, dataset_name)
    summary = build_dataset(second.path, dataset_name)
    assert summary == BuildSummary(added=1, updated=4, unchanged=0)
    dataset = fo.load_dataset(dataset_name)
    assert set(dataset.values("run_id")) == {"bare-2"}
    assert {"semantic", "anomaly_map"}.isdisjoint(dataset.get_field_schema())
    # A third run that does store maps adds the field to a dataset that had none.
    third = write_run(runs_root, "maps-3", default_frames(1), semantic=True, maps=True)
    build_dataset(third.path, dataset_name)
    dataset.reload()
    assert dataset.exists("anomaly_map").count() == len(dataset)


def test_frames_use_the_image_file_or_a_jpeg_decoded_once_from_the_video(
    built: Any, run_a: SyntheticRun
) -> None:
    for sample in built:
        spec = run_a.frames[sample.frame_key]
        if spec.log_id == "drive_a":
            assert sample.filepath == sample.frame_uri
            continue
        assert sample.frame_uri.endswith(f"drive_b.avi#frame={spec.index}")
        assert sample.filepath == str(run_a.path / "frames_jpeg" / f"drive_b_{spec.index}.jpg")
        image = cv2.imread(sample.filepath)
        assert image.shape == (HEIGHT, WIDTH, 3)
        # MJPG then JPEG: close to the drawn frame, and not any other frame of the video
        error = np.abs(image.astype(int) - frame_image(spec)).mean()
        other = FrameSpec("drive_b", 0)
        assert error < 3 < np.abs(image.astype(int) - frame_image(other)).mean()


def test_sample_fields_and_dataset_info(built: Any, run_a: SyntheticRun) -> None:
    candidates = table_rows(run_a.path, "candidates")
    for sample in built:
        spec = run_a.frames[sample.frame_key]
        scores = [r["score"] for r in candidates if r["frame_key"] == sample.frame_key]
        assert (sample.log_id, sample.frame_index, sample.run_id) == (
            spec.log_id,
            spec.index,
            "run-a",
        )
        assert sample.timestamp == (spec.index / 10 if spec.log_id == "drive_b" else None)
        assert sample.max_score == np.float32(max(scores))
        assert (sample.metadata.width, sample.metadata.height) == (WIDTH, HEIGHT)
    info = built.info
    assert info["run_id"] == "run-a"
    assert info["config_fingerprint"] == "fp-run-a"
    assert info["checkpoints"] == {
        "mask2former": "/ckpt/model_final.pth",
        "sam": "/ckpt/sam_vit_h_4b8939.pth",
    }
    assert info["runs"] == {"run-a": json.loads((run_a.path / "run.json").read_text())}


def test_saved_views_top_k_per_log_and_patches(built: Any, run_a: SyntheticRun) -> None:
    candidates = table_rows(run_a.path, "candidates")
    assert built.list_saved_views() == [
        f"top-{TOP_K}",
        "ranked",
        "log-drive_a",
        "log-drive_b",
        "anomaly-patches",
        "distinct-objects",
        "tracks",
    ]
    top = built.load_saved_view(f"top-{TOP_K}")
    best = [r["instance_id"] for r in candidates if r["rank"] <= TOP_K]
    assert sorted(top.values("anomalies.detections.mined_instance_id", unwind=True)) == sorted(best)
    assert top.values("max_score") == sorted(top.values("max_score"), reverse=True)
    ranked_frames = built.load_saved_view("ranked")
    assert len(ranked_frames) == len(built)
    assert ranked_frames.values("max_score") == sorted(built.values("max_score"), reverse=True)
    assert built.load_saved_view("log-drive_a").values("frame_key") == ["drive_a/0", "drive_a/1"]
    assert built.load_saved_view("log-drive_b").values("frame_key") == ["drive_b/1", "drive_b/3"]
    patches = built.load_saved_view("anomaly-patches")
    ranked = [r["instance_id"] for r in sorted(candidates, key=lambda r: r["rank"])]
    assert patches.values("anomalies.mined_instance_id") == ranked
    # The near-duplicate of another log's object is collapsed into it.
    objects = built.load_saved_view("distinct-objects")
    assert objects.values("anomalies.mined_instance_id") == [
        i for i in ranked if i not in DUPLICATES
    ]
    # One group per track (here each track's one sighting), best sighting first.
    tracks = built.load_saved_view("tracks")
    assert sorted(tracks.values("anomalies.track_id")) == sorted(r["track_id"] for r in candidates)


def test_detections_carry_their_track_and_embedding(built: Any, run_a: SyntheticRun) -> None:
    candidates = {r["instance_id"]: r for r in table_rows(run_a.path, "candidates")}
    detections = detections_by_instance(built)
    assert sorted(detections) == sorted(candidates)
    for instance_id, (_, detection) in detections.items():
        row = candidates[instance_id]
        assert detection["track_id"] == row["track_id"]
        assert detection["track_frames"] == 1
        assert getattr(detection, "duplicate_of", None) == DUPLICATES.get(instance_id)
        assert np.allclose(detection["embedding"], row["embedding"], atol=1e-4)


def test_more_like_this_in_the_app_orders_patches_by_embedding_cosine(
    built: Any, run_a: SyntheticRun
) -> None:
    assert built.has_brain_run(SIMILARITY_KEY)
    candidates = table_rows(run_a.path, "candidates")
    vectors = {r["instance_id"]: np.asarray(r["embedding"], np.float64) for r in candidates}
    query = "drive_a/0#1"
    cosine = {i: float(v @ vectors[query]) / np.linalg.norm(v) for i, v in vectors.items()}
    want = sorted(cosine, key=lambda i: -cosine[i])
    patches = built.to_patches("anomalies")
    ids = dict(zip(*patches.values(["anomalies.mined_instance_id", "anomalies.id"]), strict=True))
    ordered = patches.sort_by_similarity(ids[query], brain_key=SIMILARITY_KEY)
    assert ordered.values("anomalies.mined_instance_id") == want


def test_building_again_from_the_same_run_changes_nothing(built: Any, run_a: SyntheticRun) -> None:
    fields = ["id", "last_modified_at", "anomalies.detections.id"]
    before = built.values(fields)
    views_before = [built.get_saved_view_info(n) for n in built.list_saved_views()]
    info_before = built.info

    assert build_dataset(run_a.path, built.name, top_k=TOP_K) == BuildSummary(0, 0, 4)

    built.reload()
    assert built.values(fields) == before
    assert [built.get_saved_view_info(n) for n in built.list_saved_views()] == views_before
    assert built.info == info_before
    assert len(built) == 4


def test_a_newer_run_adds_and_updates_frames_and_keeps_review_tags(
    built: Any, run_b: SyntheticRun
) -> None:
    import fiftyone as fo

    detections = detections_by_instance(built)
    moved_sample, moved = detections["drive_a/0#1"]  # moves 1 px and is rescored in run-b
    moved.tags = ["confirmed"]
    moved_sample.anomalies.detections[0].tags = ["rejected"]
    moved_sample.save()
    built.select_by("frame_key", ["drive_b/3"]).tag_samples("relabel")

    summary = build_dataset(run_b.path, built.name, top_k=TOP_K)

    assert summary == BuildSummary(added=1, updated=4, unchanged=0)  # run_id changed everywhere
    dataset = fo.load_dataset(built.name)
    keys = dataset.values("frame_key")
    assert (
        sorted(keys)
        == sorted(set(keys))
        == [
            "drive_a/0",
            "drive_a/1",
            "drive_a/3",
            "drive_b/1",
            "drive_b/3",
        ]
    )
    assert dataset.count("anomalies.detections") == len(table_rows(run_b.path, "candidates"))
    after = detections_by_instance(dataset)
    assert after["drive_a/0#1"][1].id == moved.id
    assert after["drive_a/0#1"][1].tags == ["confirmed"]
    assert after["drive_a/0#1"][1].confidence == np.float32(0.55)
    assert after["drive_a/0#0"][1].tags == ["rejected"]
    assert after["drive_a/1#0"][1].tags == []
    assert dataset.select_by("frame_key", ["drive_b/3"]).first().tags == ["relabel"]
    assert set(dataset.values("run_id")) == {"run-b"}
    assert set(dataset.info["runs"]) == {"run-a", "run-b"}


def test_tagged_detections_without_a_counterpart_in_the_new_run_are_kept(
    built: Any, runs_root: Path
) -> None:
    frames = default_frames()
    # drive_a/1's object is gone in this run, another one appears elsewhere in the frame
    frames[1] = FrameSpec("drive_a", 1, (Blob(20, 80, 8, 6, (10, 10, 10), 0.6),))
    frames[0] = FrameSpec("drive_a", 0, (frames[0].blobs[0],))  # untagged #1 disappears
    run = write_run(runs_root, "run-gone", frames)
    sample, old = detections_by_instance(built)["drive_a/1#0"]
    old.tags = ["confirmed"]
    sample.save()

    build_dataset(run.path, built.name, top_k=TOP_K)

    built.reload()
    frame = built.select_by("frame_key", ["drive_a/1"]).first()
    ids = [d.id for d in frame.anomalies.detections]
    assert ids[1] == old.id  # the new object first, the reviewed one kept after it
    assert [d.tags for d in frame.anomalies.detections] == [[], ["confirmed"]]
    first = built.select_by("frame_key", ["drive_a/0"]).first()
    assert [d.mined_instance_id for d in first.anomalies.detections] == ["drive_a/0#0"]


def test_a_detections_own_review_tag_wins_over_its_frames_tag(built: Any) -> None:
    detections = detections_by_instance(built)
    built.select_by("frame_key", ["drive_a/0"]).tag_samples("confirmed")
    sample, _ = detections["drive_a/0#0"]
    sample.anomalies.detections[0].tags = ["rejected"]
    sample.save()
    other, _ = detections["drive_b/3#0"]
    other.anomalies.detections[0].tags = ["confirmed", "relabel"]
    other.save()

    ids = tagged_view(built, "confirmed").values("anomalies.detections.mined_instance_id")
    assert sorted(i for frame in ids for i in frame) == ["drive_a/0#1", "drive_b/3#0"]
    relabel = tagged_view(built, "relabel").values("anomalies.detections.mined_instance_id")
    assert relabel == [["drive_b/3#0"]]
    with pytest.raises(ReviewError, match="tag must be one of confirmed, rejected, relabel"):
        tagged_view(built, "maybe")


def _confirm(dataset: Any, instance_ids: list[str]) -> None:
    for sample, det in detections_by_instance(dataset).values():
        if det.mined_instance_id in instance_ids:
            det.tags = ["confirmed"]
            sample.save()


def test_coco_export_reimports_as_the_same_confirmed_objects(
    built: Any, run_a: SyntheticRun, tmp_path: Path
) -> None:
    import fiftyone as fo

    confirmed = ["drive_a/0#1", "drive_a/1#0", "drive_b/3#0"]
    _confirm(built, confirmed)
    out = tmp_path / "coco"
    argv = ["review", "export", "--dataset", built.name, "--format", "coco", "--out", str(out)]
    assert cli.main(argv) == 0

    imported = fo.Dataset.from_dir(
        dataset_dir=str(out),
        dataset_type=fo.types.COCODetectionDataset,
        label_types=["segmentations"],
        label_field="anomalies",
        progress=False,
    )
    try:
        again = detections_by_instance(imported)
        assert sorted(again) == confirmed
        rows = {r["instance_id"]: r for r in table_rows(run_a.path, "candidates")}
        for instance_id, (sample, det) in again.items():
            row = rows[instance_id]
            assert Path(sample.filepath).parent == out / "data"  # images copied into the export
            box = np.array(det.bounding_box) * [WIDTH, HEIGHT, WIDTH, HEIGHT]
            expected = [row["bbox_x"], row["bbox_y"], row["bbox_w"], row["bbox_h"]]
            np.testing.assert_allclose(box, expected, rtol=0, atol=1e-6)
            assert (det.label, det.confidence) == ("anomaly", np.float32(row["score"]))
            # COCO stores masks as polygons (FiftyOne's default 2 px tolerance)
            mask, expected_mask = full_mask(det, WIDTH, HEIGHT), rle_mask(row)
            iou = (mask & expected_mask).sum() / (mask | expected_mask).sum()
            assert iou > 0.85
        # COCO's area is the object's pixel count (FiftyOne writes the box's w * h).
        annotations = json.loads((out / "labels.json").read_text())["annotations"]
        areas = {a["mined_instance_id"]: a["area"] for a in annotations}
        assert areas == {i: rows[i]["area"] for i in confirmed}
        assert any(rows[i]["area"] != rows[i]["bbox_w"] * rows[i]["bbox_h"] for i in confirmed)
    finally:
        imported.delete()


def test_fiftyone_and_cvat_exports(built: Any, tmp_path: Path) -> None:
    import fiftyone as fo

    confirmed = ["drive_a/0#0", "drive_b/1#0"]
    _confirm(built, confirmed)
    assert export_tagged(built, "confirmed", "fiftyone", tmp_path / "fo") == 2
    assert export_tagged(built, "confirmed", "cvat", tmp_path / "cvat") == 2

    copy = fo.Dataset.from_dir(
        dataset_dir=str(tmp_path / "fo"), dataset_type=fo.types.FiftyOneDataset, progress=False
    )
    try:
        original = detections_by_instance(built)
        for instance_id, (_, det) in detections_by_instance(copy).items():
            assert instance_id in confirmed
            np.testing.assert_array_equal(det.mask, original[instance_id][1].mask)
            assert det.tags == ["confirmed"]
    finally:
        copy.delete()
    labels = (tmp_path / "cvat" / "labels.xml").read_text()
    assert labels.count("<box ") == 2
    assert sorted(p.name for p in (tmp_path / "cvat" / "data").iterdir()) == [
        "000000.png",
        "drive_b_1.jpg",
    ]


def test_pool_writes_crop_and_mask_pairs_with_a_manifest(
    built: Any, run_a: SyntheticRun, tmp_path: Path
) -> None:
    confirmed = ["drive_a/1#0", "drive_b/3#0"]
    _confirm(built, confirmed)
    out = tmp_path / "pool"
    assert cli.main(["review", "pool", "--dataset", built.name, "--out", str(out)]) == 0

    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["dataset"], manifest["tag"], manifest["count"]) == (
        built.name,
        "confirmed",
        2,
    )
    rows = {r["instance_id"]: r for r in table_rows(run_a.path, "candidates")}
    detections = detections_by_instance(built)
    assert sorted(o["instance_id"] for o in manifest["objects"]) == confirmed
    for entry in manifest["objects"]:
        row = rows[entry["instance_id"]]
        x, y, w, h = row["bbox_x"], row["bbox_y"], row["bbox_w"], row["bbox_h"]
        assert entry["bbox_xywh"] == [x, y, w, h]
        assert entry["frame_key"] == row["frame_key"]
        assert entry["detection_id"] == detections[row["instance_id"]][1].id
        crop = cv2.imread(str(out / entry["image"]))
        np.testing.assert_array_equal(crop, cv2.imread(entry["frame"])[y : y + h, x : x + w])
        mask = cv2.imread(str(out / entry["mask"]), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(mask, rle_mask(row)[y : y + h, x : x + w] * 255)

    # What fine-tuning reads (`ugains train mask2former --outliers`): RGB crops, bool masks.
    pool = OutlierPool.read(out)
    assert [p["instance_id"] for p in pool.provenance] == [
        o["instance_id"] for o in manifest["objects"]
    ]
    for (crop, mask), entry in zip(pool.objects, manifest["objects"], strict=True):
        bgr = cv2.imread(str(out / entry["image"]))
        np.testing.assert_array_equal(crop.permute(1, 2, 0).numpy(), bgr[..., ::-1])
        assert mask.dtype == torch.bool
        assert mask.shape == bgr.shape[:2]


def test_pool_with_rejected_adds_the_rejected_detections_as_hard_negatives(
    built: Any, tmp_path: Path
) -> None:
    _confirm(built, ["drive_a/1#0"])
    for sample, det in detections_by_instance(built).values():
        if det.mined_instance_id == "drive_b/3#0":
            det.tags = ["rejected"]
            sample.save()
    out = tmp_path / "pool"
    argv = ["review", "pool", "--dataset", built.name, "--out", str(out), "--with-rejected"]
    assert cli.main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(o["instance_id"], o["decision"]) for o in manifest["objects"]] == [
        ("drive_a/1#0", "confirmed"),
        ("drive_b/3#0", "rejected"),
    ]
    pool = OutlierPool.read(out)
    assert [p["instance_id"] for p in pool.provenance] == ["drive_a/1#0"]
    assert len(pool.rejected) == 1
    # Without the flag the pool holds the confirmed objects only.
    assert cli.main([*argv[:-1], "--overwrite"]) == 0
    assert OutlierPool.read(out).rejected == []


def test_outputs_refuse_a_non_empty_directory_unless_overwrite(built: Any, tmp_path: Path) -> None:
    _confirm(built, ["drive_a/1#0"])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("keep me")
    with pytest.raises(ReviewError, match=r"out is not empty; pass --overwrite"):
        write_pool(built, tmp_path / "out")
    with pytest.raises(ReviewError, match=r"out is not empty; pass --overwrite"):
        export_tagged(built, "confirmed", "coco", tmp_path / "out")
    write_pool(built, tmp_path / "out", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "images",
        "manifest.json",
        "masks",
    ]


def test_unknown_export_format_and_dataset_are_errors(
    built: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(ReviewError, match="format must be one of coco, cvat, fiftyone; got 'voc'"):
        export_tagged(built, "confirmed", "voc", tmp_path)
    argv = ["review", "pool", "--dataset", "no-such-dataset", "--out", str(tmp_path / "p")]
    assert cli.main(argv) == 2
    # The CLI logs to stderr with its own handler (pytest's may not survive its setup).
    logged = caplog.text + capsys.readouterr().err
    assert "no FiftyOne dataset named 'no-such-dataset'" in logged


def test_a_directory_that_is_not_a_run_is_refused(run_a: SyntheticRun, tmp_path: Path) -> None:
    with pytest.raises(ReviewError, match=r"not a mining run directory: run.json is missing"):
        read_run(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(run_a.path, broken)
    shutil.copy(broken / "frames" / "part-00000.parquet", broken / "candidates.parquet")
    with pytest.raises(ReviewError, match=r"is table 'frames' version 2, expected 'candidates'"):
        read_run(broken)
    (broken / "candidates.parquet").write_bytes(b"not parquet")
    with pytest.raises(ReviewError, match=r"cannot read Parquet table .*candidates.parquet"):
        read_run(broken)


def test_inconsistent_rows_are_refused_naming_the_instance(
    run_a: SyntheticRun, tmp_path: Path, dataset_name: str
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(run_a.path, broken)
    table = pq.read_table(broken / "candidates.parquet")
    areas = table.column("area").to_pylist()
    areas[0] += 1
    index = table.schema.get_field_index("area")
    table = table.set_column(index, table.schema.field("area"), [areas])
    pq.write_table(table, broken / "candidates.parquet")
    with pytest.raises(ReviewError, match=r"mask of drive_a/0#0 has 333 pixels .* area = 334"):
        build_dataset(broken, dataset_name)


def test_a_dataset_not_built_by_review_is_not_touched(
    run_a: SyntheticRun, dataset_name: str
) -> None:
    import fiftyone as fo

    foreign = fo.Dataset(dataset_name)
    foreign.add_sample(fo.Sample(filepath="/data/other.png"))
    with pytest.raises(ReviewError, match="exists but was not built by `ugains review build`"):
        build_dataset(run_a.path, dataset_name)
    assert foreign.values("filepath") == ["/data/other.png"]


def test_map_paths_relative_to_the_mining_working_dir_are_found_in_the_run(
    run_a: SyntheticRun, tmp_path: Path, dataset_name: str
) -> None:
    import fiftyone as fo
    import pyarrow as pa

    # `ugains mine` run from tmp_path with output.root "out" writes "out/runs/<id>/maps/..."
    moved = tmp_path / "out" / "runs" / "run-a"
    shutil.copytree(run_a.path, moved)
    shard = moved / "frames" / "part-00000.parquet"
    table = pq.read_table(shard)
    uris = [f"out/runs/run-a/{u}" if u else None for u in table.column("fused_map_uri").to_pylist()]
    index = table.schema.get_field_index("fused_map_uri")
    field = table.schema.field("fused_map_uri")
    pq.write_table(table.set_column(index, field, pa.array(uris, pa.string())), shard)

    build_dataset(moved, dataset_name)

    paths = fo.load_dataset(dataset_name).values("anomaly_map.png_path")
    assert sorted(paths) == sorted(str(p) for p in (moved / "maps").glob("*_fused.png"))


def test_a_run_without_candidates_builds_an_empty_dataset(
    runs_root: Path, dataset_name: str
) -> None:
    import fiftyone as fo

    run = write_run(runs_root, "run-empty", [FrameSpec("drive_a", 0), FrameSpec("drive_b", 1)])
    assert build_dataset(run.path, dataset_name) == BuildSummary(0, 0, 0)
    dataset = fo.load_dataset(dataset_name)
    assert len(dataset) == 0
    assert dataset.list_saved_views() == []
    assert dataset.info["run_id"] == "run-empty"


def test_mask_iou_of_detections_at_different_boxes() -> None:
    import fiftyone as fo

    # 4x4 frame; a: 2x2 square at (0, 0); b: the 2x3 box at (1, 0) without a mask
    a = fo.Detection(bounding_box=[0, 0, 0.5, 0.5], mask=np.ones((2, 2), dtype=bool))
    b = fo.Detection(bounding_box=[0.25, 0, 0.5, 0.75])
    assert mask_iou(a, b, 4, 4) == pytest.approx(2 / 8)  # overlap 2 px, union 4 + 6 - 2
    assert mask_iou(a, a, 4, 4) == 1.0


def test_a_box_without_mask_that_ends_at_the_frame_edge_stays_inside_the_frame() -> None:
    import fiftyone as fo

    from pipelines.review.samples import pixel_box

    # 3x3 frame, box from 1.5 to 3.0 px: rounding its size instead of its far edge would give
    # a 2 px box at x = 2 (past the edge), so `pool` would pair a 1 px crop with a 2 px mask.
    box = fo.Detection(bounding_box=[0.5, 0.5, 0.5, 0.5])
    assert pixel_box(box, 3, 3) == (2, 2, 1, 1)
    inside = fo.Detection(bounding_box=[0.25, 0, 0.5, 0.75])  # the 4x4 case above
    assert pixel_box(inside, 4, 4) == (1, 0, 2, 3)


def test_a_newer_sample_format_rewrites_every_frame_of_an_older_build(
    built: Any, run_a: SyntheticRun, dataset_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pipelines.review.dataset.SAMPLE_FORMAT", 4)
    assert build_dataset(run_a.path, dataset_name) == BuildSummary(added=0, updated=4, unchanged=0)
    assert build_dataset(run_a.path, dataset_name) == BuildSummary(added=0, updated=0, unchanged=4)


def test_a_run_written_before_a_timing_column_existed_still_builds(
    run_a: SyntheticRun, tmp_path: Path, dataset_name: str
) -> None:
    old = tmp_path / "old-run"
    shutil.copytree(run_a.path, old)
    shard = old / "frames" / "part-00000.parquet"
    table = pq.read_table(shard)
    # keep the table's metadata (name, schema version): only the column is missing
    pq.write_table(table.drop_columns(["compact_ms", "rows_ms"]), shard)

    summary = build_dataset(old, dataset_name)
    assert summary.added == 4


def test_a_fiftyone_export_prints_its_progress_once(
    built: Any, dataset_name: str, tmp_path: Path
) -> None:
    import subprocess
    import sys

    _confirm(built, ["drive_a/0#0"])
    out = tmp_path / "fo"
    argv = ["review", "export", "--dataset", dataset_name, "--tag", "confirmed"]
    command = [sys.executable, "-m", "pipelines.cli", *argv, "--format", "fiftyone"]
    # a process of its own: FiftyOne binds its progress handler to stdout when imported
    done = subprocess.run(
        [*command, "--out", str(out)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert (done.stdout + done.stderr).count("Exporting samples") == 1
    assert done.stdout.count(f"exported 1 confirmed detections to {out}") == 1


def test_an_unchanged_frame_is_recognised_without_reading_its_maps(
    run_a: SyntheticRun, tmp_path: Path, dataset_name: str
) -> None:
    copy = tmp_path / "run-a"
    shutil.copytree(run_a.path, copy)
    assert build_dataset(copy, dataset_name).added == 4
    for png in (copy / "maps").rglob("*_fused.png"):
        png.write_bytes(b"")  # any read of a map would now fail

    assert build_dataset(copy, dataset_name) == BuildSummary(added=0, updated=0, unchanged=4)


def test_review_similar_lists_the_most_similar_instances_of_other_tracks(
    run_a: SyntheticRun, capsys: pytest.CaptureFixture
) -> None:
    instances = table_rows(run_a.path, "instances")
    vectors = {r["instance_id"]: np.asarray(r["embedding"], np.float64) for r in instances}
    query = "drive_a/1#0"
    cosine = {i: float(v @ vectors[query]) / np.linalg.norm(v) for i, v in vectors.items()}
    want = sorted((i for i in cosine if i != query), key=lambda i: -cosine[i])[:3]

    argv = ["review", "similar", "--run", str(run_a.path), "--instance", query, "-k", "3"]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"instances most similar to {query} (cosine of SAM mask embeddings):"
    listed = [line.split(" | ")[2] for line in lines[3:]]
    assert listed == want
    similarities = [float(line.split(" | ")[1]) for line in lines[3:]]
    assert similarities == pytest.approx([cosine[i] for i in want], abs=1e-3)


def test_review_similar_names_a_missing_instance_in_one_line(
    run_a: SyntheticRun, caplog: pytest.LogCaptureFixture
) -> None:
    argv = ["review", "similar", "--run", str(run_a.path), "--instance", "nope#0"]
    assert cli.main(argv) == 2
    assert f"run {run_a.path} has no instance 'nope#0'" in caplog.text


def test_review_similar_leaves_out_the_querys_own_track_unless_asked(tmp_path: Path) -> None:
    from pipelines.review.similar import similar_instances
    from tests.pipelines.world.test_scoring import _write

    run = tmp_path / "run"
    rows = []
    for instance_id, track, vector in [
        ("f/0#0", "T", [1.0, 0.0]),
        ("f/1#0", "T", [1.0, 0.1]),  # the query's object, a frame later
        ("f/1#1", "U", [1.0, 0.5]),
        ("f/2#0", "V", [0.0, 0.0]),  # no embedding: never listed
    ]:
        embedding = np.zeros(256, np.float32)
        embedding[:2] = vector
        norm = np.linalg.norm(embedding)
        rows.append(
            {
                "instance_id": instance_id,
                "track_id": track,
                "frame_uri": f"/x/{instance_id}.png",
                "embedding": (embedding / norm if norm else embedding).tolist(),
            }
        )
    _write(run, "instances", rows)
    (run / "run.json").write_text("{}")
    assert [r["instance_id"] for r in similar_instances(run, "f/0#0")] == ["f/1#1"]
    both = similar_instances(run, "f/0#0", same_track=True)
    assert [r["instance_id"] for r in both] == ["f/1#0", "f/1#1"]
    assert both[0]["similarity"] == pytest.approx(1 / np.sqrt(1.01), abs=1e-3)
    with pytest.raises(ReviewError, match="'f/2#0' has no embedding"):
        similar_instances(run, "f/2#0")
