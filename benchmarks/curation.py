"""Curation on the road world: tracks, ranking by object and "more like this", measured.

Generates the drive logs of a world seed (ground truth with track ids), mines them with the
shipped world models (``mining_configs/world.yaml``: tracks linked, candidates ranked by
object), and prints two tables:

1. **Linking alone**, on the true sightings of at least 20 px: boxes from the truth,
   embeddings pooled by the shipped SAM inside the true masks, linked as a run links its
   instances. Track purity and completeness (pairs), and "more like this" precision@10 (same
   kind among the 10 most similar sightings of other objects) against chance.
2. **End to end**, on the mining run: the same figures over the instances that show a planted
   object (at least half of the mask on it), and the planted objects in the top K (K = objects
   with a sighting of at least 100 px) when ranking sightings vs ranking objects.

    python -m benchmarks.curation                     # seed 1, 2 logs of 200 frames
    python -m benchmarks.curation --seed 7 --anomaly-fraction 0.5 --log-frames 60 --logs 1
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.mining_quality import generate, mine_logs_run, world_config


def measure(root: Path, seed: int, logs: int, log_frames: int, fraction: float | None) -> str:
    from models.ugains import build_ugains
    from pipelines.world.curation import score_curation, score_sighting_tracks, sighting_embeddings
    from pipelines.world.scoring import load_ground_truth

    if not (root / "logs").exists():
        generate(root, seed, 0, log_frames, logs=logs, anomaly_fraction=fraction)
    truth = load_ground_truth(sorted((root / "logs").glob("*_gt.json")))
    config = world_config()
    start = time.perf_counter()
    prompter = build_ugains(config.models, "cpu").prompter
    embeddings = sighting_embeddings(root, truth, prompter)
    linking, precision, chance = score_sighting_tracks(truth, embeddings, config.output.tracks)
    sightings_seconds = time.perf_counter() - start
    start = time.perf_counter()
    run_dir, _ = mine_logs_run(root, root / "mining")
    mine_seconds = time.perf_counter() - start
    run = score_curation(run_dir, truth)
    wide = score_curation(run_dir, truth, k=config.output.top_n)
    lines = [
        f"seed {seed}, {logs} log(s) of {log_frames} frames; tracks: {config.output.tracks}",
        "",
        "| measured on | track purity | track completeness | more like this p@10 (chance) |",
        "| --- | ---: | ---: | ---: |",
        f"| true sightings >= 20 px ({linking.objects} objects) | {linking.purity:.3f} "
        f"({linking.pure_pairs}/{linking.linked_pairs}) | {linking.completeness:.3f} "
        f"({linking.pure_pairs}/{linking.object_pairs}) | {precision:.3f} ({chance:.3f}) |",
        f"| mined instances on planted objects ({run.matched} of {run.instances}) | "
        f"{run.linking.purity:.3f} ({run.linking.pure_pairs}/{run.linking.linked_pairs}) | "
        f"{run.linking.completeness:.3f} ({run.linking.pure_pairs}/{run.linking.object_pairs}) "
        f"| {run.precision_at_10:.3f} ({run.chance_at_10:.3f}) |",
        "",
        f"| of {run.planted} planted objects | distinct in the top K = {run.k} (entries on "
        f"them) | distinct in the top {wide.k} (entries) |",
        "| --- | ---: | ---: |",
        f"| ranking sightings | {run.distinct_by_instance} ({run.shown_by_instance}) | "
        f"{wide.distinct_by_instance} ({wide.shown_by_instance}) |",
        f"| ranking objects (tracks) | {run.distinct_by_track} ({run.shown_by_track}) | "
        f"{wide.distinct_by_track} ({wide.shown_by_track}) |",
        "",
        f"{run.instances} instances -> {run.tracks} tracks; sightings embedded in "
        f"{sightings_seconds:.0f} s, logs mined in {mine_seconds:.0f} s",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--logs", type=int, default=2)
    parser.add_argument("--log-frames", type=int, default=200)
    parser.add_argument("--anomaly-fraction", type=float, default=None)
    parser.add_argument("--world", type=Path, help="world folder (default: a temporary one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    with contextlib.ExitStack() as stack:
        root = args.world or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        print(measure(root, args.seed, args.logs, args.log_frames, args.anomaly_fraction))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
