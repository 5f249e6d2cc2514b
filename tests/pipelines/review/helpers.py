"""Independent readers of a run's tables and of FiftyOne detections, shared by the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from pycocotools import mask as mask_utils


def table_rows(run_dir: Path, table: str) -> list[dict[str, Any]]:
    """All rows of ``candidates`` (one file) or of a sharded table (``frames``, ...)."""
    if table == "candidates":
        return pq.read_table(run_dir / "candidates.parquet").to_pylist()
    return [
        row
        for f in sorted((run_dir / table).glob("*.parquet"))
        for row in pq.read_table(f).to_pylist()
    ]


def full_mask(detection: Any, width: int, height: int) -> np.ndarray:
    """The detection's mask pasted into an empty frame at its box."""
    x, y, _, _ = detection.bounding_box
    x, y = round(x * width), round(y * height)
    h, w = detection.mask.shape
    full = np.zeros((height, width), dtype=bool)
    full[y : y + h, x : x + w] = detection.mask
    return full


def rle_mask(row: dict[str, Any]) -> np.ndarray:
    """The full-frame mask of an instance row, decoded with pycocotools."""
    rle = {"size": [row["frame_height"], row["frame_width"]], "counts": row["mask_rle"]}
    return mask_utils.decode(rle).astype(bool)


def detections_by_instance(dataset: Any) -> dict[str, tuple[Any, Any]]:
    """mined_instance_id -> (sample, detection) over the whole dataset."""
    return {
        det["mined_instance_id"]: (sample, det)
        for sample in dataset
        for det in sample.anomalies.detections
    }
