"""Instance embeddings pool SAM's feature map inside each mask, on the encoder's geometry."""

from __future__ import annotations

import pytest
import torch

from transforms.embeddings import cell_of_pixels, mask_embeddings


def _loop_embeddings(features: torch.Tensor, masks: torch.Tensor, image_size: int) -> torch.Tensor:
    """Pixel by pixel: each mask pixel adds the feature of the cell its resized centre is in."""
    channels, grid, _ = features.shape
    height, width = masks.shape[1:]
    scale = image_size / max(height, width)
    cell = image_size / grid
    out = torch.zeros((masks.shape[0], channels), dtype=torch.float64)
    for m in range(masks.shape[0]):
        for y, x in masks[m].nonzero().tolist():
            row = int((y + 0.5) * scale // cell)
            col = int((x + 0.5) * scale // cell)
            out[m] += features[:, row, col].double()
    return torch.nn.functional.normalize(out, dim=1).float()


@pytest.mark.parametrize(
    ("height", "width", "image_size", "grid"),
    [(37, 91, 64, 4), (64, 128, 128, 8)],
    ids=["cells-cut-pixels", "cells-tile-the-frame"],
)
def test_embeddings_equal_a_pixel_loop(
    device: torch.device, height: int, width: int, image_size: int, grid: int
) -> None:
    generator = torch.Generator().manual_seed(0)
    features = torch.randn((8, grid, grid), generator=generator)
    masks = torch.rand((5, height, width), generator=generator) > 0.7
    masks[2] = False
    masks[3, 10:12, 40:45] = True
    got = mask_embeddings(features.to(device), masks.to(device), image_size=image_size)
    assert got.device == device
    assert got.dtype == torch.float32
    assert got.shape == (5, 8)
    torch.testing.assert_close(got.cpu(), _loop_embeddings(features, masks, image_size))


def test_a_mask_inside_one_cell_gets_that_cells_direction() -> None:
    features = torch.randn((16, 32, 32), generator=torch.Generator().manual_seed(1))
    masks = torch.zeros((1, 256, 512), dtype=torch.bool)
    masks[0, 33:40, 100:110] = True  # 256x512 at S=512: cells of 16 px, cell (2, 6)
    got = mask_embeddings(features, masks, image_size=512)
    want = torch.nn.functional.normalize(features[:, 2, 6], dim=0)
    torch.testing.assert_close(got[0], want)


def test_rows_are_unit_length_and_an_empty_mask_is_a_zero_row() -> None:
    features = torch.randn((8, 4, 4), generator=torch.Generator().manual_seed(2))
    masks = torch.zeros((3, 40, 40), dtype=torch.bool)
    masks[0, :20] = True
    masks[2, 5:30, 5:30] = True
    got = mask_embeddings(features, masks, image_size=64)
    torch.testing.assert_close(got.norm(dim=1), torch.tensor([1.0, 0.0, 1.0]))


def test_no_masks_give_an_empty_matrix_with_the_feature_width() -> None:
    got = mask_embeddings(torch.zeros(256, 32, 32), torch.zeros((0, 64, 64), dtype=torch.bool), 512)
    assert got.shape == (0, 256)


def test_cells_follow_the_resize_of_the_longest_side() -> None:
    # 1024x2048 -> 512x1024 at S=1024; cells of 16 resized px are 32 frame px.
    cells = cell_of_pixels(2048, 0.5, 16.0, torch.device("cpu"))
    assert cells[:32].eq(0).all()
    assert cells[32:64].eq(1).all()
    assert int(cells[-1]) == 63


@pytest.mark.parametrize(
    ("features", "masks", "message"),
    [
        (
            torch.zeros(8, 4, 4, dtype=torch.int64),
            torch.zeros(1, 4, 4, dtype=torch.bool),
            "features",
        ),
        (torch.zeros(8, 4, 4), torch.zeros(1, 4, 4), "masks must have dtype torch.bool"),
        (torch.zeros(8, 4, 2), torch.zeros(1, 4, 4, dtype=torch.bool), "square"),
        (torch.zeros(4, 4), torch.zeros(1, 4, 4, dtype=torch.bool), "features must have 3"),
    ],
)
def test_bad_inputs_are_refused_naming_the_argument(features, masks, message) -> None:
    with pytest.raises(ValueError, match=message):
        mask_embeddings(features, masks, image_size=64)
