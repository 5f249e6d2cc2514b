"""How well a mining run found the objects planted in a world drive log.

The drive log's ground truth (``logs/<log_id>_gt.json``, written by ``ugains world generate``)
lists every sighting: one anomaly visible in one frame, with its mask. A run's instances are
ranked by score (the ranking of ``candidates.parquet``, over all instances: the candidates
table itself stops at ``output.top_n``). The score answers the question a user asks of a
mining run: *of the K objects that are there to find, how many are in my top K?*

- **planted**: sightings of at least ``min_area`` pixels. Smaller ones (a few pixels at the
  horizon) and ``ignore`` ones (objects so close they fill the frame) are neutral: a
  candidate matching one is neither a hit nor a false alarm;
- **recall@K**: with K = the number planted, the fraction of planted sightings matched by a
  top-K instance of the same frame at mask IoU >= ``iou`` (greedy in rank order, each
  sighting matched once);
- **precision@K**: hits among the top-K instances that are not neutral;
- **gated frames**: frames holding a planted sighting that frame gating skipped.

Frames are matched by the world's file names (``logs/<log_id>/images/frame_<index>.png`` or
``logs/<log_id>.avi#frame=<index>``), not by the run's frame keys, so a run over a subset
of a log (a glob, a video range) is scored against the right frames.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import torch

from pipelines.elements import split_video_uri
from pipelines.mining.sinks import rank_candidates
from pipelines.mining.tables import read_table
from transforms.masks import decode_rle
from transforms.nms import mask_iou

__all__ = [
    "MiningScore",
    "RankedMatches",
    "counts_as_planted",
    "load_ground_truth",
    "match_run",
    "score_run",
    "world_frame_id",
]

MIN_AREA = 100
MATCH_IOU = 0.5
_IMAGE = re.compile(r"^frame_(\d+)\.png$")


@dataclass(frozen=True)
class MiningScore:
    planted: int  # sightings >= min_area, not ignored
    k: int
    hits: int  # planted sightings matched in the top K
    false_alarms: int  # top-K instances matching no sighting
    gated_frames_with_objects: int  # frames with a planted sighting that gating skipped
    frames_with_objects: int
    min_area: int = MIN_AREA
    iou: float = MATCH_IOU

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
            f"({self.hits} of {self.planted} planted objects >= {self.min_area} px found in "
            f"the top {self.k} at mask IoU >= {self.iou}), precision@{self.k} "
            f"{self.precision:.2f}, frames with objects skipped by gating "
            f"{self.gated_frames_with_objects} of {self.frames_with_objects}"
        )


def world_frame_id(uri: str) -> tuple[str, int] | None:
    """``(log_id, frame index)`` of a world log frame's URI, or None for other files."""
    path = PurePosixPath(uri.replace("\\", "/"))
    video = split_video_uri(path.name)
    if video and video[0].endswith(".avi"):
        return video[0].removesuffix(".avi"), video[1]
    image = _IMAGE.match(path.name)
    if image and path.parent.name == "images":
        return path.parent.parent.name, int(image[1])
    return None


