"""One FiftyOne sample per frame: masked detections, heatmap, semantic map; review carry-over."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.review.fields import (
    HEATMAP_LONG_SIDE,
    LABEL,
    MATCH_IOU,
    ReviewError,
)

if TYPE_CHECKING:
    import fiftyone as fo

logger = logging.getLogger(__name__)


def detection_of(row: dict[str, Any]) -> fo.Detection:
    import fiftyone as fo

    height, width = row["frame_height"], row["frame_width"]
    x, y, w, h = row["bbox_x"], row["bbox_y"], row["bbox_w"], row["bbox_h"]
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width or y + h > height:
        raise ReviewError(
            f"bbox of {row['instance_id']} ({x}, {y}, {w}, {h}) is empty or outside the "
            f"{width}x{height} frame"
        )
    crop = decode_mask(row)[y : y + h, x : x + w]
    if int(crop.sum()) != row["area"]:
        raise ReviewError(
            f"mask of {row['instance_id']} has {int(crop.sum())} pixels inside its bbox, "
            f"but area = {row['area']}"
        )
    # Track fields: null when tracks were off, and in schema-1 runs.
    track = {
        name: row[name]
        for name in ("track_id", "track_frames", "duplicate_of")
        if row.get(name) is not None
    }
    embedding = row.get("embedding")
    if embedding is not None and any(embedding):
        track["embedding"] = [round(float(v), 5) for v in embedding]
    return fo.Detection(
        label=LABEL,
        bounding_box=[x / width, y / height, w / width, h / height],
        mask=crop,
        confidence=float(row["score"]),
        rank=int(row["rank"]),
        sam_iou=float(row["sam_iou"]),
        area=int(row["area"]),
        mined_instance_id=row["instance_id"],
        **track,
    )


def pixel_box(detection: fo.Detection, width: int, height: int) -> tuple[int, int, int, int]:
    """``(x, y, w, h)`` in frame pixels; the size is the mask's, so crops match it exactly."""
    x, y, w, h = detection.bounding_box
    x0, y0 = round(x * width), round(y * height)
    if detection.mask is not None:
        mask_h, mask_w = detection.mask.shape
        return x0, y0, mask_w, mask_h
    # Both edges rounded (not the size): a box that ends at the frame's edge stays inside it.
    return x0, y0, round((x + w) * width) - x0, round((y + h) * height) - y0


def box_mask(detection: fo.Detection, w: int, h: int) -> np.ndarray:
    # A detection without a mask (e.g. added by hand) covers its whole box.
    return detection.mask if detection.mask is not None else np.ones((h, w), dtype=bool)


def mask_iou(a: fo.Detection, b: fo.Detection, width: int, height: int) -> float:
    """IoU of two detections' masks in frame pixels (masks cropped to their boxes)."""
    ax, ay, aw, ah = pixel_box(a, width, height)
    bx, by, bw, bh = pixel_box(b, width, height)
    x0, y0 = min(ax, bx), min(ay, by)
    x1, y1 = max(ax + aw, bx + bw), max(ay + ah, by + bh)
    canvas_a = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    canvas_b = np.zeros_like(canvas_a)
    canvas_a[ay - y0 : ay - y0 + ah, ax - x0 : ax - x0 + aw] = box_mask(a, aw, ah)
    canvas_b[by - y0 : by - y0 + bh, bx - x0 : bx - x0 + bw] = box_mask(b, bw, bh)
    union = np.logical_or(canvas_a, canvas_b).sum()
    return float(np.logical_and(canvas_a, canvas_b).sum() / union) if union else 0.0


def carry_review(
    old: Iterable[fo.Detection], new: list[fo.Detection], width: int, height: int
) -> list[fo.Detection]:
    """New detections with the ids and tags of the old ones they match, plus unmatched
    old detections that carry tags (review decisions are never dropped silently)."""
    free = list(range(len(new)))
    kept = []
    for previous in old:
        ious = [(mask_iou(previous, new[i], width, height), i) for i in free]
        best_iou, best = max(ious, default=(0.0, -1))
        if best_iou >= MATCH_IOU:
            free.remove(best)
            new[best].id = previous.id
            new[best].tags = list(previous.tags)
        elif previous.tags:
            kept.append(previous)
    return new + kept


def read_png(path: Path, key: str) -> np.ndarray:
    """An 8-bit grey fused-map PNG of the run; ``key`` names its frame in the error."""
    import cv2

    png = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if png is None or png.ndim != 2 or png.dtype != np.uint8:
        raise ReviewError(f"fused map of {key} ({path}) is not a readable 8-bit grey PNG")
    return png


def png_scores(png: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Fused scores ``[H, W]`` float32 of an 8-bit map quantised over ``[lo, hi]``."""
    return (lo + png.astype(np.float32) / 255.0 * (hi - lo)).astype(np.float32)


def display_scores(png: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The scores the App shows: ``[h, w]`` float32, long side at most ``HEATMAP_LONG_SIDE``.

    Kept small because FiftyOne stores the array in the sample (the full-resolution PNG
    stays in the run: ``png_path``); area averaging keeps the scores of large objects exact.
    """
    import cv2

    scores = png_scores(png, lo, hi)
    long_side = max(scores.shape)
    if long_side <= HEATMAP_LONG_SIDE:
        return scores
    height, width = scores.shape
    size = (
        round(width * HEATMAP_LONG_SIDE / long_side),
        round(height * HEATMAP_LONG_SIDE / long_side),
    )
    return cv2.resize(scores, size, interpolation=cv2.INTER_AREA)


def heatmap_scores(heatmap: fo.Heatmap) -> np.ndarray:
    """The fused scores ``[H, W]`` float32 of an ``anomaly_map`` at the run's resolution."""
    png = read_png(Path(heatmap.png_path), heatmap.png_path)
    return png_scores(png, heatmap.score_min, heatmap.score_max)


def decode_mask(row: dict[str, Any]) -> np.ndarray:
    """The full-frame boolean mask ``[frame_height, frame_width]`` of an instance row."""
    from transforms.masks import decode_rle  # imports torch: not at `review --help` time

    try:
        mask = decode_rle(row["mask_rle"], row["frame_height"], row["frame_width"])
    except ValueError as error:
        raise ReviewError(f"mask_rle of {row['instance_id']}: {error}") from None
    return mask.numpy()
