"""Object tracks of a run: a log's instances linked across frames, ranked as objects.

After the rows stage, each instance's light part (frame, box, score, embedding; no crop) is
grouped by drive log, and :func:`transforms.tracks.link_tracks` links the log's instances
into tracks. That yields the ``tracks`` table and a track id per instance, which joins the
instance rows as a side input (the heavy rows are not shuffled). Tracks of different logs
whose mean embeddings nearly coincide are flagged as near-duplicates of the best of them
(:func:`transforms.similarity.near_duplicates`): the same parked object seen on two drives.

Tracks span one run: frames of a log mined by two runs (incremental mining) make separate
tracks. A track is named by its first sighting's instance id.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import torch

from pipelines.config import OutputConfig, TracksConfig
from pipelines.mining.schema import EMBEDDING_DIM
from transforms.similarity import near_duplicates
from transforms.tracks import link_tracks

__all__ = [
    "LinkTracks",
    "TopObjects",
    "flag_near_duplicates",
    "sampling_step",
    "track_features",
    "tracks_of_log",
]

_FEATURES = ("instance_id", "frame_index", "score", "bbox_x", "bbox_y", "bbox_w", "bbox_h")


def track_features(row: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(log_id, what linking needs of an instance row)``: no crop, no mask."""
    return row["log_id"], {
        **{name: row[name] for name in _FEATURES},
        "embedding": np.asarray(row["embedding"], np.float16),
    }


def sampling_step(frame_index: np.ndarray) -> int:
    """The step between a log's sampled frames: the greatest common divisor of the gaps
    between its distinct frame indices (1 with fewer than two frames)."""
    gaps = np.diff(np.unique(frame_index))
    return max(int(np.gcd.reduce(gaps)), 1) if gaps.size else 1


def _unit_mean(embeddings: np.ndarray) -> np.ndarray:
    mean = embeddings.astype(np.float32).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return (mean / norm if norm > 0 else mean).astype(np.float16)


def tracks_of_log(
    log_id: str,
    features: Iterable[dict[str, Any]],
    config: TracksConfig,
    run_id: str,
    fingerprint: str,
) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    """Link one log's instances: ``([(instance_id, track_id)], [tracks rows])``.

    Instances are put in ``(frame_index, instance_id)`` order first, so the tracks do not
    depend on the order a runner delivers them in. Frames are counted in the log's sampling
    step (:func:`sampling_step`): a video mined with ``stride: 5`` has frames 0, 5, 10 ...,
    and 5 and 10 are consecutive for ``max_gap`` and the motion prediction.
    """
    rows = sorted(features, key=lambda f: (f["frame_index"], f["instance_id"]))
    if not rows:
        return [], []
    frame_index = np.array([f["frame_index"] for f in rows], np.int64)
    samples = (frame_index - frame_index[0]) // sampling_step(frame_index)
    embeddings = np.stack([f["embedding"] for f in rows]).astype(np.float32)
    has_embeddings = bool(np.abs(embeddings).sum(axis=1).all())
    boxes = [[f["bbox_x"], f["bbox_y"], f["bbox_w"], f["bbox_h"]] for f in rows]
    numbers = link_tracks(
        torch.from_numpy(samples),
        torch.tensor(boxes, dtype=torch.float32),
        torch.from_numpy(embeddings) if has_embeddings else None,
        max_gap=config.max_gap,
        max_shift=config.max_shift,
        min_similarity=config.min_similarity,
        merge_overlap=config.merge_overlap,
    ).tolist()
    members: dict[int, list[int]] = {}
    for index, number in enumerate(numbers):
        members.setdefault(number, []).append(index)
    assignments: list[tuple[str, str]] = []
    tracks: list[dict[str, Any]] = []
    for number in sorted(members):
        sightings = [rows[i] for i in members[number]]
        track_id = sightings[0]["instance_id"]
        scores = np.array([s["score"] for s in sightings], np.float32)
        best = max(sightings, key=lambda s: (s["score"], s["instance_id"]))
        assignments.extend((s["instance_id"], track_id) for s in sightings)
        tracks.append(
            {
                "run_id": run_id,
                "track_id": track_id,
                "log_id": log_id,
                "first_frame_index": sightings[0]["frame_index"],
                "last_frame_index": sightings[-1]["frame_index"],
                "frames_seen": len({s["frame_index"] for s in sightings}),
                "instances": len(sightings),
                "best_instance_id": best["instance_id"],
                "best_score": best["score"],
                "mean_score": float(scores.mean()),
                "min_score": float(scores.min()),
                "embedding": _unit_mean(embeddings[members[number]]),
                "duplicate_of": None,
                "config_fingerprint": fingerprint,
            }
        )
    return assignments, tracks


