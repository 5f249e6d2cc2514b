"""One step's loss of SAM single-point training (Kirillov et al. 2023, the single-point part).

Per image of a batch: ``P`` positive points, each drawn uniformly inside a ground-truth segment
chosen uniformly among the image's segments; the image encoder runs once per image, the prompt
encoder and mask decoder once over all its points (``multimask_output=True``). The loss is
``20 * focal + 1 * dice`` of the best of the three masks (the lowest mask loss per prompt) plus
the MSE between the predicted IoU of each of the three masks and its actual IoU.

Geometry: frames are preprocessed exactly as :class:`models.sam.SamPrompter` does at inference
(:func:`models.sam.preprocess_frames`: resize to longest side ``S``, normalise, pad), points are
scaled like its ``segment``, and the loss is taken on the decoder's low-resolution grid
(``S / 4`` a side): the ground truth is resized with the frame, padded, and 4x4 average-pooled
(a cell is foreground when at least half of it is). Padding and void cells are left out of the
loss and of the IoU.

Every random draw of step ``s`` (flips, pasted objects, points) comes from
:func:`step_generator` ``(seed, s)``. The training loop is :func:`models.training.sam.train_sam`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from torch import Tensor

from models.sam import preprocess_frames, resized_size
from models.training.paste import paste_pool_sample, paste_random_objects
from models.training.sam_recipe import SamTrainingConfig

__all__ = [
    "SamBatchLoss",
    "batch_loss",
    "low_res_targets",
    "sam_losses",
    "sample_points",
    "step_generator",
]

VOID = -1  # segment id of pixels that belong to no segment (left out of the loss)
_PAD = -2  # segment id of the encoder input's padding


@dataclass(frozen=True)
class SamBatchLoss:
    """Loss of one batch and its metrics (floats are detached means over the prompts)."""

    loss: Tensor  # scalar, with grad
    mask_loss: float
    iou_loss: float
    best_iou: float  # mean IoU of the best (lowest-loss) mask
    selected_iou: float  # mean IoU of the mask SamPrompter would keep (highest predicted IoU)
    prompts: int


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator of every random draw of ``step`` (independent of the global RNG)."""
    entropy = np.random.SeedSequence([seed & 0xFFFFFFFF, step]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(entropy[0]) << 32 | int(entropy[1]))


