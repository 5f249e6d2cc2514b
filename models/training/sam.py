"""Training a SAM for single-point prompts: the recipe, the loop, resume and export.

The loss of one step (points, targets, focal + dice + IoU MSE) is
:mod:`models.training.sam_losses`. Every random draw of step ``s`` (flips, points) comes from a
generator seeded by ``(seed, s)`` (:func:`models.training.sam_losses.step_generator`), and
batches are asked for by step (``batches(start_step)``), so a run killed and resumed from its
``state.pt`` reaches the weights of an uninterrupted run.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from segment_anything.modeling import Sam
from torch import Tensor

from models.training.loop import (
    TrainingProgress,
    cosine_with_warmup,
    load_state,
    save_state,
    seed_everything,
)
from models.training.sam_losses import batch_loss, step_generator
from models.training.sam_recipe import SamTrainingConfig

__all__ = [
    "SamTrainingConfig",
    "SamTrainingResult",
    "export_sam_weights",
    "train_sam",
]


@dataclass
class SamTrainingResult:
    """What a finished (or already finished) run reports."""

    steps: int
    resumed_from: int
    wall_seconds: float  # this process's time in the loop
    loss: float | None  # smoothed (EMA 0.95) over the last steps
    iou: float | None  # smoothed mean IoU of the best of the three masks
    selected_iou: float | None  # smoothed mean IoU of the mask with the highest predicted IoU
    config: dict = field(default_factory=dict)


def _parameter_groups(sam: Sam, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases, norms, position embeddings and tokens."""
    decay, no_decay = [], []
    for name, parameter in sam.named_parameters():
        if not parameter.requires_grad:
            continue
        flat = parameter.ndim < 2 or "pos" in name or "token" in name or "embed.weight" in name
        (no_decay if flat else decay).append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def train_sam(
    sam: Sam,
    batches: Callable[[int], Iterator[tuple[Tensor, Tensor]]],
    config: SamTrainingConfig,
    run_dir: str | os.PathLike[str],
    *,
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    outlier_pool: Sequence[tuple[Tensor, Tensor]] = (),
) -> SamTrainingResult:
    """Train ``sam`` in place for ``config.steps`` steps, resuming from ``run_dir/state.pt``.

    Args:
        sam: the model (its device is used); left in eval mode.
        batches: ``batches(start_step)`` yields the ``(images [B, 3, H, W] uint8, segments
            [B, H, W] int64)`` of steps ``start_step, start_step + 1, ...``; for exact resumes
            the batch of a step must depend on the step only.
        config: the recipe.
        run_dir: where ``state.pt`` is written every ``config.checkpoint_every`` steps and at
            the end (atomically).
        progress: show a progress bar (loss, IoU, ETA).
        on_step: called after each step with ``(step, metrics)`` (1-based step).
        outlier_pool: ``(crop [3, h, w] uint8, mask [h, w] bool)`` cut-outs (a review pool's
            confirmed anomalies); ``config.pool_objects`` per frame at most are pasted in.
    """
    if config.pool_objects and not outlier_pool:
        raise ValueError("config.pool_objects > 0 needs a non-empty outlier_pool")
    seed_everything(config.seed)
    sam.train()
    optimizer = torch.optim.AdamW(
        _parameter_groups(sam, config.weight_decay), lr=config.lr, betas=(0.9, 0.999)
    )
    scheduler = cosine_with_warmup(optimizer, config.steps, config.warmup_steps)
    start, extra = load_state(run_dir, model=sam, optimizer=optimizer, scheduler=scheduler)
    _check_same_recipe(extra.get("config"), config, run_dir)
    smoothed: dict[str, float] = dict(extra.get("smoothed", {}))
    began = time.perf_counter()
    step = start
    with TrainingProgress(config.steps, start, "train sam", enabled=progress) as bar:
        if start < config.steps:
            stream = batches(start)
            for step in range(start + 1, config.steps + 1):
                tick = time.perf_counter()
                images, segments = next(stream)
                generator = step_generator(config.seed, step - 1)
                result = batch_loss(sam, images, segments, config, generator, outlier_pool)
                optimizer.zero_grad(set_to_none=True)
                result.loss.backward()
                if config.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(sam.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                metrics = {
                    "loss": float(result.loss.detach()),
                    "mask_loss": result.mask_loss,
                    "iou_loss": result.iou_loss,
                    "iou": result.best_iou,
                    "selected_iou": result.selected_iou,
                    "lr": scheduler.get_last_lr()[0],
                    "seconds": time.perf_counter() - tick,
                }
                for name in ("loss", "iou", "selected_iou"):
                    if not math.isnan(metrics[name]):
                        old = smoothed.get(name)
                        value = metrics[name]
                        smoothed[name] = value if old is None else 0.95 * old + 0.05 * value
                bar.update(metrics["loss"], iou=smoothed.get("iou", math.nan), lr=metrics["lr"])
                if on_step is not None:
                    on_step(step, metrics)
                if step % config.checkpoint_every == 0 or step == config.steps:
                    save_state(
                        run_dir,
                        model=sam,
                        optimizer=optimizer,
                        scheduler=scheduler,
                        step=step,
                        extra={"smoothed": smoothed, "config": asdict(config)},
                    )
    sam.eval()
    return SamTrainingResult(
        steps=step,
        resumed_from=start,
        wall_seconds=time.perf_counter() - began,
        loss=smoothed.get("loss"),
        iou=smoothed.get("iou"),
        selected_iou=smoothed.get("selected_iou"),
        config=asdict(config),
    )


def _check_same_recipe(saved: dict | None, config: SamTrainingConfig, run_dir: object) -> None:
    """Refuse to resume a run under another recipe (``checkpoint_every`` may change). A
    setting added after the run was saved counts as its default (what the run trained with)."""
    if saved is None:
        return
    defaults = asdict(SamTrainingConfig())
    changed = sorted(
        f"{k}: {saved.get(k, defaults[k])!r} -> {v!r}"
        for k, v in asdict(config).items()
        if k != "checkpoint_every" and saved.get(k, defaults[k]) != v
    )
    if changed:
        raise ValueError(
            f"{run_dir}: the saved run used another recipe ({'; '.join(changed)}); resume "
            "with the same settings or choose a new run directory"
        )


def export_sam_weights(
    sam: Sam, path: str | os.PathLike[str], dtype: torch.dtype = torch.float16
) -> Path:
    """Write ``sam``'s state dict (floating tensors cast to ``dtype``) to ``path`` atomically.

    The file is a flat dict of CPU tensors, loaded strictly by
    :func:`models.sam.load_sam_checkpoint` (which casts back to the model's float32).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        key: (value.to(dtype) if value.is_floating_point() else value).detach().cpu().clone()
        for key, value in sam.state_dict().items()
    }
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path
