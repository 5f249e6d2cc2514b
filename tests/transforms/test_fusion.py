"""Mask scores and score fusion against plain-loop references (docs/method.md steps 7 and 10)."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from transforms import mask_scores as mask_scores_module
from transforms.fusion import fuse_scores
from transforms.mask_scores import mask_scores


def random_case(m: int, height: int, width: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    score = -torch.rand(height, width, generator=gen) * 5
    masks = torch.rand(m, height, width, generator=gen) < 0.3
    if m >= 3:
        masks[1] = False  # empty mask
        masks[2] = masks[0]  # identical masks
    return score, masks


def reference_mask_scores(score, masks, empty_value=-1.0) -> list:
    values = score.tolist()
    out = []
    for mask in masks.tolist():
        inside = [values[y][x] for y, row in enumerate(mask) for x, hit in enumerate(row) if hit]
        out.append(sum(inside) / len(inside) if inside else empty_value)
    return out


def reference_fusion(score, masks, scores, empty_value=-1.0) -> list:
    values, mask_list, s = score.tolist(), masks.tolist(), scores.tolist()
    out = []
    for y in range(len(values)):
        row = []
        for x in range(len(values[0])):
            total = 0.0
            for k in range(len(mask_list)):
                if mask_list[k][y][x]:
                    total += s[k]
            row.append((empty_value if total == 0 else total) + values[y][x])
        out.append(row)
    return out


SIZES = [(0, 3, 4), (1, 1, 1), (3, 5, 6), (8, 12, 9), (20, 16, 16)]


@pytest.mark.parametrize(("m", "height", "width"), SIZES)
def test_mask_scores_match_reference(m, height, width, device) -> None:
    score, masks = random_case(m, height, width, seed=m * 31 + height)
    expected = torch.tensor(reference_mask_scores(score, masks), dtype=torch.float64)
    got = mask_scores(score.to(device), masks.to(device))
    assert got.dtype == torch.float32
    assert got.device == device
    assert got.shape == (m,)
    torch.testing.assert_close(got.cpu().double(), expected, rtol=1e-5, atol=1e-6)


def test_mask_scores_empty_value(device) -> None:
    score = torch.tensor([[-0.5, -1.5], [-2.0, 0.0]], device=device)
    masks = torch.tensor([[[1, 1], [0, 0]], [[0, 0], [0, 0]], [[1, 1], [1, 1]]], device=device)
    masks = masks.bool()
    assert mask_scores(score, masks).tolist() == [-1.0, -1.0, -1.0]
    assert mask_scores(score, masks, empty_value=-7.0).tolist() == [-1.0, -7.0, -1.0]


@pytest.mark.parametrize(("m", "height", "width"), SIZES)
def test_fuse_scores_match_reference(m, height, width, device) -> None:
    score, masks = random_case(m, height, width, seed=m * 17 + width)
    scores = torch.tensor(reference_mask_scores(score, masks), dtype=torch.float32)
    expected = torch.tensor(reference_fusion(score, masks, scores), dtype=torch.float64)
    got = fuse_scores(score.to(device), masks.to(device), scores.to(device))
    assert got.dtype == torch.float32
    assert got.device == device
    torch.testing.assert_close(got.cpu().double(), expected, rtol=1e-5, atol=1e-5)


def test_fuse_scores_zero_check_is_on_the_summed_map(device) -> None:
    score = torch.tensor([[-0.25, -0.5, -1.0]], device=device)
    masks = torch.tensor([[[1, 1, 0]], [[0, 1, 0]]], device=device).bool()
    # pixel 1 is covered by scores +0.5 and -0.5: the sum is 0, so it is filled like pixel 2
    fused = fuse_scores(score, masks, torch.tensor([0.5, -0.5], device=device))
    assert fused.tolist() == [[0.25, -1.5, -2.0]]
    fused = fuse_scores(score, masks, torch.tensor([0.5, -0.5], device=device), empty_value=-3.0)
    assert fused.tolist() == [[0.25, -3.5, -4.0]]


def test_fuse_scores_without_masks(device) -> None:
    score = torch.tensor([[-0.25, 0.0]], device=device, dtype=torch.float64)
    empty = torch.zeros(0, 1, 2, dtype=torch.bool, device=device)
    fused = fuse_scores(score, empty, torch.zeros(0, device=device))
    assert fused.dtype == torch.float32
    assert fused.tolist() == [[-1.25, -1.0]]


class LargestFloatTensor(TorchDispatchMode):
    """Records the element count of the largest floating-point tensor any op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor) and leaf.is_floating_point():
                self.numel = max(self.numel, leaf.numel())
        return out


