"""Model size <-> frame size: one pixel-centre convention for masks, id maps and points."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.geometry import points_to_frame, resize_nearest


@pytest.mark.parametrize("dtype", [np.bool_, np.uint8, np.int32, np.int64, np.float32])
@pytest.mark.parametrize("size", [(70, 120), (9, 13), (37, 53), (4, 5)], ids=str)
def test_resize_nearest_equals_torch_nearest_exact(dtype: type, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    array = (rng.random((3, 37, 53)) * 1000).astype(dtype)
    expected = (
        torch.nn.functional.interpolate(
            torch.from_numpy(array.astype(np.float64))[None], size=size, mode="nearest-exact"
        )[0]
        .numpy()
        .astype(dtype)
    )

    resized = resize_nearest(array, size)

    assert resized.dtype == array.dtype
    np.testing.assert_array_equal(resized, expected)


def test_resize_nearest_keeps_leading_dims_and_handles_more_than_512_maps() -> None:
    masks = np.zeros((2, 300, 4, 6), dtype=bool)
    masks[1, 299, 3, 5] = True
    resized = resize_nearest(masks, (8, 12))
    assert resized.shape == (2, 300, 8, 12)
    assert resized.sum() == 4
    assert resized[1, 299, 6:, 10:].all()
    assert resize_nearest(masks[:0], (8, 12)).shape == (0, 300, 8, 12)
    assert resize_nearest(masks, (4, 6)) is masks  # already at the size: no copy


def test_points_land_on_the_frame_pixel_under_their_footprints_centre() -> None:
    points = np.array([[0, 0], [63, 31], [10, 5]])
    assert points_to_frame(points, (32, 64), (64, 128)).tolist() == [[1, 1], [127, 63], [21, 11]]
    assert points_to_frame(points, (32, 64), (32, 64)).tolist() == points.tolist()
    assert points_to_frame(np.zeros((0, 2)), (32, 64), (9, 13)).shape == (0, 2)
    # a point's frame pixel takes the point's model pixel back under nearest resizing
    model = np.zeros((32, 64), np.int32)
    model[5, 10] = 7
    x, y = points_to_frame(np.array([[10, 5]]), (32, 64), (45, 91))[0]
    assert resize_nearest(model, (45, 91))[y, x] == 7
