"""Mask scores: the mean anomaly score inside each mask (docs/method.md step 7)."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from transforms._validate import (
    check_bool,
    check_float,
    check_no_nan,
    check_same_device,
    check_same_shape,
)

__all__ = ["mask_scores"]

# Largest float copy (elements) of a block of flattened masks: 50 masks of 1024x2048 are one
# block, the 1024 masks of a dense 32x32 grid are 16 (instead of one 8 GiB float32 copy).
_MAX_BLOCK_ELEMENTS = 1 << 27


def _check_score_and_masks(score: object, masks: object) -> tuple[torch.Tensor, torch.Tensor]:
    score = check_float("score", score, ndim=2)
    masks = check_bool("masks", masks, ndim=3)
    check_same_shape("masks", masks.shape[1:], "score", score.shape)
    check_same_device("masks", masks, "score", score)
    check_no_nan("score", score)
    return score, masks


def _float_mask_blocks(masks: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, [m, H*W] float32)``: consecutive masks as 0/1 floats, <= 2**27 elements each."""
    flat = masks.flatten(1)
    rows = max(1, _MAX_BLOCK_ELEMENTS // max(flat.shape[1], 1))
    for start in range(0, flat.shape[0], rows):
        yield start, flat[start : start + rows].float()


def mask_scores(
    score: torch.Tensor, masks: torch.Tensor, *, empty_value: float = -1.0
) -> torch.Tensor:
    """Mean of the anomaly map inside each mask (docs/method.md step 7).

    Pass ``U`` before the ignore region's -30 is applied. ``[m, HW] @ [HW]`` products over
    blocks of masks (the float copy of the masks stays under 2**27 elements); areas are exact
    int64 counts.

    Args:
        score: ``[H, W]`` float anomaly map, no NaN.
        masks: ``[M, H, W]`` bool.
        empty_value: score of an empty mask.

    Returns:
        ``[M]`` float32.
    """
    score, masks = _check_score_and_masks(score, masks)
    values = score.reshape(-1).float()
    sums = torch.empty(masks.shape[0], dtype=torch.float32, device=masks.device)
    for start, block in _float_mask_blocks(masks):
        sums[start : start + block.shape[0]] = block @ values
    areas = masks.flatten(1).sum(dim=1)
    return torch.where(areas > 0, sums / areas.clamp(min=1), torch.full_like(sums, empty_value))
