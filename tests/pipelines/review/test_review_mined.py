"""``ugains review build`` on a run written by the real pipeline (``ugains mine``, demo)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from pipelines import cli
from pipelines.review import CITYSCAPES_MASK_TARGETS, BuildSummary, build_dataset, heatmap_scores
from tests.pipelines.review.helpers import detections_by_instance, full_mask, rle_mask, table_rows

pytestmark = pytest.mark.slow  # the session's mining run takes about a minute


@pytest.fixture(scope="module")
def mined(mined_run: Path) -> Any:
    """The dataset ``ugains-demo`` built by ``ugains review build --run`` (name from run.json)."""
    import fiftyone as fo

    assert cli.main(["review", "build", "--run", str(mined_run)]) == 0
    yield fo.load_dataset("ugains-demo")
    fo.delete_dataset("ugains-demo")


def test_counts_equal_the_candidates_table(mined: Any, mined_run: Path) -> None:
    candidates = table_rows(mined_run, "candidates")
    instances = table_rows(mined_run, "instances")
    assert len(candidates) == min(10, len(instances)) > 0  # the demo's top_n is 10
    assert sorted(mined.values("frame_key")) == sorted({r["frame_key"] for r in candidates})
    assert mined.count("anomalies.detections") == len(candidates)
    assert sorted(mined.distinct("log_id")) == ["dashcam", "drive_00"]


def test_masks_boxes_and_scores_round_trip(mined: Any, mined_run: Path) -> None:
    detections = detections_by_instance(mined)
    for row in table_rows(mined_run, "candidates"):
        sample, det = detections[row["instance_id"]]
        width, height = row["frame_width"], row["frame_height"]
        assert (sample.metadata.width, sample.metadata.height) == (width, height)
        box = np.array(det.bounding_box) * [width, height, width, height]
        expected = [row["bbox_x"], row["bbox_y"], row["bbox_w"], row["bbox_h"]]
        np.testing.assert_allclose(box, expected, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(full_mask(det, width, height), rle_mask(row))
        assert (det.confidence, det.rank) == (np.float32(row["score"]), row["rank"])


def test_heatmaps_and_semantic_maps_of_the_run(mined: Any, mined_run: Path) -> None:
    frames = {r["frame_key"]: r for r in table_rows(mined_run, "frames")}
    assert mined.mask_targets["semantic"] == CITYSCAPES_MASK_TARGETS
    for sample in mined:
        frame = frames[sample.frame_key]
        heatmap = sample.anomaly_map
        lo, hi = frame["fused_map_min"], frame["fused_map_max"]
        assert heatmap.range == pytest.approx([lo, hi])
        assert Path(heatmap.png_path) == Path(frame["fused_map_uri"]).resolve()
        png = cv2.imread(heatmap.png_path, cv2.IMREAD_UNCHANGED).astype(np.float32)
        # stored at the model's reference size; the App stretches it over the frame
        assert png.shape[1] / png.shape[0] == frame["frame_width"] / frame["frame_height"]
        np.testing.assert_allclose(heatmap_scores(heatmap), lo + png / 255 * (hi - lo), atol=1e-4)
        assert heatmap.map.shape == png.shape  # at most 512 px a side: shown as stored
        assert Path(sample.semantic.mask_path) == Path(frame["semantic_uri"]).resolve()


def test_video_frames_are_decoded_into_jpegs_under_the_run(mined: Any, mined_run: Path) -> None:
    video_samples = [s for s in mined if "#frame=" in s.frame_uri]
    assert video_samples  # the demo's candidates include frames of its video
    for sample in video_samples:
        match = re.fullmatch(r"(.+)#frame=(\d+)", sample.frame_uri)
        assert Path(sample.filepath).parent == mined_run / "frames_jpeg"
        capture = cv2.VideoCapture(match[1])
        for _ in range(int(match[2]) + 1):
            ok, expected = capture.read()
            assert ok
        capture.release()
        jpeg = cv2.imread(sample.filepath)
        assert jpeg.shape == expected.shape
        assert np.abs(jpeg.astype(int) - expected).mean() < 2.0


def test_building_twice_adds_no_duplicates(mined: Any, mined_run: Path) -> None:
    count = len(mined)
    assert build_dataset(mined_run, mined.name) == BuildSummary(0, 0, count)
    keys = mined.values("frame_key")
    assert len(keys) == len(set(keys)) == count
