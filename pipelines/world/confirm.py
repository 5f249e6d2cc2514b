"""A reviewer who knows the truth: confirm a world mining run's candidates from ground truth.

On real drive logs a person tags candidates ``confirmed`` in FiftyOne and ``ugains review
pool`` writes them out. On a world log the ground truth stands in for that person: the top
candidates of a run that match a planted sighting (mask IoU >= 0.5, at least 100 px, each
sighting once, as :func:`pipelines.world.scoring.match_run` scores a run) are confirmed, and
written as an outlier pool (:mod:`pipelines.outlier_pool`) with the run's masks, not the
truth's: the pool holds what mining found, as a reviewer's pool would. The top candidates that
touch no sighting at all are written as ``rejected`` (the reviewer's "not an anomaly"); those
that touch one without matching it (a part of an object, or a mask spilling off it) are neither.

:func:`truth_pool` is the ceiling of any review: every planted sighting of the logs, confirmed,
with its true outline (a reviewer who finds every object and redraws every mask). The loop
benchmark fine-tunes on it to show how far a better review could move the next round.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from pipelines.outlier_pool import PoolObject, write_pool_files
from pipelines.world.scoring import (
    MIN_AREA,
    counts_as_planted,
    load_ground_truth,
    match_run,
)
from transforms.masks import decode_rle

__all__ = ["CONFIRM_IOU", "confirm_run", "truth_pool"]

CONFIRM_IOU = 0.3


def confirm_run(
    run_dir: str | Path,
    ground_truth: list[str | Path],
    out: str | Path,
    top: int = 50,
    min_area: int = MIN_AREA,
    iou: float = CONFIRM_IOU,
) -> Path:
    """Write the confirmed objects among the run's ``top`` candidates as a pool at ``out``,
    with the candidates that touch no sighting as rejected ones.

    Frames are read from the world's own images (``logs/<log_id>/images/frame_<index>.png``
    beside each ``*_gt.json``), so runs over a log's video confirm the same objects.
    Returns the manifest's path.

    Raises:
        ValueError: ``out`` is not empty, a ground-truth file is not one, the run mined no
            frame of those logs, or a frame image is missing.
    """
    out = _new_folder(out)
    sightings = load_ground_truth(list(ground_truth))
    logs_root = _logs_root(ground_truth)
    result = match_run(str(run_dir), sightings, top, min_area, iou)
    run_id = Path(run_dir).name
    by_frame: dict[tuple[str, int], list[dict]] = {}
    for row in sightings:
        by_frame.setdefault((row["log_id"], row["frame_index"]), []).append(row)
    objects = []
    for rank, (cand, sighting) in enumerate(zip(result.candidates, result.matches, strict=True)):
        log_id, index = result.frame_ids[cand["frame_key"]]
        height, width = cand["frame_height"], cand["frame_width"]
        mask = decode_rle(cand["mask_rle"], height, width).numpy()
        if sighting is not None:
            if not counts_as_planted(sighting, min_area):
                continue
            decision = "confirmed"
        elif any(
            (decode_rle(row["rle"], height, width).numpy() & mask).any()
            for row in by_frame.get((log_id, index), [])
        ):
            continue  # a part of an object, or spilling off one: neither verdict
        else:
            decision = "rejected"
        record = {
            "run_id": run_id,
            "instance_id": cand["instance_id"],
            "log_id": log_id,
            "frame_key": cand["frame_key"],
            "rank": rank + 1,
            "score": round(float(cand["score"]), 6),
            "decision": decision,
            "kind": sighting.get("kind") if sighting else None,
            "track_id": sighting.get("track_id") if sighting else None,
        }
        path = _frame_path(logs_root, log_id, index)
        objects.append(_cut_out(f"{run_id}_{rank + 1:04d}", path, mask, record))
    return write_pool_files(out, objects, source="world ground truth", run_id=run_id, top=top)


def truth_pool(ground_truth: list[str | Path], out: str | Path, min_area: int = MIN_AREA) -> Path:
    """Write every planted sighting (>= ``min_area`` px) of the ``ground_truth`` logs as a
    confirmed pool object with its true mask, into the new folder ``out``; return the manifest.

    Raises:
        ValueError: ``out`` is not empty, a ground-truth file is not one, the logs plant no
            sighting of ``min_area`` px, or a frame image is missing.
    """
    out = _new_folder(out)
    logs_root = _logs_root(ground_truth)
    planted = [
        row for row in load_ground_truth(list(ground_truth)) if counts_as_planted(row, min_area)
    ]
    if not planted:
        raise ValueError(
            f"{', '.join(map(str, ground_truth))}: no planted sighting of >= {min_area} px"
        )
    objects = []
    for number, row in enumerate(planted, start=1):
        log_id, index = row["log_id"], row["frame_index"]
        record = {
            "run_id": "ground-truth",
            "instance_id": f"{log_id}/{index:06d}/track{row.get('track_id')}",
            "log_id": log_id,
            "frame_key": f"{log_id}/{index:06d}",
            "score": None,
            "decision": "confirmed",
            "kind": row.get("kind"),
            "track_id": row.get("track_id"),
        }
        mask = decode_rle(row["rle"], row["height"], row["width"]).numpy()
        objects.append(
            _cut_out(f"truth_{number:04d}", _frame_path(logs_root, log_id, index), mask, record)
        )
    return write_pool_files(out, objects, source="world ground truth: every planted sighting")


def _new_folder(out: str | Path) -> Path:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out}: not empty (a pool goes into a new folder)")
    return out


def _logs_root(ground_truth: list[str | Path]) -> dict[str, Path]:
    """log id -> the folder holding ``<log_id>/images`` (beside its ``*_gt.json``)."""
    return {
        json.loads(Path(p).read_text())["log_id"]: Path(p).resolve().parent for p in ground_truth
    }


def _frame_path(logs_root: dict[str, Path], log_id: str, index: int) -> Path:
    return logs_root[log_id] / log_id / "images" / f"frame_{index:06d}.png"


def _cut_out(name: str, frame: Path, mask: np.ndarray, record: dict) -> PoolObject:
    """The pool object of ``mask`` (``[H, W]`` bool) on ``frame``: both cut to the mask's box."""
    image = cv2.imread(str(frame), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{frame}: missing or not a readable image")
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    about = {
        **record,
        "frame": str(frame),
        "bbox_xywh": [int(x0), int(y0), int(x1 - x0), int(y1 - y0)],
        "area": int(mask.sum()),
    }
    return PoolObject(name, image[y0:y1, x0:x1], mask[y0:y1, x0:x1], about)
