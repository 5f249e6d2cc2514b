"""``ugains train sam``: train a SAM for single-point prompts on the world or on Cityscapes.

Data: ``--world ROOT`` (splits ``train`` and ``ood``, whichever exist) or ``--cityscapes ROOT``
(``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with ``gtFine/<split>/<city>/
*_gtFine_labelTrainIds.png``, and ``*_gtFine_instanceIds.png`` beside it when present).
Training segments (:func:`frame_segments`): the 8-connected components of every class of the
semantic map (void 255 left out, components under ``--min-segment-pixels`` dropped) and every
instance as its own segment, covering the class components under it.

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
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms.v2 import functional as TF

from models.config import SamConfig
from models.sam import SAM_ARCHITECTURES, build_sam, resized_size
from models.training.sam import SamTrainingConfig, export_sam_weights, train_sam

__all__ = ["SegmentFrames", "StepBatches", "configure_parser", "frame_segments", "run"]

_LOG = logging.getLogger(__name__)
VOID_LABEL = 255
MIN_SEGMENT_PIXELS = 20


def frame_segments(
    semantic: np.ndarray, instances: np.ndarray | None = None, min_pixels: int = MIN_SEGMENT_PIXELS
) -> np.ndarray:
    """Training segments of one frame: ``[H, W]`` int64 ids ``0..n-1``, ``-1`` = none.

    Args:
        semantic: ``[H, W]`` integer class ids, ``VOID_LABEL`` (255) = void.
        instances: ``[H, W]`` integer object ids, 0 = none (or None).
        min_pixels: segments smaller than this are dropped (their pixels become -1).

    Class components (8-connected, computed on the pixels no instance covers) are numbered
    first, by class then by OpenCV's component order; instances follow in ascending id order.
    """
    semantic = np.asarray(semantic)
    covered = np.zeros(semantic.shape, bool) if instances is None else np.asarray(instances) > 0
    segments = np.full(semantic.shape, -1, np.int64)
    next_id = 0
    free = ~covered
    for label in np.unique(semantic[free & (semantic != VOID_LABEL)]):
        count, components, stats, _ = cv2.connectedComponentsWithStats(
            ((semantic == label) & free).astype(np.uint8), connectivity=8
        )
        keep = stats[1:, cv2.CC_STAT_AREA] >= min_pixels  # component 0 = background
        lookup = np.full(count, -1, np.int64)
        lookup[1:][keep] = next_id + np.arange(int(keep.sum()))
        next_id += int(keep.sum())
        mask = components > 0
        segments[mask] = lookup[components[mask]]
    if instances is not None and covered.any():
        ids, inverse, areas = np.unique(
            np.asarray(instances)[covered], return_inverse=True, return_counts=True
        )
        keep = areas >= min_pixels
        lookup = np.full(ids.shape, -1, np.int64)
        lookup[keep] = next_id + np.arange(int(keep.sum()))
        segments[covered] = lookup[inverse.reshape(-1)]
    return segments


def _read_png(path: Path, flags: int) -> np.ndarray:
    array = cv2.imread(str(path), flags)
    if array is None:
        raise ValueError(f"{path}: missing or not a readable PNG")
    return array


class SegmentFrames(Dataset):
    """Frames as ``(image [3, h, w] uint8 RGB, segments [h, w] int64)`` at the model's size.

    ``sources`` are ``(kind, root, split, key)`` tuples (kind ``"world"`` or ``"cityscapes"``;
    for Cityscapes ``key`` is the image path). Frames are resized to ``resized_size(H, W, S)``
    (torchvision antialiased bilinear, as :func:`models.sam.preprocess_frames`; segments by
    nearest neighbour) so that the training loop sees no further resize.
    """

    def __init__(self, sources: Sequence[tuple[str, Path, str, str]], image_size: int) -> None:
        self.sources = list(sources)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.sources)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, str]:
        """``(image [H, W, 3] uint8, semantic [H, W], instances [H, W] | None, name)``."""
        kind, root, split, key = self.sources[index]
        if kind == "world":
            from pipelines.world.layout import read_frame

            frame = read_frame(root, split, key)
            return frame.image, frame.semantic, frame.instances, f"{root}/{split}/{key}"
        image_path = Path(key)
        stem = image_path.name[: -len("_leftImg8bit.png")]
        labels = root / "gtFine" / split / image_path.parent.name
        image = cv2.cvtColor(_read_png(image_path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        semantic = _read_png(labels / f"{stem}_gtFine_labelTrainIds.png", cv2.IMREAD_UNCHANGED)
        instance_path = labels / f"{stem}_gtFine_instanceIds.png"
        instances = None
        if instance_path.is_file():
            ids = _read_png(instance_path, cv2.IMREAD_UNCHANGED).astype(np.int64)
            instances = np.where(ids >= 1000, ids, 0)  # Cityscapes: class * 1000 + index
        return image, semantic, instances, str(image_path)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, semantic, instances, name = self.read(index)
        if image.ndim != 3 or semantic.shape != image.shape[:2]:
            raise ValueError(
                f"{name}: labels {semantic.shape} do not match the image {image.shape[:2]}"
            )
        if semantic.ndim != 2 or (instances is not None and instances.shape != semantic.shape):
            raise ValueError(f"{name}: semantic / instance maps must be single-channel [H, W]")
        segments = torch.from_numpy(frame_segments(semantic, instances))
        frame = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        h, w = resized_size(*semantic.shape, self.image_size)
        if (h, w) != tuple(semantic.shape):
            frame = TF.resize(frame, [h, w], antialias=True)
            segments = torch.nn.functional.interpolate(
                segments[None, None].double(), (h, w), mode="nearest-exact"
            )[0, 0].long()
        return frame.contiguous(), segments


def world_sources(root: Path) -> list[tuple[str, Path, str, str]]:
    """The ``train`` and ``ood`` frames of the world at ``root`` (at least one split needed)."""
    from pipelines.world.layout import list_keys

    sources = []
    for split in ("train", "ood"):
        if (root / split / "images").is_dir():
            sources += [("world", root, split, key) for key in list_keys(root, split)]
    if not sources:
        raise ValueError(f"world {root}: no frames in {root}/train/images or {root}/ood/images")
    return sources


def cityscapes_sources(root: Path, split: str) -> list[tuple[str, Path, str, str]]:
    images = root / "leftImg8bit" / split
    if not images.is_dir():
        raise ValueError(f"cityscapes {root}: missing {images}")
    sources = [
        ("cityscapes", root, split, str(path))
        for path in sorted(images.glob("*/*_leftImg8bit.png"))
    ]
    if not sources:
        raise ValueError(f"cityscapes {root}: no */*_leftImg8bit.png under {images}")
    return sources


class StepBatches(Sampler[list[int]]):
    """Index batches of steps ``start, start + 1, ...`` forever, a function of (seed, step).

    The frames are shuffled once per epoch (``torch.randperm`` seeded by ``(seed, epoch)``) and
    read in that order, ``batch_size`` per step, running on into the next epoch.
    """

    def __init__(self, size: int, batch_size: int, seed: int, start: int = 0) -> None:
        self.size, self.batch_size, self.seed, self.start = size, batch_size, seed, start

    def _order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=generator)

    def __iter__(self) -> Iterator[list[int]]:
        position = self.start * self.batch_size
        epoch, order = -1, None
        while True:
            batch = []
            for _ in range(self.batch_size):
                if position // self.size != epoch:
                    epoch = position // self.size
                    order = self._order(epoch)
                batch.append(int(order[position % self.size]))
                position += 1
            yield batch


def _collate(items: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    sizes = {tuple(segments.shape) for _, segments in items}
    if len(sizes) > 1:
        raise ValueError(
            f"frames of one batch must share a size after resizing, got {sorted(sizes)}"
        )
    return torch.stack([image for image, _ in items]), torch.stack([seg for _, seg in items])


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
    parser.add_argument("--model-type", default="vit_tiny_512", choices=sorted(SAM_ARCHITECTURES))
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
    if args.threads is not None:
        torch.set_num_threads(args.threads)
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
        return iter(DataLoader(dataset, batch_sampler=sampler, num_workers=0, collate_fn=_collate))

    with metrics_path.open("a") as log:

        def on_step(step: int, metrics: dict[str, float]) -> None:
            log.write(json.dumps({"step": step, **metrics}) + "\n")
            if step % 10 == 0:
                log.flush()

        result = train_sam(
            sam, batches, config, run_dir, progress=not args.no_progress, on_step=on_step
        )
    weights = export_sam_weights(sam, run_dir / f"sam_{args.model_type}.pth")
    _write_card(run_dir, args, config, result, data, len(dataset), frame_shape, weights, device)
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
    return " ".join(shlex.quote(word) for word in words)


def _write_card(run_dir, args, config, result, data, frames, frame_shape, weights, device) -> None:
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
    (run_dir / "MODEL_CARD.md").write_text(card)