def sample_points(
    segments: Tensor,
    count: int,
    generator: torch.Generator,
    power: float = 0.0,
    max_fraction: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """``count`` pixels, each uniform inside a segment drawn at random (with replacement).

    Args:
        segments: ``[H, W]`` int64 segment ids, ``>= 0`` segments, negative = none.
        count: points to draw.
        generator: the source of randomness.
        power: a segment of ``n`` pixels is drawn with probability proportional to
            ``n ** power`` (0: uniformly among the segments present; 1: uniformly over pixels).
        max_fraction: segments of more than this fraction of the frame's pixels are not drawn.

    Returns:
        ``points`` ``[N, 2]`` int64 (x, y) and ``ids`` ``[N]`` int64 their segment ids; ``N`` is
        ``count``, or 0 when ``segments`` has no segment.
    """
    flat = segments.reshape(-1)
    ids, counts = torch.unique(flat[flat >= 0], return_counts=True)
    allowed = counts <= max_fraction * flat.numel()
    if not allowed.any():
        return torch.zeros((0, 2), dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
    order = torch.argsort(flat, stable=True)  # pixels grouped by id, ids ascending
    first = int((flat < 0).sum())  # negative ids sort first
    starts = first + torch.cumsum(counts, 0) - counts
    if power == 0 and allowed.all():
        pick = torch.randint(0, ids.numel(), (count,), generator=generator)
    else:
        weights = counts.double() ** power * allowed
        pick = torch.multinomial(weights, count, replacement=True, generator=generator)
    offset = (torch.rand(count, generator=generator, dtype=torch.float64) * counts[pick]).long()
    pixel = order[starts[pick] + offset.clamp(max=counts[pick] - 1)]
    width = segments.shape[1]
    return torch.stack([pixel % width, pixel // width], dim=1), ids[pick]


def low_res_targets(segments: Tensor, ids: Tensor, image_size: int) -> tuple[Tensor, Tensor]:
    """Ground truth of the prompts of one frame on SAM's low-resolution mask grid.

    Args:
        segments: ``[H, W]`` int64 frame segment ids (negative = void).
        ids: ``[N]`` int64 the segment of each prompt.
        image_size: ``S``, the encoder input side.

    Returns:
        ``targets`` ``[N, S/4, S/4]`` float32 0/1 and ``valid`` ``[S/4, S/4]`` bool (cells that
        are at least half inside the resized frame and not void).
    """
    height, width = segments.shape
    h, w = resized_size(height, width, image_size)
    seg = segments
    if (h, w) != (height, width):
        seg = F.interpolate(seg[None, None].double(), (h, w), mode="nearest-exact")[0, 0].long()
    seg = F.pad(seg, (0, image_size - w, 0, image_size - h), value=_PAD)
    unique, inverse = torch.unique(ids, return_inverse=True)
    planes = (seg[None] == unique[:, None, None]).float()[:, None]  # [U, 1, S, S]
    fractions = F.avg_pool2d(planes, 4)[:, 0]  # [U, S/4, S/4]
    valid = F.avg_pool2d((seg >= 0).float()[None, None], 4)[0, 0] >= 0.5
    return (fractions[inverse] >= 0.5).float(), valid


def sam_losses(
    logits: Tensor, predicted_iou: Tensor, targets: Tensor, valid: Tensor, config: SamTrainingConfig
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """SAM's single-point loss terms of one frame's prompts.

    Args:
        logits: ``[N, 3, h, w]`` float low-resolution mask logits.
        predicted_iou: ``[N, 3]`` float.
        targets: ``[N, h, w]`` float 0/1.
        valid: ``[h, w]`` bool, the cells that count.

    Returns:
        ``mask_loss`` ``[N]`` (weighted focal + dice of the best mask), ``iou_loss`` ``[N]``
        (MSE over the three masks), ``best_iou`` ``[N]``, ``selected_iou`` ``[N]`` (IoU of the
        highest-predicted-IoU mask) and ``best`` ``[N]`` int64 the best mask's index.
    """
    weight = valid.float()[None, None]  # [1, 1, h, w]
    cells = weight.sum().clamp(min=1.0)
    t = targets[:, None]  # [N, 1, h, w]
    p = torch.sigmoid(logits)
    bce = F.binary_cross_entropy_with_logits(logits, t.expand_as(logits), reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    focal = (1 - p_t) ** 2 * bce * weight
    if config.focal_alpha is not None:
        focal = focal * (config.focal_alpha * t + (1 - config.focal_alpha) * (1 - t))
    focal = focal.sum((2, 3)) / cells  # [N, 3]
    inter = (p * t * weight).sum((2, 3))
    dice = 1 - (2 * inter + 1) / ((p * weight).sum((2, 3)) + (t * weight).sum((2, 3)) + 1)
    per_mask = config.focal_weight * focal + config.dice_weight * dice  # [N, 3]
    best = per_mask.detach().argmin(dim=1)
    rows = torch.arange(best.shape[0])
    with torch.no_grad():
        binary = (logits > 0).float() * weight
        union = ((binary + t * weight) > 0).float().sum((2, 3))
        actual = torch.where(union > 0, (binary * t).sum((2, 3)) / union.clamp(min=1), 1.0)
    iou_loss = ((predicted_iou.float() - actual) ** 2).mean(dim=1)
    selected = actual[rows, predicted_iou.detach().argmax(dim=1)]
    return per_mask[rows, best], iou_loss, actual[rows, best], selected, best


def batch_loss(
    sam: Sam,
    images: Tensor,
    segments: Tensor,
    config: SamTrainingConfig,
    generator: torch.Generator,
    pool: Sequence[tuple[Tensor, Tensor]] = (),
) -> SamBatchLoss:
    """Forward pass and loss of one batch (``sam`` in train mode; no optimizer step).

    Args:
        images: ``[B, 3, H, W]`` uint8 RGB.
        segments: ``[B, H, W]`` int64 segment ids, ``-1`` void.
        generator: draws the flips, the pasted objects and the points.
        pool: ``(crop [3, h, w] uint8, mask [h, w] bool)`` cut-outs; 1..``config.pool_objects``
            of them are pasted into each frame (after the random shapes), each a new segment.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"images must be uint8 [B, 3, H, W], got {images.dtype} {tuple(images.shape)}"
        )
    if segments.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(
            f"segments must be [B, H, W] = {tuple(images.shape[::2])}, got {tuple(segments.shape)}"
        )
    segments = segments.long()
    if config.hflip:
        flip = torch.rand(images.shape[0], generator=generator) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        segments = torch.where(flip[:, None, None], segments.flip(-1), segments)
    if config.pasted_objects:
        images, segments = paste_random_objects(
            images, segments, config.pasted_objects, generator, shadows=config.pasted_shadows
        )
    if pool and config.pool_objects:
        pasted = [
            paste_pool_sample(image, frame_segments, pool, config.pool_objects, generator)
            for image, frame_segments in zip(images, segments, strict=True)
        ]
        images = torch.stack([image for image, _ in pasted])
        segments = torch.stack([frame_segments for _, frame_segments in pasted])
    device = next(sam.parameters()).device
    size = sam.image_encoder.img_size
    height, width = segments.shape[1:]
    h, w = resized_size(height, width, size)
    scale = torch.tensor([w / width, h / height], dtype=torch.float64)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16)
    with autocast:
        embeddings = sam.image_encoder(preprocess_frames(sam, images.to(device)))  # [B,256,g,g]
    image_pe = sam.prompt_encoder.get_dense_pe()
    mask_losses, iou_losses, best_ious, selected_ious = [], [], [], []
    for index in range(images.shape[0]):
        points, ids = sample_points(
            segments[index],
            config.points_per_image,
            generator,
            config.segment_power,
            config.max_segment_fraction,
        )
        if ids.numel() == 0:
            continue
        targets, valid = low_res_targets(segments[index], ids, size)
        coords = (points.double() * scale).float()[:, None, :].to(device)  # as SamPrompter
        labels = torch.ones((ids.numel(), 1), dtype=torch.int64, device=device)
        sparse, dense = sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        with autocast:
            logits, predicted = sam.mask_decoder(
                image_embeddings=embeddings[index : index + 1],
                image_pe=image_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
            )  # [N, 3, 4g, 4g], [N, 3]
        terms = sam_losses(
            logits.float(), predicted.float(), targets.to(device), valid.to(device), config
        )
        mask_losses.append(terms[0])
        iou_losses.append(terms[1])
        best_ious.append(terms[2])
        selected_ious.append(terms[3])
    if not mask_losses:
        zero = embeddings.sum() * 0.0
        return SamBatchLoss(zero, 0.0, 0.0, math.nan, math.nan, 0)
    mask_loss, iou_loss = torch.cat(mask_losses).mean(), torch.cat(iou_losses).mean()
    return SamBatchLoss(
        loss=mask_loss + config.iou_weight * iou_loss,
        mask_loss=float(mask_loss.detach()),
        iou_loss=float(iou_loss.detach()),
        best_iou=float(torch.cat(best_ious).mean()),
        selected_iou=float(torch.cat(selected_ious).mean()),
        prompts=sum(len(x) for x in best_ious),
    )
