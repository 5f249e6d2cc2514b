"""How well a mining run's tracks and embeddings serve curation, against a world log's truth.

Each instance of the run is matched to the planted object it shows: the ground-truth sighting
of its frame that holds the largest part of its mask, if that is at least half of the mask
(``SHOW_FRACTION``). A part of an object counts: the world's SAM often outlines part of an
object, and its crop still shows that object to a reviewer; a mask mostly on the road around
a small object does not. Then, over the matched instances:

- **track purity**: of the pairs of instances of two different frames that a track links, the
  share that show one object;
- **track completeness**: of the pairs of instances that show one object in two different
  frames, the share that one track links;
- **distinct objects in the top K** (K = planted objects, those with a sighting of at least
  100 px): the planted objects the top-K candidates show, ranking sightings (no tracks) or
  objects (each track's best sighting);
- **more like this, precision@10**: for each instance on a planted object, its 10 most
  similar instances outside its own track; the share showing an object of the same kind.
  ``chance`` is the same share for 10 instances drawn at random.

:func:`score_sighting_tracks` measures the linking alone: the ground-truth sightings
themselves, with boxes from the truth and embeddings pooled by the shipped SAM inside the true
masks, linked as a run links its instances.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from pipelines.config import TracksConfig
from pipelines.mining.schema import EMBEDDING_DIM, embedding_matrix
from pipelines.mining.tables import read_table
from pipelines.world.scoring import counts_as_planted, world_frame_id
from transforms.embeddings import mask_embeddings
from transforms.masks import decode_rle
from transforms.similarity import most_similar
from transforms.tracks import link_tracks

__all__ = [
    "CurationScore",
    "TrackScore",
    "match_instances",
    "score_curation",
    "score_sighting_tracks",
    "sighting_embeddings",
]

NEIGHBOURS = 10
SHOW_FRACTION = 0.5


@dataclass(frozen=True)
class TrackScore:
    """Pair counts of a linking against the truth (see the module doc)."""

    linked_pairs: int
    pure_pairs: int
    object_pairs: int
    tracks: int
    objects: int

    @property
    def purity(self) -> float:
        return self.pure_pairs / self.linked_pairs if self.linked_pairs else float("nan")

    @property
    def completeness(self) -> float:
        return self.pure_pairs / self.object_pairs if self.object_pairs else float("nan")

    def summary(self) -> str:
        return (
            f"purity {self.purity:.3f} ({self.pure_pairs}/{self.linked_pairs} linked pairs), "
            f"completeness {self.completeness:.3f} ({self.pure_pairs}/{self.object_pairs})"
        )


@dataclass(frozen=True)
class CurationScore:
    instances: int  # instances of the run
    matched: int  # of them, showing a planted object (any size)
    tracks: int
    linking: TrackScore  # over the matched instances
    k: int  # the top K counted (default: planted objects, with a sighting >= 100 px)
    planted: int  # planted objects in the mined frames
    distinct_by_instance: int  # planted objects among the top-K sightings
    distinct_by_track: int  # planted objects among the top-K objects
    shown_by_instance: int  # top-K sightings that show a planted object (repeats counted)
    shown_by_track: int  # top-K objects that show a planted object (repeats counted)
    queries: int  # instances on planted objects, each a "more like this" query
    precision_at_10: float
    chance_at_10: float

    def summary(self) -> str:
        return (
            f"tracks: {self.linking.summary()}; {self.instances} instances -> {self.tracks} "
            f"tracks; distinct planted objects in the top {self.k}: {self.distinct_by_instance} "
            f"by sighting (in {self.shown_by_instance} entries), {self.distinct_by_track} by "
            f"object (in {self.shown_by_track}); more like this precision@10 "
            f"{self.precision_at_10:.3f} (chance {self.chance_at_10:.3f}, {self.queries} queries)"
        )


def match_instances(
    instances: list[dict], sightings: list[dict], frame_ids: dict[str, tuple[str, int] | None]
) -> list[dict | None]:
    """The sighting each instance shows (holding >= SHOW_FRACTION of its mask), or None."""
    by_frame: dict[tuple[str, int], list[dict]] = {}
    for row in sightings:
        by_frame.setdefault((row["log_id"], row["frame_index"]), []).append(row)
    out: list[dict | None] = []
    for row in instances:
        truth = by_frame.get(frame_ids.get(row["frame_key"]) or ("", -1), [])
        if not truth:
            out.append(None)
            continue
        h, w = row["frame_height"], row["frame_width"]
        mask = decode_rle(row["mask_rle"], h, w).reshape(-1).float()
        objects = torch.stack([decode_rle(t["rle"], h, w).reshape(-1) for t in truth]).float()
        inside = objects @ mask  # pixels of the mask on each object
        best = int(torch.argmax(inside))
        shown = float(inside[best]) >= SHOW_FRACTION * max(float(mask.sum()), 1.0)
        out.append(truth[best] if shown else None)
    return out


def _pairs(counts: Counter) -> int:
    return sum(n * (n - 1) // 2 for n in counts.values())


def _cross_frame_pairs(*keys: list, frames: list) -> int:
    """Pairs of items in different frames that agree on every key."""
    together = Counter(zip(*keys, strict=True))
    same_frame = Counter(zip(*keys, frames, strict=True))
    return _pairs(together) - _pairs(same_frame)


def _track_score(tracks: list, objects: list, frames: list) -> TrackScore:
    """Pairs of items of different frames linked by ``tracks``, against ``objects``."""
    return TrackScore(
        linked_pairs=_cross_frame_pairs(tracks, frames=frames),
        pure_pairs=_cross_frame_pairs(tracks, objects, frames=frames),
        object_pairs=_cross_frame_pairs(objects, frames=frames),
        tracks=len(set(tracks)),
        objects=len(set(objects)),
    )


def sighting_embeddings(root: Path, sightings: list[dict], prompter: Any) -> np.ndarray:
    """``[N, 256]`` float32: ``prompter``'s (a :class:`models.sam.SamPrompter`) image
    features pooled inside each sighting's true mask; frames read from ``root/logs``."""
    out = np.zeros((len(sightings), EMBEDDING_DIM), np.float32)
    by_frame: dict[tuple[str, int], list[int]] = {}
    for i, row in enumerate(sightings):
        by_frame.setdefault((row["log_id"], row["frame_index"]), []).append(i)
    for (log_id, index), rows in sorted(by_frame.items()):
        path = root / "logs" / log_id / "images" / f"frame_{index:06d}.png"
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"{path}: cannot read the frame of a ground-truth sighting")
        frame = torch.from_numpy(np.ascontiguousarray(image[..., ::-1])).permute(2, 0, 1)
        features = prompter.encode(frame[None])[0]
        masks = torch.stack(
            [
                decode_rle(sightings[i]["rle"], sightings[i]["height"], sightings[i]["width"])
                for i in rows
            ]
        )
        out[rows] = (
            mask_embeddings(features, masks.to(features.device), prompter.image_size).cpu().numpy()
        )
    return out


