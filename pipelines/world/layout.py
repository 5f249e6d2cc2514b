"""The world's files on disk, and how to read one frame back.

``ugains world generate --out ROOT`` writes::

    ROOT/world.json                       seed, frame size, classes, split sizes, generator version
    ROOT/<split>/images/<key>.png         the scene, RGB uint8 (sensor noise, blur and JPEG
                                          artefacts are already baked in)
    ROOT/<split>/semantic/<key>.png       uint8 Cityscapes train ids, 255 void; in ``ood``
                                          the pasted outliers are OUTLIER_ID (254), in
                                          ``val``/``test``/logs the anomalies are ANOMALY_ID (253)
    ROOT/<split>/instances/<key>.png      uint16 instance ids of the anomalies (val/test/logs)
                                          or of the pasted outliers (ood); 0 = none
    ROOT/<split>/anomaly/<key>.png        val/test/logs: 0 in-distribution, 1 anomaly, 255 void
                                          (Fishyscapes convention)

Splits: ``train`` (in-distribution only), ``ood`` (train scenes with outlier-exposure objects
pasted), ``val`` and ``test`` (anomalies), ``logs/<log_id>`` (drive logs; see ``logs``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

__all__ = [
    "ANOMALY_ID",
    "OUTLIER_ID",
    "SPLITS",
    "VOID_ID",
    "WorldFrame",
    "list_keys",
    "read_frame",
]

SPLITS = ("train", "ood", "val", "test")
VOID_ID = 255
OUTLIER_ID = 254  # outlier-exposure objects in the ood split's semantic maps
ANOMALY_ID = 253  # anomalies in the val/test/log semantic maps


@dataclass(frozen=True)
class WorldFrame:
    """One frame of the world.

    Attributes:
        key: file stem, unique within its split.
        image: ``[H, W, 3]`` uint8 RGB.
        semantic: ``[H, W]`` uint8 train ids (VOID_ID / OUTLIER_ID / ANOMALY_ID as above).
        instances: ``[H, W]`` uint16 object ids (anomalies or outliers), 0 = none.
        anomaly: ``[H, W]`` uint8 0/1/255, or None in ``train`` and ``ood``.
    """

    key: str
    image: np.ndarray
    semantic: np.ndarray
    instances: np.ndarray
    anomaly: np.ndarray | None


def split_dir(root: str | Path, split: str) -> Path:
    return Path(root) / split


def list_keys(root: str | Path, split: str) -> list[str]:
    """The frame keys of ``split`` (sorted), or a ValueError naming what is missing."""
    images = split_dir(root, split) / "images"
    if not images.is_dir():
        raise ValueError(f"world {root}: no split {split!r} (missing {images})")
    return sorted(p.stem for p in images.glob("*.png"))


def _read(path: Path, flags: int) -> np.ndarray:
    array = cv2.imread(str(path), flags)
    if array is None:
        raise ValueError(f"{path}: missing or not a readable PNG")
    return array


def read_frame(root: str | Path, split: str, key: str) -> WorldFrame:
    """Read one frame of ``split`` from the world at ``root``."""
    base = split_dir(root, split)
    image = cv2.cvtColor(_read(base / "images" / f"{key}.png", cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    semantic = _read(base / "semantic" / f"{key}.png", cv2.IMREAD_UNCHANGED)
    instances = _read(base / "instances" / f"{key}.png", cv2.IMREAD_UNCHANGED).astype(np.uint16)
    anomaly_path = base / "anomaly" / f"{key}.png"
    anomaly = _read(anomaly_path, cv2.IMREAD_UNCHANGED) if anomaly_path.is_file() else None
    return WorldFrame(key, image, semantic, instances, anomaly)
