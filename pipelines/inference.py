"""RunInference for UGainS: our ModelHandler and the batch-then-retry inference transform.

The model object RunInference holds is a :class:`CompactUGainS`: it runs the UGainS step and
returns :class:`FrameInference` records that are small to pickle (masks as COCO RLE at the
model size, the fused map as an 8-bit PNG), because with ``share_model_across_processes`` or
``model_copies`` Beam serves the model from another process and pickles every result
(DESIGN.md: never pass full-resolution float maps between processes).

A batch that fails is retried frame by frame, so one bad frame does not send its healthy
batch-mates to ``errors``; a frame that fails alone becomes a :class:`FrameFailure`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import posixpath
import shutil
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import numpy as np
import torch
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import (
    KeyedModelHandler,
    ModelHandler,
    PredictionResult,
    RunInference,
)

from models.config import ModelsConfig
from pipelines.config import InferenceConfig
from pipelines.decode import DecodedFrame
from pipelines.sources import dead_letter_failures
from transforms.masks import encode_rle

__all__ = [
    "CompactUGainS",
    "FrameInference",
    "RunUGainS",
    "UGainSModelHandler",
    "compact_result",
    "encode_score_map",
    "load_ugains",
    "stage_checkpoints",
]

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameInference:
    """One frame's UGainS outputs at the model size, compact enough to pickle per frame.

    Attributes:
        size: ``(h, w)`` the model ran at.
        mask_rles: COCO compressed RLE counts of the ``M`` kept masks, at ``size``.
        scores: ``[M]`` float32 mask scores, descending.
        sam_iou: ``[M]`` float32 SAM predicted IoU.
        points: ``[M, 2]`` int64 ``(x, y)`` prompt of each mask, model pixels.
        max_anomaly_score / max_fused_score: maxima of ``U`` and ``I + U``.
        fused_png: 8-bit PNG of the fused map; value = min + png / 255 * (max - min).
        semantic_png: 8-bit PNG of the in-distribution classes, or None.
        gated: frame gating skipped SAM.
        timings: milliseconds per stage for this frame.
    """

    size: tuple[int, int]
    mask_rles: tuple[str, ...]
    scores: np.ndarray
    sam_iou: np.ndarray
    points: np.ndarray
    max_anomaly_score: float
    max_fused_score: float
    fused_png: bytes
    fused_min: float
    fused_max: float
    semantic_png: bytes | None = None
    gated: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def num_instances(self) -> int:
        return len(self.mask_rles)


def encode_score_map(scores: np.ndarray) -> tuple[bytes, float, float]:
    """A float map -> (8-bit PNG, min, max); ``min + png / 255 * (max - min)`` restores it."""
    import cv2

    low, high = float(scores.min()), float(scores.max())
    span = high - low
    scaled = (scores - low) / span * 255.0 if span > 0 else np.zeros_like(scores)
    ok, png = cv2.imencode(".png", np.rint(scaled).astype(np.uint8))
    if not ok:  # pragma: no cover - OpenCV encodes any 2-D uint8 array
        raise RuntimeError("cannot PNG-encode the score map")
    return png.tobytes(), low, high


def _png(array: np.ndarray) -> bytes:
    import cv2

    ok, png = cv2.imencode(".png", array)
    if not ok:  # pragma: no cover
        raise RuntimeError("cannot PNG-encode an array")
    return png.tobytes()


def compact_result(result: Any, *, store_semantic: bool = False) -> FrameInference:
    """A :class:`models.ugains.FrameResult` -> :class:`FrameInference` (same model size)."""
    fused = result.fused_score.numpy()
    fused_png, low, high = encode_score_map(fused)
    semantic = _png(result.semantic.numpy()) if store_semantic else None
    return FrameInference(
        size=tuple(fused.shape),
        mask_rles=tuple(encode_rle(result.masks)),
        scores=result.scores.numpy().astype(np.float32),
        sam_iou=result.sam_iou.numpy().astype(np.float32),
        points=result.points.numpy().astype(np.int64).reshape(-1, 2),
        max_anomaly_score=float(result.anomaly_score.max()),
        max_fused_score=high,
        fused_png=fused_png,
        fused_min=low,
        fused_max=high,
        semantic_png=semantic,
        gated=bool(result.gated),
        timings=dict(result.timings),
    )


class CompactUGainS:
    """A UGainS step that takes uint8 RGB arrays and returns :class:`FrameInference` s."""

    def __init__(self, step: Any, *, store_semantic: bool = False) -> None:
        self.step = step
        self.store_semantic = store_semantic

    @property
    def model_size(self) -> tuple[int, int]:
        return tuple(self.step.model_size)

    def infer(self, images: np.ndarray) -> list[FrameInference]:
        """``images`` ``[B, h, w, 3]`` uint8 RGB at the model size."""
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"images must be [B, H, W, 3] uint8, got {images.shape} {images.dtype}"
            )
        batch = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        return [compact_result(r, store_semantic=self.store_semantic) for r in self.step(batch)]


def _pick_device(configured: str) -> str:
    """``auto`` on a several-GPU machine: the GPU with the most free memory right now.

    Loads are serialised by a file lock (see :func:`load_ugains`), so each copy sees the
    memory taken by the copies loaded before it and the copies spread over the GPUs.
    """
    if configured != "auto" or not torch.cuda.is_available():
        return configured
    count = torch.cuda.device_count()
    if count == 1:
        return "cuda:0"
    free = [torch.cuda.mem_get_info(index)[0] for index in range(count)]
    return f"cuda:{int(np.argmax(free))}"


_LOADED: dict[str, CompactUGainS] = {}
_LOADED_LOCK = threading.Lock()


def load_ugains(config: ModelsConfig, *, store_semantic: bool = False) -> CompactUGainS:
    """Build the UGainS step of ``config`` on the chosen device, one load at a time per host.

    A process loads each config once: the batched and the one-by-one RunInference steps of
    :class:`RunUGainS` share the copy (Beam's own sharing is per step).
    """
    cache_key = f"{config.model_dump_json()}|{store_semantic}"
    with _LOADED_LOCK:
        if cache_key not in _LOADED:
            _LOADED[cache_key] = _load_ugains(config, store_semantic=store_semantic)
        return _LOADED[cache_key]


def _is_remote(path: str | None) -> bool:
    return bool(path) and FileSystems.get_scheme(path) not in (None, "file")


def stage_checkpoints(config: ModelsConfig, cache_dir: str | None = None) -> ModelsConfig:
    """Copy checkpoints named by FileSystems URIs (``gs://``, ``s3://``) to local disk.

    A Hugging Face model directory is copied file by file. Local paths are left as they are.
    """
    remote = {
        "mask2former": config.mask2former.checkpoint,
        "sam": config.sam.checkpoint,
        "ignore_mask": config.method.ignore_mask,
    }
    if not any(_is_remote(uri) for uri in remote.values()):
        return config
    root = cache_dir or os.path.join(tempfile.gettempdir(), "ugains-checkpoints")
    local = {name: _stage(uri, root) if _is_remote(uri) else uri for name, uri in remote.items()}
    return config.model_copy(
        update={
            "mask2former": config.mask2former.model_copy(
                update={"checkpoint": local["mask2former"]}
            ),
            "sam": config.sam.model_copy(update={"checkpoint": local["sam"]}),
            "method": config.method.model_copy(update={"ignore_mask": local["ignore_mask"]}),
        }
    )


def _stage(uri: str, root: str) -> str:
    target = os.path.join(root, uri.split("://", 1)[1])
    if FileSystems.exists(uri) and not uri.endswith("/"):
        sources = [(uri, target)]
    else:  # a model directory
        matches = FileSystems.match([uri.rstrip("/") + "/*"])[0].metadata_list
        if not matches:
            raise FileNotFoundError(f"checkpoint {uri} does not exist")
        sources = [(m.path, os.path.join(target, posixpath.basename(m.path))) for m in matches]
    for source, destination in sources:
        if not os.path.exists(destination):
            os.makedirs(os.path.dirname(destination), exist_ok=True)
            partial = f"{destination}.{os.getpid()}.partial"
            with FileSystems.open(source) as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(partial, destination)
    return target


def _load_ugains(config: ModelsConfig, *, store_semantic: bool) -> CompactUGainS:
    from models.ugains import build_ugains

    lock_path = os.path.join(tempfile.gettempdir(), "ugains-model-load.lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            device = _pick_device(config.device)
            step = build_ugains(stage_checkpoints(config), device=device)
            if str(device).startswith("cuda"):
                torch.cuda.synchronize(device)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _LOG.info("UGainS loaded on %s (model size %s)", device, step.model_size)
    return CompactUGainS(step, store_semantic=store_semantic)


class UGainSModelHandler(ModelHandler[DecodedFrame, PredictionResult, CompactUGainS]):
    """Beam ModelHandler of the UGainS step.

    ``load_model`` builds the models from the config's checkpoints on the device chosen
    automatically (CUDA if present). With ``share_model_across_processes``, one copy per GPU
    (``model_copies``; default: the worker's GPU count, 1 without GPUs) serves all of a
    worker's processes.
    """

    def __init__(
        self,
        models: ModelsConfig,
        inference: InferenceConfig,
        *,
        store_semantic: bool = False,
        max_batch_size: int | None = None,
    ) -> None:
        super().__init__(
            min_batch_size=min(inference.min_batch_size, max_batch_size or 1 << 30),
            max_batch_size=max_batch_size or inference.max_batch_size,
        )
        self.models = models
        self.inference = inference
        self.store_semantic = store_semantic
        self._share_across_processes = inference.share_model_across_processes
        self._model_copies = inference.model_copies

    def load_model(self) -> CompactUGainS:
        return load_ugains(self.models, store_semantic=self.store_semantic)

    def run_inference(
        self,
        batch: Sequence[DecodedFrame],
        model: CompactUGainS,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        images = np.stack([frame.model_image for frame in batch])
        results = model.infer(images)
        pairs = zip(batch, results, strict=True)
        return [PredictionResult(frame, result) for frame, result in pairs]

    def get_num_bytes(self, batch: Sequence[DecodedFrame]) -> int:
        return sum(frame.model_image.nbytes for frame in batch)

    def get_metrics_namespace(self) -> str:
        return "ugains"

    def model_copies(self) -> int:
        # Evaluated on the worker: its GPUs, not the launcher's.
        return self._model_copies or max(torch.cuda.device_count(), 1)

    def one_at_a_time(self) -> UGainSModelHandler:
        """The same handler with batches of one frame (the retry of a failed batch)."""
        return UGainSModelHandler(
            self.models, self.inference, store_semantic=self.store_semantic, max_batch_size=1
        )


def _unbatch(dead: tuple) -> list[tuple[str, DecodedFrame]]:
    batch, _ = dead
    return list(batch)


def _inference_failures(dead: tuple) -> list:
    batch, exc_info = dead
    return dead_letter_failures("inference", [frame.ref for _, frame in batch], exc_info)


class RunUGainS(beam.PTransform):
    """``PCollection[DecodedFrame]`` -> ``(PCollection[(key, PredictionResult)], failures)``.

    Batched RunInference first; frames of a failed batch are retried one by one through the
    same model (same ``model_identifier``), and only frames that fail alone are failures.
    """

    def __init__(self, handler: UGainSModelHandler, model_identifier: str) -> None:
        super().__init__()
        self.handler = handler
        self.model_identifier = model_identifier

    def expand(self, frames: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        keyed = frames | "KeyByFrame" >> beam.Map(lambda frame: (frame.ref.key, frame))
        results, dead = (
            keyed
            | "Batched"
            >> RunInference(
                KeyedModelHandler(self.handler), model_identifier=self.model_identifier
            ).with_exception_handling()
        )
        retried, still_dead = (
            dead.failed_inferences
            | "UnbatchFailed" >> beam.FlatMap(_unbatch)
            | "OneByOne"
            >> RunInference(
                KeyedModelHandler(self.handler.one_at_a_time()),
                model_identifier=self.model_identifier,
            ).with_exception_handling()
        )
        failures = still_dead.failed_inferences | "InferenceFailures" >> beam.FlatMap(
            _inference_failures
        )
        merged = (results, retried) | "AllResults" >> beam.Flatten()
        return merged, failures
