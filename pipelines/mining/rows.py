"""Per-frame results -> rows of the ``instances``, ``frames`` and ``errors`` tables.

Masks, boxes, prompt points and crops are reported in the frame's ORIGINAL pixels, mapped
from the model size by :mod:`pipelines.geometry` (the pixel-centre convention the evaluation
uses too), so a frame already at the model size keeps its masks bit for bit. Instances whose
mask is empty at the original size (possible when a frame is smaller than the model size) are
left out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
import torch
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import PredictionResult

from pipelines.elements import (
    DecodedFrame,
    FrameFailure,
    FrameInference,
    FrameRef,
    dead_letter_failures,
)
from pipelines.geometry import points_to_frame, resize_nearest
from pipelines.mining.schema import EMBEDDING_DIM
from transforms.masks import crop_box_with_margin, decode_rle, encode_rle, rle_areas_and_boxes

__all__ = [
    "FRAMES",
    "FailuresToRows",
    "InstancesToRows",
    "Progress",
    "RunContext",
    "error_row",
    "frame_row",
    "instance_rows",
    "map_uri",
    "row_embeddings",
]

_LOG = logging.getLogger(__name__)
FRAMES = "frames"
_PROGRESS_SECONDS = 30.0


@dataclass(frozen=True)
class RunContext:
    """What every row of a run shares: identity, provenance and output options."""

    run_id: str
    run_dir: str  # the committed run's directory: paths stored in the tables name it
    config_fingerprint: str
    ugains_version: str
    mask2former_checkpoint: str | None
    sam_checkpoint: str | None
    crop_margin: float = 0.25
    min_crop_margin: int = 16
    store_maps: bool = True
    store_semantic: bool = False
    frames_planned: int | None = None  # the whole run's, for progress lines
    staging_dir: str | None = None  # where the run writes until it commits (None: run_dir)

    @property
    def write_dir(self) -> str:
        return self.staging_dir or self.run_dir

    def provenance(self) -> dict[str, Any]:
        return {
            "mask2former_checkpoint": self.mask2former_checkpoint,
            "sam_checkpoint": self.sam_checkpoint,
            "config_fingerprint": self.config_fingerprint,
            "ugains_version": self.ugains_version,
        }


def _identity(ctx: RunContext, ref: FrameRef) -> dict[str, Any]:
    return {
        "run_id": ctx.run_id,
        "frame_key": ref.key,
        "frame_uri": ref.uri,
        "log_id": ref.log_id,
        "frame_index": ref.frame_index,
        "timestamp": ref.timestamp,
    }


def _crop_png(image: np.ndarray, box: tuple[int, int, int, int]) -> bytes:
    import cv2

    x, y, w, h = box
    crop = np.ascontiguousarray(image[y : y + h, x : x + w, ::-1])  # RGB -> OpenCV's BGR
    ok, png = cv2.imencode(".png", crop)
    if not ok:  # pragma: no cover - any non-empty uint8 crop encodes
        raise RuntimeError(f"cannot PNG-encode a crop of {w}x{h} pixels")
    return png.tobytes()


def _original_rles(result: FrameInference, size: tuple[int, int]) -> list[str]:
    """The model's mask RLEs at the frame's original ``size`` (the same strings when equal)."""
    if tuple(result.size) == tuple(size):
        return list(result.mask_rles)
    if not result.mask_rles:
        return []
    small = np.stack([decode_rle(c, *result.size).numpy() for c in result.mask_rles])
    return encode_rle(torch.from_numpy(resize_nearest(small, size)))


def row_embeddings(result: FrameInference) -> np.ndarray:
    """``[M, 256]`` float16: the result's embeddings, zeros when the step has no SAM."""
    count = len(result.mask_rles)
    if result.embeddings is None:
        return np.zeros((count, EMBEDDING_DIM), np.float16)
    embeddings = np.asarray(result.embeddings, np.float16)
    if embeddings.shape != (count, EMBEDDING_DIM):
        raise ValueError(
            f"embeddings must have shape ({count}, {EMBEDDING_DIM}) for {count} masks, got "
            f"{embeddings.shape}"
        )
    return embeddings


