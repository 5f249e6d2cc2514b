"""A road scene as numbers, and its rendering into a frame with pixel-exact labels.

A :class:`Scene` is a straight-or-curving road seen from a car: the horizon, the vanishing
point, the curvature, the light, and a list of :class:`WorldObject` placed by distance from the
camera and lateral offset. ``render(scene, travelled)`` draws it after the camera has moved
``travelled`` metres forward, so a drive log is one scene rendered at increasing distances:
objects approach, grow and leave the frame at the bottom, as under ego-motion.

Perspective: a ground point at distance ``d`` appears on row
``horizon + (H - horizon) * D0 / d`` (``D0`` = the distance seen on the frame's bottom row), and
its width scales with ``D0 / d``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from pipelines.world import objects
from pipelines.world.paint import Canvas, textured

__all__ = ["D0", "ROAD_WIDTH_M", "Scene", "WorldObject", "random_scene", "render"]

D0 = 4.0  # metres from the camera to the ground seen on the bottom row
ROAD_WIDTH_M = 8.0
MAX_DISTANCE = 150.0  # metres; farther objects are below a pixel and not drawn
# Cityscapes train ids of the background (objects.py holds those of the objects).
ROAD, SIDEWALK, VEGETATION, TERRAIN, SKY = 0, 1, 8, 9, 10


@dataclass(frozen=True)
class WorldObject:
    """Something standing on the ground of a scene.

    Attributes:
        family: "car", "person", "pole", "anomaly" or "outlier".
        kind: the drawer within the family (see ``objects``).
        distance: metres ahead of the camera at ``travelled = 0``.
        lateral: offset from the road centre in road half-widths (±1 = road edge).
        size: metres (the object's characteristic width).
        seed: appearance seed (colour, shape details).
        track_id: the object's id across the frames of a log (anomalies and outliers; 0 else).
    """

    family: str
    kind: str
    distance: float
    lateral: float
    size: float
    seed: int
    track_id: int = 0


@dataclass(frozen=True)
class Scene:
    height: int
    width: int
    horizon: float  # fraction of the height
    vanish: float  # vanishing point x as a fraction of the width
    curve: float  # lateral shift of the road centre at the horizon, fraction of the width
    road_half_width: float  # pixels at the bottom row
    sidewalk: float  # sidewalk width relative to the road half-width
    sky_top: tuple[float, float, float]
    sky_bottom: tuple[float, float, float]
    asphalt: float
    verge_is_grass: bool
    buildings_seed: int
    light_gain: float
    light_gamma: float
    colour_cast: tuple[float, float, float]
    blur: float
    noise: float
    jpeg_quality: int
    sun_side: float  # -1..1: where shadows fall
    objects: tuple[WorldObject, ...] = field(default_factory=tuple)
    seed: int = 0


def random_scene(rng: np.random.Generator, height: int, width: int) -> Scene:
    """Random road layout, light and camera; no objects yet (see ``populate``)."""
    dusk = rng.random() < 0.25
    sky_top = (70, 110, 200) if not dusk else (90, 80, 140)
    sky_bottom = (190, 210, 235) if not dusk else (230, 160, 120)
    jitter = rng.uniform(-25, 25, 3)
    return Scene(
        height=height,
        width=width,
        horizon=float(rng.uniform(0.36, 0.5)),
        vanish=float(rng.uniform(0.42, 0.58)),
        curve=float(rng.uniform(-0.18, 0.18)),
        road_half_width=float(rng.uniform(0.32, 0.55) * width),
        sidewalk=float(rng.uniform(0.18, 0.4)),
        sky_top=tuple(float(v) for v in np.clip(np.add(sky_top, jitter), 0, 255)),
        sky_bottom=tuple(float(v) for v in np.clip(np.add(sky_bottom, jitter), 0, 255)),
        asphalt=float(rng.uniform(60, 115)),
        verge_is_grass=bool(rng.random() < 0.5),
        buildings_seed=int(rng.integers(1 << 31)),
        light_gain=float(rng.uniform(0.65, 1.3)),
        light_gamma=float(rng.uniform(0.8, 1.25)),
        colour_cast=tuple(float(v) for v in rng.uniform(0.88, 1.12, 3)),
        blur=float(rng.choice([0.0, 0.0, 0.6, 1.0, 1.5])),
        noise=float(rng.uniform(1.0, 6.0)),
        jpeg_quality=int(rng.integers(35, 96)),
        sun_side=float(rng.uniform(-1, 1)),
        seed=int(rng.integers(1 << 31)),
    )


class Geometry:
    """Rows, road centre and half-width of a scene, as arrays over the frame's rows."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        h, w = scene.height, scene.width
        self.horizon_y = scene.horizon * h
        rows = np.arange(h, dtype=np.float32) + 0.5
        # s: 0 at the horizon, 1 on the bottom row (= D0 / distance); negative above the horizon.
        self.s = (rows - self.horizon_y) / (h - self.horizon_y)
        t = np.clip(1.0 - self.s, 0.0, 1.0)
        self.centre = w * (0.5 + (scene.vanish - 0.5) * t + scene.curve * t**2)
        self.half_width = scene.road_half_width * np.clip(self.s, 0.0, None) + 1.0

    def ground(self, distance: float, lateral: float) -> tuple[float, float, float]:
        """(x, y, pixels per metre) of the ground point at ``distance``, ``lateral``."""
        h, w = self.scene.height, self.scene.width
        s = D0 / distance
        y = self.horizon_y + (h - self.horizon_y) * s
        t = min(max(1.0 - s, 0.0), 1.0)
        centre = w * (0.5 + (self.scene.vanish - 0.5) * t + self.scene.curve * t**2)
        half = self.scene.road_half_width * s + 1.0
        return centre + lateral * half, y, 2.0 * self.scene.road_half_width * s / ROAD_WIDTH_M


def _background(scene: Scene, geo: Geometry, canvas: Canvas, travelled: float) -> None:
    h, w = scene.height, scene.width
    rng = np.random.default_rng(scene.seed + 7)
    hy = round(geo.horizon_y)
    # Sky: a vertical gradient.
    ramp = np.linspace(0.0, 1.0, max(1, hy), dtype=np.float32)[:, None, None]
    top, bottom = np.array(scene.sky_top, np.float32), np.array(scene.sky_bottom, np.float32)
    canvas.image[:hy] = top * (1 - ramp) + bottom * ramp
    canvas.semantic[:hy] = SKY
    # Ground beyond the sidewalks: grass (terrain) or bushes (vegetation).
    verge_colour = (80, 125, 60) if scene.verge_is_grass else (50, 95, 45)
    verge = textured(rng, (h - hy, w), np.array(verge_colour), 6.0, 10.0)
    canvas.image[hy:] = verge
    canvas.semantic[hy:] = TERRAIN if scene.verge_is_grass else VEGETATION
    # Road and sidewalks, row by row as arrays (no loop over pixels).
    xs = np.arange(w, dtype=np.float32)[None, :] + 0.5
    offset = np.abs(xs - geo.centre[:, None])
    below = (geo.s > 0)[:, None]
    road = below & (offset < geo.half_width[:, None])
    side = below & ~road & (offset < geo.half_width[:, None] * (1 + scene.sidewalk))
    asphalt = textured(rng, (h, w), np.full(3, scene.asphalt), 5.0, 7.0)
    paving = textured(rng, (h, w), np.full(3, scene.asphalt + 60.0), 4.0, 4.0)
    canvas.image[road] = asphalt[road]
    canvas.image[side] = paving[side]
    canvas.semantic[road] = ROAD
    canvas.semantic[side] = SIDEWALK
    # Lane markings: dashes every 9 m along the centre line, edge lines; both are road.
    distance = D0 / np.maximum(geo.s, 1e-3) + travelled
    dash = (np.mod(distance, 9.0) < 4.0)[:, None]
    line_w = np.maximum(0.6, 0.1 / ROAD_WIDTH_M * 2 * geo.half_width)[:, None]
    centre_line = road & dash & (offset < line_w)
    edge_line = road & (offset > geo.half_width[:, None] - 2 * line_w)
    canvas.image[centre_line | edge_line] = (225, 225, 215)
    # Buildings along the horizon (far: they do not move while driving).
    objects.draw_skyline(canvas, np.random.default_rng(scene.buildings_seed), hy)


def _shadow(scene: Scene, canvas: Canvas, geo: Geometry, obj: WorldObject, travelled: float):
    d = obj.distance - travelled
    x, y, ppm = geo.ground(d, obj.lateral)
    width = obj.size * ppm
    layer = np.zeros(canvas.size, np.uint8)
    centre = (round(x + scene.sun_side * 0.4 * width), round(y))
    cv2.ellipse(
        layer, centre, (max(1, int(0.7 * width)), max(1, int(0.12 * width))), 0, 0, 360, 1, -1
    )
    canvas.image[layer.astype(bool)] *= 0.55


def render(scene: Scene, travelled: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``scene`` after the camera moved ``travelled`` metres.

    Returns ``(image [H, W, 3] uint8 RGB, semantic [H, W] uint8, instances [H, W] uint16)``.
    Anomalies and outliers get their ``track_id`` as instance id and the semantic ids
    ``layout.ANOMALY_ID`` / ``layout.OUTLIER_ID``.
    """
    geo = Geometry(scene)
    canvas = Canvas.blank(scene.height, scene.width)
    _background(scene, geo, canvas, travelled)
    visible = [o for o in scene.objects if D0 * 0.75 < o.distance - travelled < MAX_DISTANCE]
    for obj in sorted(visible, key=lambda o: -(o.distance - travelled)):
        if obj.family in ("car", "anomaly", "outlier"):
            _shadow(scene, canvas, geo, obj, travelled)
        x, y, ppm = geo.ground(obj.distance - travelled, obj.lateral)
        objects.draw(canvas, obj, x, y, ppm)
    return _camera(scene, canvas), canvas.semantic, canvas.instances


def _camera(scene: Scene, canvas: Canvas) -> np.ndarray:
    """Light, colour cast, blur, sensor noise and JPEG artefacts; labels are unaffected."""
    rng = np.random.default_rng(scene.seed + 11)
    image = canvas.image / 255.0
    image = np.clip(image, 0, 1) ** scene.light_gamma * scene.light_gain
    image = image * np.asarray(scene.colour_cast, np.float32)[None, None, :] * 255.0
    if scene.blur > 0:
        image = cv2.GaussianBlur(image, (0, 0), scene.blur)
    image = image + rng.normal(0, scene.noise, image.shape).astype(np.float32)
    image = np.clip(image, 0, 255).astype(np.uint8)
    ok, encoded = cv2.imencode(
        ".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, scene.jpeg_quality]
    )
    if not ok:  # pragma: no cover - OpenCV always encodes JPEG
        raise RuntimeError("OpenCV failed to encode JPEG")
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1].copy()