def load_ground_truth(paths: list[str | Path]) -> list[dict]:
    """The sightings of one or more drive logs' ``*_gt.json`` files (each file read once)."""
    rows: list[dict] = []
    for path in dict.fromkeys(Path(p).resolve() for p in paths):
        try:
            data = json.loads(path.read_text())
            log_id = data["log_id"]
            rows.extend({**row, "log_id": log_id} for row in data["instances"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: not a world ground-truth file ({error})") from None
    return rows


def counts_as_planted(row: dict, min_area: int = MIN_AREA) -> bool:
    """A sighting that recall counts: at least ``min_area`` pixels and not ``ignore``."""
    return row["area"] >= min_area and not row.get("ignore", False)


@dataclass(frozen=True)
class RankedMatches:
    """A run's instances in rank order, each with the planted sighting it matches (or None)."""

    candidates: list[dict]  # instances rows, best first
    matches: list[dict | None]  # per candidate: its sighting (small/ignored ones included)
    frame_ids: dict[str, tuple[str, int] | None]  # run frame key -> (log id, frame index)
    planted: int
    frames_with_objects: int
    gated_frames_with_objects: int


def match_run(
    run_dir: str,
    sightings: list[dict],
    limit: int | None = None,
    min_area: int = MIN_AREA,
    iou: float = MATCH_IOU,
) -> RankedMatches:
    """Match the top ``limit`` instances (``None``: the number planted) of the run in
    ``run_dir`` to ``sightings``: greedily in rank order, a planted sighting at most once.

    Raises:
        ValueError: none of the run's frames is a frame of the ground truth's logs.
    """
    frames = read_table(run_dir, "frames").select(["frame_key", "frame_uri", "status"])
    frame_ids = {row["frame_key"]: world_frame_id(row["frame_uri"]) for row in frames.to_pylist()}
    status = {frame_ids[row["frame_key"]]: row["status"] for row in frames.to_pylist()}
    by_frame: dict[tuple[str, int], list[dict]] = {}
    for row in sightings:
        where = (row["log_id"], row["frame_index"])
        if where in status:  # only frames this run mined
            by_frame.setdefault(where, []).append(row)
    logs = {row["log_id"] for row in sightings}
    if not any(where is not None and where[0] in logs for where in status):
        raise ValueError(
            f"run {run_dir} mined no frame of the ground truth's logs {sorted(logs)} (frames "
            "are matched by their world file names: logs/<log_id>/images/frame_<index>.png)"
        )
    planted = sum(counts_as_planted(row, min_area) for rows in by_frame.values() for row in rows)
    with_objects = {
        w for w, rows in by_frame.items() if any(counts_as_planted(r, min_area) for r in rows)
    }
    gated = sum(status[w] == "gated" for w in with_objects)
    instances = read_table(run_dir, "instances")
    columns = ["frame_key", "score", "instance_id", "mask_rle", "frame_height", "frame_width"]
    ranked = rank_candidates(instances.select(columns).to_pylist())
    ranked = ranked[: planted if limit is None else limit]
    matched: set[tuple[str, int, int]] = set()
    matches: list[dict | None] = []
    for cand in ranked:
        h, w = cand["frame_height"], cand["frame_width"]
        rows = [
            row
            for row in by_frame.get(frame_ids[cand["frame_key"]], [])
            if not (
                (row["log_id"], row["frame_index"], row["instance_id"]) in matched
                and counts_as_planted(row, min_area)
            )
        ]
        best = None
        if rows:
            for row in rows:
                if (row["height"], row["width"]) != (h, w):
                    raise ValueError(
                        f"frame {cand['frame_key']} is {h}x{w} in the run but "
                        f"{row['height']}x{row['width']} in the ground truth"
                    )
            candidate = decode_rle(cand["mask_rle"], h, w)
            truth = [decode_rle(row["rle"], h, w) for row in rows]
            overlaps = mask_iou(torch.stack([candidate, *truth]))[0, 1:]  # one GEMM per frame
            top = int(torch.argmax(overlaps))  # ties: the first sighting
            best = rows[top] if float(overlaps[top]) >= iou else None
        if best is not None and counts_as_planted(best, min_area):
            matched.add((best["log_id"], best["frame_index"], best["instance_id"]))
        matches.append(best)
    return RankedMatches(ranked, matches, frame_ids, planted, len(with_objects), gated)


def score_run(
    run_dir: str, sightings: list[dict], min_area: int = MIN_AREA, iou: float = MATCH_IOU
) -> MiningScore:
    """Score the instances and frames of the mining run in ``run_dir`` against ``sightings``.

    Raises:
        ValueError: none of the run's frames is a frame of the ground truth's logs.
    """
    result = match_run(run_dir, sightings, None, min_area, iou)
    hits = sum(m is not None and counts_as_planted(m, min_area) for m in result.matches)
    false_alarms = sum(m is None for m in result.matches)
    # Small or ignored sightings are neither hits nor false alarms.
    return MiningScore(
        result.planted,
        result.planted,
        hits,
        false_alarms,
        result.gated_frames_with_objects,
        result.frames_with_objects,
        min_area,
        iou,
    )
