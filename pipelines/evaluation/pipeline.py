"""The Beam pipeline behind ``ugains evaluate``: the paper's metrics, one row per variant.

The Beam pipeline runs exactly what mining runs (the mining ModelHandler's model loading and
the same UGainS step, frames resized to the models' input size as mining does) and folds each
frame into exact metric accumulators in a CombineFn, so no full-resolution map has to be
kept::

    frames -> load frame + labels -> RunInference(EvaluationModelHandler)
        -> (variant, FrameEvaluation) per variant -> CombinePerKey(EvaluationCombineFn) -> rows

Every variant of a frame is computed in one model call: Mask2Former, the per-pixel score and
SAM's image embeddings run once per frame and only the prompting, decoding and fusion run per
variant, so a table of many rows costs little more than one.

Rows hold pAP / FPR95 / AUROC over all non-void pixels (the fused score ``I + U``; the
per-pixel score ``U`` in mode ``rba``), Cityscapes iAP / iAP50 (min. region 10 px) and the
prompt points' precision / recall (Table 4), all in percent; with ``--component-threshold``
also SegmentMeIfYouCan's component metrics (sIoU, PPV, mean F1). They are printed and written
to ``<out>/results.json`` and ``<out>/results.csv``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import numpy as np
import torch
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from models.config import ModelsConfig
from pipelines.config import (
    InferenceConfig,
    MiningConfig,
)
from pipelines.evaluation.datasets import EvalEntry, load_sample
from pipelines.evaluation.report import make_row
from pipelines.evaluation.variants import Variant
from pipelines.geometry import points_to_frame, resize_for_model, resize_nearest
from pipelines.mining.inference import CompactUGainS, UGainSModelHandler
from pipelines.runners import runner_for
from transforms.metrics import ComponentMetrics, InstanceMetrics, PixelMetrics, PointMetrics

_LOG = logging.getLogger(__name__)


COMPONENT_MIN_SIZES: dict[str, tuple[int, int]] = {"smiyc_ro21": (50, 10)}


@dataclass(frozen=True)
class EvalInput:
    """One frame, ready for the model (every variant runs on it).

    Attributes:
        name: frame name.
        model_image: ``[h, w, 3]`` uint8 RGB at the models' input size.
        labels: ``[H, W]`` uint8 (0 / 1 / 255) at the label resolution.
        instance_ids: ``[H, W]`` int32 anomaly instances.
    """

    name: str
    model_image: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    instance_ids: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class FrameEvaluation:
    """What the metrics need from one frame, at the label resolution ``[H, W]``.

    Attributes:
        pixel_scores: ``[H, W]`` float32, the fused score (``U`` in mode ``rba``).
        masks: ``[M, H, W]`` bool kept instances; ``scores``: ``[M]`` float32.
        prompt_points: ``[P, 2]`` int64 (x, y), every prompt given to SAM.
    """

    variant: int
    name: str
    pixel_scores: np.ndarray = field(repr=False)
    masks: np.ndarray = field(repr=False)
    scores: np.ndarray = field(repr=False)
    prompt_points: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    instance_ids: np.ndarray = field(repr=False)


def load_input(entry: EvalEntry, model_size: tuple[int, int]) -> EvalInput:
    """Read one frame and its labels; the image is resized to the models' size as in mining."""
    sample = load_sample(entry)
    if sample.image.shape[:2] != sample.labels.shape:
        raise ValueError(
            f"{entry.name}: image {sample.image.shape[:2]} and labels {sample.labels.shape} "
            f"differ in size ({entry.image_path}, {entry.label_path})"
        )
    return EvalInput(
        entry.name,
        resize_for_model(sample.image, model_size),
        sample.labels,
        sample.instance_ids,
    )


