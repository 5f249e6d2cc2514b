"""Mask NMS against plain-loop references (docs/method.md step 8)."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.nms import mask_iou, mask_nms


def pixel_sets(masks: torch.Tensor) -> list[set]:
    m, height, width = masks.shape
    values = masks.tolist()
    return [
        {(y, x) for y in range(height) for x in range(width) if values[i][y][x]} for i in range(m)
    ]


def reference_iou(a: set, b: set) -> Fraction:
    union = len(a | b)
    return Fraction(len(a & b), union) if union else Fraction(0)


def reference_nms(masks: torch.Tensor, scores: list, threshold: float) -> list:
    """Greedy NMS with exact IoUs; the threshold is compared as float32, like torch does."""
    sets = pixel_sets(masks)
    thr = Fraction(float(np.float32(threshold)))
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    kept: list = []
    for i in order:
        if all(reference_iou(sets[i], sets[j]) <= thr for j in kept):
            kept.append(i)
    return kept


def random_masks(m: int, height: int, width: int, seed: int) -> torch.Tensor:
    """Overlapping rectangles plus noise, some empty and some duplicated."""
    gen = torch.Generator().manual_seed(seed)
    masks = torch.zeros(m, height, width, dtype=torch.bool)
    for i in range(m):
        y0, x0 = (int(v) for v in torch.randint(0, max(height // 2, 1), (2,), generator=gen))
        h, w = (int(v) for v in torch.randint(1, max(height // 2, 2), (2,), generator=gen))
        masks[i, y0 : y0 + h, x0 : x0 + w] = True
        masks[i] ^= torch.rand(height, width, generator=gen) < 0.03
    if m >= 4:
        masks[1] = masks[0]  # identical masks
        masks[3] = False  # empty mask
    return masks


@pytest.mark.parametrize(
    ("m", "height", "width"), [(1, 4, 4), (6, 8, 10), (12, 16, 20), (20, 9, 7)]
)
def test_mask_iou_matches_reference(m, height, width, device) -> None:
    masks = random_masks(m, height, width, seed=m)
    sets = pixel_sets(masks)
    expected = torch.tensor(
        [[float(reference_iou(a, b)) for b in sets] for a in sets], dtype=torch.float64
    )
    got = mask_iou(masks.to(device))
    assert got.dtype == torch.float32
    assert got.device == device
    torch.testing.assert_close(got.cpu().double(), expected, rtol=0, atol=1e-7)


def test_mask_iou_blocked_and_float64_paths(monkeypatch, device) -> None:
    # The pixel axis is split into blocks when the float copy would be large, and counts use
    # float64 past float32's exact integer range; both give the same exact IoUs.
    import transforms.nms as nms

    masks = random_masks(9, 13, 11, seed=4).to(device)
    expected = mask_iou(masks)
    monkeypatch.setattr(nms, "_MAX_PRODUCT_ELEMENTS", 9 * 10)  # blocks of 10 pixels
    assert torch.equal(mask_iou(masks), expected)
    monkeypatch.setattr(nms, "_FLOAT32_EXACT", 16)
    torch.testing.assert_close(mask_iou(masks), expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    ("m", "height", "width"), [(1, 4, 4), (6, 8, 10), (12, 16, 20), (20, 9, 7)]
)
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.7, 1.0])
def test_mask_nms_matches_reference(m, height, width, threshold, device) -> None:
    masks = random_masks(m, height, width, seed=m + 100)
    gen = torch.Generator().manual_seed(m)
    scores = torch.randint(-3, 3, (m,), generator=gen).float() / 2  # many equal scores
    got = mask_nms(masks.to(device), scores.to(device), iou_threshold=threshold)
    assert got.dtype == torch.int64
    assert got.device == device
    assert got.cpu().tolist() == reference_nms(masks, scores.tolist(), threshold)


def test_mask_nms_keeps_empty_masks_and_drops_duplicates(device) -> None:
    empty = torch.zeros(0, 3, 3, dtype=torch.bool, device=device)
    assert mask_nms(empty, torch.zeros(0, device=device)).tolist() == []
    masks = torch.zeros(4, 2, 5, dtype=torch.bool, device=device)
    masks[0, 0, :] = True  # 5 pixels
    masks[1, 0, :] = True  # identical to 0
    # masks 2, 3 empty: IoU 0 with everything, never suppressed
    scores = torch.tensor([0.5, 0.5, 0.9, 0.1], device=device)
    # equal scores: the lower index comes first and suppresses its duplicate
    assert mask_nms(masks, scores).tolist() == [2, 0, 3]
    scores = torch.tensor([0.1, 0.2, 0.3, 0.3], device=device)
    assert mask_nms(masks, scores).tolist() == [2, 3, 1]


def test_mask_nms_threshold_is_strict(device) -> None:
    # IoU exactly 7/10: not suppressed at 0.7 (suppression needs IoU > threshold)
    masks = torch.zeros(2, 1, 10, dtype=torch.bool, device=device)
    masks[0, 0, :] = True
    masks[1, 0, :7] = True
    scores = torch.tensor([1.0, 0.0], device=device)
    assert mask_iou(masks)[0, 1].item() == pytest.approx(0.7)
    assert mask_nms(masks, scores, iou_threshold=0.7).tolist() == [0, 1]
    assert mask_nms(masks, scores, iou_threshold=0.69).tolist() == [0]


def test_mask_nms_other_score_dtypes(device) -> None:
    masks = random_masks(8, 8, 8, seed=3).to(device)
    scores = torch.linspace(0, 1, 8, device=device)
    expected = mask_nms(masks, scores).tolist()
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        assert mask_nms(masks, scores.to(dtype)).tolist() == expected


@settings(max_examples=40, deadline=None, database=None, derandomize=True)
@given(
    data=st.data(),
    m=st.integers(0, 10),
    threshold=st.sampled_from([0.0, 0.25, 0.5, 0.7, 0.9]),
)
def test_mask_nms_kept_masks_are_ranked_apart_and_cover_every_suppressed_one(
    data, m: int, threshold: float
) -> None:
    bits = data.draw(st.lists(st.booleans(), min_size=m * 20, max_size=m * 20))
    masks = torch.tensor(bits, dtype=torch.bool).reshape(m, 4, 5)
    scores = torch.tensor(
        data.draw(st.lists(st.integers(0, 4), min_size=m, max_size=m)), dtype=torch.float32
    )
    kept = mask_nms(masks, scores, iou_threshold=threshold).tolist()
    iou = mask_iou(masks)
    thr = np.float32(threshold)
    assert len(set(kept)) == len(kept)
    # descending scores
    assert all(scores[a] >= scores[b] for a, b in itertools.pairwise(kept))
    # kept masks do not overlap each other above the threshold
    assert all(iou[a, b] <= thr for a in kept for b in kept if a != b)
    # every suppressed mask overlaps a kept mask that comes before it
    rank = {i: (-float(scores[i]), i) for i in range(m)}
    for i in set(range(m)) - set(kept):
        assert any(iou[i, j] > thr and rank[j] < rank[i] for j in kept)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: mask_nms(torch.zeros(2, 3, 3), torch.zeros(2)),
            "masks must have dtype torch.bool",
        ),
        (
            lambda: mask_nms(torch.zeros(2, 9, dtype=torch.bool), torch.zeros(2)),
            "masks must have 3 dimensions",
        ),
        (
            lambda: mask_nms(torch.zeros(2, 3, 3, dtype=torch.bool), torch.zeros(3)),
            r"scores shape \(3,\) does not match masks shape \(2,\)",
        ),
        (
            lambda: mask_nms(torch.zeros(1, 3, 3, dtype=torch.bool), torch.tensor([float("nan")])),
            "scores contains NaN",
        ),
        (
            lambda: mask_nms(torch.zeros(1, 3, 3, dtype=torch.bool), torch.zeros(1, dtype=int)),
            "scores must have dtype floating point",
        ),
        (
            lambda: mask_nms(torch.zeros(1, 3, 3, dtype=torch.bool), torch.zeros(1), 1.5),
            r"iou_threshold must be in \[0, 1\]",
        ),
        (lambda: mask_iou(torch.zeros(3, 3, dtype=torch.bool)), "masks must have 3 dimensions"),
    ],
)
def test_nms_inputs_of_wrong_shape_or_dtype_are_refused_naming_the_argument(call, message) -> None:
    with pytest.raises(ValueError, match=message):
        call()
