"""What stands in the world: cars, people, poles and signs, the skyline, the anomaly family and
the outlier-exposure family.

Every drawer paints one object standing on the ground point ``(x, y)`` with ``ppm`` pixels
per metre through a :class:`~pipelines.world.paint.Stroke` whose labels are then committed.
The anomaly and outlier drawers are looked up by kind in ``ANOMALY_DRAWERS`` /
``OUTLIER_DRAWERS`` (whose keys are ``ANOMALY_KINDS`` / ``OUTLIER_KINDS``); ``draw`` commits
their strokes with the family's class id and the object's track id.

The **anomaly family** (never in training): cardboard box, tyre, animal, debris, lost cargo,
ball. The **outlier-exposure family** (pasted into training scenes for RbA's fine-tuning) is
disjoint in shape: stars, checkerboards, triangles, crosses, striped hexagons and rings of
dots, in any colour, from flat to textured.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from pipelines.world.layout import ANOMALY_ID, OUTLIER_ID
from pipelines.world.paint import Canvas, Stroke

__all__ = [
    "ANOMALY_DRAWERS",
    "ANOMALY_KINDS",
    "CAR_KINDS",
    "OUTLIER_DRAWERS",
    "OUTLIER_KINDS",
    "draw",
    "draw_skyline",
]

BUILDING, POLE, SIGN, VEGETATION, PERSON, CAR = 2, 5, 7, 8, 11, 13
CAR_KINDS = ("sedan", "van", "hatchback")
# A drawer of the anomaly or outlier family: (stroke, rng, x, y, width in pixels).
Drawer = Callable[[Stroke, np.random.Generator, float, float, float], None]
_CAR_COLOURS = np.array(
    [[200, 30, 30], [30, 60, 160], [230, 230, 230], [30, 30, 30], [150, 150, 155], [40, 120, 60]],
    np.float32,
)


def draw_skyline(canvas: Canvas, rng: np.random.Generator, horizon: int) -> None:
    """Buildings and trees along the horizon (far away: labels 2 and 8)."""
    width = canvas.size[1]
    x = float(rng.uniform(-30, 0))
    while x < width:
        w = float(rng.uniform(25, 90))
        if rng.random() < 0.3:  # a tree
            r = w * 0.35
            stroke = canvas.stroke().ellipse(
                (x + w / 2, horizon - r), (r, r * 1.1), 0, (40, 90, 40)
            )
            stroke.texture(rng, 10.0, 6.0).commit(VEGETATION)
        else:
            h = float(rng.uniform(0.25, 0.95) * horizon)
            shade = rng.uniform(90, 190)
            tint = rng.uniform(-20, 20, 3)
            stroke = canvas.stroke().rect(x, horizon - h, x + w, horizon, shade + tint)
            stroke.detail(
                lambda layer, v, x=x, h=h, w=w: _windows(layer, v, x, horizon - h, w, h),
                (50, 60, 75),
            )
            stroke.texture(rng, 3.0).commit(BUILDING)
        x += w + float(rng.uniform(0, 15))


def _windows(layer: np.ndarray, value: int, x: float, top: float, w: float, h: float) -> None:
    """A grid of 4x6-pixel windows every 9x11 pixels inside a building's rectangle."""
    height, width = layer.shape
    ys = np.arange(height)[:, None] - (top + 5)
    xs = np.arange(width)[None, :] - (x + 4)
    inside = (ys >= 0) & (ys < h - 11) & (xs >= 0) & (xs < w - 10)
    layer[inside & (np.mod(ys, 11) < 6) & (np.mod(xs, 9) < 4)] = value