def _resize_scores(scores: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``[h, w]`` float32 -> ``[H, W]`` bilinear (align_corners=False)."""
    if scores.shape == tuple(size):
        return scores
    tensor = torch.from_numpy(np.ascontiguousarray(scores))[None, None]
    resized = torch.nn.functional.interpolate(
        tensor, size=size, mode="bilinear", align_corners=False
    )
    return resized[0, 0].numpy()


# ------------------------------------------------------------------------------ model handler


class EvaluationModelHandler(UGainSModelHandler):
    """The mining ModelHandler (same model loading and device choice), returning metric inputs.

    One loaded model serves every variant: a variant is the same segmenter and SAM with
    another :class:`MethodConfig`, and one ``run_methods`` call per group of equally sized
    frames computes all of them. Each frame's inference is its list of
    :class:`FrameEvaluation`, one per variant.
    """

    def __init__(
        self, models: ModelsConfig, inference: InferenceConfig, variants: Sequence[Variant]
    ) -> None:
        # Load SAM whenever some variant needs it (a mode-"rba" config would skip it).
        needs_sam = any(variant.has_instances for variant in variants)
        load_mode = "ugains" if needs_sam else "rba"
        loadable = models.model_copy(
            update={"method": models.method.model_copy(update={"mode": load_mode})}
        )
        # The model stays in the worker process: evaluation needs the step itself (one model,
        # several methods) and full-resolution outputs, which must not be pickled between
        # processes (docs/engineering.md), so a config's share_model_across_processes is not used.
        local = inference.model_copy(update={"share_model_across_processes": False})
        super().__init__(loadable, local)
        self.variants = list(variants)
        self.methods = [variant.method(models.method) for variant in self.variants]

    def run_inference(
        self,
        batch: Sequence[EvalInput],
        model: CompactUGainS,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        out: dict[int, PredictionResult] = {}
        groups: dict[tuple, list[int]] = {}
        for index, element in enumerate(batch):
            groups.setdefault(element.model_image.shape, []).append(index)
        for indices in groups.values():
            elements = [batch[i] for i in indices]
            images = torch.from_numpy(np.stack([e.model_image for e in elements]))
            model_size = tuple(elements[0].model_image.shape[:2])
            instance_ids = [
                torch.from_numpy(resize_nearest(e.instance_ids, model_size)) for e in elements
            ]
            try:
                per_variant = model.step.run_methods(
                    images.permute(0, 3, 1, 2), self.methods, instance_ids, embed=False
                )
            except Exception as error:
                names = ", ".join(e.name for e in elements)
                raise RuntimeError(f"UGainS failed on frame(s) {names}: {error}") from error
            for position, (index, element) in enumerate(zip(indices, elements, strict=True)):
                evaluations = [
                    self._evaluation(variant, element, results[position])
                    for variant, results in enumerate(per_variant)
                ]
                out[index] = PredictionResult(element, evaluations)
        return [out[index] for index in range(len(batch))]

    def _evaluation(self, variant: int, element: EvalInput, result: Any) -> FrameEvaluation:
        size = element.labels.shape
        model_size = tuple(element.model_image.shape[:2])
        scores = (
            result.fused_score if self.variants[variant].has_instances else result.anomaly_score
        )
        return FrameEvaluation(
            variant=variant,
            name=element.name,
            pixel_scores=_resize_scores(scores.numpy().astype(np.float32), size),
            masks=resize_nearest(result.masks.numpy().astype(bool), size),
            scores=result.scores.numpy().astype(np.float32),
            prompt_points=points_to_frame(
                result.prompt_points.numpy().reshape(-1, 2), model_size, size
            ),
            labels=element.labels,
            instance_ids=element.instance_ids,
        )

    def get_num_bytes(self, batch: Sequence[EvalInput]) -> int:
        return sum(element.model_image.nbytes for element in batch)

    def get_metrics_namespace(self) -> str:
        return "ugains_evaluate"


# ---------------------------------------------------------------------------------- combine


@dataclass
class EvaluationAccumulator:
    """Exact running metrics of one variant."""

    pixels: PixelMetrics = field(default_factory=PixelMetrics)
    instances: InstanceMetrics = field(default_factory=InstanceMetrics)
    points: PointMetrics = field(default_factory=PointMetrics)
    components: ComponentMetrics | None = None
    frames: int = 0


class EvaluationCombineFn(beam.CombineFn):
    """Folds :class:`FrameEvaluation` s into pixel, instance and point metrics.

    ``extract_output`` returns the metrics in percent: ``pAP``, ``FPR95``, ``AUROC``,
    ``iAP``, ``iAP50``, ``point_precision``, ``point_recall``, and ``frames``; with
    ``components = (threshold, min_segment_size, min_instance_size)`` also SegmentMeIfYouCan's
    ``sIoU``, ``PPV`` and ``mean_F1`` of the pixel scores thresholded at ``threshold``.
    """

    def __init__(
        self,
        ignore_label: int = 255,
        min_region_size: int = 10,
        components: tuple[float, int, int] | None = None,
    ) -> None:
        self.ignore_label = ignore_label
        self.min_region_size = min_region_size
        self.components = components

    def create_accumulator(self) -> EvaluationAccumulator:
        components = None
        if self.components is not None:
            threshold, min_segment_size, min_instance_size = self.components
            components = ComponentMetrics(
                threshold,
                min_segment_size=min_segment_size,
                min_instance_size=min_instance_size,
                ignore_label=self.ignore_label,
            )
        return EvaluationAccumulator(
            PixelMetrics(self.ignore_label),
            InstanceMetrics(self.min_region_size),
            components=components,
        )

    def add_input(
        self, accumulator: EvaluationAccumulator, frame: FrameEvaluation
    ) -> EvaluationAccumulator:
        accumulator.pixels.update(frame.pixel_scores, frame.labels)
        void = frame.labels == self.ignore_label
        accumulator.instances.update(frame.masks, frame.scores, frame.instance_ids, void)
        accumulator.points.update(frame.prompt_points, frame.instance_ids)
        if accumulator.components is not None:
            accumulator.components.update(frame.pixel_scores, frame.labels)
        accumulator.frames += 1
        return accumulator

    def merge_accumulators(
        self, accumulators: Iterable[EvaluationAccumulator]
    ) -> EvaluationAccumulator:
        merged = self.create_accumulator()
        for accumulator in accumulators:
            merged.pixels.merge(accumulator.pixels)
            merged.instances.merge(accumulator.instances)
            merged.points.merge(accumulator.points)
            if merged.components is not None:
                merged.components.merge(accumulator.components)
            merged.frames += accumulator.frames
        return merged

    def extract_output(self, accumulator: EvaluationAccumulator) -> dict[str, float]:
        pixel = accumulator.pixels.compute()
        instance = accumulator.instances.compute()
        point = accumulator.points.compute()
        output = {
            "frames": accumulator.frames,
            "pAP": 100 * pixel["ap"],
            "FPR95": 100 * pixel["fpr95"],
            "AUROC": 100 * pixel["auroc"],
            "iAP": 100 * instance["ap"],
            "iAP50": 100 * instance["ap50"],
            "point_precision": 100 * point["precision"],
            "point_recall": 100 * point["recall"],
            "curves": accumulator.pixels.curves(),  # plotted beside the table
        }
        if accumulator.components is not None:
            component = accumulator.components.compute()
            output["sIoU"] = 100 * component["siou"]
            output["PPV"] = 100 * component["ppv"]
            output["mean_F1"] = 100 * component["mean_f1"]
        return output


class EvaluateVariants(beam.PTransform):
    """``PCollection[EvalEntry]`` -> ``PCollection[(variant index, metrics)]``."""

    def __init__(
        self,
        handler: EvaluationModelHandler,
        model_size: tuple[int, int],
        model_identifier: str,
        combine_fn: EvaluationCombineFn | None = None,
    ) -> None:
        super().__init__()
        self.handler = handler
        self.combine_fn = combine_fn or EvaluationCombineFn()
        self.model_size = tuple(model_size)
        self.model_identifier = model_identifier

    def expand(self, entries: beam.PCollection) -> beam.PCollection:
        return (
            entries
            | "Spread" >> beam.Reshuffle()
            | "Load" >> beam.Map(load_input, self.model_size)
            | "UGainS" >> RunInference(self.handler, model_identifier=self.model_identifier)
            | "PerVariant"
            >> beam.FlatMap(lambda result: [(ev.variant, ev) for ev in result.inference])
            | "Metrics" >> beam.CombinePerKey(self.combine_fn)
        )


def evaluate(
    config: MiningConfig,
    dataset: str,
    entries: Sequence[EvalEntry],
    variants: Sequence[Variant],
    options: PipelineOptions,
    component_threshold: float | None = None,
) -> list[dict[str, Any]]:
    """Run the evaluation pipeline; returns one row per variant, in ``variants`` order.

    ``component_threshold`` (in units of the pixel score) adds SegmentMeIfYouCan's component
    metrics, with the dataset's minimum sizes (:data:`COMPONENT_MIN_SIZES`).
    """
    handler = EvaluationModelHandler(config.models, config.inference, variants)
    components = None
    if component_threshold is not None:
        sizes = COMPONENT_MIN_SIZES.get(dataset, (500, 100))
        components = (float(component_threshold), *sizes)
    collected: dict[int, dict[str, float]] = {}
    out_dir = FileSystems.join(config.output.root, ".evaluate-tmp", f"{time.time_ns()}")
    prefix = FileSystems.join(out_dir, "metrics")
    # The mining command's runner choice (the FnApiRunner for the DirectRunner: no Prism).
    with beam.Pipeline(runner=runner_for(options), options=options) as pipeline:
        _ = (
            pipeline
            | "Frames" >> beam.Create(list(entries))
            | "Evaluate"
            >> EvaluateVariants(
                handler,
                tuple(config.models.method.reference_size),
                f"ugains-{config.name}",
                EvaluationCombineFn(components=components),
            )
            | "ToJson" >> beam.Map(lambda item: json.dumps([item[0], item[1]]))
            | "Write" >> beam.io.WriteToText(prefix, file_name_suffix=".jsonl")
        )
    for match in FileSystems.match([f"{prefix}*.jsonl"])[0].metadata_list:
        with FileSystems.open(match.path) as handle:
            for line in handle.read().decode().splitlines():
                index, metrics = json.loads(line)
                collected[int(index)] = metrics
    FileSystems.delete([out_dir])
    missing = [variants[i].key() for i in range(len(variants)) if i not in collected]
    if missing:
        raise RuntimeError(f"the pipeline returned no metrics for variants {missing}")
    return [make_row(dataset, variants[i], collected[i]) for i in range(len(variants))]