def instance_rows(
    frame: DecodedFrame, result: FrameInference, ctx: RunContext
) -> list[dict[str, Any]]:
    """One row per non-empty instance of ``frame``, in the model's (descending score) order.

    Each mask is RLE-encoded once, by the model step; area and box are read off the RLE.
    """
    size = frame.size
    counts = _original_rles(result, size)
    areas, boxes = rle_areas_and_boxes(counts, *size)
    crops = crop_box_with_margin(boxes, size, ctx.crop_margin, ctx.min_crop_margin).tolist()
    points = points_to_frame(np.asarray(result.points).reshape(-1, 2), result.size, size)
    embeddings = row_embeddings(result)
    rows: list[dict[str, Any]] = []
    for i, (mask_rle, area, box, crop) in enumerate(
        zip(counts, areas.tolist(), boxes.tolist(), crops, strict=True)
    ):
        if area == 0:
            continue
        x, y, w, h = box
        point_x, point_y = points[i].tolist()
        index = len(rows)
        rows.append(
            {
                **_identity(ctx, frame.ref),
                "frame_height": size[0],
                "frame_width": size[1],
                "instance_index": index,
                "instance_id": f"{frame.ref.key}#{index}",
                "score": float(result.scores[i]),
                "sam_iou": float(result.sam_iou[i]),
                "area": area,
                "bbox_x": x,
                "bbox_y": y,
                "bbox_w": w,
                "bbox_h": h,
                "point_x": point_x,
                "point_y": point_y,
                "mask_rle": mask_rle,
                "crop_png": _crop_png(frame.image, tuple(crop)),
                "crop_x": crop[0],
                "crop_y": crop[1],
                "crop_w": crop[2],
                "crop_h": crop[3],
                "embedding": embeddings[i],
                "track_id": None,  # set by the tracks stage
                **ctx.provenance(),
            }
        )
    return rows


def map_uri(run_dir: str, ref: FrameRef, kind: str) -> str:
    """Where a frame's ``kind`` ("fused" or "semantic") PNG goes in ``run_dir``."""
    return FileSystems.join(run_dir, "maps", ref.log_id, f"{ref.frame_index:06d}_{kind}.png")


def _write(uri: str, data: bytes) -> None:
    # Deterministic names: a retried bundle rewrites the same file.
    with FileSystems.create(uri, mime_type="image/png") as handle:
        handle.write(data)


def frame_row(
    frame: DecodedFrame,
    result: FrameInference,
    ctx: RunContext,
    *,
    num_instances: int,
    rows_ms: float,
    fused_map_uri: str | None = None,
    semantic_uri: str | None = None,
) -> dict[str, Any]:
    """The ``frames`` row of a processed frame."""
    stored = fused_map_uri is not None
    return {
        **_identity(ctx, frame.ref),
        "status": "gated" if result.gated else "ok",
        "frame_height": frame.size[0],
        "frame_width": frame.size[1],
        "num_instances": num_instances,
        "max_anomaly_score": result.max_anomaly_score,
        "max_fused_score": result.max_fused_score,
        "fused_map_uri": fused_map_uri,
        "fused_map_min": result.fused_min if stored else None,
        "fused_map_max": result.fused_max if stored else None,
        "semantic_uri": semantic_uri,
        "decode_ms": frame.decode_ms,
        "inference_ms": float(sum(result.timings.values())),
        "compact_ms": result.compact_ms,
        "rows_ms": rows_ms,
        **ctx.provenance(),
    }


def error_row(failure: FrameFailure, ctx: RunContext) -> dict[str, Any]:
    """The ``errors`` row of a frame that could not be processed."""
    return {
        **_identity(ctx, failure.ref),
        "stage": failure.stage,
        "error_type": failure.error_type,
        "reason": failure.reason,
        "config_fingerprint": ctx.config_fingerprint,
    }


