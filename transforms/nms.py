"""Mask non-maximum suppression (docs/method.md step 8)."""

from __future__ import annotations

import numpy as np
import torch

from transforms._validate import (
    check_bool,
    check_float,
    check_no_nan,
    check_same_device,
    check_same_shape,
)

__all__ = ["mask_iou", "mask_nms"]

# Largest float temporary (elements) of the pairwise product; beyond it the pixel axis is
# processed in blocks (e.g. a 1024-mask dense grid at full resolution).
_MAX_PRODUCT_ELEMENTS = 1 << 27
# float32 sums of 0/1 products are exact up to 2**24; larger pixel counts use float64.
_FLOAT32_EXACT = 1 << 24


def _check_masks(masks: object) -> torch.Tensor:
    return check_bool("masks", masks, ndim=3)


def mask_iou(masks: torch.Tensor) -> torch.Tensor:
    """Pairwise mask IoU from one matrix product of the flattened masks.

    ``intersection = A @ A.T`` for ``A = masks.flatten(1)`` as 0/1 floats (exact: integer
    counts below 2**24 in float32, float64 above), ``union = area_i + area_j - intersection``;
    two empty masks have IoU 0. Cost O(M^2 * H * W) multiply-adds in one GEMM (blocked over
    pixels only when the float copy of the masks would exceed 2**27 elements).

    Args:
        masks: ``[M, H, W]`` bool, at any resolution.

    Returns:
        ``[M, M]`` float32 IoU.
    """
    _check_masks(masks)
    m = masks.shape[0]
    flat = masks.flatten(1)
    pixels = flat.shape[1]
    dtype = torch.float32 if pixels <= _FLOAT32_EXACT else torch.float64
    block = max(1, _MAX_PRODUCT_ELEMENTS // max(m, 1))
    inter = torch.zeros(m, m, dtype=dtype, device=masks.device)
    for start in range(0, pixels, block):
        part = flat[:, start : start + block].to(dtype)
        inter += part @ part.T
    area = inter.diagonal()
    union = area.unsqueeze(0) + area.unsqueeze(1) - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))
    return iou.float()


def mask_nms(masks: torch.Tensor, scores: torch.Tensor, iou_threshold: float = 0.7) -> torch.Tensor:
    """Greedy mask NMS (docs/method.md step 8).

    Masks are visited by descending score (equal scores: lower index first); a mask is
    suppressed when its IoU with an already kept mask is ``> iou_threshold``. No box NMS.

    Complexity: the IoU matrix is one GEMM (see :func:`mask_iou`); the greedy pass is a loop
    over the M masks on the host on the ``[M, M]`` boolean "overlaps" matrix (one device to
    host copy of M*M bytes), O(M^2) work and independent of the resolution.

    Args:
        masks: ``[M, H, W]`` bool, at any resolution.
        scores: ``[M]`` float, no NaN.
        iou_threshold: suppression threshold in ``[0, 1]``.

    Returns:
        int64 indices into ``masks`` of the kept masks, in descending score order.
    """
    _check_masks(masks)
    check_float("scores", scores, ndim=1)
    check_same_shape("scores", scores.shape, "masks", masks.shape[:1])
    check_same_device("scores", scores, "masks", masks)
    check_no_nan("scores", scores)
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    order = torch.sort(scores.float(), descending=True, stable=True).indices
    if order.numel() == 0:
        return order
    iou = mask_iou(masks)
    overlaps = (iou[order][:, order] > iou_threshold).cpu().numpy()
    keep = np.ones(len(overlaps), dtype=bool)
    for i in range(len(overlaps)):
        if keep[i]:
            keep[i + 1 :] &= ~overlaps[i, i + 1 :]
    return order[torch.from_numpy(keep).to(order.device)]
