"""Building (upserting) the persistent review dataset from a run, and its saved views."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.review.fields import (
    ANOMALIES,
    CITYSCAPES_MASK_TARGETS,
    LABEL,
    OBJECTS_VIEW,
    PATCHES_VIEW,
    RANKED_VIEW,
    SAMPLE_FORMAT,
    SIMILARITY_KEY,
    TRACKS_VIEW,
    ReviewError,
)
from pipelines.review.runs import MiningRun, frame_images, local_path, read_run
from pipelines.review.samples import carry_review, detection_of, display_scores, read_png

if TYPE_CHECKING:
    import fiftyone as fo

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildSummary:
    """What ``build_dataset`` did, in frames."""

    added: int
    updated: int
    unchanged: int


def build_dataset(run_dir: str | Path, name: str, top_k: int = 50) -> BuildSummary:
    """Create or update the persistent dataset ``name`` from a mining run (upsert by frame)."""
    import fiftyone as fo

    if top_k < 1:
        raise ReviewError(f"top_k must be >= 1, got {top_k}")
    run = read_run(run_dir)
    images = frame_images(run)
    if fo.dataset_exists(name):
        dataset = fo.load_dataset(name)
    else:
        dataset = fo.Dataset(name, persistent=True)
        dataset.classes = {ANOMALIES: [LABEL]}
    existing = {}
    if len(dataset) and "ugains_hash" not in dataset.get_field_schema():
        raise ReviewError(f"dataset {name!r} exists but was not built by `ugains review build`")
    if len(dataset):
        keys, ids, hashes = dataset.values(["frame_key", "id", "ugains_hash"])
        existing = {k: (i, h) for k, i, h in zip(keys, ids, hashes, strict=True)}
    added, updated, unchanged = [], 0, 0
    for key in sorted(run.candidates):
        rows = run.candidates[key]
        content_hash = _content_hash(run.frames[key], rows)
        sample_id, old_hash = existing.get(key, (None, None))
        if old_hash == content_hash:  # decided before any mask or map is decoded
            unchanged += 1
            continue
        detections = [detection_of(row) for row in rows]
        fields = sample_fields(run, key, images[key], detections, content_hash)
        if sample_id is None:
            added.append(fo.Sample(**fields))
            continue
        sample = dataset[sample_id]
        old = sample[ANOMALIES].detections if sample[ANOMALIES] else []
        width, height = rows[0]["frame_width"], rows[0]["frame_height"]
        fields[ANOMALIES].detections = carry_review(old, detections, width, height)
        schema = dataset.get_field_schema()
        for field, value in fields.items():
            # An optional output no run stored yet (maps, semantic, timestamps) has no field
            # in the dataset, and FiftyOne cannot type a new field from None: leave it out.
            if value is None and field not in schema:
                continue
            sample[field] = value
        sample.save()
        updated += 1
    if added:
        dataset.add_samples(added, progress=False)
    _update_dataset_info(dataset, run)
    _show_review_fields(dataset)
    changed = bool(added or updated)
    _save_views(dataset, top_k, refresh_patches=changed)
    if changed or not dataset.has_brain_run(SIMILARITY_KEY):
        index_similarity(dataset)
    summary = BuildSummary(added=len(added), updated=updated, unchanged=unchanged)
    logger.debug("dataset %s from %s: %s", name, run.path, summary)  # the command prints it
    return summary


def _content_hash(frame: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    # The sample format is part of the hash: a build by a newer version rewrites old samples.
    blob = json.dumps([SAMPLE_FORMAT, frame, rows], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def sample_fields(
    run: MiningRun, key: str, image: Path, detections: list[fo.Detection], content_hash: str
) -> dict[str, Any]:
    import fiftyone as fo

    frame, rows = run.frames[key], run.candidates[key]
    fields: dict[str, Any] = {
        "filepath": str(image),
        "metadata": fo.ImageMetadata(width=frame["frame_width"], height=frame["frame_height"]),
        ANOMALIES: fo.Detections(detections=detections),
        "log_id": frame["log_id"],
        "frame_key": key,
        "frame_index": frame["frame_index"],
        "timestamp": frame["timestamp"],
        "frame_uri": frame["frame_uri"],
        "run_id": frame["run_id"],
        "max_score": max(float(r["score"]) for r in rows),
        "max_anomaly_score": float(frame["max_anomaly_score"]),
        "max_fused_score": float(frame["max_fused_score"]),
        "ugains_hash": content_hash,
        "anomaly_map": None,
        "semantic": None,
    }
    if frame["fused_map_uri"]:
        png = local_path(frame["fused_map_uri"], run.path, f"fused map of {key}")
        lo, hi = float(frame["fused_map_min"]), float(frame["fused_map_max"])
        fields["anomaly_map"] = fo.Heatmap(
            map=display_scores(read_png(png, key), lo, hi),
            range=[lo, hi] if hi > lo else [lo, lo + 1.0],
            png_path=str(png),
            score_min=lo,
            score_max=hi,
        )
    if frame["semantic_uri"]:
        fields["semantic"] = fo.Segmentation(
            mask_path=str(local_path(frame["semantic_uri"], run.path, f"semantic map of {key}"))
        )
    return fields


def _update_dataset_info(dataset: fo.Dataset, run: MiningRun) -> None:
    any_frame = next(iter(run.frames.values()), {})
    info = dict(dataset.info)
    runs = dict(info.get("runs", {}))
    run_id = any_frame.get("run_id") or run.info.get("run_id")
    runs[str(run_id)] = run.info
    info.update(
        run_id=run_id,
        config_fingerprint=any_frame.get("config_fingerprint"),
        checkpoints={
            "mask2former": any_frame.get("mask2former_checkpoint"),
            "sam": any_frame.get("sam_checkpoint"),
        },
        ugains_version=any_frame.get("ugains_version"),
        runs=runs,
    )
    if info != dataset.info:
        dataset.info = info
        dataset.save()
    has_semantic = any(f["semantic_uri"] for f in run.frames.values())
    if has_semantic and dataset.mask_targets.get("semantic") != CITYSCAPES_MASK_TARGETS:
        dataset.mask_targets = {**dataset.mask_targets, "semantic": CITYSCAPES_MASK_TARGETS}
        dataset.save()


def _show_review_fields(dataset: fo.Dataset) -> None:
    """Tick the sidebar boxes a reviewer needs (the detections, the frame's best score) once;
    a reviewer's own later choice is kept."""
    import fiftyone as fo

    if dataset.app_config.active_fields is None:
        paths = [ANOMALIES, "max_score"]
        dataset.app_config.active_fields = fo.ActiveFields(paths=paths)
        dataset.save()


def _save_view_if_changed(dataset: fo.Dataset, name: str, view: fo.DatasetView) -> None:
    from bson import json_util

    stages = [json_util.dumps(s) for s in view._serialize(include_uuids=False)]
    if dataset.has_saved_view(name):
        if list(dataset._get_saved_view_doc(name).view_stages) == stages:
            return
        dataset.delete_saved_view(name)
    dataset.save_view(name, view)


def _save_views(dataset: fo.Dataset, top_k: int, refresh_patches: bool) -> None:
    from bson import ObjectId
    from fiftyone import ViewField as F

    if ANOMALIES not in dataset.get_field_schema():
        return  # nothing was ever added: runs without candidates
    ids, scores = dataset.values(
        [f"{ANOMALIES}.detections.id", f"{ANOMALIES}.detections.confidence"], unwind=True
    )
    # Ties broken by id so that the view is the same for the same data.
    best = sorted(zip(scores, ids, strict=True), key=lambda p: (-p[0], p[1]))[:top_k]
    top_ids = sorted(ObjectId(i) for _, i in best)
    top = dataset.filter_labels(ANOMALIES, F("_id").is_in(top_ids)).sort_by(
        "max_score", reverse=True
    )
    _save_view_if_changed(dataset, f"top-{top_k}", top)
    _save_view_if_changed(dataset, RANKED_VIEW, dataset.sort_by("max_score", reverse=True))
    for log_id in dataset.distinct("log_id"):
        view = dataset.match(F("log_id") == log_id).sort_by("frame_index")
        _save_view_if_changed(dataset, f"log-{log_id}", view)
    if refresh_patches or not dataset.has_saved_view(PATCHES_VIEW):
        patches = dataset.to_patches(ANOMALIES).sort_by(f"{ANOMALIES}.confidence", reverse=True)
        # One object once: near-duplicates of another log's object are collapsed into it.
        objects = (
            dataset.filter_labels(ANOMALIES, F("duplicate_of") == None)  # noqa: E711
            .to_patches(ANOMALIES)
            .sort_by(f"{ANOMALIES}.confidence", reverse=True)
        )
        views = [(PATCHES_VIEW, patches), (OBJECTS_VIEW, objects)]
        if dataset.count(f"{ANOMALIES}.detections.track_id"):
            # Every sighting of an object together (runs that ranked sightings keep several
            # per track; runs that ranked objects, one), groups by their best sighting.
            tracks = (
                dataset.to_patches(ANOMALIES)
                .match(F(f"{ANOMALIES}.track_id") != None)  # noqa: E711
                .group_by(f"{ANOMALIES}.track_id", order_by=f"{ANOMALIES}.confidence", reverse=True)
            )
            views.append((TRACKS_VIEW, tracks))
        for name, view in views:
            if dataset.has_saved_view(name):
                dataset.delete_saved_view(name)
            dataset.save_view(name, view)


def index_similarity(dataset: fo.Dataset) -> int:
    """(Re)build the FiftyOne Brain similarity index of the detections' stored embeddings
    (``SIMILARITY_KEY``, cosine, scikit-learn backend: offline); returns the patches indexed.

    "More like this" in the App (select patches, then sort by similarity) uses it. Detections
    without an embedding (added by hand, or mined without SAM) are left out.
    """
    import fiftyone.brain as fob
    from fiftyone import ViewField as F

    if dataset.has_brain_run(SIMILARITY_KEY):
        dataset.delete_brain_run(SIMILARITY_KEY)
    if ANOMALIES not in dataset.get_field_schema():
        return 0
    view = dataset.filter_labels(ANOMALIES, F("embedding") != None)  # noqa: E711
    ids, vectors = view.values(["id", f"{ANOMALIES}.detections.embedding"])
    embeddings = {
        sample_id: np.asarray(rows, np.float32)
        for sample_id, rows in zip(ids, vectors, strict=True)
        if rows
    }
    if not embeddings:
        return 0
    fob.compute_similarity(
        view,
        patches_field=ANOMALIES,
        embeddings=embeddings,
        brain_key=SIMILARITY_KEY,
        backend="sklearn",
        metric="cosine",
        progress=False,
    )
    return sum(len(rows) for rows in embeddings.values())
