"""What Mask2Former training makes of a label map: augmented crops, transformers' mask
targets, and RbA's outlier hinge on an anomaly score.

Label maps hold train ids ``0..K-1``, :data:`VOID_ID` (no target), :data:`OUTLIER_ID`
(pasted outlier objects) and :data:`INLIER_ID` (pasted objects a reviewer rejected as
anomalies: in-distribution, of no known class; the inlier hinge applies, the class loss not).
:func:`augment` rescales, crops and flips a frame with its labels; :func:`semantic_targets`
turns a batch of label maps into the ``mask_labels`` / ``class_labels`` of transformers'
semantic loss; :func:`outlier_hinge_map` and :func:`rba_outlier_loss` are RbA's (Nayal et al.
ICCV 2023) squared hinges on the inlier and outlier pixels. The training loop is
:func:`models.training.mask2former.train_mask2former`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from models.mask2former import IMAGENET_MEAN
from models.training.paste import paste_pool_sample, paste_random_objects

__all__ = [
    "INLIER_ID",
    "OUTLIER_ID",
    "VOID_ID",
    "augment",
    "outlier_hinge_map",
    "paste_outliers",
    "rba_outlier_loss",
    "semantic_targets",
]

VOID_ID = 255
OUTLIER_ID = 254
INLIER_ID = 252  # 253 is the world's anomaly id in its test and log labels


def semantic_targets(labels: Tensor, num_classes: int = 19) -> tuple[list[Tensor], list[Tensor]]:
    """Semantic label maps -> transformers' ``mask_labels`` / ``class_labels``.

    Args:
        labels: ``[B, H, W]`` integer train ids; values outside ``[0, num_classes)`` (void 255,
            outliers 254, ...) belong to no mask.

    Returns:
        ``mask_labels``: B float32 tensors ``[N_b, H, W]`` of 0/1, one binary mask per class
        present in image b, ascending class order; ``class_labels``: B int64 tensors ``[N_b]``.
    """
    if labels.ndim != 3 or labels.dtype.is_floating_point:
        raise ValueError(
            f"labels must be an integer [B, H, W] tensor, got {labels.dtype} {tuple(labels.shape)}"
        )
    classes = torch.arange(num_classes, device=labels.device)
    one_hot = labels.long().unsqueeze(1) == classes.view(1, -1, 1, 1)  # [B, K, H, W]
    present = one_hot.flatten(2).any(dim=2)  # [B, K]
    masks = [one_hot[b, present[b]].float() for b in range(labels.shape[0])]
    ids = [classes[present[b]] for b in range(labels.shape[0])]
    return masks, ids


def outlier_hinge_map(
    scores: Tensor,
    labels: Tensor,
    *,
    num_classes: int = 19,
    inlier_threshold: float = 0.0,
    outlier_threshold: float = 5.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """RbA's per-pixel squared hinges on an anomaly score (higher = more anomalous).

    Inlier pixels (``0 <= label < num_classes`` or :data:`INLIER_ID`) pay
    ``relu(score - inlier_threshold)^2``, outlier pixels (:data:`OUTLIER_ID`)
    ``relu(outlier_threshold - score)^2``; others pay 0.

    Args:
        scores: ``[B, H, W]`` float; labels: ``[B, H, W]`` integer.

    Returns:
        ``(hinge [B, H, W] float, inlier [B, H, W] bool, outlier [B, H, W] bool)``.
    """
    if scores.shape != labels.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and labels {tuple(labels.shape)} differ")
    inlier = ((labels >= 0) & (labels < num_classes)) | (labels == INLIER_ID)
    outlier = labels == OUTLIER_ID
    hinge = torch.where(
        inlier,
        F.relu(scores - inlier_threshold) ** 2,
        torch.where(outlier, F.relu(outlier_threshold - scores) ** 2, torch.zeros_like(scores)),
    )
    return hinge, inlier, outlier


def rba_outlier_loss(scores: Tensor, labels: Tensor, **thresholds: float) -> Tensor:
    """RbA's outlier loss: mean inlier hinge, averaged (x 0.5) with the mean outlier hinge.

    As in RbA, the 0.5 applies only when the batch has outlier pixels; a batch without inlier
    pixels contributes 0 for them (RbA would produce NaN). Arguments: :func:`outlier_hinge_map`.
    Returns a scalar tensor.
    """
    hinge, inlier, outlier = outlier_hinge_map(scores, labels, **thresholds)
    inlier_term = hinge[inlier].sum() / inlier.sum().clamp(min=1)
    if not bool(outlier.any()):
        return inlier_term
    return 0.5 * (inlier_term + hinge[outlier].mean())


def augment(
    image: Tensor,
    labels: Tensor,
    size: tuple[int, int],
    generator: torch.Generator,
    *,
    scale_range: tuple[float, float] = (1.0, 1.0),
    flip: bool = True,
) -> tuple[Tensor, Tensor]:
    """Random rescale (height fit to ``size[0]`` times a factor), crop/pad to ``size``, flip.

    Args:
        image: ``[3, H, W]`` uint8 RGB; labels: ``[H, W]`` integer.

    Returns:
        ``[3, h, w]`` float32 on the 0-255 scale (padding = the ImageNet mean colour, i.e. 0 after
        normalisation) and ``[h, w]`` int64 (padding = void), ``(h, w) = size``.
    """
    out_h, out_w = size
    height, width = int(image.shape[-2]), int(image.shape[-1])
    low, high = scale_range
    factor = out_h / height * (low + (high - low) * float(torch.rand((), generator=generator)))
    new_h, new_w = max(1, round(height * factor)), max(1, round(width * factor))
    pixels = image.float()
    labels = labels.long()
    if (new_h, new_w) != (height, width):
        pixels = F.interpolate(
            pixels[None],
            size=(new_h, new_w),
            mode="bilinear",
            align_corners=False,
            antialias=factor < 1,
        )[0]
        labels = F.interpolate(
            labels[None, None].float(), size=(new_h, new_w), mode="nearest-exact"
        )[0, 0].long()
    pad_h, pad_w = max(0, out_h - new_h), max(0, out_w - new_w)
    if pad_h or pad_w:
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        pixels = F.pad(pixels - mean, (0, pad_w, 0, pad_h)) + mean
        labels = F.pad(labels, (0, pad_w, 0, pad_h), value=VOID_ID)
    top = int(torch.randint(0, pixels.shape[-2] - out_h + 1, (), generator=generator))
    left = int(torch.randint(0, pixels.shape[-1] - out_w + 1, (), generator=generator))
    pixels = pixels[:, top : top + out_h, left : left + out_w]
    labels = labels[top : top + out_h, left : left + out_w]
    if flip and float(torch.rand((), generator=generator)) < 0.5:
        pixels, labels = pixels.flip(-1), labels.flip(-1)
    return pixels.contiguous(), labels.contiguous()


def paste_outliers(
    image: Tensor,
    labels: Tensor,
    generator: torch.Generator,
    *,
    shapes: int = 0,
    pool: Sequence[tuple[Tensor, Tensor]] = (),
    pool_objects: int = 0,
    rejected: Sequence[tuple[Tensor, Tensor]] = (),
    rejected_objects: int = 0,
    max_radius_fraction: float = 0.2,
) -> tuple[Tensor, Tensor]:
    """Paste outliers into an inlier frame and label them :data:`OUTLIER_ID`.

    Two families, either or both: 1..``shapes`` random shapes
    (:func:`models.training.paste.paste_random_objects`, no anomaly kind of the world among
    them: an open-ended family instead of a fixed one) and 1..``pool_objects`` cut-outs drawn
    from ``pool`` (:func:`models.training.paste.paste_masked_crops`, with scale, position and
    flip jitter: e.g. the anomalies a reviewer confirmed). Then 1..``rejected_objects``
    cut-outs drawn from ``rejected`` (candidates a reviewer rejected: things the model flagged
    that are not anomalies), labelled :data:`INLIER_ID`: hard negatives for the inlier hinge.

    Args:
        image: ``[3, H, W]`` uint8 RGB; labels: ``[H, W]`` integer.
        pool, rejected: ``(crop [3, h, w] uint8, mask [h, w] bool)`` pairs.

    Returns:
        New ``(image [3, H, W] uint8, labels [H, W] int64)``.
    """
    segments = torch.zeros_like(labels, dtype=torch.int64)
    if shapes > 0:
        count = 1 + int(torch.randint(0, shapes, (), generator=generator))
        pasted, pasted_segments = paste_random_objects(
            image[None], segments[None], count, generator, max_radius_fraction=max_radius_fraction
        )
        image, segments = pasted[0], pasted_segments[0]
    image, segments = paste_pool_sample(image, segments, pool, pool_objects, generator)
    labels = torch.where(segments > 0, OUTLIER_ID, labels.long())
    if rejected and rejected_objects > 0:
        canvas = torch.zeros_like(segments)
        image, canvas = paste_pool_sample(image, canvas, rejected, rejected_objects, generator)
        labels = torch.where(canvas > 0, INLIER_ID, labels)
    return image, labels
