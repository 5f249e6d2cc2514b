"""Drawing one object into a frame and its label maps at once.

A :class:`Canvas` holds the frame being drawn and its three label maps. Objects are painted
far to near: each :class:`Stroke` paints pixels of the image and records them in its own
mask, and committing the stroke writes the object's class and instance id over whatever was
there, so nearer objects occlude farther ones in the labels exactly as in the picture.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["Canvas", "Stroke", "textured"]


@dataclass
class Canvas:
    """The frame being drawn (float32 RGB in 0-255, ``[H, W, 3]``) and its label maps.

    ``semantic`` holds Cityscapes train ids (uint8), ``instances`` object ids (uint16, 0 none).
    """

    image: np.ndarray
    semantic: np.ndarray
    instances: np.ndarray

    @classmethod
    def blank(cls, height: int, width: int) -> Canvas:
        return cls(
            np.zeros((height, width, 3), np.float32),
            np.full((height, width), 255, np.uint8),
            np.zeros((height, width), np.uint16),
        )

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[0], self.image.shape[1]

    def stroke(self) -> Stroke:
        return Stroke(self)


def textured(
    rng: np.random.Generator,
    shape: tuple[int, int],
    colour: np.ndarray,
    grain: float,
    blotch: float,
) -> np.ndarray:
    """A ``[H, W, 3]`` float32 colour field: ``colour`` with fine grain and coarse blotches."""
    height, width = shape
    fine = rng.normal(0.0, grain, (height, width, 1)).astype(np.float32)
    coarse = rng.normal(0.0, blotch, (max(2, height // 16), max(2, width // 16), 1))
    coarse = cv2.resize(coarse.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    return np.asarray(colour, np.float32)[None, None, :] + fine + coarse[..., None]


class Stroke:
    """The pixels of one object: paint with cv2 primitives, then ``commit`` its labels."""

    def __init__(self, canvas: Canvas) -> None:
        self.canvas = canvas
        self.mask = np.zeros(canvas.size, np.uint8)

    def _both(self, draw, colour) -> None:
        layer = np.zeros(self.canvas.size, np.uint8)
        draw(layer, 1)
        hit = layer.astype(bool)
        self.canvas.image[hit] = np.asarray(colour, np.float32)
        self.mask |= layer

    def polygon(self, points: np.ndarray, colour) -> Stroke:
        pts = [np.round(points).astype(np.int32)]
        self._both(lambda layer, v: cv2.fillPoly(layer, pts, v), colour)
        return self

    def ellipse(self, centre, axes, angle: float, colour) -> Stroke:
        c = (round(centre[0]), round(centre[1]))
        a = (max(1, round(axes[0])), max(1, round(axes[1])))
        self._both(lambda layer, v: cv2.ellipse(layer, c, a, angle, 0, 360, v, -1), colour)
        return self

    def rect(self, x0: float, y0: float, x1: float, y1: float, colour) -> Stroke:
        pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)
        return self.polygon(pts, colour)

    def detail(self, draw, colour) -> Stroke:
        """Paint inside the object only (markings, texture lines): pixels outside stay."""
        layer = np.zeros(self.canvas.size, np.uint8)
        draw(layer, 1)
        hit = layer.astype(bool) & self.mask.astype(bool)
        self.canvas.image[hit] = np.asarray(colour, np.float32)
        return self

    def texture(self, rng: np.random.Generator, grain: float, blotch: float = 0.0) -> Stroke:
        """Add noise to the object's pixels (surface texture)."""
        ys, xs = np.nonzero(self.mask)
        if ys.size:  # noise over the object's bounding box only
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            hit = self.mask[y0:y1, x0:x1].astype(bool)
            field = textured(rng, (int(y1 - y0), int(x1 - x0)), np.zeros(3), grain, blotch)
            self.canvas.image[y0:y1, x0:x1][hit] += field[hit]
        return self

    def commit(self, class_id: int, instance_id: int = 0) -> np.ndarray:
        """Write the labels of the painted pixels; return the object's bool mask ``[H, W]``."""
        hit = self.mask.astype(bool)
        self.canvas.semantic[hit] = class_id
        self.canvas.instances[hit] = instance_id
        return hit
