"""``ugains world generate`` writes the synthetic road world (see ``pipelines.world.layout``);
``ugains world confirm`` confirms a world mining run's candidates from ground truth."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import fields

from pipelines.world.layout import SPLITS
from pipelines.world.spec import WorldSpec

_LOG = logging.getLogger(__name__)
_PARTS = (*SPLITS, "logs")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="world_command", metavar="ACTION", required=True)
    gen = sub.add_parser(
        "generate",
        help="write the world's splits and drive logs (deterministic from --seed)",
        description=(
            "Write procedural road scenes with pixel-exact labels: train (in-distribution), "
            "ood (train scenes with outlier-exposure objects), val/test (anomalies) and drive "
            "logs with a ground-truth table. Frames already written are kept (resumable)."
        ),
    )
    gen.add_argument("--out", required=True, help="the world's root folder")
    defaults = WorldSpec()
    for f in fields(WorldSpec):
        flag = "--" + f.name.replace("_", "-")
        gen.add_argument(
            flag,
            type=type(getattr(defaults, f.name)),
            default=getattr(defaults, f.name),
            help=f"default {getattr(defaults, f.name)}",
        )
    gen.add_argument(
        "--splits",
        nargs="+",
        choices=_PARTS,
        default=list(_PARTS),
        help="which parts to write (default: all)",
    )
    confirm = sub.add_parser(
        "confirm",
        help="confirm a world mining run's candidates from ground truth: an outlier pool",
        description=(
            "Stand in for a reviewer on a world drive log: the run's top candidates that lie "
            "on a planted object (mask IoU >= --min-iou, >= 100 px) are written as an outlier pool "
            "(the format of `ugains review pool`) for `ugains train mask2former --outliers`. "
            "With --every-sighting instead of --run: every planted sighting of the logs with its "
            "true mask (the ceiling of a review)."
        ),
    )
    source = confirm.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a mining run's folder (RUN_DIR)")
    source.add_argument(
        "--every-sighting",
        action="store_true",
        help="no run: confirm every planted sighting (>= 100 px) with its true mask",
    )
    confirm.add_argument(
        "--ground-truth", required=True, nargs="+", metavar="GT", help="logs/<log_id>_gt.json"
    )
    confirm.add_argument("--out", required=True, help="the new pool's folder")
    confirm.add_argument(
        "--top", type=int, default=50, help="candidates the reviewer looks at (with --run)"
    )
    confirm.add_argument(
        "--min-iou",
        type=float,
        help="with --run: mask IoU with a planted object at which a candidate is confirmed "
        "(default: pipelines.world.confirm.CONFIRM_IOU, 0.3)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the action; 2 (and one line on stderr) for bad input."""
    if args.world_command == "confirm":
        try:
            from pipelines.world.confirm import confirm_run, truth_pool

            if args.every_sighting:
                manifest = truth_pool(args.ground_truth, args.out)
            else:
                threshold = {} if args.min_iou is None else {"iou": args.min_iou}
                manifest = confirm_run(args.run, args.ground_truth, args.out, args.top, **threshold)
        except (ValueError, OSError) as error:
            print(f"ugains world confirm: {error}", file=sys.stderr)
            return 2
        listed = json.loads(manifest.read_text())["objects"]
        rejected = sum(entry.get("decision") == "rejected" for entry in listed)
        print(
            f"pool manifest: {manifest} ({len(listed) - rejected} confirmed objects, {rejected} "
            "rejected candidates)"
        )
        return 0
    start = time.monotonic()
    try:
        spec = WorldSpec(**{f.name: getattr(args, f.name) for f in fields(WorldSpec)})
        from pipelines.world.generate import write_world  # the renderer: torch, OpenCV

        root = write_world(args.out, spec, tuple(args.splits))
    except ValueError as error:
        print(f"ugains world: {error}", file=sys.stderr)
        return 2
    _LOG.info("world written to %s in %.0f s", root, time.monotonic() - start)
    return 0
