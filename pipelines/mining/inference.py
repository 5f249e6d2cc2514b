"""RunInference for UGainS: our ModelHandler and the batch-then-retry inference transform.

The model object RunInference holds is a :class:`CompactUGainS`: it runs the UGainS step and
returns :class:`FrameInference` records that are small to pickle (masks as COCO RLE at the
model size, the fused map as an 8-bit PNG), because with ``share_model_across_processes`` or
``model_copies`` Beam serves the model from another process and pickles every result
(docs/engineering.md, "Data between processes").

A batch that fails is retried frame by frame inside the handler, so one bad frame does not send
its healthy batch-mates to ``errors``; a frame that fails alone comes out as a
:class:`FrameFailure` and is split off right after RunInference. The retry stays in the same
stage on purpose: a second RunInference joined to the first by a ``Flatten`` stops the runner
from fusing inference with the rows stage, and every frame (image + result, ~7 MB at 1024x2048)
is then relayed through the runner process.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
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
from pipelines.config import InferenceConfig, is_local_uri
from pipelines.elements import DecodedFrame, FrameFailure, FrameInference, dead_letter_failures
from pipelines.locks import file_lock
from pipelines.mining.runs import crash_point
from transforms.masks import encode_rle

__all__ = [
    "CompactUGainS",
    "RunUGainS",
    "UGainSModelHandler",
    "compact_result",
    "encode_score_map",
    "load_ugains",
    "stage_checkpoints",
]

_LOG = logging.getLogger(__name__)


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


def compact_result(
    result: Any, *, store_semantic: bool = False, store_maps: bool = True
) -> FrameInference:
    """A :class:`models.ugains.FrameResult` -> :class:`FrameInference` (same model size).

    The fused map's PNG is made only when it will be written: ``store_maps`` and at least one
    instance (the rows stage writes maps of frames with instances only).
    """
    start = time.perf_counter()
    fused = result.fused_score.numpy()
    mask_rles = tuple(encode_rle(result.masks))
    if store_maps and mask_rles:
        fused_png, low, high = encode_score_map(fused)
    else:
        fused_png, low, high = None, float(fused.min()), float(fused.max())
    semantic = _png(result.semantic.numpy()) if store_semantic else None
    embeddings = None if result.embeddings is None else result.embeddings.numpy().astype(np.float16)
    return FrameInference(
        size=tuple(fused.shape),
        mask_rles=mask_rles,
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
        compact_ms=(time.perf_counter() - start) * 1e3,
        embeddings=embeddings,
    )


class CompactUGainS:
    """A UGainS step that takes uint8 RGB arrays and returns :class:`FrameInference` s."""

    def __init__(self, step: Any, *, store_semantic: bool = False, store_maps: bool = True) -> None:
        self.step = step
        self.store_semantic = store_semantic
        self.store_maps = store_maps

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
        return [
            compact_result(r, store_semantic=self.store_semantic, store_maps=self.store_maps)
            for r in self.step(batch)
        ]


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


def load_ugains(
    config: ModelsConfig, *, store_semantic: bool = False, store_maps: bool = True
) -> CompactUGainS:
    """Build the UGainS step of ``config`` on the chosen device, one load at a time per host.

    A process loads each config once (Beam's own sharing is per step and per handler).
    """
    with _LOADED_LOCK:
        if (key := config.model_dump_json()) not in _LOADED:
            _LOADED[key] = _load_ugains(config)
        step = _LOADED[key].step
    return CompactUGainS(step, store_semantic=store_semantic, store_maps=store_maps)


def _is_remote(path: str | None) -> bool:
    return bool(path) and not is_local_uri(path)


def stage_checkpoints(config: ModelsConfig, cache_dir: str | None = None) -> ModelsConfig:
    """Copy checkpoints named by FileSystems URIs (``gs://``, ``s3://``) to local disk.

    A Hugging Face model directory is copied file by file. Local paths are left as they are.
    """
    remote = config.weight_files()
    if not any(_is_remote(uri) for uri in remote.values()):
        return config
    root = cache_dir or os.path.join(tempfile.gettempdir(), "ugains-checkpoints")
    local = {name: _stage(uri, root) if _is_remote(uri) else uri for name, uri in remote.items()}
    return config.model_copy(
        update={
            "mask2former": config.mask2former.model_copy(
                update={"checkpoint": local.get("mask2former")}
            ),
            "sam": config.sam.model_copy(update={"checkpoint": local.get("sam")}),
            "method": config.method.model_copy(update={"ignore_mask": local.get("ignore_mask")}),
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


def _load_ugains(config: ModelsConfig) -> CompactUGainS:
    from models.ugains import build_ugains

    with file_lock(os.path.join(tempfile.gettempdir(), "ugains-model-load.lock")):
        device = _pick_device(config.device)
        step = build_ugains(stage_checkpoints(config), device=device)
        if str(device).startswith("cuda"):
            torch.cuda.synchronize(device)
    _LOG.info("UGainS loaded on %s (model size %s)", device, step.model_size)
    return CompactUGainS(step)


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
        store_maps: bool = True,
    ) -> None:
        super().__init__(
            min_batch_size=inference.min_batch_size, max_batch_size=inference.max_batch_size
        )
        self.models = models
        self.inference = inference
        self.store_semantic = store_semantic
        self.store_maps = store_maps
        self._share_across_processes = inference.share_model_across_processes
        self._model_copies = inference.model_copies

    def load_model(self) -> CompactUGainS:
        return load_ugains(
            self.models, store_semantic=self.store_semantic, store_maps=self.store_maps
        )

    def run_inference(
        self,
        batch: Sequence[DecodedFrame],
        model: CompactUGainS,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        """One :class:`FrameInference` per frame, or a :class:`FrameFailure` for a frame that
        fails alone (the batch is retried frame by frame when it fails as a whole)."""
        crash_point("inference")
        try:
            return _infer(batch, model)
        except Exception:
            if len(batch) > 1:
                _LOG.warning("a batch of %d frames failed; retrying them one by one", len(batch))
        return [_infer_alone(frame, model) for frame in batch]

    def get_num_bytes(self, batch: Sequence[DecodedFrame]) -> int:
        return sum(frame.model_image.nbytes for frame in batch)

    def get_metrics_namespace(self) -> str:
        return "ugains"

    def model_copies(self) -> int:
        # Evaluated on the worker: its GPUs, not the launcher's.
        return self._model_copies or max(torch.cuda.device_count(), 1)


def _infer(batch: Sequence[DecodedFrame], model: CompactUGainS) -> list[PredictionResult]:
    results = model.infer(np.stack([frame.model_image for frame in batch]))
    return [PredictionResult(f, r) for f, r in zip(batch, results, strict=True)]


def _infer_alone(frame: DecodedFrame, model: CompactUGainS) -> PredictionResult:
    try:
        return _infer([frame], model)[0]
    except Exception as error:
        info = (type(error), repr(error), None)
        return PredictionResult(frame, dead_letter_failures("inference", [frame.ref], info)[0])


class _SplitFailures(beam.DoFn):
    """``(key, PredictionResult)``: results on the main output, failures on ``failed``."""

    def process(self, element: tuple[str, PredictionResult]) -> Iterator[Any]:
        if isinstance(element[1].inference, FrameFailure):
            yield beam.pvalue.TaggedOutput("failed", element[1].inference)
        else:
            yield element


def _inference_failures(dead: tuple) -> list[FrameFailure]:
    batch, exc_info = dead
    return dead_letter_failures("inference", [frame.ref for _, frame in batch], exc_info)


class RunUGainS(beam.PTransform):
    """``PCollection[DecodedFrame]`` -> ``(PCollection[(key, PredictionResult)], failures)``.

    Batched RunInference; the handler retries the frames of a failed batch one by one, and
    only frames that fail alone are failures (split off right after inference, so the result
    path stays one fused stage from inference to rows).
    """

    def __init__(self, handler: UGainSModelHandler, model_identifier: str) -> None:
        super().__init__()
        self.handler = handler
        self.model_identifier = model_identifier

    def expand(self, frames: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        keyed = frames | "KeyByFrame" >> beam.Map(lambda frame: (frame.ref.key, frame))
        predictions, dead = (
            keyed
            | "Batched"
            >> RunInference(
                KeyedModelHandler(self.handler), model_identifier=self.model_identifier
            ).with_exception_handling()
        )
        split = predictions | "SplitFailures" >> beam.ParDo(_SplitFailures()).with_outputs(
            "failed", main="results"
        )
        unexpected = dead.failed_inferences | "InferenceFailures" >> beam.FlatMap(
            _inference_failures
        )
        failures = (split.failed, unexpected) | "AllInferenceFailures" >> beam.Flatten()
        return split.results, failures
