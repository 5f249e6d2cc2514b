"""Boxes, COCO RLE and context crops against plain-loop references."""

from __future__ import annotations

import math

import pytest
import torch
from pycocotools import mask as mask_utils

from transforms.masks import (
    best_of_multimask,
    crop_box_with_margin,
    decode_rle,
    encode_rle,
    masks_to_xywh,
    rle_areas_and_boxes,
)

# pycocotools' decode trips a NumPy 2 deprecation inside the library, not in our code.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def random_masks(m: int, height: int, width: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    masks = torch.rand(m, height, width, generator=gen) < 0.1
    if m >= 2:
        masks[1] = False
    return masks


def reference_box(mask: list) -> list:
    cells = [(x, y) for y, row in enumerate(mask) for x, hit in enumerate(row) if hit]
    if not cells:
        return [0, 0, 0, 0]
    xs, ys = [c[0] for c in cells], [c[1] for c in cells]
    return [min(xs), min(ys), max(xs) - min(xs) + 1, max(ys) - min(ys) + 1]


def reference_runs(mask: list) -> list:
    """Uncompressed COCO RLE: run lengths in column-major order, starting with zeros."""
    height, width = len(mask), len(mask[0])
    runs, current, length = [], False, 0
    for x in range(width):
        for y in range(height):
            if mask[y][x] != current:
                runs.append(length)
                current, length = mask[y][x], 0
            length += 1
    runs.append(length)
    return runs


SIZES = [(0, 4, 4), (1, 1, 1), (3, 5, 7), (6, 16, 11)]


def test_best_of_multimask_keeps_the_candidate_with_the_highest_predicted_iou(device) -> None:
    logits = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32, device=device).reshape(2, 3, 2, 2)
    predicted = torch.tensor([[0.1, 0.9, 0.5], [0.7, 0.7, 0.2]], device=device)
    masks, iou = best_of_multimask(logits, predicted)
    assert masks.tolist() == [logits[0, 1].tolist(), logits[1, 0].tolist()]  # a tie: index 0
    assert iou.tolist() == pytest.approx([0.9, 0.7])
    with pytest.raises(ValueError, match=r"predicted_iou must have shape \[N, K\] = \(2, 3\)"):
        best_of_multimask(logits, predicted[:, :2])


@pytest.mark.parametrize(("m", "height", "width"), SIZES)
def test_masks_to_xywh_match_reference(m, height, width, device) -> None:
    masks = random_masks(m, height, width, seed=m + height)
    got = masks_to_xywh(masks.to(device))
    assert got.dtype == torch.int64
    assert got.device == device
    assert got.cpu().tolist() == [reference_box(mask) for mask in masks.tolist()]


def test_masks_to_xywh_gives_the_tight_box_and_zeros_for_empty_masks(device) -> None:
    masks = torch.zeros(3, 4, 6, dtype=torch.bool, device=device)
    masks[0, 1:3, 2:5] = True
    masks[1, 3, 5] = True
    masks[2] = True
    assert masks_to_xywh(masks).tolist() == [[2, 1, 3, 2], [5, 3, 1, 1], [0, 0, 6, 4]]
    assert masks_to_xywh(torch.zeros(2, 0, 3, dtype=torch.bool)).tolist() == [[0] * 4] * 2


@pytest.mark.parametrize(("m", "height", "width"), SIZES)
def test_rle_matches_reference_and_round_trips(m, height, width, device) -> None:
    masks = random_masks(m, height, width, seed=m * 3 + width).to(device)
    got = encode_rle(masks)
    assert len(got) == m
    for mask, counts in zip(masks.cpu().tolist(), got, strict=True):
        uncompressed = {"size": [height, width], "counts": reference_runs(mask)}
        expected = mask_utils.frPyObjects(uncompressed, height, width)["counts"].decode("ascii")
        assert counts == expected
        decoded = decode_rle(counts, height, width)
        assert decoded.dtype == torch.bool
        assert decoded.tolist() == mask


@pytest.mark.parametrize(("m", "height", "width"), SIZES)
def test_areas_and_boxes_read_off_the_rle_equal_those_of_the_masks(m, height, width) -> None:
    masks = random_masks(m, height, width, seed=m * 5 + height)
    areas, boxes = rle_areas_and_boxes(encode_rle(masks), height, width)
    assert (areas.dtype, boxes.dtype) == (torch.int64, torch.int64)
    assert areas.tolist() == masks.sum(dim=(1, 2)).tolist()
    assert boxes.reshape(m, 4).tolist() == [reference_box(mask) for mask in masks.tolist()]


def test_rle_of_large_masks_equals_the_column_major_reference() -> None:
    """The transpose path on frames larger than OpenCV's blocks (and non-square ones)."""
    masks = random_masks(3, 301, 517, seed=9)
    expected = mask_utils.encode(masks.permute(1, 2, 0).numpy().astype("uint8").copy("F"))
    assert encode_rle(masks) == [rle["counts"].decode("ascii") for rle in expected]


