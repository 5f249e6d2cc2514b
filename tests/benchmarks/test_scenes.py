"""The benchmarks' hand-drawn road scenes."""

from __future__ import annotations

import numpy as np

from benchmarks.scenes import FRAME_SIZE, draw_scene


def test_scenes_are_deterministic_bgr_frames_with_a_road() -> None:
    first = draw_scene(np.random.default_rng(3))
    again = draw_scene(np.random.default_rng(3))
    other = draw_scene(np.random.default_rng(4))
    assert first.shape == (*FRAME_SIZE, 3)
    assert first.dtype == np.uint8
    assert (first == again).all()
    assert (first != other).any()
    # Sky on top (blue-ish in BGR), asphalt grey at the bottom centre.
    assert first[0, 0, 0] > first[0, 0, 2]
    bottom = first[-5, FRAME_SIZE[1] // 4].astype(int)
    assert abs(bottom[0] - bottom[2]) < 20
