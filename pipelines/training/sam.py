"""``ugains train sam``: train a SAM for single-point prompts on the world or on Cityscapes.

Data: ``--world ROOT`` (splits ``train`` and ``ood``, whichever exist) or ``--cityscapes ROOT``
(a Cityscapes-layout folder, split ``--cityscapes-split``), read by
:mod:`pipelines.training.sam_data`, which also says what the training segments are (the
connected components of each class and the instances, components under 20 pixels dropped).

``--out RUN_DIR`` receives ``state.pt`` (resumable: rerun the same command), ``metrics.jsonl``
(one line per step), ``sam_<model_type>.pth`` (float16 state dict) and ``MODEL_CARD.md``. Use the
weights in a mining config as ``sam: {model_type: vit_tiny_512, checkpoint: RUN_DIR/sam_...}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from models.config import SamModelType
from models.training.sam_recipe import SamTrainingConfig

if TYPE_CHECKING:
    import torch

# torch, the model and the data are imported when training starts: `--help` prints at once.

__all__ = ["configure_parser", "run"]

_LOG = logging.getLogger(__name__)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument(
        "--world", type=Path, metavar="ROOT", help="a world from `ugains world generate`"
    )
    data.add_argument("--cityscapes", type=Path, metavar="ROOT", help="a Cityscapes-layout folder")
    parser.add_argument(
        "--cityscapes-split", default="train", help="Cityscapes split (default train)"
    )
    parser.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="run directory")
    defaults = SamTrainingConfig()
    parser.add_argument(
        "--model-type", default="vit_tiny_512", choices=sorted(get_args(SamModelType))
    )
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument(
        "--batch-size", type=int, default=defaults.batch_size, help="frames per step"
    )
    parser.add_argument("--points-per-image", type=int, default=defaults.points_per_image)
    parser.add_argument("--lr", type=float, default=defaults.lr, help="peak AdamW learning rate")
    parser.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps)
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument(
        "--segment-power",
        type=float,
        default=defaults.segment_power,
        help="a prompt's segment is drawn with probability ~ pixels**power (0: uniform)",
    )
    parser.add_argument(
        "--max-segment-fraction",
        type=float,
        default=defaults.max_segment_fraction,
        help="prompt only segments of at most this fraction of the frame (1: all)",
    )
    parser.add_argument(
        "--paste-objects",
        type=int,
        default=defaults.pasted_objects,
        metavar="N",
        help="random shapes pasted into each training frame, each a segment of its own "
        "(teaches prompt following beyond the world's object kinds; 0 = none)",
    )
    parser.add_argument(
        "--paste-shadows",
        action="store_true",
        help="pasted shapes cast shadows that are not part of them (as objects on a road do)",
    )
    parser.add_argument(
        "--outliers",
        metavar="POOL",
        help="an outlier pool (`ugains review pool`): its confirmed objects are pasted into "
        "training frames, each a segment of its own, with scale, position and flip jitter "
        "(fine-tunes SAM on the kinds of object a fleet really meets)",
    )
    parser.add_argument(
        "--pool-objects",
        type=int,
        default=3,
        metavar="N",
        help="1..N pool objects pasted into each training frame (with --outliers)",
    )
    parser.add_argument("--seed", type=int, default=0, help="initialisation, data order, points")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every)
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="bf16 autocast of the encoder and decoder (auto: on CUDA, or CPUs with AMX)",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda:N")
    parser.add_argument("--init", type=Path, default=None, help="start from these SAM weights")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _use_bf16(precision: str, device: torch.device) -> bool:
    import torch

    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return True
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(amx()) if amx is not None else False


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (ValueError, FileNotFoundError) as error:
        _LOG.error("%s", error)
        print(f"ugains train sam: error: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.data import DataLoader

    from models.config import SamConfig
    from models.sam import SAM_ARCHITECTURES, build_sam
    from models.training.sam import export_sam_weights, train_sam
    from pipelines.outlier_pool import OutlierPool
    from pipelines.training import sam_data
    from pipelines.training.sam_data import (
        SegmentFrames,
        StepBatches,
        cityscapes_sources,
        world_sources,
    )

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    pool = OutlierPool.read(args.outliers) if args.outliers else None
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    config = SamTrainingConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        points_per_image=args.points_per_image,
        lr=args.lr,
        warmup_steps=min(args.warmup_steps, args.steps // 2),
        weight_decay=args.weight_decay,
        segment_power=args.segment_power,
        max_segment_fraction=args.max_segment_fraction,
        pasted_objects=args.paste_objects,
        pasted_shadows=args.paste_shadows,
        pool_objects=args.pool_objects if pool is not None else 0,
        pool_digest=pool.digest if pool is not None else "",
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        bf16=_use_bf16(args.precision, device),
    )
    image_size = SAM_ARCHITECTURES[args.model_type].image_size
    if args.world is not None:
        sources, data = world_sources(args.world), f"world {args.world} (train + ood)"
    else:
        sources = cityscapes_sources(args.cityscapes, args.cityscapes_split)
        data = f"cityscapes {args.cityscapes} split {args.cityscapes_split}"
    if pool is not None:
        data += f", with {pool.describe()}"
    dataset = SegmentFrames(sources, image_size)
    frame_shape = tuple(dataset[0][1].shape)
    _LOG.info(
        "training %s on %d frames of %s, frames %s",
        args.model_type,
        len(dataset),
        data,
        frame_shape,
    )
    sam = build_sam(
        SamConfig(
            model_type=args.model_type,
            seed=args.seed,
            checkpoint=str(args.init) if args.init else None,
        )
    )
    sam.to(device)
    run_dir: Path = args.out
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = run_dir / "metrics.jsonl"

    def batches(start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        _trim_metrics(metrics_path, start)
        sampler = StepBatches(len(dataset), config.batch_size, config.seed, start)
        return iter(
            DataLoader(dataset, batch_sampler=sampler, num_workers=0, collate_fn=sam_data._collate)
        )

    with metrics_path.open("a") as log:

        def on_step(step: int, metrics: dict[str, float]) -> None:
            log.write(json.dumps({"step": step, **metrics}) + "\n")
            if step % 10 == 0:
                log.flush()

        result = train_sam(
            sam,
            batches,
            config,
            run_dir,
            progress=not args.no_progress,
            on_step=on_step,
            outlier_pool=pool.objects if pool is not None else (),
        )
    weights = export_sam_weights(sam, run_dir / f"sam_{args.model_type}.pth")
    pool_card = pool.card() if pool is not None else None
    _write_card(
        run_dir, args, config, result, data, len(dataset), frame_shape, weights, device, pool_card
    )
    _LOG.info(
        "wrote %s (loss %.4f, best-mask IoU %.3f, selected-mask IoU %.3f)",
        weights,
        result.loss or float("nan"),
        result.iou or float("nan"),
        result.selected_iou or float("nan"),
    )
    return 0


def _trim_metrics(path: Path, start: int) -> None:
    """Drop the metric lines of steps after ``start`` (left by a run killed after its state)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in kept if json.loads(line)["step"] <= start]
    path.write_text("".join(line + "\n" for line in kept))


