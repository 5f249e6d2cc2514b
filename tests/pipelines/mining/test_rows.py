"""Rows: masks, boxes, points and crops in original pixels; rows fit the table schemas."""

from __future__ import annotations

import cv2
import numpy as np
import pyarrow as pa
import pytest
import torch
from pycocotools import mask as mask_utils

from models.ugains import FrameResult
from pipelines.elements import DecodedFrame, FrameFailure, FrameRef
from pipelines.mining.inference import compact_result
from pipelines.mining.rows import Progress, RunContext, error_row, frame_row, instance_rows
from pipelines.mining.schema import ERRORS_SCHEMA, FRAMES_SCHEMA, INSTANCES_SCHEMA

CTX = RunContext(
    run_id="20260101T000000Z-abc",
    run_dir="/tmp/unused",
    config_fingerprint="abc",
    ugains_version="0.1.0",
    mask2former_checkpoint="m2f.pth",
    sam_checkpoint=None,
    crop_margin=0.5,
    min_crop_margin=1,
)
REF = FrameRef("log/000003", "/data/log/3.png", "log", 3, 1.5)


def frame_result(masks: torch.Tensor, scores: list[float], points: list[list[int]]) -> FrameResult:
    """A real FrameResult at the masks' size (what models.ugains returns)."""
    height, width = masks.shape[1:]
    anomaly = torch.linspace(-2.0, 0.0, height * width).reshape(height, width)
    return FrameResult(
        semantic=torch.zeros(height, width, dtype=torch.uint8),
        anomaly_score=anomaly,
        fused_score=anomaly + 1.0,
        masks=masks,
        scores=torch.tensor(scores, dtype=torch.float32),
        sam_iou=torch.full((len(scores),), 0.5),
        points=torch.tensor(points, dtype=torch.int64).reshape(-1, 2),
        prompt_points=torch.tensor(points, dtype=torch.int64).reshape(-1, 2),
        timings={"mask2former": 3.0, "sam_encoder": 4.0},
    )


def decoded(size: tuple[int, int], model_size: tuple[int, int]) -> DecodedFrame:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    model_image = np.zeros((*model_size, 3), np.uint8)
    return DecodedFrame(REF, image, model_image, decode_ms=2.0)