def _car(canvas: Canvas, kind: str, rng: np.random.Generator, x: float, y: float, w: float) -> None:
    colour = _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))] + rng.uniform(-20, 20, 3)
    height = {"sedan": 0.75, "van": 1.05, "hatchback": 0.85}[kind] * w
    body_top = y - height * (0.55 if kind != "van" else 0.9)
    stroke = canvas.stroke()
    stroke.rect(x - w / 2, body_top, x + w / 2, y - 0.12 * w, colour)
    if kind != "van":
        cabin = np.array(
            [
                [x - 0.42 * w, body_top],
                [x + 0.42 * w, body_top],
                [x + 0.33 * w, y - height],
                [x - 0.33 * w, y - height],
            ]
        )
        stroke.polygon(cabin, colour * 0.9)
        stroke.detail(
            lambda layer, v: cv2.fillPoly(layer, [np.round(cabin).astype(np.int32)], v),
            (40, 50, 60),
        )
    else:
        stroke.detail(
            lambda layer, v: cv2.rectangle(
                layer,
                (int(x - 0.4 * w), int(body_top + 0.08 * w)),
                (int(x + 0.4 * w), int(body_top + 0.3 * w)),
                v,
                -1,
            ),
            (40, 50, 60),
        )
    for side in (-1, 1):  # wheels and tail lights
        stroke.rect(
            x + side * 0.42 * w - 0.09 * w,
            y - 0.16 * w,
            x + side * 0.42 * w + 0.09 * w,
            y,
            (20, 20, 20),
        )
        lx = x + side * 0.4 * w
        stroke.detail(
            lambda layer, v, lx=lx: cv2.rectangle(
                layer,
                (int(lx - 0.06 * w), int(body_top + 0.05 * w)),
                (int(lx + 0.06 * w), int(body_top + 0.13 * w)),
                v,
                -1,
            ),
            (210, 20, 20),
        )
    stroke.texture(rng, 3.0).commit(CAR)


def _person(canvas: Canvas, rng: np.random.Generator, x: float, y: float, w: float) -> None:
    shirt = rng.uniform(20, 230, 3)
    trousers = rng.uniform(20, 90, 3)
    skin = np.array([225, 180, 150]) * rng.uniform(0.5, 1.0)
    h = 3.0 * w
    stroke = canvas.stroke()
    stroke.rect(x - 0.3 * w, y - 0.5 * h, x - 0.05 * w, y, trousers)
    stroke.rect(x + 0.05 * w, y - 0.5 * h, x + 0.3 * w, y, trousers)
    stroke.rect(x - 0.45 * w, y - 0.85 * h, x + 0.45 * w, y - 0.48 * h, shirt)
    stroke.ellipse((x, y - 0.92 * h), (0.22 * w, 0.08 * h), 0, skin)
    stroke.texture(rng, 4.0).commit(PERSON)


def _pole(canvas: Canvas, rng: np.random.Generator, x: float, y: float, ppm: float) -> None:
    w = max(1.0, 0.15 * ppm)
    top = y - 3.5 * ppm
    canvas.stroke().rect(x - w / 2, top, x + w / 2, y, (110, 110, 115)).commit(POLE)
    r = 0.4 * ppm
    sign = canvas.stroke()
    if rng.random() < 0.5:
        sign.ellipse((x, top), (r, r), 0, (220, 30, 30)).detail(
            lambda layer, v: cv2.circle(layer, (int(x), int(top)), max(1, int(0.7 * r)), v, -1),
            (240, 240, 240),
        )
    else:
        sign.rect(x - r, top - r, x + r, top + r, (30, 80, 190))
    sign.commit(SIGN)


# --- the anomaly family -------------------------------------------------------------------
# Each drawer paints one anomaly of width ``w`` standing at ``(x, y)`` into ``s``.


def _box(s: Stroke, rng: np.random.Generator, x: float, y: float, w: float) -> None:
    """Cardboard: front and top faces, packing tape."""
    brown = np.array([170, 120, 70]) * rng.uniform(0.8, 1.15)
    h = w * rng.uniform(0.6, 1.0)
    s.rect(x - w / 2, y - h, x + w / 2, y, brown)
    top = np.array(
        [
            [x - w / 2, y - h],
            [x + w / 2, y - h],
            [x + 0.35 * w, y - 1.2 * h],
            [x - 0.65 * w, y - 1.2 * h],
        ]
    )
    s.polygon(top, brown * 1.15)
    s.detail(
        lambda layer, v: cv2.line(
            layer, (int(x), int(y - 1.2 * h)), (int(x), int(y)), v, max(1, int(w / 10))
        ),
        (200, 180, 140),
    )
    s.texture(rng, 5.0, 4.0)


def _tyre(s: Stroke, rng: np.random.Generator, x: float, y: float, w: float) -> None:
    """Lying flat or standing: a dark ring with a grey rim."""
    upright = rng.random() < 0.5
    ry = w / 2 if upright else w * 0.22
    s.ellipse((x, y - ry), (w / 2, ry), 0, (25, 25, 28))
    s.detail(
        lambda layer, v: cv2.ellipse(
            layer,
            (int(x), int(y - ry)),
            (max(1, int(w / 4)), max(1, int(ry / 2))),
            0,
            0,
            360,
            v,
            -1,
        ),
        (135, 135, 140),
    )
    s.texture(rng, 3.0)