def test_many_masks_are_processed_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The float copy of the masks stays under the block budget (a dense 32x32 grid at
    1024x2048 would otherwise be one 8 GiB float32 temporary); results are unchanged."""
    budget = 4 * 16 * 16
    monkeypatch.setattr(mask_scores_module, "_MAX_BLOCK_ELEMENTS", budget)
    score, masks = random_case(21, 16, 16, seed=9)
    with LargestFloatTensor() as largest:
        scores = mask_scores(score, masks)
        fused = fuse_scores(score, masks, scores)
    assert largest.numel <= budget
    expected = torch.tensor(reference_mask_scores(score, masks), dtype=torch.float64)
    torch.testing.assert_close(scores.double(), expected, rtol=1e-5, atol=1e-6)
    expected_fused = torch.tensor(reference_fusion(score, masks, scores), dtype=torch.float64)
    torch.testing.assert_close(fused.double(), expected_fused, rtol=1e-5, atol=1e-5)


def test_mask_scores_of_bf16_inputs_are_float32_and_equal_the_upcast_ones(device) -> None:
    score, masks = random_case(4, 6, 6, seed=2)
    expected = mask_scores(score.to(device), masks.to(device))
    got = mask_scores(score.to(device, torch.bfloat16).float(), masks.to(device))
    got_bf16 = mask_scores(score.to(device, torch.bfloat16), masks.to(device))
    assert got_bf16.dtype == torch.float32
    torch.testing.assert_close(got_bf16, got)
    torch.testing.assert_close(got, expected, rtol=1e-2, atol=1e-2)


BOOL = torch.bool


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: mask_scores(torch.zeros(2, 2, 1), torch.zeros(1, 2, 2, dtype=BOOL)), "score"),
        (
            lambda: mask_scores(torch.zeros(2, 2), torch.zeros(1, 2, 2)),
            "masks must have dtype torch.bool",
        ),
        (
            lambda: mask_scores(torch.zeros(2, 2), torch.zeros(1, 2, 3, dtype=BOOL)),
            r"masks shape \(2, 3\) does not match score shape \(2, 2\)",
        ),
        (
            lambda: mask_scores(torch.tensor([[float("nan")]]), torch.zeros(1, 1, 1, dtype=BOOL)),
            "score contains NaN",
        ),
        (
            lambda: fuse_scores(
                torch.zeros(2, 2), torch.zeros(2, 2, 2, dtype=BOOL), torch.zeros(3)
            ),
            r"mask_scores shape \(3,\) does not match masks shape \(2,\)",
        ),
        (
            lambda: fuse_scores(
                torch.zeros(2, 2), torch.zeros(1, 2, 2, dtype=BOOL), torch.tensor([float("nan")])
            ),
            "mask_scores contains NaN",
        ),
        (
            lambda: fuse_scores(
                torch.zeros(2, 2), torch.zeros(1, 2, 2, dtype=BOOL), torch.zeros(1, 1)
            ),
            "mask_scores must have 1 dimensions",
        ),
        (
            lambda: fuse_scores(
                torch.zeros(2, 2, dtype=torch.int32),
                torch.zeros(1, 2, 2, dtype=BOOL),
                torch.zeros(1),
            ),
            "score must have dtype floating point",
        ),
    ],
)
def test_fusion_inputs_of_wrong_shape_or_dtype_are_refused_naming_the_argument(
    call, message
) -> None:
    with pytest.raises(ValueError, match=message):
        call()