def _command(args: argparse.Namespace) -> str:
    """The ``ugains train sam`` command of this run with every option spelled out (defaults
    included, so that it reproduces the run even if the defaults change)."""
    words = ["ugains", "train", "sam"]
    if args.world is not None:
        words += ["--world", str(args.world)]
    else:
        words += ["--cityscapes", str(args.cityscapes), "--cityscapes-split", args.cityscapes_split]
    for name in (
        "out",
        "model_type",
        "steps",
        "batch_size",
        "points_per_image",
        "lr",
        "warmup_steps",
        "weight_decay",
        "segment_power",
        "max_segment_fraction",
        "paste_objects",
        "outliers",
        "pool_objects",
        "seed",
        "threads",
        "checkpoint_every",
        "precision",
        "device",
        "init",
    ):
        value = getattr(args, name)
        if value is not None:
            words += [f"--{name.replace('_', '-')}", str(value)]
    if args.paste_shadows:
        words.append("--paste-shadows")
    return " ".join(shlex.quote(word) for word in words)


def _write_card(
    run_dir, args, config, result, data, frames, frame_shape, weights, device, pool_card=None
) -> None:
    import torch

    from pipelines.outlier_pool import pool_card_section

    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    wall = sum(json.loads(line).get("seconds", 0.0) for line in lines if line.strip())
    command = _command(args)

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    cpu = platform.processor() or platform.machine()
    rows = [
        ("command", f"`{command}`"),
        ("data", f"{data}: {frames} frames, trained at {frame_shape[0]}x{frame_shape[1]}"),
        ("seed", str(config.seed)),
        ("steps", f"{result.steps} (this process resumed from step {result.resumed_from})"),
        ("batch", f"{config.batch_size} frames x {config.points_per_image} points"),
        (
            "optimiser",
            f"AdamW lr {config.lr:g}, weight decay {config.weight_decay:g}, "
            f"{config.warmup_steps} warm-up steps, cosine decay",
        ),
        (
            "precision",
            f"{'bf16 autocast' if config.bf16 else 'fp32'} on {device} "
            f"({torch.get_num_threads()} thread(s), {cpu})",
        ),
        (
            "wall time",
            f"{wall / 60:.1f} min of training steps "
            f"(this process {result.wall_seconds / 60:.1f} min)",
        ),
        ("final training loss (EMA)", fmt(result.loss)),
        ("final best-of-3 mask IoU (EMA)", fmt(result.iou)),
        (
            "final IoU of the mask SAM selects (highest predicted IoU, EMA)",
            fmt(result.selected_iou),
        ),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    card = f"""# SAM {args.model_type}, trained by `ugains train sam`

Single-point-prompt SAM (loss 20 x focal + dice on the best of 3 masks, MSE on predicted IoU).
Weights: `{weights.name}` (float16 state dict). Use them in a mining config as:

```yaml
models:
  sam: {{model_type: {args.model_type}, checkpoint: {weights}}}
```

| | |
| --- | --- |
{table}

Training metrics per step: `metrics.jsonl`. Metrics are on training frames, not held-out data.
"""
    if pool_card is not None:
        card += "\n" + "\n".join(pool_card_section(pool_card)) + "\n"
    (run_dir / "MODEL_CARD.md").write_text(card)