def banded_masks(height: int, width: int) -> torch.Tensor:
    """Masks confined to a few columns: at the left and right edges, in the middle, one
    pixel in a corner, the whole frame and an empty one (the encoder scans only the band)."""
    gen = torch.Generator().manual_seed(height * width)
    noise = torch.rand(height, width, generator=gen) < 0.5
    masks = torch.zeros(7, height, width, dtype=torch.bool)
    masks[0, :, :3] = noise[:, :3]
    masks[1, :, -2:] = True
    masks[2, 2:-1, width // 3 : width // 2] = noise[2:-1, width // 3 : width // 2]
    masks[3, 0, 0] = True
    masks[4, -1, -1] = True
    masks[5] = noise
    return masks


@pytest.mark.parametrize(("height", "width"), [(1, 1), (9, 13), (301, 517)])
def test_rle_of_masks_in_narrow_column_bands_equals_the_whole_frame_encoding(
    height, width, device
) -> None:
    masks = banded_masks(height, width)
    expected = mask_utils.encode(masks.permute(1, 2, 0).numpy().astype("uint8").copy("F"))
    assert encode_rle(masks.to(device)) == [rle["counts"].decode("ascii") for rle in expected]


def test_decode_rle_rejects_invalid_strings() -> None:
    counts = encode_rle(torch.ones(1, 4, 5, dtype=torch.bool))[0]
    assert decode_rle(counts, 4, 5).all()
    with pytest.raises(ValueError, match="counts is not a valid COCO RLE of a 4x6 mask"):
        decode_rle(counts, 4, 6)
    for bad in ["", "zzzz", "0"]:
        with pytest.raises(ValueError, match="counts is not a valid COCO RLE"):
            decode_rle(bad, 4, 5)
    with pytest.raises(ValueError, match="counts must be a str"):
        decode_rle(counts.encode(), 4, 5)


def reference_crop(box: list, height: int, width: int, margin: float, min_margin: int) -> list:
    x, y, w, h = box
    mx = max(math.ceil(margin * w), min_margin)
    my = max(math.ceil(margin * h), min_margin)
    x0, y0 = min(max(x - mx, 0), width), min(max(y - my, 0), height)
    x1, y1 = min(max(x + w + mx, 0), width), min(max(y + h + my, 0), height)
    return [x0, y0, x1 - x0, y1 - y0]


@pytest.mark.parametrize(("margin", "min_margin"), [(0.0, 0), (0.25, 0), (0.1, 8), (1.5, 3)])
def test_crop_box_with_margin_matches_reference(margin, min_margin, device) -> None:
    gen = torch.Generator().manual_seed(int(margin * 100) + min_margin)
    height, width = 48, 64
    xy = torch.randint(0, 60, (30, 2), generator=gen)
    wh = torch.randint(0, 30, (30, 2), generator=gen)
    boxes = torch.cat([xy, wh], dim=1)
    got = crop_box_with_margin(boxes.to(device), (height, width), margin, min_margin)
    assert got.dtype == torch.int64
    assert got.device == device
    expected = [reference_crop(b, height, width, margin, min_margin) for b in boxes.tolist()]
    assert got.cpu().tolist() == expected


def test_crop_boxes_grow_by_the_margin_and_are_clipped_at_the_frame(device) -> None:
    boxes = torch.tensor([[10, 20, 8, 4], [0, 0, 5, 5], [95, 45, 5, 5]], device=device)
    got = crop_box_with_margin(boxes, (50, 100), margin=0.5, min_margin=3)
    # box 0: 4 px margin in x, 3 px (the minimum) in y; boxes 1, 2 are clipped at the frame
    assert got.tolist() == [[6, 17, 16, 10], [0, 0, 8, 8], [92, 42, 8, 8]]
    assert crop_box_with_margin(boxes[:0], (50, 100), 0.5).shape == (0, 4)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: masks_to_xywh(torch.zeros(2, 3, 3)), "masks must have dtype torch.bool"),
        (lambda: masks_to_xywh(torch.zeros(3, 3, dtype=torch.bool)), "masks must have 3 dim"),
        (lambda: encode_rle(torch.zeros(1, 3, 3, dtype=torch.uint8)), "masks must have dtype"),
        (lambda: crop_box_with_margin(torch.zeros(2, 4), (4, 4)), "boxes must have dtype integer"),
        (
            lambda: crop_box_with_margin(torch.zeros(2, 3, dtype=torch.int64), (4, 4)),
            r"boxes must have shape \[M, 4\]",
        ),
        (
            lambda: crop_box_with_margin(torch.zeros(2, 4, dtype=torch.int64), (4,)),
            r"frame_size must be \(H, W\)",
        ),
        (
            lambda: crop_box_with_margin(torch.zeros(2, 4, dtype=torch.int64), (4, 4), -0.1),
            "margin must be >= 0",
        ),
        (
            lambda: crop_box_with_margin(torch.zeros(2, 4, dtype=torch.int64), (4, 4), 0.1, -1),
            "min_margin must be >= 0",
        ),
    ],
)
def test_mask_inputs_of_wrong_shape_or_dtype_are_refused_naming_the_argument(call, message) -> None:
    with pytest.raises(ValueError, match=message):
        call()
