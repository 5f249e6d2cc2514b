"""Does ugains find the objects on the road? Measured on the road world with the shipped models.

Two measurements, one table each:

1. ``ugains evaluate`` on a held-out ``test`` split of the world: pAP, FPR95, AUROC, iAP,
   iAP50 and point precision / recall for RbA alone, UGainS with FPS, k-means and random
   points, SAM's dense grid and oracle centres (the paper's Tables 1-4 protocol).
2. ``ugains mine`` over two world drive logs (~5 % of frames hold planted objects, frame
   gating on): recall and precision of the top-K candidates, K = the number of planted objects of at
   least 100 px, matched at mask IoU >= 0.5, and the frames with objects that gating skipped.

The world is generated from ``--seed`` into ``--world`` (default: a temporary folder), so any
seed is a fair, unseen check of the shipped models (they were trained on seed 0's train/ood
splits, which share no frame with any test split or log)::

    python -m benchmarks.mining_quality              # seed 1, 100 test frames, 2 logs of 200
    python -m benchmarks.mining_quality --seed 7 --test-frames 60 --log-frames 200
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
WORLD_CONFIG = REPO / "mining_configs" / "world.yaml"
VARIANTS = (
    ("rba", "-"),
    ("ugains", "fps"),
    ("ugains", "kmeans"),
    ("ugains", "random"),
    ("dense-grid", "-"),
    ("oracle", "-"),
)


@dataclass(frozen=True)
class WorldQuality:
    evaluation: list[dict[str, Any]]  # one row per variant, as `ugains evaluate` prints
    mining: Any  # pipelines.world.scoring.MiningScore
    evaluate_seconds: float
    mine_seconds: float
    log_frames: int


def generate(
    root: Path,
    seed: int,
    test_frames: int,
    log_frames: int,
    logs: int = 2,
    anomaly_fraction: float | None = None,
) -> None:
    """The held-out test split and ``logs`` drive logs of the world of ``seed`` under ``root``
    (``anomaly_fraction``: share of log frames with an object; the world's default if None)."""
    from pipelines.world.generate import WorldSpec, write_world

    spec = WorldSpec(seed=seed, test=test_frames, logs=logs, log_frames=log_frames)
    if anomaly_fraction is not None:
        spec = dataclasses.replace(spec, anomaly_fraction=anomaly_fraction)
    write_world(root, spec, splits=("test", "logs"))


def world_config(mask2former: str | None = None, sam: str | None = None) -> Any:
    """The world config (``mining_configs/world.yaml``), with another Mask2Former directory
    (a Hugging Face folder or ``zoo:<name>``) and SAM weights when given."""
    from pipelines.config import load_config

    overrides = {} if mask2former is None else {"models.mask2former.checkpoint": mask2former}
    if sam is not None:
        overrides["models.sam.checkpoint"] = sam
    return load_config(WORLD_CONFIG, overrides)


def evaluate_world(
    root: Path,
    variants: tuple[tuple[str, str], ...] = VARIANTS,
    mask2former: str | None = None,
    sam: str | None = None,
) -> list[dict[str, Any]]:
    """``ugains evaluate`` (``(mode, sampler)`` variants, the config's points) on ``root/test``."""
    from pipelines.evaluation.datasets import list_samples
    from pipelines.evaluation.pipeline import evaluate
    from pipelines.evaluation.variants import Variant
    from pipelines.runners import pipeline_options

    config = world_config(mask2former, sam)
    n = config.models.method.num_points
    rows = [
        Variant(mode) if sampler == "-" else Variant(mode, sampler, n) for mode, sampler in variants
    ]
    # One in-process worker: the models are small and the suite shares two cores.
    options = pipeline_options(
        config, ["--direct_num_workers=1", "--direct_running_mode=in_memory"]
    )
    return evaluate(config, "world", list_samples("world", root / "test"), rows, options)


def mine_logs(
    root: Path, out: Path, mask2former: str | None = None, log_ids: list[str] | None = None
) -> Any:
    """``ugains mine`` (world config, frame gating on) over ``root``'s drive logs (or those of
    ``log_ids``), scored; the run's folder is ``result.run_dir`` of :func:`mine_logs_run`."""
    return mine_logs_run(root, out, mask2former, log_ids)[1]


def mine_logs_run(
    root: Path,
    out: Path,
    mask2former: str | None = None,
    log_ids: list[str] | None = None,
    sam: str | None = None,
) -> tuple[str, Any]:
    """:func:`mine_logs`, returning ``(run_dir, score)``."""
    from pipelines.config import ImageSource
    from pipelines.mining.run import mine
    from pipelines.world.scoring import load_ground_truth, score_run

    config = world_config(mask2former, sam)
    truth = sorted((root / "logs").glob("*_gt.json"))
    if log_ids is not None:
        truth = [path for path in truth if path.name[: -len("_gt.json")] in log_ids]
    logs = [
        ImageSource(path=str(root / "logs" / log_id / "images"), log_id=log_id)
        for log_id in (path.name[: -len("_gt.json")] for path in truth)
    ]
    output = config.output.model_copy(update={"root": str(out)})
    config = config.model_copy(update={"sources": logs, "output": output})
    # Ignore the ledger: a rerun on the same --world must mine the log again, not skip it all.
    result = mine(
        config,
        beam_args=["--direct_num_workers=1", "--direct_running_mode=in_memory"],
        ignore_ledger=True,
    )
    return result.run_dir, score_run(result.run_dir, load_ground_truth(truth))


def measure(root: Path, seed: int, test_frames: int, log_frames: int) -> WorldQuality:
    generate(root, seed, test_frames, log_frames)
    start = time.perf_counter()
    rows = evaluate_world(root)
    evaluated = time.perf_counter()
    score = mine_logs(root, root / "mining")
    mined = time.perf_counter()
    return WorldQuality(rows, score, evaluated - start, mined - evaluated, log_frames)


def format_tables(quality: WorldQuality) -> str:
    from pipelines.evaluation.report import COLUMNS

    columns = COLUMNS[1:]  # all but "dataset"

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += [
        "| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in quality.evaluation
    ]
    s = quality.mining
    lines += [
        "",
        "| frames (2 logs) | planted (>= 100 px) | K | recall@K | precision@K "
        "| frames with objects | skipped by gating |",
        "|---|---|---|---|---|---|---|",
        f"| {2 * quality.log_frames} | {s.planted} | {s.k} | {s.recall:.2f} | {s.precision:.2f} | "
        f"{s.frames_with_objects} | {s.gated_frames_with_objects} |",
        "",
        f"evaluate {quality.evaluate_seconds:.0f} s, mine {quality.mine_seconds:.0f} s "
        "(this machine)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1, help="world seed of the test split and log")
    parser.add_argument("--test-frames", type=int, default=100)
    parser.add_argument("--log-frames", type=int, default=200)
    parser.add_argument("--world", type=Path, help="where to write the world (default: a temp dir)")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    world = contextlib.nullcontext(args.world) if args.world else tempfile.TemporaryDirectory()
    with world as root:
        quality = measure(Path(root), args.seed, args.test_frames, args.log_frames)
    print(
        f"world seed {args.seed}: {args.test_frames} test frames, two {args.log_frames}-frame logs"
    )
    print(format_tables(quality))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
