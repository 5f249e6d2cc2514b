"""Close the loop on the road world: mine -> confirm -> fine-tune -> mine again, and measure.

Rounds of the anomaly model, each measured on data no round trained on:

- **round 0**: the in-distribution model, no outlier exposure
  (``zoo:world_mask2former_tiny_1dl_semantic``);
- **round 1**: the shipped model, outlier exposure on the generic family
  (``zoo:world_mask2former_tiny_1dl``);
- **round 2**: round 1 fine-tuned with the review of mining drive log A with round 1
  (``ugains world confirm`` standing in for a reviewer, then ``ugains train mask2former --stage
  oe --outliers POOL --pool-rejected N``): the confirmed objects pasted as outliers, the
  rejected candidates (top candidates on no planted object) pasted as inliers of no class,
  mixed with the generic family as in round 1;
- **round 2c**: the same with the confirmed objects only (hard negatives did not help on
  average over three fine-tune seeds: benchmarks/RESULTS.md);
- **round 2t**: the ceiling of any review of log A: round 1 fine-tuned as 2c on every planted
  sighting of log A with its true mask (``ugains world confirm --every-sighting``), as if the
  reviewer had found every object and redrawn every outline.

Each round runs ``ugains evaluate`` on the held-out ``test`` split (pAP, FPR95, iAP50 of
UGainS with FPS points) and ``ugains mine`` on drive log B, which no round mined for its pool
(recall@K and precision@K; recall per anomaly kind, split into kinds the pool holds and kinds
it lacks). The world's objects are drawn anew for every frame, so log B's objects are new
objects of the pool's kinds, never the pooled ones::

    python -m benchmarks.outlier_loop                  # seed 11, 60 test frames, logs of 200
    python -m benchmarks.outlier_loop --seed 12 --steps 400 --work /tmp/loop
    python -m benchmarks.outlier_loop --rounds 1 2c 2t    # a subset of the rounds
    python -m benchmarks.outlier_loop --sam runs/sam/sam_vit_tiny_512.pth  # another world SAM
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.mining_quality import evaluate_world, generate, mine_logs_run

REPO = Path(__file__).resolve().parents[1]
ROUND_MODELS = {
    "0": "zoo:world_mask2former_tiny_1dl_semantic",
    "1": "zoo:world_mask2former_tiny_1dl",
}
ROUND_NAMES = ("0", "1", "2c", "2", "2t")
REJECTED_PER_FRAME = 2  # round 2: 1..N rejected candidates pasted into each inlier frame
POOL_LOG, HELD_OUT_LOG = "drive_00", "drive_01"
VARIANTS = (("rba", "-"), ("ugains", "fps"))


@dataclass
class RoundResult:
    round: str
    model: str
    evaluation: dict[tuple[str, str], dict[str, Any]]
    recall: float
    precision: float
    planted: int
    kind_recall: dict[str, tuple[int, int]]  # kind -> (hits, planted) on the held-out log


@dataclass
class LoopResult:
    rounds: list[RoundResult] = field(default_factory=list)
    pool_objects: int = 0  # confirmed
    pool_rejected: int = 0
    truth_objects: int = 0  # round 2t's pool: every planted sighting of log A
    pool_kinds: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def generate_training_world(root: Path, train: int, ood: int) -> Path:
    """A small world of seed 0 (the shipped models' seed) with ``train`` and ``ood`` only."""
    from pipelines.world.generate import WorldSpec, write_world

    spec = WorldSpec(seed=0, train=train, ood=ood, val=0, test=0, logs=0)
    write_world(root, spec, splits=("train", "ood"))
    return root


def fine_tune(
    training_world: Path,
    init: str,
    pool: Path,
    out: Path,
    steps: int,
    threads: int = 1,
    rejected: int = 0,
) -> Path:
    """``ugains train mask2former --stage oe --init INIT --outliers POOL``: round 1's recipe
    (random shapes, both decoders) with the pool added, at the default scale jitter
    (0.75-1.25; round 1 used 0.75-1.75); with ``rejected`` > 0, 1..``rejected`` of the pool's
    rejected candidates pasted into each inlier frame as hard negatives."""
    from models.zoo import resolve_zoo_path
    from pipelines.training import mask2former as command

    parser = argparse.ArgumentParser()
    command.configure_parser(parser)
    argv = ["--world", str(training_world), "--out", str(out), "--stage", "oe"]
    argv += ["--init", resolve_zoo_path(init), "--oe-steps", str(steps), "--oe-paste", "4"]
    argv += ["--oe-trainable", "decoders", "--outliers", str(pool), "--pool-objects", "3"]
    argv += ["--pool-rejected", str(rejected)]
    argv += ["--threads", str(threads), "--eval-frames", "0", "--no-progress"]
    if command.run(parser.parse_args(argv)) != 0:
        raise RuntimeError(f"fine-tuning into {out} failed (its error is above)")
    return out / "model"


def _kind_recall(run_dir: str, truth: list[dict]) -> dict[str, tuple[int, int]]:
    from pipelines.world.scoring import counts_as_planted, match_run

    result = match_run(run_dir, truth)
    planted: dict[str, int] = {}
    for row in truth:
        if counts_as_planted(row):
            planted[row["kind"]] = planted.get(row["kind"], 0) + 1
    hits: dict[str, int] = {}
    for match in result.matches:
        if match is not None and counts_as_planted(match):
            hits[match["kind"]] = hits.get(match["kind"], 0) + 1
    return {kind: (hits.get(kind, 0), count) for kind, count in sorted(planted.items())}


def measure_round(
    world: Path, work: Path, number: str, model: str, sam: str | None = None
) -> RoundResult:
    from pipelines.world.scoring import load_ground_truth

    rows = evaluate_world(world, VARIANTS, model, sam)
    run_dir, score = mine_logs_run(world, work / f"mine_round{number}", model, [HELD_OUT_LOG], sam)
    truth = load_ground_truth([world / "logs" / f"{HELD_OUT_LOG}_gt.json"])
    return RoundResult(
        number,
        model,
        {(row["mode"], row["sampler"]): row for row in rows},
        score.recall,
        score.precision,
        score.planted,
        _kind_recall(run_dir, truth),
    )


def run_loop(
    work: Path,
    seed: int,
    test_frames: int,
    log_frames: int,
    anomaly_fraction: float,
    training_world: Path,
    steps: int,
    top: int,
    rounds: tuple[str, ...] = ("0", "1", "2"),
    rejected: int = REJECTED_PER_FRAME,
    sam: str | None = None,
) -> LoopResult:
    """Generate the world of ``seed``, pool from log A with round 1, fine-tune the rounds 2
    asked for, and measure ``rounds`` on the test split and log B.

    ``sam``: SAM weights of the world config's model type for every mining and evaluation run
    (default: the config's, the shipped world SAM); the rounds differ in Mask2Former only."""
    from pipelines.world.confirm import confirm_run, truth_pool

    result = LoopResult()
    world = work / "world"
    began = time.perf_counter()
    generate(world, seed, test_frames, log_frames, logs=2, anomaly_fraction=anomaly_fraction)
    result.seconds["generate"] = time.perf_counter() - began

    began = time.perf_counter()
    run_dir, _ = mine_logs_run(world, work / "mine_pool", ROUND_MODELS["1"], [POOL_LOG], sam)
    pool = work / "pool"
    manifest = confirm_run(run_dir, [world / "logs" / f"{POOL_LOG}_gt.json"], pool, top=top)
    listed = json.loads(manifest.read_text())["objects"]
    objects = [obj for obj in listed if obj["decision"] == "confirmed"]
    result.pool_objects = len(objects)
    result.pool_rejected = len(listed) - len(objects)
    for obj in objects:
        result.pool_kinds[obj["kind"]] = result.pool_kinds.get(obj["kind"], 0) + 1
    result.seconds["mine + confirm"] = time.perf_counter() - began
    if not objects:
        raise RuntimeError(f"round 1 confirmed no object in the top {top} of {run_dir}")

    began = time.perf_counter()
    models = dict(ROUND_MODELS)
    # A pool without rejected candidates (a review that confirmed all it saw) makes round 2c.
    pools = {"2": pool, "2c": pool}
    if "2t" in rounds:
        pools["2t"] = work / "pool_truth"
        truth = truth_pool([world / "logs" / f"{POOL_LOG}_gt.json"], pools["2t"])
        result.truth_objects = len(json.loads(truth.read_text())["objects"])
    for name, per_frame in (("2", rejected if result.pool_rejected else 0), ("2c", 0), ("2t", 0)):
        if name in rounds:
            out = work / f"round{name}"
            models[name] = str(
                fine_tune(training_world, models["1"], pools[name], out, steps, 1, per_frame)
            )
    result.seconds["fine-tune"] = time.perf_counter() - began

    began = time.perf_counter()
    for number in rounds:
        result.rounds.append(measure_round(world, work, number, models[number], sam))
    result.seconds[f"measure {len(rounds)} rounds"] = time.perf_counter() - began
    return result


def format_table(result: LoopResult) -> str:
    pooled = set(result.pool_kinds)
    lines = [
        "| round | RbA pAP | RbA FPR95 | UGainS pAP | UGainS iAP50 | recall@K | precision@K "
        "| recall, pooled kinds | recall, other kinds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result.rounds:
        rba, fps = r.evaluation[("rba", "-")], r.evaluation[("ugains", "fps")]

        def share(kinds: set[str], r: RoundResult = r) -> str:
            hits = sum(h for k, (h, _) in r.kind_recall.items() if k in kinds)
            planted = sum(n for k, (_, n) in r.kind_recall.items() if k in kinds)
            return f"{hits}/{planted}" if planted else "-"

        others = set(r.kind_recall) - pooled
        lines.append(
            f"| {r.round} | {rba['pAP']:.2f} | {rba['FPR95']:.2f} | {fps['pAP']:.2f} "
            f"| {fps['iAP50']:.2f} | {r.recall:.2f} | {r.precision:.2f} | {share(pooled)} "
            f"| {share(others)} |"
        )
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(result.pool_kinds.items()))
    lines += [
        "",
        f"pool: {result.pool_objects} confirmed objects ({kinds}), {result.pool_rejected} "
        f"rejected candidates; K = {result.rounds[0].planted} planted objects (>= 100 px) on "
        "the held-out log"
        + (
            f"; round 2t's pool: {result.truth_objects} planted sightings of log A, true masks"
            if result.truth_objects
            else ""
        ),
        "time: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items()),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=11, help="world seed of test split and logs")
    parser.add_argument("--test-frames", type=int, default=60)
    parser.add_argument("--log-frames", type=int, default=200)
    parser.add_argument("--anomaly-fraction", type=float, default=0.2)
    parser.add_argument("--steps", type=int, default=300, help="fine-tuning steps of round 2")
    parser.add_argument("--top", type=int, default=50, help="candidates the reviewer looks at")
    parser.add_argument(
        "--training-world",
        type=Path,
        help="a world with train and ood splits (default: .ugains_world if present, else a "
        "small one generated into --work)",
    )
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument(
        "--sam",
        help="SAM weights (the world config's model type, vit_tiny_512) for every round's "
        "mining and evaluation, e.g. a longer-trained world SAM (default: the shipped one)",
    )
    parser.add_argument(
        "--rounds",
        nargs="+",
        choices=ROUND_NAMES,
        default=list(ROUND_NAMES),
        help="rounds to measure (2c: round 2 with the confirmed objects only; 2t: with every "
        "planted object of log A and its true mask; default: all)",
    )
    parser.add_argument(
        "--pool-rejected",
        type=int,
        default=REJECTED_PER_FRAME,
        help="round 2: 1..N rejected candidates pasted into each inlier frame",
    )
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    work_dir = contextlib.nullcontext(args.work) if args.work else tempfile.TemporaryDirectory()
    with work_dir as work:
        work = Path(work)
        training = args.training_world
        if training is None:
            default = REPO / ".ugains_world"
            exists = (default / "train").is_dir() and (default / "ood").is_dir()
            training = default if exists else generate_training_world(work / "train", 200, 100)
        result = run_loop(
            work,
            args.seed,
            args.test_frames,
            args.log_frames,
            args.anomaly_fraction,
            training,
            args.steps,
            args.top,
            tuple(name for name in ROUND_NAMES if name in args.rounds),
            args.pool_rejected,
            args.sam,
        )
    print(
        f"world seed {args.seed}: {args.test_frames} test frames; logs of {args.log_frames} "
        f"frames, {args.anomaly_fraction:.0%} with objects; round 2 = {args.steps} steps, "
        f"--pool-rejected {args.pool_rejected}; SAM {args.sam or 'the shipped world SAM'}"
    )
    print(format_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
