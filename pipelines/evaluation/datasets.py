"""Labelled anomaly-segmentation datasets the paper evaluates on, read from their release layouts.

Every dataset is listed cheaply first (:func:`list_samples` -> picklable :class:`EvalEntry`
rows holding paths only, what a Beam source fans out), then each entry is loaded on a worker
(:func:`load_sample` -> :class:`EvalSample`). Labels are normalised to ``0`` in-distribution,
``1`` anomaly, ``255`` void; instance ground truth is the 8-connected components of the anomaly
label (docs/method.md, "Evaluation protocol"), except in the world layout, whose instance ids are
read from its instance image.

Layouts (``root`` is the folder given to ``ugains evaluate --data``)::

    fishyscapes_lf   root/fishyscapes_lostandfound/<idx>_<frame>_labels.png   (0, 1, 255)
                     root/laf_images/<frame>_leftImg8bit.png
    road_anomaly     root/frame_list.json                                     (["a.jpg", ...])
                     root/frames/<name>.jpg
                     root/frames/<name>.labels/labels_semantic.png            (2 = anomaly)
    smiyc_ra21       root/images/<name>.<jpg|png|webp>
    smiyc_ro21       root/labels_masks/<name>_labels_semantic.png             (0, 1, 255)
    world            root/images/<key>.png                                    (a split or log of
                     root/anomaly/<key>.png  (0, 1, 255)                       ``ugains world``)
                     root/instances/<key>.png (uint16 instance ids)

The first four are the layouts the RbA and UGainS reference code read. The world's instance
ids come from its own instance image, so touching anomalies stay separate instances. For
SegmentMeIfYouCan only the validation frames have labels; exactly those (frames with a label
file) are evaluated.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

DATASETS: tuple[str, ...] = (
    "fishyscapes_lf",
    "road_anomaly",
    "smiyc_ra21",
    "smiyc_ro21",
    "world",
)

IN_DISTRIBUTION, ANOMALY, VOID = 0, 1, 255

LAYOUTS: dict[str, str] = {
    "fishyscapes_lf": (
        "<root>/fishyscapes_lostandfound/<index>_<frame>_labels.png (0 in-distribution, "
        "1 anomaly, 255 void) and <root>/laf_images/<frame>_leftImg8bit.png"
    ),
    "road_anomaly": (
        "<root>/frame_list.json (a JSON list of image names), <root>/frames/<name>.jpg and "
        "<root>/frames/<name>.labels/labels_semantic.png (2 = anomaly)"
    ),
    "smiyc_ra21": (
        "<root>/images/<name>.{jpg,png,webp} and <root>/labels_masks/<name>_labels_semantic.png "
        "(0 in-distribution, 1 anomaly, 255 void)"
    ),
    "smiyc_ro21": (
        "<root>/images/<name>.{jpg,png,webp} and <root>/labels_masks/<name>_labels_semantic.png "
        "(0 in-distribution, 1 anomaly, 255 void)"
    ),
    "world": (
        "<root>/images/<key>.png, <root>/anomaly/<key>.png (0 in-distribution, 1 anomaly, "
        "255 void) and <root>/instances/<key>.png (16-bit instance ids), as written by "
        "`ugains world generate` (a split folder such as <world>/test, or a drive log folder)"
    ),
}

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
_FISHYSCAPES_LABEL = re.compile(r"^\d+_(?P<frame>.+)_labels\.png$")


class DatasetError(ValueError):
    """A dataset root that does not have the expected layout; the message shows the layout."""


@dataclass(frozen=True)
class EvalEntry:
    """One labelled frame, by path: small and picklable."""

    dataset: str
    name: str
    image_path: str
    label_path: str
    instance_path: str | None = None  # instance ids image, where the dataset has one


@dataclass(frozen=True)
class EvalSample:
    """One labelled frame, loaded.

    Attributes:
        name: frame name, unique within its dataset.
        image_path: the RGB frame on disk (read on first access of ``image``).
        labels: ``[H, W]`` uint8, 0 in-distribution, 1 anomaly, 255 void.
        instance_ids: ``[H, W]`` int32, 0 = no anomaly, ``k > 0`` = anomaly instance ``k``
            (the 8-connected components of ``labels == 1``; in the world layout, the ids of
            its instance image on the anomaly pixels).
    """

    name: str
    image_path: str
    labels: np.ndarray = field(repr=False)
    instance_ids: np.ndarray = field(repr=False)

    @cached_property
    def image(self) -> np.ndarray:
        """``[H, W, 3]`` uint8 RGB, read lazily (and once)."""
        return read_rgb(self.image_path)


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as ``[H, W, 3]`` uint8 RGB."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"cannot read image {path} (missing or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label(path: str | Path) -> np.ndarray:
    """Read a label PNG as ``[H, W]`` uint8 (the red channel of a colour PNG, as RbA does)."""
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise DatasetError(f"cannot read label image {path} (missing or not an image)")
    if label.ndim == 3:
        label = label[..., 2]  # OpenCV is BGR(A): index 2 is red
    if label.dtype != np.uint8:
        raise DatasetError(f"label image {path} must be 8-bit, got {label.dtype}")
    return label


def instance_ids_from_labels(labels: np.ndarray) -> np.ndarray:
    """Anomaly instances as 8-connected components of ``labels == 1``.

    Args:
        labels: ``[H, W]`` integer, 1 = anomaly.

    Returns:
        ``[H, W]`` int32, 0 off anomalies, components numbered 1..K in raster order.
    """
    anomaly = (np.asarray(labels) == ANOMALY).astype(np.uint8)
    _, components = cv2.connectedComponents(anomaly, connectivity=8, ltype=cv2.CV_32S)
    return components


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")


def _require_dir(path: Path, dataset: str) -> Path:
    if not path.is_dir():
        raise DatasetError(
            f"{dataset}: {path} is not a directory; expected the layout {LAYOUTS[dataset]}"
        )
    return path


def _fishyscapes(root: Path) -> list[EvalEntry]:
    labels_dir = _require_dir(root / "fishyscapes_lostandfound", "fishyscapes_lf")
    images_dir = _require_dir(root / "laf_images", "fishyscapes_lf")
    entries = []
    for label_path in sorted(labels_dir.glob("*_labels.png")):
        match = _FISHYSCAPES_LABEL.match(label_path.name)
        if match is None:
            raise DatasetError(
                f"fishyscapes_lf: unexpected label file name {label_path.name}; expected "
                f"<index>_<frame>_labels.png"
            )
        image_path = images_dir / f"{match['frame']}_leftImg8bit.png"
        name = label_path.name[: -len("_labels.png")]
        entries.append(EvalEntry("fishyscapes_lf", name, str(image_path), str(label_path)))
    return entries


def _road_anomaly(root: Path) -> list[EvalEntry]:
    if not (root / "frame_list.json").is_file() and (root / "RoadAnomaly_jpg").is_dir():
        root = root / "RoadAnomaly_jpg"  # the archive's top folder
    frame_list = root / "frame_list.json"
    if not frame_list.is_file():
        raise DatasetError(
            f"road_anomaly: {frame_list} not found; expected the layout {LAYOUTS['road_anomaly']}"
        )
    try:
        names = json.loads(frame_list.read_text())
    except json.JSONDecodeError as error:
        raise DatasetError(f"road_anomaly: {frame_list} is not valid JSON: {error}") from None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise DatasetError(f"road_anomaly: {frame_list} must be a JSON list of image file names")
    frames = _require_dir(root / "frames", "road_anomaly")
    return [
        EvalEntry(
            "road_anomaly",
            Path(name).stem,
            str(frames / name),
            str(frames / f"{Path(name).stem}.labels" / "labels_semantic.png"),
        )
        for name in names
    ]


def _segment_me_if_you_can(root: Path, dataset: str) -> list[EvalEntry]:
    images_dir = _require_dir(root / "images", dataset)
    labels_dir = _require_dir(root / "labels_masks", dataset)
    images = {p.stem: p for p in images_dir.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES}
    entries = []
    for label_path in sorted(labels_dir.glob("*_labels_semantic.png")):
        name = label_path.name[: -len("_labels_semantic.png")]
        if name not in images:
            raise DatasetError(
                f"{dataset}: label {label_path} has no image {images_dir}/{name}"
                f"{{{','.join(_IMAGE_SUFFIXES)}}}"
            )
        entries.append(EvalEntry(dataset, name, str(images[name]), str(label_path)))
    return entries


def _world(root: Path) -> list[EvalEntry]:
    images_dir = _require_dir(root / "images", "world")
    labels_dir = _require_dir(root / "anomaly", "world")
    return [
        EvalEntry(
            "world",
            label_path.stem,
            str(images_dir / label_path.name),
            str(label_path),
            str(root / "instances" / label_path.name),
        )
        for label_path in sorted(labels_dir.glob("*.png"))
    ]


def read_instance_ids(path: str | Path, labels: np.ndarray) -> np.ndarray:
    """Instance ids from a 16-bit instance image, kept only on anomaly pixels (``[H, W]`` int32)."""
    ids = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if ids is None or ids.ndim != 2:
        raise DatasetError(f"cannot read instance image {path} (missing or not a 1-channel PNG)")
    if ids.shape != labels.shape:
        raise DatasetError(f"instance image {path} is {ids.shape}, its labels are {labels.shape}")
    return np.where(labels == ANOMALY, ids, 0).astype(np.int32)


def list_samples(dataset: str, root: str | Path) -> list[EvalEntry]:
    """List the labelled frames of ``dataset`` under ``root``, sorted by name; no pixels read.

    Raises:
        DatasetError: ``root`` is missing, lacks the dataset's layout, or holds no frame.
    """
    _check_dataset(dataset)
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"{dataset}: dataset root {root} does not exist; expected the layout {LAYOUTS[dataset]}"
        )
    if dataset == "fishyscapes_lf":
        entries = _fishyscapes(root)
    elif dataset == "road_anomaly":
        entries = _road_anomaly(root)
    elif dataset == "world":
        entries = _world(root)
    else:
        entries = _segment_me_if_you_can(root, dataset)
    if not entries:
        raise DatasetError(
            f"{dataset}: no labelled frames under {root}; expected the layout {LAYOUTS[dataset]}"
        )
    # Fail before any model runs, naming the first few missing files.
    missing = [
        path
        for entry in entries
        for path in (entry.image_path, entry.label_path, entry.instance_path)
        if path is not None and not Path(path).is_file()
    ]
    if missing:
        raise DatasetError(
            f"{dataset}: {len(missing)} file(s) missing under {root}, e.g. "
            f"{', '.join(missing[:3])}; expected the layout {LAYOUTS[dataset]}"
        )
    return sorted(entries, key=lambda entry: entry.name)


def normalise_labels(dataset: str, raw: np.ndarray) -> np.ndarray:
    """Map a dataset's raw label values to ``0`` / ``1`` / ``255`` (uint8 ``[H, W]``).

    RoadAnomaly marks anomalies with 2 and has no void: 2 -> 1, every other value -> 0 (as the
    RbA evaluation does). The other datasets already use 0 / 1 / 255; other values are errors.
    """
    _check_dataset(dataset)
    if dataset == "road_anomaly":
        return np.where(raw == 2, ANOMALY, IN_DISTRIBUTION).astype(np.uint8)
    unexpected = np.setdiff1d(np.unique(raw), [IN_DISTRIBUTION, ANOMALY, VOID])
    if unexpected.size:
        raise DatasetError(
            f"{dataset}: labels must be 0, 1 or 255, found {unexpected[:10].tolist()}"
        )
    return raw.astype(np.uint8, copy=False)


def load_sample(entry: EvalEntry) -> EvalSample:
    """Read the labels of ``entry`` (the image stays lazy) and derive its instance ids."""
    if not Path(entry.image_path).is_file():
        raise DatasetError(
            f"{entry.dataset}: image {entry.image_path} for frame {entry.name} is missing; "
            f"expected the layout {LAYOUTS[entry.dataset]}"
        )
    if not Path(entry.label_path).is_file():
        raise DatasetError(
            f"{entry.dataset}: label {entry.label_path} for frame {entry.name} is missing; "
            f"expected the layout {LAYOUTS[entry.dataset]}"
        )
    try:
        labels = normalise_labels(entry.dataset, read_label(entry.label_path))
    except DatasetError as error:
        raise DatasetError(f"{entry.label_path}: {error}") from None
    if entry.instance_path is not None:
        instance_ids = read_instance_ids(entry.instance_path, labels)
    else:
        instance_ids = instance_ids_from_labels(labels)
    return EvalSample(entry.name, entry.image_path, labels, instance_ids)