def _animal(s: Stroke, rng: np.random.Generator, x: float, y: float, w: float) -> None:
    """Body, head, legs; fur colours."""
    fur = np.array(
        rng.choice([[120, 80, 40], [200, 190, 170], [60, 50, 45], [180, 120, 60]])
    ) * rng.uniform(0.85, 1.1)
    facing = 1 if rng.random() < 0.5 else -1
    s.ellipse((x, y - 0.45 * w), (w / 2, 0.22 * w), 0, fur)
    s.ellipse((x + facing * 0.5 * w, y - 0.68 * w), (0.16 * w, 0.13 * w), 0, fur * 0.9)
    for lx in (-0.35, -0.2, 0.2, 0.35):
        s.rect(x + lx * w - 0.04 * w, y - 0.35 * w, x + lx * w + 0.04 * w, y, fur * 0.8)
    s.texture(rng, 12.0, 8.0)


def _debris(s: Stroke, rng: np.random.Generator, x: float, y: float, w: float) -> None:
    """An irregular metal or wooden shard."""
    n = int(rng.integers(5, 9))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = w / 2 * rng.uniform(0.4, 1.0, n)
    pts = np.stack([x + radii * np.cos(angles), y - 0.3 * w + 0.5 * radii * np.sin(angles)], 1)
    tone = rng.choice([[150, 150, 160], [120, 90, 60], [90, 95, 100]])
    s.polygon(pts, np.array(tone) * rng.uniform(0.8, 1.2)).texture(rng, 14.0, 10.0)


def _cargo(s: Stroke, rng: np.random.Generator, x: float, y: float, w: float) -> None:
    """A tarp-wrapped bundle with straps."""
    tarp = np.array(rng.choice([[40, 70, 170], [200, 160, 40], [60, 120, 60]]))
    h = w * rng.uniform(0.4, 0.7)
    pts = np.array(
        [[x - w / 2, y], [x + w / 2, y], [x + 0.45 * w, y - h], [x - 0.4 * w, y - 1.1 * h]]
    )
    s.polygon(pts, tarp)
    for fx in (-0.2, 0.2):
        s.detail(
            lambda layer, v, fx=fx: cv2.line(
                layer,
                (int(x + fx * w), int(y)),
                (int(x + fx * w), int(y - 1.1 * h)),
                v,
                max(1, int(w / 14)),
            ),
            (20, 20, 20),
        )
    s.texture(rng, 6.0, 12.0)


def _ball(s: Stroke, rng: np.random.Generator, x: float, y: float, w: float) -> None:
    """A sphere with a coloured band."""
    r = w / 2
    base = rng.uniform(120, 255, 3)
    s.ellipse((x, y - r), (r, r), 0, base)
    s.detail(
        lambda layer, v: cv2.rectangle(
            layer, (int(x - r), int(y - 1.2 * r)), (int(x + r), int(y - 0.8 * r)), v, -1
        ),
        255 - base,
    )
    s.texture(rng, 4.0)


ANOMALY_DRAWERS: dict[str, Drawer] = {
    "box": _box,
    "tyre": _tyre,
    "animal": _animal,
    "debris": _debris,
    "cargo": _cargo,
    "ball": _ball,
}
ANOMALY_KINDS = tuple(ANOMALY_DRAWERS)


# --- the outlier-exposure family -----------------------------------------------------------
# Each drawer first draws its colours and angle (``_synthetic``), then paints a shape of
# diameter ``w`` resting on ``(x, y)``.


