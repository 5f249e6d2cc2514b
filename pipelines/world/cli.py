"""``ugains world generate``: write the synthetic road world (see ``pipelines.world.layout``)."""

from __future__ import annotations

import argparse
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


def run(args: argparse.Namespace) -> int:
    """Write the world; 2 (and one line on stderr) for a bad spec or a mismatched ``--out``."""
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
