"""The ``ugains`` command line: mine, evaluate, review, weights, world and train.

Each subcommand lives in its own module exposing ``configure_parser(parser)`` and
``run(args) -> int``; modules are imported only when their subcommand is used, so
``ugains --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence

from pipelines import __version__

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "mine": ("pipelines.mining.cli", "run the Beam mining pipeline over drive logs"),
    "evaluate": ("pipelines.evaluation.cli", "reproduce the paper's metrics on a labelled dataset"),
    "runs": (
        "pipelines.mining.runs",
        "list committed runs and clean up the leftovers of killed ones",
    ),
    "review": ("pipelines.review.cli", "build, browse and export the FiftyOne review dataset"),
    "report": (
        "pipelines.review.report",
        "a run's top candidates as a static HTML page and a PNG contact sheet",
    ),
    "weights": ("pipelines.weights.cli", "download and list model checkpoints"),
    "world": ("pipelines.world.cli", "generate the synthetic road world (scenes with known truth)"),
    "train": ("pipelines.training.cli", "train Mask2Former or SAM on the world or your own data"),
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ugains",
        description=(
            "Mine rare objects (debris, animals, lost cargo) from driving logs with UGainS: "
            "Mask2Former + RbA anomaly scores prompt Segment Anything for anomaly instances."
        ),
    )
    parser.add_argument("--version", action="version", version=f"ugains {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Only the chosen subcommand's module is imported (argv is scanned for its name).
    chosen = next((arg for arg in argv if arg in COMMANDS), None)
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            reads_argv = getattr(module, "PARSER_READS_ARGV", False)
            module.configure_parser(sub, *([argv] if reads_argv else []))
    return parser


# apache-beam's import-time notes about its optional BigQuery client libraries: printed on every
# import without the `gcp` extra, they say nothing about the run.
_IMPORT_NOISE = ("apitools not found", "No module named google.cloud.bigquery_storage")


class _DropImportNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_IMPORT_NOISE)


# The local job service relays every worker log line ("Worker: severity: WARN ..."). Local
# worker processes (pipelines/beam_worker.py) print each line themselves on the same stderr,
# so the relayed copy is dropped.
_RELAY_LOGGER = "apache_beam.runners.portability.local_job_service"


class _DropRelayedWorkerLogs(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == _RELAY_LOGGER and record.getMessage().startswith("Worker: "))


def _configure_logging(level: str) -> None:
    # Without a handler on the root logger, Beam's import-time logging.warning would install
    # Python's default one (and its format) before ours.
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_DropImportNoise())
        handler.addFilter(_DropRelayedWorkerLogs())


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Before any subcommand module (and Beam) is imported, so their import-time logs use it.
    _configure_logging("INFO")
    parser = build_parser(argv)
    args, extra = parser.parse_known_args(argv)
    logging.getLogger().setLevel(args.log_level)
    module = importlib.import_module(COMMANDS[args.command][0])
    # Only `mine` and `evaluate` accept extra (Beam pipeline) options.
    if extra and not getattr(module, "ACCEPTS_BEAM_OPTIONS", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.beam_options = extra
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
