"""How well a mining run found the objects planted in a world drive log.

The drive log's ground truth (``logs/<log_id>_gt.json``, written by ``ugains world generate``)
lists every sighting: one anomaly visible in one frame, with its mask. A run's candidates are
ranked instances. The score follows the question a user asks of a mining run: *of the K objects
that are there to find, how many are in my top K?*

- **planted**: sightings of at least ``min_area`` pixels (smaller ones are a few pixels at
  the horizon; a candidate matching one is neither a hit nor a false alarm);
- **recall@K**: with K = the number planted, the fraction of planted sightings matched by a
  top-K candidate of the same frame at mask IoU >= ``iou`` (greedy in rank order, each
  sighting matched once);
- **precision@K**: hits among the top-K candidates, not counting those on small sightings;
- **gated frames**: frames holding a planted sighting that frame gating skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.sinks import read_table
from transforms.masks import decode_rle

__all__ = ["MiningScore", "load_ground_truth", "score_run"]

MIN_AREA = 100
MATCH_IOU = 0.5


@dataclass(frozen=True)
class MiningScore:
    planted: int  # sightings >= min_area
    k: int
    hits: int  # planted sightings matched in the top K
    false_alarms: int  # top-K candidates matching no sighting
    gated_frames_with_objects: int  # frames with a planted sighting that gating skipped
    frames_with_objects: int

    @property
    def recall(self) -> float:
        return self.hits / self.planted if self.planted else float("nan")

    @property
    def precision(self) -> float:
        counted = self.hits + self.false_alarms
        return self.hits / counted if counted else float("nan")

    def summary(self) -> str:
        return (
            f"against the log's ground truth: recall@{self.k} {self.recall:.2f} "
            f"({self.hits} of {self.planted} planted objects >= {MIN_AREA} px found in the top "
            f"{self.k}), precision@{self.k} {self.precision:.2f}, frames with objects skipped "
            f"by gating {self.gated_frames_with_objects} of {self.frames_with_objects}"
        )


def load_ground_truth(paths: list[str | Path]) -> list[dict]:
    """The sightings of one or more drive logs' ``*_gt.json`` files."""
    rows: list[dict] = []
    for path in paths:
        try:
            rows.extend(json.loads(Path(path).read_text())["instances"])
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(f"{path}: not a world ground-truth file ({error})") from None
    return rows


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def score_run(
    run_dir: str, sightings: list[dict], min_area: int = MIN_AREA, iou: float = MATCH_IOU
) -> MiningScore:
    """Score the candidates and frames of the mining run in ``run_dir`` against ``sightings``."""
    frames = read_table(run_dir, "frames").select(
        ["frame_key", "status", "frame_height", "frame_width"]
    )
    frame_rows = {row["frame_key"]: row for row in frames.to_pylist()}
    by_frame: dict[str, list[dict]] = {}
    for row in sightings:
        if row["frame_key"] in frame_rows:  # only frames this run mined
            by_frame.setdefault(row["frame_key"], []).append(row)
    planted = sum(row["area"] >= min_area for rows in by_frame.values() for row in rows)
    with_objects = {k for k, rows in by_frame.items() if any(r["area"] >= min_area for r in rows)}
    gated = sum(frame_rows[k]["status"] == "gated" for k in with_objects)
    k = planted
    candidates = read_table(run_dir, "candidates").slice(0, k)
    candidates = candidates.select(["frame_key", "mask_rle", "frame_height", "frame_width"])
    matched: set[tuple[str, int]] = set()
    hits = false_alarms = 0
    masks: dict[tuple[str, int], np.ndarray] = {}
    for cand in candidates.to_pylist():
        h, w = cand["frame_height"], cand["frame_width"]
        mask = decode_rle(cand["mask_rle"], h, w).numpy().astype(bool)
        best, best_iou = None, iou
        for row in by_frame.get(cand["frame_key"], []):
            key = (row["frame_key"], row["instance_id"])
            if key in matched:
                continue
            if key not in masks:
                masks[key] = decode_rle(row["rle"], h, w).numpy().astype(bool)
            overlap = _iou(mask, masks[key])
            if overlap >= best_iou:
                best, best_iou = row, overlap
        if best is None:
            false_alarms += 1
        elif best["area"] >= min_area:
            matched.add((best["frame_key"], best["instance_id"]))
            hits += 1
        else:  # a small sighting found: neither a hit nor a false alarm
            matched.add((best["frame_key"], best["instance_id"]))
    return MiningScore(planted, k, hits, false_alarms, gated, len(with_objects))
