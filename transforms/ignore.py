"""The ignore-region filter: drop masks reaching into the ignore region (docs/method.md step 9)."""

from __future__ import annotations

import torch

from transforms._validate import check_bool, check_count, check_same_device, check_same_shape

__all__ = ["ignore_filter"]


def ignore_filter(masks: torch.Tensor, ignore: torch.Tensor, max_pixels: int = 100) -> torch.Tensor:
    """Keep-flags of masks with fewer than ``max_pixels`` pixels in the ignore region (step 9).

    Args:
        masks: ``[M, H, W]`` bool.
        ignore: ``[H, W]`` bool, True = ignored pixel.
        max_pixels: a mask with ``>= max_pixels`` ignored pixels is dropped.

    Returns:
        ``[M]`` bool, True = keep.
    """
    check_bool("masks", masks, ndim=3)
    check_bool("ignore", ignore, ndim=2)
    check_same_shape("ignore", ignore.shape, "masks", masks.shape[1:])
    check_same_device("ignore", ignore, "masks", masks)
    check_count("max_pixels", max_pixels)
    inside = torch.logical_and(masks, ignore).flatten(1).sum(dim=1)
    return inside < max_pixels
