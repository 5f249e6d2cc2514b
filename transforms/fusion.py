"""The instance/pixel score fusion, RbA-ensemble style (docs/method.md step 10)."""

from __future__ import annotations

import torch

from transforms._validate import (
    check_float,
    check_no_nan,
    check_same_device,
    check_same_shape,
)
from transforms.mask_scores import _check_score_and_masks, _float_mask_blocks

__all__ = ["fuse_scores"]


def fuse_scores(
    score: torch.Tensor,
    masks: torch.Tensor,
    mask_scores: torch.Tensor,
    *,
    empty_value: float = -1.0,
) -> torch.Tensor:
    """RbA-ensemble fusion (method step 10): ``I = sum_k s_k m_k``; ``I[I == 0] = empty_value``;
    returns ``I + score``.

    The ``== 0`` test is on the summed map, as in UGainS: a covered pixel whose mask scores
    sum to exactly 0 is filled too. With no masks every pixel is ``score + empty_value``.

    Args:
        score: ``[H, W]`` float anomaly map ``U``, no NaN.
        masks: ``[M, H, W]`` bool, the kept masks.
        mask_scores: ``[M]`` float, no NaN.
        empty_value: fill value of uncovered pixels.

    Returns:
        ``[H, W]`` float32.
    """
    score, masks = _check_score_and_masks(score, masks)
    check_float("mask_scores", mask_scores, ndim=1)
    check_same_shape("mask_scores", mask_scores.shape, "masks", masks.shape[:1])
    check_same_device("mask_scores", mask_scores, "masks", masks)
    check_no_nan("mask_scores", mask_scores)
    weights = mask_scores.float()
    instance = torch.zeros(score.numel(), dtype=torch.float32, device=score.device)
    for start, block in _float_mask_blocks(masks):
        instance += weights[start : start + block.shape[0]] @ block
    instance = instance.reshape(score.shape)
    instance = instance.masked_fill(instance == 0, empty_value)
    return instance + score.float()
