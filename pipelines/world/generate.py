"""Populate scenes and write the world's splits and drive logs (layout: ``layout.py``).

Everything is a function of the seed: frame ``i`` of split ``s`` is drawn from
``numpy.random.default_rng([seed, SPLIT_CODES[s], i])``, so any frame can be regenerated alone
and two machines write identical worlds.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

from pipelines.world import objects
from pipelines.world.layout import ANOMALY_ID, VOID_ID
from pipelines.world.scene import D0, MAX_DISTANCE, Scene, WorldObject, random_scene, render
from pipelines.world.spec import FRAME_SIZE, WorldSpec
from transforms.masks import encode_rle, masks_to_xywh

__all__ = [
    "FRAME_SIZE",
    "GENERATOR_VERSION",
    "SPLIT_CODES",
    "WorldSpec",
    "anomaly_map",
    "drive_log_scene",
    "split_frame",
    "write_drive_log",
    "write_split",
    "write_world",
]

_LOG = logging.getLogger(__name__)
GENERATOR_VERSION = 3  # bump whenever the same seed would draw different frames
SPLIT_CODES = {"train": 1, "ood": 2, "val": 3, "test": 4, "logs": 5}
MAX_AREA_FRACTION = 0.15  # the largest anomaly, as a fraction of the frame


def _background_objects(
    rng: np.random.Generator, near: float, far: float, sidewalk: float
) -> list[WorldObject]:
    """Cars on the road, people on the sidewalks and poles at their outer edge, in [near, far] m."""
    placed: list[WorldObject] = []
    length = far - near
    for _ in range(rng.poisson(length / 25.0)):
        kind = str(rng.choice(objects.CAR_KINDS))
        lane = rng.choice([-0.5, 0.5]) + rng.uniform(-0.12, 0.12)
        size = {"sedan": 1.8, "van": 2.0, "hatchback": 1.7}[kind] * rng.uniform(0.92, 1.08)
        placed.append(
            WorldObject(
                "car", kind, rng.uniform(near, far), float(lane), size, int(rng.integers(1 << 31))
            )
        )
    for _ in range(rng.poisson(length / 40.0)):
        side = rng.choice([-1.0, 1.0])
        lateral = side * (1.0 + sidewalk * rng.uniform(0.3, 0.8))
        placed.append(
            WorldObject(
                "person",
                "person",
                rng.uniform(near, far),
                float(lateral),
                0.55,
                int(rng.integers(1 << 31)),
            )
        )
    for _ in range(rng.poisson(length / 22.0)):
        side = rng.choice([-1.0, 1.0])
        placed.append(
            WorldObject(
                "pole",
                "pole",
                rng.uniform(near, far),
                float(side * (1.0 + sidewalk)),
                0.3,
                int(rng.integers(1 << 31)),
            )
        )
    return placed


def _anomalies(
    rng: np.random.Generator,
    count: int,
    first_id: int,
    near: float,
    far: float,
    cars: list[WorldObject],
) -> list[WorldObject]:
    """``count`` anomalies, mostly on the road; some touch each other, some stand behind a car."""
    placed: list[WorldObject] = []
    for index in range(count):
        kind = str(rng.choice(objects.ANOMALY_KINDS))
        size = float(rng.uniform(0.25, 1.4) * (1.6 if kind == "cargo" else 1.0))
        roll = rng.random()
        if placed and roll < 0.3:  # touching the previous one (the case instance masks exist for)
            prev = placed[-1]
            distance = prev.distance + rng.uniform(-0.3, 0.3)
            lateral = prev.lateral + rng.choice([-1, 1]) * (prev.size + size) / 2 * 0.22
        elif cars and roll < 0.45:  # partly hidden behind a car
            car = cars[int(rng.integers(len(cars)))]
            distance = car.distance + rng.uniform(1.0, 4.0)
            lateral = car.lateral + rng.uniform(-0.25, 0.25)
        else:
            distance = float(rng.uniform(near, far))
            lateral = float(
                rng.uniform(-0.9, 0.9) if rng.random() < 0.85 else rng.choice([-1.15, 1.15])
            )
        placed.append(
            WorldObject(
                "anomaly",
                kind,
                float(distance),
                float(lateral),
                size,
                int(rng.integers(1 << 31)),
                first_id + index,
            )
        )
    return placed


def _outliers(rng: np.random.Generator, count: int, near: float, far: float) -> list[WorldObject]:
    """Outlier-exposure objects anywhere on the ground, as RbA pastes COCO objects anywhere."""
    return [
        WorldObject(
            "outlier",
            str(rng.choice(objects.OUTLIER_KINDS)),
            float(rng.uniform(near, far)),
            float(rng.uniform(-1.8, 1.8)),
            float(rng.uniform(0.3, 2.2)),
            int(rng.integers(1 << 31)),
            index + 1,
        )
        for index in range(count)
    ]


def anomaly_map(semantic: np.ndarray) -> np.ndarray:
    """``[H, W]`` uint8: 1 anomaly, 255 void, 0 in-distribution (Fishyscapes convention)."""
    out = np.zeros(semantic.shape, np.uint8)
    out[semantic == ANOMALY_ID] = 1
    out[semantic == VOID_ID] = 255
    return out


def _clip_large(
    semantic: np.ndarray, instances: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Instances above MAX_AREA_FRACTION of the frame become void (too close to the camera).

    Returns the new ``(semantic, instances)`` and the voided ids (int array, maybe empty).
    """
    ids, counts = np.unique(instances[instances > 0], return_counts=True)
    too_big = ids[counts > MAX_AREA_FRACTION * instances.size]
    if too_big.size:
        hit = np.isin(instances, too_big)
        semantic, instances = semantic.copy(), instances.copy()
        semantic[hit] = VOID_ID
        instances[hit] = 0
    return semantic, instances, too_big


