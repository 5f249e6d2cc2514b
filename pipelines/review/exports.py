"""What reviewers decided, out of the dataset: tagged views, FiftyOne exports, the outlier pool."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import cv2

from pipelines.outlier_pool import PoolObject, write_pool_files
from pipelines.review.fields import ANOMALIES, EXPORT_FORMATS, REVIEW_TAGS, ReviewError
from pipelines.review.samples import box_mask, pixel_box

if TYPE_CHECKING:
    import fiftyone as fo

logger = logging.getLogger(__name__)


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
    dataset: fo.Dataset,
    out: str | Path,
    tag: str = "confirmed",
    overwrite: bool = False,
    with_rejected: bool = False,
) -> Path:
    """Write each detection carrying ``tag`` as an RGB crop of its box and a binary mask.

    The pool format of :mod:`pipelines.outlier_pool` (crops, masks, a manifest with each
    object's source frame, box in frame pixels, scores and the reviewer's ``decision``): the
    outlier pool of ``ugains train mask2former --outliers``. ``with_rejected``: the detections
    tagged ``rejected`` follow as rejected candidates (hard negatives for
    ``--pool-rejected``). Returns the manifest's path.
    """
    out = Path(out)
    _clear_out(out, overwrite)
    objects = _pool_objects(dataset, tag, "rejected" if tag == "rejected" else "confirmed")
    if with_rejected and tag != "rejected":
        objects += _pool_objects(dataset, "rejected", "rejected")
    manifest = write_pool_files(out, objects, dataset=dataset.name, tag=tag)
    logger.debug("wrote %d %s objects to %s", len(objects), tag, out)
    return manifest


def _pool_objects(dataset: fo.Dataset, tag: str, decision: str) -> list[PoolObject]:
    """The detections carrying ``tag`` as pool objects (crop and mask of the box)."""
    objects = []
    for sample in tagged_view(dataset, tag).select_fields(
        [ANOMALIES, "log_id", "frame_key", "run_id"]
    ):
        image = cv2.imread(sample.filepath, cv2.IMREAD_COLOR)
        if image is None:
            raise ReviewError(f"cannot read frame image {sample.filepath} ({sample.frame_key})")
        height, width = image.shape[:2]
        for detection in sample[ANOMALIES].detections:
            x, y, w, h = pixel_box(detection, width, height)
            record = {
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
                "decision": decision,
            }
            crop = image[y : y + h, x : x + w]
            objects.append(PoolObject(detection.id, crop, box_mask(detection, w, h), record))
    return objects
