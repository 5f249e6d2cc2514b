"""``ugains train mask2former``: semantic training, then RbA outlier exposure, on disk data.

Data: ``--world ROOT`` (splits ``train`` for the semantic stage, ``ood`` for outlier exposure
mixed with ``train``; ``val`` if present for the final metrics) or ``--cityscapes ROOT``
(``leftImg8bit/train/<city>/*_leftImg8bit.png`` + ``gtFine/train/<city>/
*_gtFine_labelTrainIds.png``; outlier pixels, if any, labelled 254), read by
:mod:`pipelines.training.mask2former_data`.

``--out RUN_DIR`` receives ``<stage>/state.pt`` (resumable: rerun the same command),
``<stage>/model/`` (Hugging Face directory, float16), ``model/`` (the last stage's model),
``metrics.json`` and ``MODEL_CARD.md``. Use the model in a mining config as
``mask2former: {format: huggingface, checkpoint: RUN_DIR/model}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from models.config import Mask2FormerArchitecture, Mask2FormerConfig
from models.errors import CheckpointError

if TYPE_CHECKING:
    import torch

# torch, transformers and the data are imported when training starts: `--help` prints at once.

_LOG = logging.getLogger(__name__)
STAGES = ("semantic", "oe")
# RbA's (inlier, outlier) hinge margins: released configs (tanh score) / code defaults (no tanh).
DEFAULT_THRESHOLDS = {"rba": (0.0, 5.0), "rba_nls": (-1.0, -0.1)}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--world", metavar="ROOT", help="a world from `ugains world generate`")
    data.add_argument("--cityscapes", metavar="ROOT", help="a Cityscapes-layout folder (train ids)")
    parser.add_argument(
        "--out",
        required=True,
        metavar="RUN_DIR",
        help="checkpoints, the Hugging Face model and MODEL_CARD.md go here",
    )
    parser.add_argument(
        "--stage",
        choices=["semantic", "oe", "both"],
        default="both",
        help="semantic training, RbA outlier exposure, or one then the other",
    )
    parser.add_argument(
        "--init",
        metavar="DIR",
        help="start from this Hugging Face directory (required by --stage oe)",
    )
    parser.add_argument(
        "--architecture", choices=sorted(get_args(Mask2FormerArchitecture)), default="tiny_1dl"
    )
    parser.add_argument("--steps", type=int, default=1000, help="semantic steps")
    parser.add_argument("--oe-steps", type=int, default=250, help="outlier-exposure steps")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3, help="semantic AdamW learning rate")
    parser.add_argument(
        "--oe-lr", type=float, default=1e-3, help="outlier-exposure learning rate (heads only)"
    )
    parser.add_argument("--warmup", type=int, default=50, help="semantic warm-up steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--size", type=int, nargs=2, default=(256, 512), metavar=("H", "W"))
    parser.add_argument(
        "--scale",
        type=float,
        nargs=2,
        default=(0.75, 1.25),
        metavar=("MIN", "MAX"),
        help="random rescale range of both stages (1 1 = off; RbA's outlier exposure keeps "
        "Mask2Former's scale jitter)",
    )
    parser.add_argument(
        "--num-points",
        type=int,
        default=4096,
        help="points sampled per mask by the loss (transformers: 12544)",
    )
    parser.add_argument(
        "--drop-path",
        type=float,
        default=0.0,
        help="Swin drop-path rate of a new model (the checkpoints used 0.3)",
    )
    parser.add_argument(
        "--oe-score",
        choices=["rba", "rba_nls"],
        default="rba_nls",
        help="score the OE loss acts on: UGainS' negative logit sum (default; the score the "
        "candidate threshold -0.15 applies to) or RbA's tanh score (RbA's released models)",
    )
    parser.add_argument(
        "--oe-thresholds",
        type=float,
        nargs=2,
        metavar=("INLIER", "OUTLIER"),
        help="squared-hinge margins: inliers pay above INLIER, outliers below OUTLIER "
        "(default: RbA's, 0 5 for rba as in its released configs, -1 -0.1 for rba_nls as in "
        "its code's defaults for the unnormalised score)",
    )
    parser.add_argument(
        "--oe-paste",
        type=int,
        default=0,
        metavar="N",
        help="outlier exposure also pastes 1..N random shapes as outliers into each inlier "
        "frame (an open-ended outlier family beside the `ood` split's; 0 = none)",
    )
    parser.add_argument(
        "--oe-trainable",
        choices=["rba", "decoders"],
        default="rba",
        help="what outlier exposure trains: RbA's choice, the class head and mask-embedding "
        "MLP (default), or both decoders as well (only the backbone frozen; for small models)",
    )
    parser.add_argument(
        "--outliers",
        metavar="POOL",
        help="an outlier pool (`ugains review pool`): its confirmed objects are pasted into "
        "inlier frames as outliers, with scale, position and flip jitter",
    )
    parser.add_argument(
        "--pool-objects",
        type=int,
        default=3,
        metavar="N",
        help="1..N pool objects pasted into each inlier frame (with --outliers)",
    )
    parser.add_argument(
        "--pool-rejected",
        type=int,
        default=0,
        metavar="N",
        help="1..N of the pool's rejected candidates (things mining flagged that a reviewer "
        "turned down) pasted into each inlier frame as inliers of no known class: hard "
        "negatives for RbA's inlier hinge (with --outliers; 0 = none)",
    )
    parser.add_argument(
        "--ood-prob",
        type=float,
        default=0.5,
        help="share of outlier-exposure frames drawn from the `ood` split (RbA: 0.5); the rest "
        "are inlier frames, with --oe-paste shapes and --outliers objects pasted in (0: no "
        "`ood` frames, the pasted outliers alone)",
    )
    parser.add_argument(
        "--eval-frames",
        type=int,
        default=8,
        help="held-out frames for the final metrics (0 = none)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (ValueError, FileNotFoundError, CheckpointError) as error:  # PoolError included
        print(f"ugains train mask2former: error: {error}", file=sys.stderr)
        return 1


def _new_model(args: argparse.Namespace) -> torch.nn.Module:
    import torch

    from models.mask2former import (
        Mask2FormerMultiLevelForUniversalSegmentation,
        architecture_config,
    )

    config = architecture_config(args.architecture)
    config.backbone_config.drop_path_rate = args.drop_path
    torch.manual_seed(args.seed)
    return Mask2FormerMultiLevelForUniversalSegmentation(config)


def _load(directory: str | Path, architecture: str) -> torch.nn.Module:
    from models.mask2former import build_mask2former

    return build_mask2former(_hf_config(directory, architecture)).model


def _set_num_points(model: torch.nn.Module, points: int) -> None:
    model.config.train_num_points = points
    model.criterion.num_points = points
    model.criterion.matcher.num_points = points


def _run(args: argparse.Namespace) -> int:
    import torch

    from models.mask2former import build_mask2former
    from models.training.evaluation import evaluate_frames
    from models.training.mask2former import TrainConfig, export_huggingface, train_mask2former
    from pipelines.outlier_pool import OutlierPool
    from pipelines.training.mask2former_data import CityscapesSplit, WorldSplit

    if args.threads:
        torch.set_num_threads(args.threads)
    stages = STAGES if args.stage == "both" else (args.stage,)
    if args.stage == "oe" and not args.init:
        raise ValueError(
            "--stage oe needs --init DIR (a semantic model, e.g. RUN_DIR/semantic/model)"
        )
    if args.init and not Path(args.init, "config.json").is_file():
        raise ValueError(
            f"{Path(args.init) / 'config.json'}: missing (--init must be a Hugging "
            "Face Mask2Former directory)"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.world:
        train = WorldSplit(args.world, "train")
        ood = WorldSplit(args.world, "ood") if "oe" in stages else None
        held_out = _optional(lambda: WorldSplit(args.world, "val"))
    else:
        train = CityscapesSplit(args.cityscapes, "train")
        ood = train if "oe" in stages else None
        held_out = _optional(lambda: CityscapesSplit(args.cityscapes, "val"))
    card: dict[str, object] = {"stages": {}, "data": {"train": train.describe()}}
    if ood is not None:
        card["data"]["oe"] = ood.describe()
    pool = OutlierPool.read(args.outliers) if args.outliers and "oe" in stages else None
    if pool is not None:
        card["data"]["outlier_pool"] = pool.describe()
        card["outlier_pool"] = pool.card()
    if not 0 <= args.ood_prob <= 1:
        raise ValueError(f"--ood-prob must lie in [0, 1], got {args.ood_prob}")
    thresholds = args.oe_thresholds or DEFAULT_THRESHOLDS[args.oe_score]
    began = time.perf_counter()
    init = args.init
    for stage in stages:
        model = _load(init, args.architecture) if init else _new_model(args)
        _set_num_points(model, args.num_points)
        model.to(args.device)
        semantic = stage == "semantic"
        config = TrainConfig(
            stage=stage,
            steps=args.steps if semantic else args.oe_steps,
            batch_size=args.batch_size,
            lr=args.lr if semantic else args.oe_lr,
            warmup_steps=args.warmup if semantic else 0,
            seed=args.seed,
            checkpoint_every=args.checkpoint_every,
            size=tuple(args.size),
            scale_range=tuple(args.scale),
            outlier_score=args.oe_score,
            inlier_threshold=thresholds[0],
            outlier_threshold=thresholds[1],
            ood_prob=args.ood_prob,
            oe_trainable=args.oe_trainable,
            pasted_outliers=args.oe_paste,
            pool_objects=args.pool_objects if pool is not None and not semantic else 0,
            pool_digest=pool.digest if pool is not None and not semantic else "",
            pool_rejected=args.pool_rejected if pool is not None and not semantic else 0,
        )
        sources = [train] if semantic else ([ood, train] if ood is not train else [ood])
        result = train_mask2former(
            model,
            sources,
            config,
            out / stage,
            progress=not args.no_progress,
            outlier_pool=pool.objects if pool is not None else (),
            rejected_pool=pool.rejected if pool is not None else (),
        )
        directory = export_huggingface(model.cpu(), out / stage / "model")
        card["stages"][stage] = {
            "steps": config.steps,
            "seconds_this_call": round(result.seconds, 1),
            "final_loss": round(result.final_loss, 4),
            "first_loss": round(result.losses[0], 4) if result.losses else None,
            "init": init or f"random ({args.architecture}, seed {args.seed})",
            "config": dict(vars(config)),
        }
        init = str(directory)
    final = out / "model"
    if final.exists():
        shutil.rmtree(final)
    shutil.copytree(init, final)
    card["wall_seconds"] = round(time.perf_counter() - began, 1)
    if args.eval_frames > 0:
        frames = held_out if held_out is not None else train
        picked = [frames[i] for i in range(min(args.eval_frames, len(frames)))]
        segmenter = build_mask2former(_hf_config(final, args.architecture))
        card["metrics"] = {"data": frames.describe(), **evaluate_frames(segmenter, picked)}
        if ood is not None and ood is not train:
            picked = [ood[i] for i in range(min(args.eval_frames, len(ood)))]
            card["metrics_oe_frames"] = evaluate_frames(segmenter, picked)
        _LOG.info("metrics: %s", json.dumps(card["metrics"]))
    (out / "metrics.json").write_text(json.dumps(card, indent=2, default=str) + "\n")
    (out / "MODEL_CARD.md").write_text(_model_card(args, card))
    print(f"model: {final}")
    return 0


def _hf_config(directory: str | Path, architecture: str) -> Mask2FormerConfig:
    return Mask2FormerConfig(
        format="huggingface", checkpoint=str(directory), architecture=architecture
    )


def _optional(make: Callable[[], Sequence]) -> Sequence | None:
    try:
        return make()
    except ValueError:
        return None


def _command(args: argparse.Namespace) -> str:
    """The full command line of ``args``, every option spelled out (defaults included)."""
    words = ["ugains", "train", "mask2former"]
    for name, value in vars(args).items():
        if name in ("command", "model", "beam_options", "log_level") or value in (None, False):
            continue
        flag = "--" + name.replace("_", "-")
        if value is True:
            words.append(flag)
        elif isinstance(value, (list, tuple)):
            words += [flag, *map(str, value)]
        else:
            words += [flag, str(value)]
    return " ".join(shlex.quote(w) for w in words)


def _model_card(args: argparse.Namespace, card: dict[str, object]) -> str:
    import torch
    import transformers

    command = _command(args)
    lines = [
        "# Mask2Former trained by `ugains train mask2former`",
        "",
        f"- command: `{command}`",
        f"- architecture: {args.architecture}; seed {args.seed}; batch {args.batch_size}; "
        f"size {args.size[0]}x{args.size[1]}; threads {args.threads or torch.get_num_threads()}",
        f"- wall time (this invocation): {card['wall_seconds']} s",
        f"- software: torch {torch.__version__}, transformers {transformers.__version__}, "
        f"Python {platform.python_version()}",
        "- data: " + "; ".join(f"{k}: {v}" for k, v in card["data"].items()),
        "- weights: float16 safetensors; load with `mask2former: {format: huggingface, "
        f"checkpoint: {Path(args.out) / 'model'}, architecture: {args.architecture}}}`",
        "",
        "## Stages",
        "",
    ]
    for stage, info in card["stages"].items():
        lines.append(
            f"- **{stage}**: {info['steps']} steps from {info['init']}; first loss "
            f"{info['first_loss']}, final loss (last 50 steps) {info['final_loss']}"
        )
        lines.append(f"  - config: `{json.dumps(info['config'], default=str)}`")
    if "oe" in card["stages"]:
        oe = card["stages"]["oe"]["config"]
        lines += [
            "",
            "Outlier exposure follows RbA (NazirNayal8/RbA, `ckpts/*_rba_ood_*`): only "
            "`class_predictor` and the mask-embedding MLP train; semantic loss on the inlier "
            f"classes + squared hinge on the {oe['outlier_score']} score (inlier pixels pay above "
            f"{oe['inlier_threshold']}, outlier pixels below {oe['outlier_threshold']}).",
        ]
    if "outlier_pool" in card:
        from pipelines.outlier_pool import pool_card_section

        lines += ["", *pool_card_section(card["outlier_pool"])]
    for key, title in (("metrics", "Held-out metrics"), ("metrics_oe_frames", "OE frames")):
        if key in card:
            lines += ["", f"## {title}", ""]
            lines += [
                f"- {name}: {value:.4f}" if isinstance(value, float) else f"- {name}: {value}"
                for name, value in card[key].items()
            ]
    return "\n".join(lines) + "\n"