def split_frame(seed: int, split: str, index: int, size: tuple[int, int] = FRAME_SIZE):
    """Frame ``index`` of ``split``: ``(image RGB uint8, semantic uint8, instances uint16)``."""
    rng = np.random.default_rng([seed, SPLIT_CODES[split], index])
    scene = random_scene(rng, *size)
    placed = _background_objects(rng, 5.0, 70.0, scene.sidewalk)
    cars = [o for o in placed if o.family == "car"]
    if split in ("val", "test"):
        placed += _anomalies(rng, int(rng.integers(1, 7)), 1, 4.5, 28.0, cars)
    elif split == "ood":
        placed += _outliers(rng, int(rng.integers(1, 4)), 4.5, 28.0)
    image, semantic, instances = render(replace(scene, objects=tuple(placed)))
    semantic, instances, _ = _clip_large(semantic, instances)
    return image, semantic, instances


def _write_frame(
    folder: Path,
    key: str,
    image: np.ndarray,
    semantic: np.ndarray,
    instances: np.ndarray,
    with_anomaly: bool,
) -> None:
    for sub in ("images", "semantic", "instances") + (("anomaly",) if with_anomaly else ()):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "images" / f"{key}.png"), image[..., ::-1])
    cv2.imwrite(str(folder / "semantic" / f"{key}.png"), semantic)
    cv2.imwrite(str(folder / "instances" / f"{key}.png"), instances.astype(np.uint16))
    if with_anomaly:
        cv2.imwrite(str(folder / "anomaly" / f"{key}.png"), anomaly_map(semantic))


def _frame_written(folder: Path, key: str, with_anomaly: bool) -> bool:
    # The anomaly (else instances) PNG is written last: with it present the frame is whole.
    last = "anomaly" if with_anomaly else "instances"
    return (folder / last / f"{key}.png").is_file()


def write_split(root: Path, split: str, count: int, spec: WorldSpec) -> None:
    folder = root / split
    for index in range(count):
        key = f"{split}_{index:05d}"
        if (folder / "images" / f"{key}.png").is_file() and (
            folder / "semantic" / f"{key}.png"
        ).is_file():
            continue  # written by an earlier, interrupted call
        frame = split_frame(spec.seed, split, index, (spec.height, spec.width))
        _write_frame(folder, key, *frame, with_anomaly=split in ("val", "test"))


# --- drive logs ---------------------------------------------------------------------------

SPEED = 6.0  # metres per frame (a log sampled at 3 Hz at ~65 km/h)
FRAME_RATE = 3.0  # of the video written beside a log
EVENT_FAR = 60.0  # metres ahead of the camera where an event's objects stand at its start


def drive_log_scene(
    seed: int,
    log_index: int,
    frames: int,
    anomaly_fraction: float,
    size: tuple[int, int] = FRAME_SIZE,
) -> Scene:
    """One road driven for ``frames`` frames, with anomaly events on ~``anomaly_fraction`` of them.

    Each event places 1-3 anomalies at one spot of the road, ``EVENT_FAR`` metres ahead of
    the camera at the event's first frame; they grow over the following frames as the car
    approaches them and leave the frame at the bottom.
    """
    rng = np.random.default_rng([seed, SPLIT_CODES["logs"], log_index])
    scene = random_scene(rng, *size)
    route = frames * SPEED + MAX_DISTANCE
    placed = _background_objects(rng, 5.0, route, scene.sidewalk)
    cars = [o for o in placed if o.family == "car"]
    # An object is drawn from far away, but it is more than a few pixels only within ~30 m:
    # that is what "a frame holds an anomaly" means for the fraction.
    frames_per_event = 30.0 / SPEED
    # An event's objects pass the camera (closer than 0.75 D0) this many frames after its start.
    in_view = int(np.ceil((EVENT_FAR - 0.75 * D0) / SPEED))
    allowed = np.arange(2, max(3, frames - in_view))  # events end before the log does
    events = min(len(allowed), max(1, round(frames * anomaly_fraction / frames_per_event)))
    starts = np.sort(rng.choice(allowed, events, replace=False))
    next_id = 1
    for start in starts:
        spot = start * SPEED + EVENT_FAR - rng.uniform(0.0, 2.0)
        count = int(rng.integers(1, 4))
        nearby = [c for c in cars if abs(c.distance - spot) < 10]
        group = _anomalies(rng, count, next_id, spot - 1.0, spot + 1.0, nearby)
        placed += group
        next_id += count
    return replace(scene, objects=tuple(placed))


