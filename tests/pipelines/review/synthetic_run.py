"""A mining run directory written by hand with exactly the tables of ``pipelines.mining.schema``.

Frames are drawn with OpenCV (grey road, one coloured blob per anomaly), masks are the drawn
blobs encoded with pycocotools, fused maps and semantic maps are real 8-bit PNGs. Two logs:
``drive_a`` is a folder of PNG frames, ``drive_b`` an MJPG video (frames ``<video>#frame=i``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pycocotools import mask as mask_utils

from pipelines.mining.schema import (
    CANDIDATES_SCHEMA,
    EMBEDDING_DIM,
    ERRORS_SCHEMA,
    FRAMES_SCHEMA,
    INSTANCES_SCHEMA,
)

HEIGHT, WIDTH = 96, 160
VIDEO_FRAMES = 4
# The candidate of drive_b/1 is flagged as the same object as drive_a/1's (another log).
DUPLICATES = {"drive_b/1#0": "drive_a/1#0"}


def colour_embedding(colour: tuple[int, int, int]) -> np.ndarray:
    """A unit float16 embedding of a blob's colour: equal colours, equal embeddings."""
    vector = np.zeros(EMBEDDING_DIM, np.float32)
    vector[:3] = np.asarray(colour, np.float32) + 1.0
    vector[3 + sum(colour) % (EMBEDDING_DIM - 3)] = 100.0
    return (vector / np.linalg.norm(vector)).astype(np.float16)


@dataclass(frozen=True)
class Blob:
    """An anomaly drawn as a filled ellipse: centre, semi-axes, BGR colour, score."""

    cx: int
    cy: int
    ax: int
    ay: int
    colour: tuple[int, int, int]
    score: float


@dataclass(frozen=True)
class FrameSpec:
    log_id: str
    index: int
    blobs: tuple[Blob, ...] = ()


@dataclass
class SyntheticRun:
    path: Path
    run_id: str
    frames: dict[str, FrameSpec] = field(default_factory=dict)  # frame_key -> spec


