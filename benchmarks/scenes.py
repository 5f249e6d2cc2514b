"""A quick hand-drawn road scene for speed measurements (benchmarks and their unit tests).

Speed does not depend on what a frame shows, only that it looks like a road frame to the
models (sky, buildings, asphalt, a few odd objects): drawing is much faster than rendering a
world frame with its labels (``pipelines/world``).
"""

from __future__ import annotations

import numpy as np

FRAME_SIZE = (384, 768)  # (H, W) of draw_scene's frames


def draw_scene(rng: np.random.Generator, size: tuple[int, int] = FRAME_SIZE) -> np.ndarray:
    """One road scene, ``[H, W, 3]`` uint8 BGR (OpenCV's order, for ``cv2.imwrite``)."""
    import cv2

    height, width = size
    horizon = int(height * rng.uniform(0.38, 0.48))
    image = np.empty((height, width, 3), np.uint8)
    sky_top, sky_bottom = np.array([235, 200, 150]), np.array([250, 230, 205])
    ramp = np.linspace(0.0, 1.0, horizon)[:, None, None]
    image[:horizon] = (sky_top * (1 - ramp) + sky_bottom * ramp).astype(np.uint8)
    image[horizon:] = (90, 110, 95)  # verge
    # Buildings along the horizon.
    x = 0
    while x < width:
        w = int(rng.integers(40, 110))
        h = int(rng.integers(30, horizon - 10))
        shade = int(rng.integers(80, 170))
        cv2.rectangle(image, (x, horizon - h), (x + w, horizon), (shade, shade, shade + 10), -1)
        for wy in range(horizon - h + 8, horizon - 8, 16):
            for wx in range(x + 6, x + w - 10, 14):
                cv2.rectangle(image, (wx, wy), (wx + 6, wy + 8), (60, 70, 80), -1)
        x += w + int(rng.integers(0, 20))
    # Road: a trapezoid to the vanishing point, asphalt with noise, lane markings.
    vanish = width // 2 + int(rng.integers(-40, 40))
    road = np.array([[0, height], [width, height], [vanish + 20, horizon], [vanish - 20, horizon]])
    cv2.fillPoly(image, [road.astype(np.int32)], (70, 70, 72))
    noise = rng.integers(-6, 7, size=(height - horizon, width, 1))
    below = image[horizon:].astype(np.int16) + noise
    image[horizon:] = np.clip(below, 0, 255).astype(np.uint8)
    for t0 in np.arange(0.05, 1.0, 0.12):
        t1 = t0 + 0.06
        y0, y1 = int(height - t0 * (height - horizon)), int(height - t1 * (height - horizon))
        x0 = int(width / 2 + (vanish - width / 2) * t0)
        x1 = int(width / 2 + (vanish - width / 2) * t1)
        thickness = max(1, int(8 * (1 - t0)))
        cv2.line(image, (x0, y0), (x1, y1), (230, 230, 230), thickness)
    # Odd objects on the road.
    for _ in range(int(rng.integers(1, 4))):
        depth = rng.uniform(0.15, 0.8)  # 0 = near the camera
        cy = int(height - depth * (height - horizon))
        scale = 1.0 - 0.8 * depth
        cx = int(
            width / 2 + (vanish - width / 2) * depth + rng.uniform(-0.25, 0.25) * width * scale
        )
        r = max(4, int(28 * scale * rng.uniform(0.7, 1.3)))
        kind = rng.integers(0, 3)
        if kind == 0:  # a cardboard box
            cv2.rectangle(image, (cx - r, cy - r), (cx + r, cy), (60, 120, 180), -1)
            cv2.line(image, (cx - r, cy - r // 2), (cx + r, cy - r // 2), (40, 90, 140), 2)
        elif kind == 1:  # a tyre
            cv2.circle(image, (cx, cy - r), r, (25, 25, 25), -1)
            cv2.circle(image, (cx, cy - r), max(2, r // 2), (120, 120, 120), -1)
        else:  # an animal-like blob
            colour = tuple(int(c) for c in rng.integers(90, 220, size=3))
            cv2.ellipse(image, (cx, cy - r // 2), (r, max(2, r // 2)), 0, 0, 360, colour, -1)
            cv2.circle(image, (cx + r, cy - r), max(2, r // 3), colour, -1)
    return image