def score_sighting_tracks(
    sightings: list[dict], embeddings: np.ndarray, config: TracksConfig, min_area: int = 20
) -> tuple[TrackScore, float, float]:
    """Link the true sightings of at least ``min_area`` px (not ignored) per log as a run links
    instances; ``(track score, more-like-this precision@10, chance)`` over those sightings."""
    keep = [i for i, r in enumerate(sightings) if r["area"] >= min_area and not r.get("ignore")]
    tracks: list[tuple[str, int]] = []
    objects: list[tuple[str, int]] = []
    frames: list[int] = []
    for log_id in sorted({sightings[i]["log_id"] for i in keep}):
        rows = [i for i in keep if sightings[i]["log_id"] == log_id]
        numbers = link_tracks(
            torch.tensor([sightings[i]["frame_index"] for i in rows]),
            torch.tensor([sightings[i]["bbox_xywh"] for i in rows], dtype=torch.float32),
            torch.from_numpy(embeddings[rows]),
            max_gap=config.max_gap,
            max_shift=config.max_shift,
            min_similarity=config.min_similarity,
            merge_overlap=config.merge_overlap,
        ).tolist()
        tracks += [(log_id, n) for n in numbers]
        objects += [(log_id, sightings[i]["track_id"]) for i in rows]
        frames += [sightings[i]["frame_index"] for i in rows]
    kinds = [sightings[i]["kind"] for i in keep]
    precision, chance, _ = _same_kind_neighbours(
        embeddings[keep], np.array(kinds), np.array([str(o) for o in objects]), range(len(keep))
    )
    return _track_score(tracks, objects, frames), precision, chance