def write_drive_log(
    root: Path, log_id: str, scene: Scene, frames: int, video: bool = False
) -> list[dict]:
    """Render a log's frames into ``root/logs/<log_id>/`` (and optionally a video); return GT rows.

    GT rows: ``{"frame_key", "frame_index", "instance_id", "track_id", "kind", "area",
    "bbox_xywh", "height", "width", "rle", "ignore"}``, one per anomaly visible (>= 1 pixel) in
    a frame; ``ignore`` marks objects so close that they fill more than MAX_AREA_FRACTION of
    the frame (void in the labels: neither to be found nor a false alarm).
    """
    folder = root / "logs" / log_id
    kinds = {o.track_id: o.kind for o in scene.objects if o.family == "anomaly"}
    rows: list[dict] = []
    writer = None
    if video:
        folder.parent.mkdir(parents=True, exist_ok=True)
        path = root / "logs" / f"{log_id}.avi"
        fourcc = cv2.VideoWriter_fourcc(*"MJPG")
        writer = cv2.VideoWriter(str(path), fourcc, FRAME_RATE, (scene.width, scene.height))
        if not writer.isOpened():  # pragma: no cover - MJPG is built into every OpenCV
            raise RuntimeError(f"OpenCV cannot write the MJPG video {path}")
    try:
        for index in range(frames):
            image, semantic, drawn = render(scene, travelled=index * SPEED)
            semantic, instances, voided = _clip_large(semantic, drawn)
            _write_frame(folder, f"frame_{index:06d}", image, semantic, instances, True)
            if writer is not None:
                writer.write(image[..., ::-1])
            for track in np.unique(drawn[drawn > 0]):
                rows.append(_sighting(log_id, index, int(track), kinds[int(track)], drawn == track))
                rows[-1]["ignore"] = bool(np.isin(track, voided))
    finally:
        if writer is not None:
            writer.release()
    return rows


def _sighting(log_id: str, index: int, track: int, kind: str, mask: np.ndarray) -> dict:
    """One ground-truth row: an object seen in one frame, its mask as COCO RLE."""
    masks = torch.from_numpy(np.ascontiguousarray(mask, dtype=bool))[None]
    (rle,) = encode_rle(masks)
    (box,) = masks_to_xywh(masks).tolist()
    return {
        "frame_key": f"{log_id}/{index:06d}",
        "frame_index": index,
        "instance_id": track,
        "track_id": track,
        "kind": kind,
        "area": int(mask.sum()),
        "bbox_xywh": [float(v) for v in box],
        "height": int(mask.shape[0]),
        "width": int(mask.shape[1]),
        "rle": rle,
    }


def write_world(
    root: str | Path,
    spec: WorldSpec,
    splits: tuple[str, ...] = ("train", "ood", "val", "test", "logs"),
) -> Path:
    """Write the world under ``root`` (skipping frames already there); return ``root``.

    Raises:
        ValueError: ``root`` holds a world of another seed, frame size or generator version,
            or a drive log of another length (resuming it would mix two worlds).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    identity = {
        "generator_version": GENERATOR_VERSION,
        "seed": spec.seed,
        "height": spec.height,
        "width": spec.width,
    }
    meta_path = root / "world.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    for name, value in identity.items():
        if name in meta and meta[name] != value:
            raise ValueError(
                f"world {root} has {name} {meta[name]}, not {value}: write to another --out "
                "(or delete it)"
            )
    for split in ("train", "ood", "val", "test"):
        if split in splits:
            _LOG.info("world %s: writing %d %s frames", root, getattr(spec, split), split)
            write_split(root, split, getattr(spec, split), spec)
    if "logs" in splits:
        for log_index in range(spec.logs):
            log_id = f"drive_{log_index:02d}"
            gt_path = root / "logs" / f"{log_id}_gt.json"
            if gt_path.is_file():
                written = json.loads(gt_path.read_text())["frames"]
                if written != spec.log_frames:
                    raise ValueError(
                        f"world {root}: log {log_id} has {written} frames, not "
                        f"{spec.log_frames}: write to another --out (or delete the log)"
                    )
                continue
            scene = drive_log_scene(
                spec.seed,
                log_index,
                spec.log_frames,
                spec.anomaly_fraction,
                (spec.height, spec.width),
            )
            rows = write_drive_log(root, log_id, scene, spec.log_frames, video=log_index == 0)
            tmp = gt_path.with_suffix(".tmp")
            tmp.write_text(
                json.dumps({"log_id": log_id, "frames": spec.log_frames, "instances": rows})
            )
            tmp.replace(gt_path)
    written = dict(meta.get("splits", {}))
    for split in splits:
        if split == "logs":
            written[split] = {"count": spec.logs, "frames": spec.log_frames}
        else:
            written[split] = getattr(spec, split)
    meta = {**identity, "anomaly_fraction": spec.anomaly_fraction, "splits": written}
    meta_path.write_text(json.dumps(meta, indent=2))
    return root