def nearest_reference(small: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize written out, at pixel centres:
    out[i, j] = small[floor((i + 0.5) * h / H), floor((j + 0.5) * w / W)]."""
    h, w = small.shape
    rows = [int((i + 0.5) * h / size[0]) for i in range(size[0])]
    cols = [int((j + 0.5) * w / size[1]) for j in range(size[1])]
    return small[np.ix_(rows, cols)]


def decode(counts: str, size: tuple[int, int]) -> np.ndarray:
    return mask_utils.decode({"size": list(size), "counts": counts.encode()}).astype(bool)


@pytest.mark.parametrize("size", [(12, 16), (9, 13), (6, 8)], ids=["2x", "odd", "same"])
def test_instances_are_reported_in_original_pixels(size: tuple[int, int]) -> None:
    model_size = (6, 8)
    masks = torch.zeros(2, *model_size, dtype=torch.bool)
    masks[0, 1:3, 2:5] = True
    masks[1, 4:6, 0:2] = True
    result = compact_result(frame_result(masks, [0.9, 0.4], [[3, 1], [0, 5]]))
    frame = decoded(size, model_size)

    rows = instance_rows(frame, result, CTX)

    assert [r["instance_id"] for r in rows] == ["log/000003#0", "log/000003#1"]
    for row, small, (px, py) in zip(rows, masks.numpy(), [(3, 1), (0, 5)], strict=True):
        expected = nearest_reference(small, size)
        mask = decode(row["mask_rle"], size)
        assert (mask == expected).all()
        ys, xs = np.nonzero(expected)
        assert (row["bbox_x"], row["bbox_y"]) == (xs.min(), ys.min())
        assert (row["bbox_w"], row["bbox_h"]) == (xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        assert row["area"] == expected.sum()
        assert (row["frame_height"], row["frame_width"]) == size
        # The prompt lands on the centre of its model pixel's footprint.
        assert row["point_x"] == int((px + 0.5) * size[1] / model_size[1])
        assert row["point_y"] == int((py + 0.5) * size[0] / model_size[0])
        # The crop is the bbox grown by max(ceil(0.5 * side), 1) per side, clipped.
        mx, my = (
            max(int(np.ceil(0.5 * row["bbox_w"])), 1),
            max(int(np.ceil(0.5 * row["bbox_h"])), 1),
        )
        x0, y0 = max(row["bbox_x"] - mx, 0), max(row["bbox_y"] - my, 0)
        x1 = min(row["bbox_x"] + row["bbox_w"] + mx, size[1])
        y1 = min(row["bbox_y"] + row["bbox_h"] + my, size[0])
        assert (row["crop_x"], row["crop_y"], row["crop_w"], row["crop_h"]) == (
            x0,
            y0,
            x1 - x0,
            y1 - y0,
        )
        crop = cv2.imdecode(np.frombuffer(row["crop_png"], np.uint8), cv2.IMREAD_COLOR)
        assert (crop[..., ::-1] == frame.image[y0:y1, x0:x1]).all()
    assert [r["score"] for r in rows] == pytest.approx([0.9, 0.4])
    assert set(rows[0]) == set(INSTANCES_SCHEMA.names)
    assert pa.Table.from_pylist(rows, schema=INSTANCES_SCHEMA).num_rows == 2


def test_instances_empty_after_downscaling_are_left_out() -> None:
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, 0, 0] = True  # even pixel: halving samples the odd ones (pixel centres)
    masks[1, 2:6, 2:6] = True
    result = compact_result(frame_result(masks, [0.9, 0.4], [[1, 1], [3, 3]]))

    rows = instance_rows(decoded((4, 4), (8, 8)), result, CTX)

    assert [(r["instance_index"], r["score"], r["area"]) for r in rows] == [
        (0, pytest.approx(0.4), 4)
    ]


def test_frame_row_carries_maxima_timings_and_fits_the_schema() -> None:
    masks = torch.zeros(1, 6, 8, dtype=torch.bool)
    masks[0, 2, 2] = True
    result = compact_result(frame_result(masks, [0.7], [[2, 2]]))

    row = frame_row(
        decoded((12, 16), (6, 8)),
        result,
        CTX,
        num_instances=1,
        rows_ms=1.25,
        fused_map_uri="/run/maps/log/000003_fused.png",
    )

    assert row["status"] == "ok"
    assert (row["frame_height"], row["frame_width"], row["num_instances"]) == (12, 16, 1)
    assert row["max_anomaly_score"] == pytest.approx(0.0)
    assert row["max_fused_score"] == pytest.approx(1.0)
    assert (row["fused_map_min"], row["fused_map_max"]) == pytest.approx((-1.0, 1.0))
    assert (row["decode_ms"], row["inference_ms"], row["rows_ms"]) == (2.0, 7.0, 1.25)
    assert row["compact_ms"] == result.compact_ms > 0
    assert row["semantic_uri"] is None
    assert set(row) == set(FRAMES_SCHEMA.names)
    assert pa.Table.from_pylist([row], schema=FRAMES_SCHEMA).num_rows == 1


def test_fused_png_is_made_only_for_frames_whose_map_is_written() -> None:
    empty = compact_result(frame_result(torch.zeros(0, 6, 8, dtype=torch.bool), [], []))
    assert empty.fused_png is None
    assert (empty.fused_min, empty.fused_max) == pytest.approx((-1.0, 1.0))
    masks = torch.zeros(1, 6, 8, dtype=torch.bool)
    masks[0, 2, 2] = True
    assert compact_result(frame_result(masks, [0.7], [[2, 2]]), store_maps=False).fused_png is None
    assert compact_result(frame_result(masks, [0.7], [[2, 2]])).fused_png is not None


def test_fused_png_restores_the_map_within_one_quantisation_step() -> None:
    masks = torch.zeros(1, 6, 8, dtype=torch.bool)
    masks[0, 2, 2] = True
    result = frame_result(masks, [0.7], [[2, 2]])
    compact = compact_result(result)
    png = cv2.imdecode(np.frombuffer(compact.fused_png, np.uint8), cv2.IMREAD_UNCHANGED)
    restored = compact.fused_min + png / 255.0 * (compact.fused_max - compact.fused_min)
    step = (compact.fused_max - compact.fused_min) / 255.0
    assert png.dtype == np.uint8
    assert np.abs(restored - result.fused_score.numpy()).max() <= step / 2 + 1e-6


def test_error_row_names_stage_and_reason() -> None:
    failure = FrameFailure(REF, "decode", "FrameDecodeError", "3.png: file is empty (0 bytes)")
    row = error_row(failure, CTX)
    assert row == {
        "run_id": "20260101T000000Z-abc",
        "frame_key": "log/000003",
        "frame_uri": "/data/log/3.png",
        "log_id": "log",
        "frame_index": 3,
        "timestamp": 1.5,
        "stage": "decode",
        "error_type": "FrameDecodeError",
        "reason": "3.png: file is empty (0 bytes)",
        "config_fingerprint": "abc",
    }
    assert pa.Table.from_pylist([row], schema=ERRORS_SCHEMA).num_rows == 1


def test_progress_says_the_first_frame_at_once_then_at_most_every_interval_with_the_rate() -> None:
    progress = Progress(planned=1000, every=10.0)
    # Frame 1 at t=0 starts the clock (its time holds the model warm-up).
    lines = [progress.tick(t) for t in (0.0, 2.0, 4.0, 6.0, 8.0, 9.9, 10.0, 12.0, 30.0)]
    total = " (the run has 1000 frames in all)"
    assert lines == ["progress: this worker has processed its first frame" + total] + [None] * 5 + [
        "progress: this worker has processed 7 frames, 0.6 frames/s" + total,
        None,
        "progress: this worker has processed 9 frames, 0.3 frames/s" + total,
    ]
    fast = Progress(every=1.0)
    assert [fast.tick(t) for t in (0.0, 0.5, 1.0)][-1] == (
        "progress: this worker has processed 3 frames, 2.0 frames/s"
    )
