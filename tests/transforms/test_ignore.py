"""The ignore filter against a plain-set reference (docs/method.md step 9)."""

from __future__ import annotations

import pytest
import torch

from tests.transforms.test_nms import pixel_sets, random_masks
from transforms.ignore import ignore_filter


@pytest.mark.parametrize(("m", "height", "width"), [(1, 4, 4), (7, 12, 13), (15, 20, 20)])
def test_ignore_filter_matches_reference(m, height, width, device) -> None:
    masks = random_masks(m, height, width, seed=m + 7)
    ignore = torch.zeros(height, width, dtype=torch.bool)
    ignore[height // 2 :, :] = True
    sets = pixel_sets(masks)
    ignored = pixel_sets(ignore[None])[0]
    for max_pixels in (1, 5, 20, 100):
        expected = [len(s & ignored) < max_pixels for s in sets]
        got = ignore_filter(masks.to(device), ignore.to(device), max_pixels=max_pixels)
        assert got.dtype == torch.bool
        assert got.device == device
        assert got.cpu().tolist() == expected


def test_ignore_filter_99_and_100_pixels(device) -> None:
    ignore = torch.zeros(20, 20, dtype=torch.bool, device=device)
    ignore[10:, :] = True  # bottom half, e.g. the car hood
    masks = torch.zeros(4, 20, 20, dtype=torch.bool, device=device)
    masks[0].view(-1)[200:299] = True  # 99 ignored pixels: kept
    masks[1].view(-1)[200:300] = True  # exactly 100: dropped
    masks[2].view(-1)[101:300] = True  # 99 outside + 100 inside: dropped
    masks[3, :10, :] = True  # 200 pixels, none ignored: kept
    assert ignore_filter(masks, ignore).tolist() == [True, False, False, True]
    assert ignore_filter(masks, ignore, max_pixels=101).tolist() == [True, True, True, True]
    empty = torch.zeros(0, 20, 20, dtype=torch.bool, device=device)
    assert ignore_filter(empty, ignore).shape == (0,)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: ignore_filter(
                torch.zeros(1, 3, 3, dtype=torch.bool), torch.zeros(3, 4, dtype=torch.bool)
            ),
            r"ignore shape \(3, 4\) does not match masks shape \(3, 3\)",
        ),
        (
            lambda: ignore_filter(torch.zeros(1, 3, 3, dtype=torch.bool), torch.zeros(3, 3)),
            "ignore must have dtype torch.bool",
        ),
    ],
)
def test_ignore_filter_inputs_of_wrong_shape_or_dtype_are_refused(call, message) -> None:
    with pytest.raises(ValueError, match=message):
        call()