@dataclass
class Progress:
    """A worker's progress line: at most one per ``every`` seconds, with its rate.

    Workers cannot see each other's counts while a job runs (Beam's counters are summed at
    the end, on the DirectRunner), so each reports its own, next to the run's total.
    """

    planned: int | None = None
    every: float = _PROGRESS_SECONDS
    count: int = 0
    started: float = 0.0  # when the first frame was done
    reported: float = 0.0  # when the last line was due

    def tick(self, now: float) -> str | None:
        """Count one frame done at monotonic time ``now``; the line to log, if it is due."""
        self.count += 1
        total = f" (the run has {self.planned} frames in all)" if self.planned else ""
        if self.count == 1:
            # Said at once, so a user sees the run working; its time includes the model
            # warm-up, so rates count from it.
            self.started = self.reported = now
            return f"progress: this worker has processed its first frame{total}"
        if now - self.reported < self.every:
            return None
        self.reported = now
        rate = (self.count - 1) / (now - self.started)
        return (
            f"progress: this worker has processed {self.count} frames, {rate:.1f} frames/s{total}"
        )


@beam.typehints.with_output_types(dict, **{FRAMES: dict})
class _ToRows(beam.DoFn):
    """``(key, PredictionResult)`` -> instance rows; the frame row on the ``frames`` output."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.processed = beam.metrics.Metrics.counter("ugains", "frames_processed")
        self.instances = beam.metrics.Metrics.counter("ugains", "instances")
        self.progress = Progress(ctx.frames_planned)

    def setup(self) -> None:
        import cv2

        # Rows are one frame at a time per worker thread; OpenCV's own thread pool (crop PNGs,
        # resizes) would only contend with the other workers' cores.
        cv2.setNumThreads(1)

    def process(self, element: tuple[str, PredictionResult]) -> Iterator[Any]:
        start = time.perf_counter()
        _, prediction = element
        frame, result = prediction.example, prediction.inference
        rows = instance_rows(frame, result, self.ctx)
        fused_uri = semantic_uri = None
        if self.ctx.store_maps and rows and result.fused_png is not None:
            fused_uri = map_uri(self.ctx.run_dir, frame.ref, "fused")
            _write(map_uri(self.ctx.write_dir, frame.ref, "fused"), result.fused_png)
        if self.ctx.store_semantic and result.semantic_png is not None:
            semantic_uri = map_uri(self.ctx.run_dir, frame.ref, "semantic")
            _write(map_uri(self.ctx.write_dir, frame.ref, "semantic"), result.semantic_png)
        rows_ms = (time.perf_counter() - start) * 1e3
        yield from rows
        yield beam.pvalue.TaggedOutput(
            FRAMES,
            frame_row(
                frame,
                result,
                self.ctx,
                num_instances=len(rows),
                rows_ms=rows_ms,
                fused_map_uri=fused_uri,
                semantic_uri=semantic_uri,
            ),
        )
        self.processed.inc()
        self.instances.inc(len(rows))
        _LOG.debug("frame %s: %d instances", frame.ref.key, len(rows))
        line = self.progress.tick(time.monotonic())
        if line:
            _LOG.info("%s", line)


class InstancesToRows(beam.PTransform):
    """Inference results -> ``(instance rows, frame rows, failures)``."""

    def __init__(self, ctx: RunContext) -> None:
        super().__init__()
        self.ctx = ctx

    def expand(self, results: beam.PCollection) -> tuple[beam.PCollection, ...]:
        out = results | "ToRows" >> beam.ParDo(_ToRows(self.ctx)).with_exception_handling(
            main_tag="instances", dead_letter_tag="dead_letter"
        ).with_outputs(FRAMES, main="instances")
        failures = out["dead_letter"] | "RowFailures" >> beam.FlatMap(
            lambda bad: dead_letter_failures("rows", [bad[0][1].example.ref], bad[1])
        )
        return out["instances"], out[FRAMES], failures


class _ErrorRow(beam.DoFn):
    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.failed = beam.metrics.Metrics.counter("ugains", "frames_failed")

    def process(self, failure: FrameFailure) -> Iterator[dict[str, Any]]:
        self.failed.inc()
        yield error_row(failure, self.ctx)


class FailuresToRows(beam.PTransform):
    """Failures of every stage -> ``errors`` rows (and the ``frames_failed`` counter)."""

    def __init__(self, ctx: RunContext) -> None:
        super().__init__()
        self.ctx = ctx

    def expand(self, failures: beam.PCollection) -> beam.PCollection:
        return failures | "ErrorRow" >> beam.ParDo(_ErrorRow(self.ctx))