def score_curation(run_dir: str, sightings: list[dict], k: int | None = None) -> CurationScore:
    """Score the tracks, ranking and embeddings of the run in ``run_dir`` (see module doc);
    ``k``: the top K to count objects in (default: the number of planted objects)."""
    frames = read_table(run_dir, "frames", ["frame_key", "frame_uri"]).to_pylist()
    frame_ids = {row["frame_key"]: world_frame_id(row["frame_uri"]) for row in frames}
    mined = set(frame_ids.values())
    columns = [
        "instance_id",
        "frame_key",
        "frame_height",
        "frame_width",
        "mask_rle",
        "score",
        "track_id",
        "embedding",
    ]
    table = read_table(run_dir, "instances", columns)
    instances = table.drop_columns(["embedding"]).to_pylist()
    for row in instances:  # a run without tracks: each sighting is its own object
        row["track_id"] = row["track_id"] or row["instance_id"]
    embeddings = embedding_matrix(table["embedding"])
    matches = match_instances(instances, sightings, frame_ids)
    objects = [None if m is None else (m["log_id"], m["track_id"]) for m in matches]

    matched = [i for i, o in enumerate(objects) if o is not None]
    linking = _track_score(
        [instances[i]["track_id"] for i in matched],
        [objects[i] for i in matched],
        [instances[i]["frame_key"] for i in matched],
    )

    planted = {
        (row["log_id"], row["track_id"])
        for row in sightings
        if (row["log_id"], row["frame_index"]) in mined and counts_as_planted(row)
    }
    k = len(planted) if k is None else k
    ranked = sorted(range(len(instances)), key=lambda i: _rank(instances[i]), reverse=True)
    by_instance = [objects[i] for i in ranked[:k] if objects[i] in planted]
    best_of_track: dict[str, int] = {}
    for i in ranked:
        best_of_track.setdefault(instances[i]["track_id"], i)
    top_tracks = sorted(best_of_track.values(), key=lambda i: _rank(instances[i]), reverse=True)
    by_track_top = [objects[i] for i in top_tracks[:k] if objects[i] in planted]

    kinds = np.array([m["kind"] if m is not None else "" for m in matches])
    tracks = np.array([row["track_id"] for row in instances])
    queries = [i for i, o in enumerate(objects) if o in planted]
    precision, chance, queries = _same_kind_neighbours(embeddings, kinds, tracks, queries)
    return CurationScore(
        instances=len(instances),
        matched=len(matched),
        tracks=len({row["track_id"] for row in instances}),
        linking=linking,
        k=k,
        planted=len(planted),
        distinct_by_instance=len(set(by_instance)),
        distinct_by_track=len(set(by_track_top)),
        shown_by_instance=len(by_instance),
        shown_by_track=len(by_track_top),
        queries=queries,
        precision_at_10=precision,
        chance_at_10=chance,
    )


def _rank(row: dict) -> tuple[float, str]:
    return (row["score"], row["instance_id"])


def _same_kind_neighbours(
    embeddings: np.ndarray, kinds: np.ndarray, groups: np.ndarray, queries: Any
) -> tuple[float, float, int]:
    """Mean share of same-kind rows among each query's 10 most similar rows outside its own
    group (track or object), the same share over all such rows (chance), and the queries."""
    vectors = torch.from_numpy(np.ascontiguousarray(embeddings, np.float32))
    precisions, chances = [], []
    for q in queries:
        others = np.flatnonzero(groups != groups[q])
        if len(others) == 0:
            continue
        _, order = most_similar(vectors[q : q + 1], vectors[others], NEIGHBOURS)
        neighbours = others[order[0].numpy()]
        precisions.append(float(np.mean(kinds[neighbours] == kinds[q])))
        chances.append(float(np.mean(kinds[others] == kinds[q])))
    if not precisions:
        return float("nan"), float("nan"), 0
    return float(np.mean(precisions)), float(np.mean(chances)), len(precisions)
