"""The data of ``ugains train mask2former``: a split on disk as a sequence of training frames.

:class:`WorldSplit` reads one split of a world (``ugains world generate``);
:class:`CityscapesSplit` one split of a Cityscapes-layout folder
(``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` + ``gtFine/<split>/<city>/
*_gtFine_labelTrainIds.png``). Both read lazily and yield ``(image [3, H, W] uint8 RGB,
labels [H, W] int64)``, the *sources* of :func:`models.training.mask2former.train_mask2former`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

__all__ = ["CityscapesSplit", "WorldSplit"]


class WorldSplit(Sequence):
    """Frames of one world split as ``(image [3, H, W] uint8, labels [H, W] int64)``, lazily."""

    def __init__(self, root: str | Path, split: str) -> None:
        from pipelines.world.layout import list_keys

        self.root, self.split = Path(root), split
        self.keys = list_keys(root, split)
        if not self.keys:
            raise ValueError(f"world {root}: split {split!r} has no frames ({root}/{split}/images)")

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from pipelines.world.layout import read_frame

        frame = read_frame(self.root, self.split, self.keys[index])
        return _to_tensors(
            frame.image, frame.semantic, self.root / self.split / "semantic" / f"{frame.key}.png"
        )

    def describe(self) -> str:
        return f"world {self.root} split {self.split!r} ({len(self)} frames)"


class CityscapesSplit(Sequence):
    """Cityscapes-layout frames (``labelTrainIds``) of one split, lazily."""

    def __init__(self, root: str | Path, split: str = "train") -> None:
        self.root, self.split = Path(root), split
        images = self.root / "leftImg8bit" / split
        if not images.is_dir():
            raise ValueError(f"cityscapes {root}: missing {images}")
        self.pairs: list[tuple[Path, Path]] = []
        for image in sorted(images.glob("*/*_leftImg8bit.png")):
            stem = image.name[: -len("_leftImg8bit.png")]
            label = (
                self.root
                / "gtFine"
                / split
                / image.parent.name
                / f"{stem}_gtFine_labelTrainIds.png"
            )
            if not label.is_file():
                raise ValueError(f"{label}: missing (the train-id labels of {image})")
            self.pairs.append((image, label))
        if not self.pairs:
            raise ValueError(f"cityscapes {root}: no */*_leftImg8bit.png under {images}")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, label_path = self.pairs[index]
        image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"{image_path}: missing or not a readable image")
        labels = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
        if labels is None:
            raise ValueError(f"{label_path}: missing or not a readable image")
        return _to_tensors(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), labels, label_path)

    def describe(self) -> str:
        return f"cityscapes {self.root} split {self.split!r} ({len(self)} frames)"


def _to_tensors(
    image: np.ndarray, labels: np.ndarray, label_path: Path
) -> tuple[torch.Tensor, torch.Tensor]:
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise ValueError(
            f"{label_path}: labels must be a single-channel 8-bit PNG, got "
            f"{labels.dtype} {labels.shape}"
        )
    if labels.shape != image.shape[:2]:
        raise ValueError(
            f"{label_path}: labels {labels.shape} do not match the image {image.shape[:2]}"
        )
    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()
    return pixels, torch.from_numpy(labels.astype(np.int64))