def flag_near_duplicates(tracks: list[dict[str, Any]], threshold: float) -> list[dict[str, Any]]:
    """``tracks`` rows with ``duplicate_of`` set: the best-ranked similar track of another log.

    Tracks without an embedding (all zeros: no SAM) are never near-duplicates.
    """
    if not tracks:
        return []
    if threshold <= 0:
        raise ValueError(f"the near-duplicate threshold must be > 0, got {threshold}")
    tracks = sorted(tracks, key=lambda t: t["track_id"])  # runner order must not matter
    embeddings = torch.from_numpy(
        np.stack([np.asarray(t["embedding"], np.float32) for t in tracks])
    ).reshape(len(tracks), EMBEDDING_DIM)
    logs = {log: code for code, log in enumerate(sorted({t["log_id"] for t in tracks}))}
    groups = torch.tensor([logs[t["log_id"]] for t in tracks])
    scores = torch.tensor([t["best_score"] for t in tracks], dtype=torch.float64)
    # A zero row (no SAM) has cosine 0 to every row, under any threshold > 0.
    representative = near_duplicates(embeddings, groups, scores, threshold)
    return [
        {**track, "duplicate_of": tracks[int(r)]["track_id"] if r >= 0 else None}
        for track, r in zip(tracks, representative.tolist(), strict=True)
    ]


def _with_track_id(row: dict[str, Any], track_ids: dict[str, str]) -> dict[str, Any]:
    return {**row, "track_id": track_ids.get(row["instance_id"])}


class LinkTracks(beam.PTransform):
    """Instance rows -> ``(instance rows with track_id, tracks rows)``."""

    def __init__(self, config: TracksConfig, run_id: str, fingerprint: str) -> None:
        super().__init__()
        self.config = config
        self.run_id = run_id
        self.fingerprint = fingerprint

    def expand(self, instances: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        config, run_id, fingerprint = self.config, self.run_id, self.fingerprint
        linked = (
            instances
            | "TrackFeatures" >> beam.Map(track_features)
            | "GroupByLog" >> beam.GroupByKey()
            | "Link"
            >> beam.MapTuple(
                lambda log, features: tracks_of_log(log, features, config, run_id, fingerprint)
            )
        )
        track_ids = linked | "TrackIds" >> beam.FlatMap(lambda linked: linked[0])
        tracks = (
            linked
            | "Tracks" >> beam.FlatMap(lambda linked: linked[1])
            | "AllTracks" >> beam.combiners.ToList()
            | "NearDuplicates"
            >> beam.FlatMap(flag_near_duplicates, threshold=config.duplicate_similarity)
        )
        tagged = instances | "SetTrackId" >> beam.Map(
            _with_track_id, track_ids=beam.pvalue.AsDict(track_ids)
        )
        return tagged, tracks


def _track_rank_key(track: dict[str, Any]) -> tuple[float, str]:
    return (track["best_score"], track["best_instance_id"])


def _index_top(top: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The top tracks by best instance id. A near-duplicate keeps its flag only when its
    representative is a candidate too: otherwise the candidates would hide the object."""
    chosen = {track["track_id"] for track in top}
    return {
        track["best_instance_id"]: {
            **track,
            "duplicate_of": track["duplicate_of"] if track["duplicate_of"] in chosen else None,
        }
        for track in top
    }


def _best_sighting(row: dict[str, Any], top: dict[str, dict[str, Any]]) -> Iterator[dict[str, Any]]:
    track = top.get(row["instance_id"])
    if track is not None:
        yield {**row, "track_frames": track["frames_seen"], "duplicate_of": track["duplicate_of"]}


class TopObjects(beam.PTransform):
    """``{"instances": rows, "tracks": rows}`` -> the top ``output.top_n`` tracks (at most
    ``max_per_log`` per log), each as its best instance row with its track's frames and
    near-duplicate flag (kept only when the track it repeats is a candidate too), ranked
    1..N."""

    def __init__(self, output: OutputConfig) -> None:
        super().__init__()
        self.output = output

    def expand(self, inputs: dict[str, beam.PCollection]) -> beam.PCollection:
        from pipelines.mining.sinks import rank_candidates

        instances, tracks = inputs["instances"], inputs["tracks"]
        if self.output.max_per_log is not None:
            tracks = (
                tracks
                | "KeyByLog" >> beam.Map(lambda t: (t["log_id"], t))
                | "TopPerLog"
                >> beam.combiners.Top.PerKey(self.output.max_per_log, key=_track_rank_key)
                | "PerLogTracks" >> beam.FlatMap(lambda keyed: keyed[1])
            )
        top = (
            tracks
            | "TopTracks" >> beam.combiners.Top.Of(self.output.top_n, key=_track_rank_key)
            | "ByBestInstance" >> beam.Map(_index_top)
        )
        return (
            instances
            | "BestSightings" >> beam.FlatMap(_best_sighting, top=beam.pvalue.AsSingleton(top))
            | "AllBest" >> beam.combiners.ToList()
            | "Rank" >> beam.FlatMap(rank_candidates)
        )
