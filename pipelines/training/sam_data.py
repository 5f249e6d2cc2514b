"""The data of ``ugains train sam``: frames on disk -> step batches of frames and segments.

Sources: the ``train`` and ``ood`` splits of a world (:func:`world_sources`) or one split of a
Cityscapes-layout folder (:func:`cityscapes_sources`: ``leftImg8bit/<split>/<city>/
*_leftImg8bit.png`` with ``gtFine/<split>/<city>/*_gtFine_labelTrainIds.png``, and
``*_gtFine_instanceIds.png`` beside it when present). Training segments (:func:`frame_segments`):
the 8-connected components of every class of the semantic map (void 255 left out, components
under :data:`MIN_SEGMENT_PIXELS` pixels dropped) and every instance as its own segment,
covering the class components under it. :class:`SegmentFrames` reads and resizes the frames;
:class:`StepBatches` orders them by step, so that a resumed run sees the batches of an
uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from torchvision.transforms.v2 import functional as TF

from models.sam import resized_size

__all__ = [
    "SegmentFrames",
    "StepBatches",
    "cityscapes_sources",
    "frame_segments",
    "world_sources",
]

VOID_LABEL = 255
MIN_SEGMENT_PIXELS = 20


def frame_segments(
    semantic: np.ndarray, instances: np.ndarray | None = None, min_pixels: int = MIN_SEGMENT_PIXELS
) -> np.ndarray:
    """Training segments of one frame: ``[H, W]`` int64 ids ``0..n-1``, ``-1`` = none.

    Args:
        semantic: ``[H, W]`` integer class ids, ``VOID_LABEL`` (255) = void.
        instances: ``[H, W]`` integer object ids, 0 = none (or None).
        min_pixels: segments smaller than this are dropped (their pixels become -1).

    Class components (8-connected, computed on the pixels no instance covers) are numbered
    first, by class then by OpenCV's component order; instances follow in ascending id order.
    """
    semantic = np.asarray(semantic)
    covered = np.zeros(semantic.shape, bool) if instances is None else np.asarray(instances) > 0
    segments = np.full(semantic.shape, -1, np.int64)
    next_id = 0
    free = ~covered
    for label in np.unique(semantic[free & (semantic != VOID_LABEL)]):
        count, components, stats, _ = cv2.connectedComponentsWithStats(
            ((semantic == label) & free).astype(np.uint8), connectivity=8
        )
        keep = stats[1:, cv2.CC_STAT_AREA] >= min_pixels  # component 0 = background
        lookup = np.full(count, -1, np.int64)
        lookup[1:][keep] = next_id + np.arange(int(keep.sum()))
        next_id += int(keep.sum())
        mask = components > 0
        segments[mask] = lookup[components[mask]]
    if instances is not None and covered.any():
        ids, inverse, areas = np.unique(
            np.asarray(instances)[covered], return_inverse=True, return_counts=True
        )
        keep = areas >= min_pixels
        lookup = np.full(ids.shape, -1, np.int64)
        lookup[keep] = next_id + np.arange(int(keep.sum()))
        segments[covered] = lookup[inverse.reshape(-1)]
    return segments


def _read_png(path: Path, flags: int) -> np.ndarray:
    array = cv2.imread(str(path), flags)
    if array is None:
        raise ValueError(f"{path}: missing or not a readable PNG")
    return array


class SegmentFrames(Dataset):
    """Frames as ``(image [3, h, w] uint8 RGB, segments [h, w] int64)`` at the model's size.

    ``sources`` are ``(kind, root, split, key)`` tuples (kind ``"world"`` or ``"cityscapes"``;
    for Cityscapes ``key`` is the image path). Frames are resized to ``resized_size(H, W, S)``
    (torchvision antialiased bilinear, as :func:`models.sam.preprocess_frames`; segments by
    nearest neighbour) so that the training loop sees no further resize.
    """

    def __init__(self, sources: Sequence[tuple[str, Path, str, str]], image_size: int) -> None:
        self.sources = list(sources)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.sources)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, str]:
        """``(image [H, W, 3] uint8, semantic [H, W], instances [H, W] | None, name)``."""
        kind, root, split, key = self.sources[index]
        if kind == "world":
            from pipelines.world.layout import read_frame

            frame = read_frame(root, split, key)
            return frame.image, frame.semantic, frame.instances, f"{root}/{split}/{key}"
        image_path = Path(key)
        stem = image_path.name[: -len("_leftImg8bit.png")]
        labels = root / "gtFine" / split / image_path.parent.name
        image = cv2.cvtColor(_read_png(image_path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        semantic = _read_png(labels / f"{stem}_gtFine_labelTrainIds.png", cv2.IMREAD_UNCHANGED)
        instance_path = labels / f"{stem}_gtFine_instanceIds.png"
        instances = None
        if instance_path.is_file():
            ids = _read_png(instance_path, cv2.IMREAD_UNCHANGED).astype(np.int64)
            instances = np.where(ids >= 1000, ids, 0)  # Cityscapes: class * 1000 + index
        return image, semantic, instances, str(image_path)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, semantic, instances, name = self.read(index)
        if image.ndim != 3 or semantic.shape != image.shape[:2]:
            raise ValueError(
                f"{name}: labels {semantic.shape} do not match the image {image.shape[:2]}"
            )
        if semantic.ndim != 2 or (instances is not None and instances.shape != semantic.shape):
            raise ValueError(f"{name}: semantic / instance maps must be single-channel [H, W]")
        segments = torch.from_numpy(frame_segments(semantic, instances))
        frame = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        h, w = resized_size(*semantic.shape, self.image_size)
        if (h, w) != tuple(semantic.shape):
            frame = TF.resize(frame, [h, w], antialias=True)
            segments = torch.nn.functional.interpolate(
                segments[None, None].double(), (h, w), mode="nearest-exact"
            )[0, 0].long()
        return frame.contiguous(), segments


def world_sources(root: Path) -> list[tuple[str, Path, str, str]]:
    """The ``train`` and ``ood`` frames of the world at ``root`` (at least one split needed)."""
    from pipelines.world.layout import list_keys

    sources = []
    for split in ("train", "ood"):
        if (root / split / "images").is_dir():
            sources += [("world", root, split, key) for key in list_keys(root, split)]
    if not sources:
        raise ValueError(f"world {root}: no frames in {root}/train/images or {root}/ood/images")
    return sources


def cityscapes_sources(root: Path, split: str) -> list[tuple[str, Path, str, str]]:
    images = root / "leftImg8bit" / split
    if not images.is_dir():
        raise ValueError(f"cityscapes {root}: missing {images}")
    sources = [
        ("cityscapes", root, split, str(path))
        for path in sorted(images.glob("*/*_leftImg8bit.png"))
    ]
    if not sources:
        raise ValueError(f"cityscapes {root}: no */*_leftImg8bit.png under {images}")
    return sources


class StepBatches(Sampler[list[int]]):
    """Index batches of steps ``start, start + 1, ...`` forever, a function of (seed, step).

    The frames are shuffled once per epoch (``torch.randperm`` seeded by ``(seed, epoch)``) and
    read in that order, ``batch_size`` per step, running on into the next epoch.
    """

    def __init__(self, size: int, batch_size: int, seed: int, start: int = 0) -> None:
        self.size, self.batch_size, self.seed, self.start = size, batch_size, seed, start

    def _order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=generator)

    def __iter__(self) -> Iterator[list[int]]:
        position = self.start * self.batch_size
        epoch, order = -1, None
        while True:
            batch = []
            for _ in range(self.batch_size):
                if position // self.size != epoch:
                    epoch = position // self.size
                    order = self._order(epoch)
                batch.append(int(order[position % self.size]))
                position += 1
            yield batch


def _collate(items: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    sizes = {tuple(segments.shape) for _, segments in items}
    if len(sizes) > 1:
        raise ValueError(
            f"frames of one batch must share a size after resizing, got {sorted(sizes)}"
        )
    return torch.stack([image for image, _ in items]), torch.stack([seg for _, seg in items])
