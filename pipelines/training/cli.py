"""``ugains train``: train the project's own models on the world or on a Cityscapes-layout folder.

    ugains train mask2former ...   semantic training, then RbA outlier-exposure fine-tuning
    ugains train sam ...           a world-sized SAM (512-pixel input) for single-point prompts

Each trainer lives in ``pipelines.training.<name>`` (``configure_parser`` / ``run``).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

TRAINERS: dict[str, tuple[str, str]] = {
    "mask2former": (
        "pipelines.training.mask2former",
        "train Mask2Former (semantic, then RbA outlier exposure); saves a Hugging Face directory",
    ),
    "sam": ("pipelines.training.sam", "train a SAM for single-point prompts; saves a state dict"),
}


# The top-level parser passes argv here, so that only the chosen trainer (which imports torch)
# is loaded: `ugains train --help` lists the trainers at once.
PARSER_READS_ARGV = True


def configure_parser(parser: argparse.ArgumentParser, argv: Sequence[str] = ()) -> None:
    sub = parser.add_subparsers(dest="model", metavar="MODEL", required=True)
    chosen = next((arg for arg in argv if arg in TRAINERS), None)
    for name, (module_name, help_text) in TRAINERS.items():
        trainer = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(module_name).configure_parser(trainer)


def run(args: argparse.Namespace) -> int:
    return int(importlib.import_module(TRAINERS[args.model][0]).run(args) or 0)