def _synthetic(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """Any colour, its complement and a rotation angle.

    Outlier exposure stands for "anything that is not in-distribution" (RbA pastes all of
    COCO): colours are drawn from the whole RGB cube, dull as well as saturated, so that the
    model cannot learn "saturated = outlier".
    """
    colour = rng.uniform(0, 255, 3).astype(np.float32)
    return colour, 255 - colour, rng.uniform(0, np.pi)


def _star(s: Stroke, rng: np.random.Generator, x: float, y: float, w: float) -> None:
    colour, _, angle = _synthetic(rng)
    cx, cy, r = x, y - w / 2, w / 2
    k = np.arange(10)
    rad = np.where(k % 2 == 0, r, r * 0.45)
    pts = np.stack(
        [cx + rad * np.cos(angle + k * np.pi / 5), cy + rad * np.sin(angle + k * np.pi / 5)], 1
    )
    s.polygon(pts, colour)


def _checker(s: Stroke, rng: np.random.Generator, x: float, y: float, w: float) -> None:
    colour, other, _ = _synthetic(rng)
    cx, cy, r = x, y - w / 2, w / 2
    s.rect(cx - r, cy - r, cx + r, cy + r, colour)
    step = max(2, int(w / 5))
    for i in range(5):
        for j in range(5):
            if (i + j) % 2:
                x0, y0 = int(cx - r) + i * step, int(cy - r) + j * step
                s.detail(
                    lambda layer, v, x0=x0, y0=y0: cv2.rectangle(
                        layer, (x0, y0), (x0 + step, y0 + step), v, -1
                    ),
                    other,
                )


def _triangle(s: Stroke, rng: np.random.Generator, x: float, y: float, w: float) -> None:
    colour, _, angle = _synthetic(rng)
    cx, cy, r = x, y - w / 2, w / 2
    k = np.arange(3)
    pts = np.stack(
        [cx + r * np.cos(angle + k * 2 * np.pi / 3), cy + r * np.sin(angle + k * 2 * np.pi / 3)],
        1,
    )
    s.polygon(pts, colour)


def _cross(s: Stroke, rng: np.random.Generator, x: float, y: float, w: float) -> None:
    colour, _, _ = _synthetic(rng)
    cx, cy, r = x, y - w / 2, w / 2
    a = max(1.0, r / 3)
    s.rect(cx - r, cy - a, cx + r, cy + a, colour).rect(cx - a, cy - r, cx + a, cy + r, colour)


def _hexagon(s: Stroke, rng: np.random.Generator, x: float, y: float, w: float) -> None:
    """Striped."""
    colour, other, angle = _synthetic(rng)
    cx, cy, r = x, y - w / 2, w / 2
    k = np.arange(6)
    pts = np.stack(
        [cx + r * np.cos(angle + k * np.pi / 3), cy + r * np.sin(angle + k * np.pi / 3)], 1
    )
    s.polygon(pts, colour)
    for off in np.linspace(-r, r, 5):
        s.detail(
            lambda layer, v, off=off: cv2.line(
                layer,
                (int(cx - r), int(cy + off)),
                (int(cx + r), int(cy + off)),
                v,
                max(1, int(w / 16)),
            ),
            other,
        )


def _dots(s: Stroke, rng: np.random.Generator, x: float, y: float, w: float) -> None:
    """A ring of discs."""
    colour, _, _ = _synthetic(rng)
    cx, cy, r = x, y - w / 2, w / 2
    k = np.arange(8)
    for px, py in zip(
        cx + 0.7 * r * np.cos(k * np.pi / 4), cy + 0.7 * r * np.sin(k * np.pi / 4), strict=True
    ):
        s.ellipse((px, py), (0.3 * r, 0.3 * r), 0, colour)


OUTLIER_DRAWERS: dict[str, Drawer] = {
    "star": _star,
    "checker": _checker,
    "triangle": _triangle,
    "cross": _cross,
    "hexagon": _hexagon,
    "dots": _dots,
}
OUTLIER_KINDS = tuple(OUTLIER_DRAWERS)


_FAMILIES = {"anomaly": (ANOMALY_DRAWERS, ANOMALY_ID), "outlier": (OUTLIER_DRAWERS, OUTLIER_ID)}


def draw(canvas: Canvas, obj, x: float, y: float, ppm: float) -> None:
    """Paint ``obj`` (a :class:`~pipelines.world.scene.WorldObject`) standing at ``(x, y)``."""
    rng = np.random.default_rng(obj.seed)
    w = obj.size * ppm
    if obj.family == "car":
        _car(canvas, obj.kind, rng, x, y, w)
    elif obj.family == "person":
        _person(canvas, rng, x, y, w)
    elif obj.family == "pole":
        _pole(canvas, rng, x, y, ppm)
    elif obj.family in ("anomaly", "outlier"):
        drawers, class_id = _FAMILIES[obj.family]
        if obj.kind not in drawers:
            raise ValueError(f"unknown {obj.family} kind {obj.kind!r}")
        stroke = canvas.stroke()
        drawers[obj.kind](stroke, rng, x, y, w)
        if obj.family == "outlier":  # surfaces from flat to grainy and blotchy
            stroke.texture(rng, rng.uniform(0.0, 16.0), rng.uniform(0.0, 12.0))
        stroke.commit(class_id, obj.track_id)
    else:
        raise ValueError(f"unknown object family {obj.family!r}")