def frame_image(spec: FrameSpec) -> np.ndarray:
    """The BGR frame of a spec: a horizon, a road and the blobs."""
    image = np.full((HEIGHT, WIDTH, 3), (180, 130, 70), dtype=np.uint8)  # sky
    image[HEIGHT // 3 :] = (90, 90, 90)  # road
    cv2.line(image, (0, HEIGHT - 10 - spec.index), (WIDTH, HEIGHT - 20), (255, 255, 255), 2)
    for blob in spec.blobs:
        cv2.ellipse(image, (blob.cx, blob.cy), (blob.ax, blob.ay), 0, 0, 360, blob.colour, -1)
    return image


def blob_mask(blob: Blob) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    cv2.ellipse(mask, (blob.cx, blob.cy), (blob.ax, blob.ay), 0, 0, 360, 1, -1)
    return mask.astype(bool)


def default_frames(variant: int = 0) -> list[FrameSpec]:
    """Frames of the first run; ``variant=1`` changes one score and adds a frame (a newer run)."""
    a0 = (Blob(40, 60, 12, 8, (0, 0, 255), 0.9), Blob(110, 70, 9, 14, (0, 255, 255), 0.4))
    if variant:
        a0 = (a0[0], Blob(111, 70, 9, 14, (0, 255, 255), 0.55))  # moved by 1 px, rescored
    frames = [
        FrameSpec("drive_a", 0, a0),
        FrameSpec("drive_a", 1, (Blob(80, 50, 20, 10, (255, 0, 255), 0.7),)),
        FrameSpec("drive_a", 2),  # processed, no candidates
        FrameSpec("drive_b", 1, (Blob(30, 40, 6, 6, (0, 200, 0), 0.3),)),
        FrameSpec("drive_b", 3, (Blob(130, 75, 15, 9, (255, 255, 0), 0.8),)),
    ]
    if variant:
        frames.append(FrameSpec("drive_a", 3, (Blob(60, 55, 10, 10, (20, 20, 230), 0.95),)))
    return frames


def _png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


def write_run(
    root: Path, run_id: str, frames: list[FrameSpec], semantic: bool = True, maps: bool = True
) -> SyntheticRun:
    """Write the run ``root/<run_id>``; its source frames go to ``root/<run_id>-sources``."""
    run = SyntheticRun(path=root / run_id, run_id=run_id)
    run.path.mkdir(parents=True)
    for sub in ("instances", "frames", "errors", "maps"):
        (run.path / sub).mkdir()
    sources = root / f"{run_id}-sources"
    (sources / "drive_a").mkdir(parents=True, exist_ok=True)
    video_path = sources / "drive_b.avi"
    by_key = {f"{f.log_id}/{f.index}": f for f in frames}
    video_specs = {f.index: f for f in frames if f.log_id == "drive_b"}
    writer = cv2.VideoWriter(str(video_path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (WIDTH, HEIGHT))
    for index in range(VIDEO_FRAMES):
        writer.write(frame_image(video_specs.get(index, FrameSpec("drive_b", index))))
    writer.release()

    provenance = {
        "mask2former_checkpoint": "/ckpt/model_final.pth",
        "sam_checkpoint": "/ckpt/sam_vit_h_4b8939.pth",
        "config_fingerprint": f"fp-{run_id}",
        "ugains_version": "0.1.0",
    }
    instances, frame_rows = [], []
    for key, spec in by_key.items():
        run.frames[key] = spec
        image = frame_image(spec)
        if spec.log_id == "drive_a":
            uri = str(sources / "drive_a" / f"{spec.index:06d}.png")
            cv2.imwrite(uri, image)
        else:
            uri = f"{video_path}#frame={spec.index}"
        ident = {
            "run_id": run_id,
            "frame_key": key,
            "frame_uri": uri,
            "log_id": spec.log_id,
            "frame_index": spec.index,
            "timestamp": spec.index / 10.0 if spec.log_id == "drive_b" else None,
        }
        fused = np.full((HEIGHT, WIDTH), -1.5, dtype=np.float32)
        for i, blob in enumerate(spec.blobs):
            mask = blob_mask(blob)
            fused[mask] = blob.score
            ys, xs = np.nonzero(mask)
            x, y = int(xs.min()), int(ys.min())
            w, h = int(xs.max()) - x + 1, int(ys.max()) - y + 1
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            cx0, cy0 = max(x - 4, 0), max(y - 4, 0)
            cx1, cy1 = min(x + w + 4, WIDTH), min(y + h + 4, HEIGHT)
            instances.append(
                {
                    **ident,
                    "frame_height": HEIGHT,
                    "frame_width": WIDTH,
                    "instance_index": i,
                    "instance_id": f"{key}#{i}",
                    "score": blob.score,
                    "sam_iou": 0.8 + i / 100,
                    "area": int(mask.sum()),
                    "bbox_x": x,
                    "bbox_y": y,
                    "bbox_w": w,
                    "bbox_h": h,
                    "point_x": blob.cx,
                    "point_y": blob.cy,
                    "mask_rle": rle["counts"].decode(),
                    "crop_png": _png(image[cy0:cy1, cx0:cx1]),
                    "crop_x": cx0,
                    "crop_y": cy0,
                    "crop_w": cx1 - cx0,
                    "crop_h": cy1 - cy0,
                    "embedding": colour_embedding(blob.colour),
                    "track_id": f"{key}#{i}",
                    **provenance,
                }
            )
        lo, hi = float(fused.min()), float(fused.max())
        map_uri = semantic_uri = None
        if spec.blobs and maps:
            map_uri = f"maps/{spec.log_id}_{spec.index}_fused.png"
            png = np.round((fused - lo) / (hi - lo) * 255).astype(np.uint8)
            cv2.imwrite(str(run.path / map_uri), png)
            if semantic:
                semantic_uri = str(run.path / f"maps/{spec.log_id}_{spec.index}_semantic.png")
                labels = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)  # road
                labels[: HEIGHT // 3] = 10  # sky
                labels[:, :8] = 255  # ignore
                cv2.imwrite(semantic_uri, labels)
        frame_rows.append(
            {
                **ident,
                "status": "ok",
                "frame_height": HEIGHT,
                "frame_width": WIDTH,
                "num_instances": len(spec.blobs),
                "max_anomaly_score": -0.5,
                "max_fused_score": hi,
                "fused_map_uri": map_uri,
                "fused_map_min": lo if map_uri else None,
                "fused_map_max": hi if map_uri else None,
                "semantic_uri": semantic_uri,
                "decode_ms": 1.0,
                "inference_ms": 10.0,
                "compact_ms": 2.0,
                "rows_ms": 0.5,
                **provenance,
            }
        )
    ranked = sorted(instances, key=lambda r: -r["score"])
    candidates = [
        {
            "rank": rank,
            **row,
            "track_frames": 1,
            "duplicate_of": DUPLICATES.get(row["instance_id"]),
        }
        for rank, row in enumerate(ranked, start=1)
    ]
    error = {
        "run_id": run_id,
        "frame_key": "drive_c/0",
        "frame_uri": str(sources / "missing.png"),
        "log_id": "drive_c",
        "frame_index": 0,
        "timestamp": None,
        "stage": "read",
        "error_type": "FileNotFoundError",
        "reason": "no such file",
        "config_fingerprint": provenance["config_fingerprint"],
    }
    tables = [
        ("instances/part-00000.parquet", instances, INSTANCES_SCHEMA),
        ("candidates.parquet", candidates, CANDIDATES_SCHEMA),
        ("frames/part-00000.parquet", frame_rows, FRAMES_SCHEMA),
        ("errors/part-00000.parquet", [error], ERRORS_SCHEMA),
    ]
    for name, rows, schema in tables:
        pq.write_table(
            pa.Table.from_pylist(rows, schema=schema), run.path / name, compression="zstd"
        )
    run_info = {
        "run_id": run_id,
        "config_fingerprint": provenance["config_fingerprint"],
        "checkpoints": {"mask2former": provenance["mask2former_checkpoint"]},
        "ugains_version": "0.1.0",
        "counts": {"frames": len(frame_rows), "instances": len(instances), "errors": 1},
    }
    (run.path / "run.json").write_text(json.dumps(run_info))
    return run
