"""Mask2Former training: semantic (transformers' own loss), then RbA outlier exposure (OE).

Pure PyTorch. The trainer takes *sources*: sequences whose items are ``(image, labels)`` with
``image [3, H, W]`` uint8 RGB and ``labels [H, W]`` int64 (train ids ``0..K-1``, 255 void,
:data:`~models.training.mask2former_targets.OUTLIER_ID` on pasted outlier objects).
``pipelines.training.mask2former`` reads them from disk; what the loop makes of a label map
(augmented crops, mask targets, the outlier hinge) is :mod:`models.training.mask2former_targets`.

* **semantic**: every parameter trains on transformers' ``Mask2FormerForUniversalSegmentation``
  loss (Hungarian matching; class CE + point-sampled mask BCE + dice, weights 2 / 5 / 5, "no
  object" weight 0.1; the same loss on the prediction before the decoder layer, the "auxiliary"
  one of the 1-decoder-layer head). ``semantic_targets`` turns label maps into its inputs.
* **oe** (RbA, Nayal et al. ICCV 2023, configs ``ckpts/*_rba_ood_*/config.yaml`` of
  NazirNayal8/RbA): only the class head and the mask-embedding MLP train
  (:data:`OE_TRAINABLE_PREFIXES`); the loss is the semantic loss on the inlier classes (outlier
  pixels in no target mask) plus a squared hinge on the RbA score (``outlier_hinge_map``),
  on the final and the auxiliary prediction alike.

Images go through :meth:`models.mask2former.Mask2FormerSegmenter.normalize`, the inference
transform. Each step's batch and augmentation come from a generator seeded by ``(seed, step)``
and the global RNG state is checkpointed, so one seed gives one set of weights on one machine,
and a killed-then-resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.mask2former import Mask2FormerSegmenter, no_progress_bars
from models.training.loop import (
    TrainingProgress,
    cosine_with_warmup,
    load_state,
    save_state,
    seed_everything,
)
from models.training.mask2former_targets import (
    augment,
    paste_outliers,
    rba_outlier_loss,
    semantic_targets,
)
from transforms.scores import rba_scores

__all__ = [
    "OE_TRAINABLE_PREFIXES",
    "PoolObject",
    "Source",
    "TrainConfig",
    "TrainResult",
    "configure_trainable",
    "export_huggingface",
    "train_mask2former",
]

# RbA's FREEZE_TRANSFORMER_DECODER_EXCEPT_MLP (+ FREEZE_BACKBONE, FREEZE_PIXEL_DECODER): the
# detectron2 `class_embed` and `mask_embed` MLP, under transformers' names.
OE_TRAINABLE_PREFIXES = (
    "class_predictor.",
    "model.transformer_module.decoder.mask_predictor.mask_embedder.",
)
# A wider choice for small models, whose heads alone are a few thousand weights: both decoders
# train too (the pixel decoder and the transformer decoder), only the backbone stays frozen.
OE_DECODERS_PREFIXES = (
    *OE_TRAINABLE_PREFIXES,
    "model.pixel_level_module.decoder.",
    "model.transformer_module.",
)
OeTrainable = Literal["rba", "decoders"]

_LOG = logging.getLogger(__name__)

Source = Sequence[tuple[Tensor, Tensor]]
PoolObject = tuple[Tensor, Tensor]  # (crop [3, h, w] uint8, mask [h, w] bool)
Stage = Literal["semantic", "oe"]


@dataclass(frozen=True)
class TrainConfig:
    """One training stage: AdamW (Mask2Former's weight decay), RbA's OE loss (see below)."""

    stage: Stage = "semantic"
    steps: int = 1000
    batch_size: int = 4
    lr: float = 1e-4
    weight_decay: float = 0.05  # not on norms, biases, embeddings (Mask2Former's setting)
    warmup_steps: int = 0
    grad_clip: float = 1.0  # full-model gradient norm; 0 = off
    seed: int = 0
    checkpoint_every: int = 100
    size: tuple[int, int] = (256, 512)  # (H, W) of the training crops
    scale_range: tuple[float, float] = (0.75, 1.25)  # random rescale around "fit the height"
    flip: bool = True
    num_classes: int = 19
    # OE: each sample is drawn from sources[0] (outlier frames) with this probability (RbA's
    # OOD_PROB 0.5), otherwise from sources[1] (inlier frames) when given.
    ood_prob: float = 0.5
    # The score the hinge acts on and its margins. Defaults: UGainS' negative logit sum with
    # RbA's code defaults for an unnormalised score (INLIER_UPPER_THRESHOLD -1, OUTLIER_LOWER_
    # THRESHOLD -0.1), bracketing the candidate threshold -0.15. RbA's released models:
    # "rba" (tanh) with 0 and 5, which leaves the inlier term inactive (score <= 0).
    outlier_score: Literal["rba", "rba_nls"] = "rba_nls"
    inlier_threshold: float = -1.0
    outlier_threshold: float = -0.1
    outlier_weight: float = 1.0
    # OE: up to this many random shapes (models.training.paste) pasted as outliers into each
    # frame drawn from the inlier source; 0 = none.
    pasted_outliers: int = 0
    pasted_max_radius: float = 0.2  # largest mean radius of a pasted shape, fraction of H
    # OE: up to this many objects of the outlier pool (train_mask2former's ``outlier_pool``)
    # pasted into each inlier frame, and the pool's identity (a resumed run must use the same).
    pool_objects: int = 0
    pool_digest: str = ""
    # OE: up to this many of the pool's rejected candidates (``rejected_pool``) pasted into each
    # inlier frame as inliers of no known class (hard negatives of the inlier hinge); 0 = none.
    pool_rejected: int = 0
    # OE's trainable parts: "rba" = RbA's heads (OE_TRAINABLE_PREFIXES), "decoders" = both
    # decoders as well (OE_DECODERS_PREFIXES).
    oe_trainable: OeTrainable = "rba"

    def __post_init__(self) -> None:
        if self.stage not in ("semantic", "oe"):
            raise ValueError(f"stage must be 'semantic' or 'oe', got {self.stage!r}")
        if self.steps < 1 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError("steps, batch_size and checkpoint_every must be >= 1")
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale_range must be 0 < min <= max, got {self.scale_range}")


@dataclass
class TrainResult:
    """What a call of :func:`train_mask2former` did: steps ``[start_step, step)``."""

    start_step: int
    step: int
    seconds: float
    losses: list[float] = field(default_factory=list)  # every step since step 0

    @property
    def final_loss(self) -> float:
        """Mean loss of the last (up to) 50 steps; NaN before any step."""
        tail = self.losses[-50:]
        return sum(tail) / len(tail) if tail else float("nan")


def configure_trainable(
    model: nn.Module, stage: Stage, oe_trainable: OeTrainable = "rba"
) -> list[str]:
    """Set ``requires_grad`` for ``stage`` (all for semantic; for oe RbA's heads, or with
    ``oe_trainable="decoders"`` everything but the backbone); return the trainable names."""
    prefixes = OE_DECODERS_PREFIXES if oe_trainable == "decoders" else OE_TRAINABLE_PREFIXES
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(stage == "semantic" or name.startswith(prefixes))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if not names:
        raise ValueError(f"no parameter of {type(model).__name__} is trainable in stage {stage!r}")
    return names


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (1 << 63))


def _batch(
    sources: Sequence[Source],
    config: TrainConfig,
    step: int,
    pool: Sequence[PoolObject] = (),
    rejected: Sequence[PoolObject] = (),
) -> tuple[Tensor, Tensor]:
    """The batch of ``step``: ``[B, 3, h, w]`` float32 0-255 and ``[B, h, w]`` int64."""
    generator = _step_generator(config.seed, step)
    images, labels = [], []
    for _ in range(config.batch_size):
        pick = 0
        if config.stage == "oe" and len(sources) > 1:
            pick = 0 if float(torch.rand((), generator=generator)) < config.ood_prob else 1
        source = sources[pick]
        image, label = source[int(torch.randint(0, len(source), (), generator=generator))]
        pastes = (
            config.pasted_outliers
            or (pool and config.pool_objects)
            or (rejected and config.pool_rejected)
        )
        if config.stage == "oe" and pastes and pick == len(sources) - 1:
            image, label = paste_outliers(
                image,
                label,
                generator,
                shapes=config.pasted_outliers,
                pool=pool,
                pool_objects=config.pool_objects,
                rejected=rejected,
                rejected_objects=config.pool_rejected,
                max_radius_fraction=config.pasted_max_radius,
            )
        image, label = augment(
            image, label, config.size, generator, scale_range=config.scale_range, flip=config.flip
        )
        images.append(image)
        labels.append(label)
    return torch.stack(images), torch.stack(labels)


def _outlier_term(outputs: object, labels: Tensor, config: TrainConfig) -> Tensor:
    """RbA outlier loss on the final and every auxiliary prediction (RbA's deep supervision)."""
    predictions = [(outputs.class_queries_logits, outputs.masks_queries_logits)]
    predictions += [
        (a["class_queries_logits"], a["masks_queries_logits"])
        for a in outputs.auxiliary_logits or []
    ]
    total = labels.new_zeros((), dtype=torch.float32)
    for class_logits, mask_logits in predictions:
        score = rba_scores(class_logits, mask_logits, tanh=config.outlier_score == "rba")
        # RbA scores at mask resolution, then upsamples the score to the labels.
        score = F.interpolate(
            score[:, None], size=labels.shape[-2:], mode="bilinear", align_corners=False
        )[:, 0]
        total = total + rba_outlier_loss(
            score,
            labels,
            num_classes=config.num_classes,
            inlier_threshold=config.inlier_threshold,
            outlier_threshold=config.outlier_threshold,
        )
    return total


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        flat = parameter.ndim <= 1 or "embed" in name or "relative_position_bias_table" in name
        (no_decay if flat else decay).append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _comparable(config: TrainConfig) -> dict[str, object]:
    """The config fields a resumed run must share with the saved one."""
    fields = asdict(config)
    fields.pop("checkpoint_every")
    return {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}


def train_mask2former(
    model: nn.Module,
    sources: Sequence[Source],
    config: TrainConfig,
    run_dir: str | Path,
    *,
    stop_after: int | None = None,
    progress: bool = True,
    outlier_pool: Sequence[PoolObject] = (),
    rejected_pool: Sequence[PoolObject] = (),
) -> TrainResult:
    """Train ``model`` (a ``Mask2FormerForUniversalSegmentation``) in place for one stage.

    Resumes from ``run_dir/state.pt`` when present (its config must match), writes it every
    ``config.checkpoint_every`` steps and after the last one. ``sources``: semantic =
    ``[inlier frames]``; oe = ``[outlier frames]`` or ``[outlier frames, inlier frames]``.
    ``stop_after``: stop after that step as if killed (tests). ``outlier_pool``: cut-outs
    pasted as outliers in the oe stage (``config.pool_objects`` per inlier frame at most);
    ``rejected_pool``: cut-outs pasted as inliers of no known class (``config.pool_rejected``).
    Leaves ``model`` in eval mode.
    """
    if config.pool_objects and not outlier_pool:
        raise ValueError("config.pool_objects > 0 needs a non-empty outlier_pool")
    if config.pool_rejected and not rejected_pool:
        raise ValueError("config.pool_rejected > 0 needs a non-empty rejected_pool")
    if not sources or any(len(s) == 0 for s in sources):
        raise ValueError("every training source must hold at least one frame")
    seed_everything(config.seed)
    configure_trainable(model, config.stage, config.oe_trainable)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)
    scheduler = cosine_with_warmup(optimizer, config.steps, config.warmup_steps)
    start, extra = load_state(run_dir, model=model, optimizer=optimizer, scheduler=scheduler)
    # A setting added after the run was saved counts as its default (what the run trained with).
    saved = extra.get("config")
    if saved is not None:
        saved = {**_comparable(TrainConfig()), **saved}
    if start and saved != _comparable(config):
        raise ValueError(
            f"{Path(run_dir) / 'state.pt'}: saved by a run with another config "
            f"({extra.get('config')}); use a new --out or the same settings"
        )
    losses: list[float] = list(extra.get("losses", []))
    device = next(model.parameters()).device
    normalizer = Mask2FormerSegmenter(model).to(device)
    model.train()
    if config.stage == "oe":  # frozen feature extractor: no drop-path noise
        model.model.pixel_level_module.encoder.eval()
        if config.oe_trainable == "rba":
            model.model.pixel_level_module.eval()
    end = config.steps if stop_after is None else min(config.steps, stop_after)
    began = time.perf_counter()
    with TrainingProgress(
        config.steps, start, f"mask2former {config.stage}", enabled=progress
    ) as bar:
        for step in range(start, end):
            images, labels = _batch(sources, config, step, outlier_pool, rejected_pool)
            labels = labels.to(device)
            mask_labels, class_labels = semantic_targets(labels, config.num_classes)
            outputs = model(
                pixel_values=normalizer.normalize(images),
                mask_labels=mask_labels,
                class_labels=class_labels,
                output_auxiliary_logits=config.stage == "oe",
            )
            loss = outputs.loss
            parts = {}
            if config.stage == "oe":
                outlier = _outlier_term(outputs, labels, config)
                parts = {"semantic": loss.item(), "outlier": outlier.item()}
                loss = loss + config.outlier_weight * outlier
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            bar.update(losses[-1], lr=scheduler.get_last_lr()[0], **parts)
            done = step + 1
            if done % config.checkpoint_every == 0 or done == config.steps:
                save_state(
                    run_dir,
                    model=model,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    step=done,
                    extra={"config": _comparable(config), "losses": losses},
                )
                recent = losses[-config.checkpoint_every :]
                _LOG.info(
                    "mask2former %s: step %d/%d, mean loss %.4f, %.2f s/step, saved %s",
                    config.stage,
                    done,
                    config.steps,
                    sum(recent) / len(recent),
                    (time.perf_counter() - began) / (done - start),
                    run_dir,
                )
    model.eval()
    return TrainResult(start, max(start, end), time.perf_counter() - began, losses)


def export_huggingface(
    model: nn.Module, directory: str | Path, *, dtype: torch.dtype = torch.float16
) -> Path:
    """``save_pretrained`` a copy of ``model`` in ``dtype`` (safetensors); ``model`` is untouched.

    ``models.mask2former.build_mask2former(Mask2FormerConfig(format="huggingface",
    checkpoint=directory))`` loads it back in float32.
    """
    directory = Path(directory)
    clone = copy.deepcopy(model).to(dtype)
    for parameter in clone.parameters():
        parameter.requires_grad_(True)
    with no_progress_bars():
        clone.save_pretrained(directory, safe_serialization=True)
    return directory
