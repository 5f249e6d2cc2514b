"""``ugains mine``: the command line of a mining run (the run itself: :mod:`pipelines.mining.run`).

Help and argument errors print before Beam or torch load: the run's modules are imported by
:func:`run`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from pipelines.config import (
    ConfigError,
    DemoSource,
    MiningConfig,
    add_set_argument,
    load_config,
    parse_overrides,
)
from pipelines.mining.preflight import ModelLoadError, OutputRootError
from pipelines.mining.run import (  # light: the run imports Beam and torch when it runs
    RunExistsError,
    RunFailedError,
    mine,
)
from pipelines.runners import UnsupportedRunnerError, quiet_beam_logs

__all__ = ["ACCEPTS_BEAM_OPTIONS", "EXIT_RUN_IN_PROGRESS", "configure_parser", "run"]

ACCEPTS_BEAM_OPTIONS = True
EXIT_RUN_IN_PROGRESS = 75  # sysexits.h EX_TEMPFAIL: try again later
_LOG = logging.getLogger(__name__)


class GroundTruthError(ValueError):
    """A ``--ground-truth`` file that is not a world drive log's ground truth."""


def _ground_truth(config: MiningConfig, paths: Sequence[str], *, demo: bool) -> list[dict]:
    """The sightings of ``--ground-truth`` files, and with ``demo`` of the demo source's log
    (which exists only once ``mine`` has generated it)."""
    from pipelines.world.demo import demo_ground_truth
    from pipelines.world.scoring import load_ground_truth

    truth = list(paths)
    if demo:
        truth += [
            str(demo_ground_truth(s.path)) for s in config.sources if isinstance(s, DemoSource)
        ]
    try:
        return load_ground_truth(truth)
    except ValueError as error:
        raise GroundTruthError(str(error)) from None


def format_candidates(run_dir: str, limit: int = 10) -> str:
    """The top ``limit`` candidates of a run as a text table (``frames``: the sightings of the
    candidate's track, "-" when the run ranked sightings)."""
    from pipelines.mining.tables import read_table

    table = read_table(run_dir, "candidates").slice(0, limit)
    header = (
        f"{'rank':>4}  {'score':>8}  {'sam_iou':>7}  {'area':>7}  {'bbox (x,y,w,h)':<22}  "
        f"{'frames':>6}  frame"
    )
    lines = [header, "-" * len(header)]
    columns = ["rank", "score", "sam_iou", "area", "bbox_x", "bbox_y", "bbox_w", "bbox_h"]
    for row in table.select([*columns, "track_frames", "frame_uri"]).to_pylist():
        box = f"{row['bbox_x']},{row['bbox_y']},{row['bbox_w']},{row['bbox_h']}"
        seen = row["track_frames"] if row["track_frames"] is not None else "-"
        lines.append(
            f"{row['rank']:>4}  {row['score']:>8.4f}  {row['sam_iou']:>7.3f}  "
            f"{row['area']:>7}  {box:<22}  {seen:>6}  {row['frame_uri']}"
        )
    return "\n".join(lines)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (
        "Run the Beam mining pipeline: read the config's sources, run UGainS on every frame\n"
        "not yet in the ledger, and write instances/, candidates.parquet, frames/, errors/\n"
        "and maps/ into <output.root>/runs/<run id>/. With nothing new, exit 0 and say so."
    )
    parser.epilog = (
        "Any other option is a Beam pipeline option and overrides the config's runner "
        "section, e.g.\n"
        "  --runner DataflowRunner --project P --region R --temp_location gs://B/tmp "
        "--setup_file ./setup.py\n"
        "  --direct_num_workers 4 --direct_running_mode multi_processing\n"
        "The DaskRunner (loses batched elements) and the PrismRunner (downloads a binary) are "
        "refused."
    )
    parser.add_argument("--config", required=True, help="mining config YAML")
    add_set_argument(parser)
    parser.add_argument("--run-id", help="run directory name (default: UTC time + fingerprint)")
    parser.add_argument(
        "--retry-errors", action="store_true", help="mine frames that failed in earlier runs again"
    )
    parser.add_argument(
        "--ignore-ledger", action="store_true", help="mine every frame, even those already mined"
    )
    parser.add_argument(
        "--skip-model-check",
        action="store_true",
        help="do not load the models on the launcher first (e.g. checkpoints only on workers)",
    )
    parser.add_argument("--top", type=int, default=10, help="candidates to print (default 10)")
    parser.add_argument(
        "--ground-truth",
        action="append",
        default=[],
        metavar="GT_JSON",
        help=(
            "a world drive log's ground truth (logs/<log_id>_gt.json of `ugains world "
            "generate`): print the run's recall and precision against it (repeatable; the "
            "demo source's own is used automatically)"
        ),
    )


def run(args: argparse.Namespace) -> int:
    from pipelines.mining.ledger import RunInProgressError
    from pipelines.mining.sources import SourceError

    quiet_beam_logs()
    try:
        config = load_config(args.config, parse_overrides(args.overrides))
        # Read before mining: a bad path is reported now, not after a long run.
        _ground_truth(config, args.ground_truth, demo=False)
        result = mine(
            config,
            beam_args=getattr(args, "beam_options", []),
            run_id=args.run_id,
            retry_errors=args.retry_errors,
            ignore_ledger=args.ignore_ledger,
            check_models=not args.skip_model_check,
        )
    except (
        ConfigError,
        UnsupportedRunnerError,
        SourceError,
        ModelLoadError,
        RunExistsError,
        GroundTruthError,
        OutputRootError,
    ) as error:
        print(f"ugains mine: {error}", file=sys.stderr)
        return 2
    except RunFailedError as error:
        print(f"ugains mine: {error}", file=sys.stderr)
        return 1
    except RunInProgressError as error:
        # Not a failure of this call's input: a scheduler may simply try again later.
        print(f"ugains mine: {error}", file=sys.stderr)
        return EXIT_RUN_IN_PROGRESS
    if result.run_dir is None:
        print(
            f"nothing new to mine: all {result.skipped} frames of the sources are in the "
            f"ledger of this config ({config.output.root}/ledger/); no run was started"
        )
        return 0
    counts = ", ".join(f"{table} {n}" for table, n in result.counts.items())
    print(f"run {result.run_id}: {result.planned} frames in {result.seconds:.1f} s ({counts})")
    if result.skipped:
        print(f"skipped {result.skipped} frames already in the ledger")
    if result.counters:
        names = ("frames_read", "frames_processed", "frames_failed", "instances")
        print("counters: " + ", ".join(f"{n} {result.counters.get(n, 0)}" for n in names))
    print(f"outputs: {result.run_dir}")
    if result.counts.get("candidates"):
        print(format_candidates(result.run_dir, args.top))
    sightings = _ground_truth(config, args.ground_truth, demo=True)
    if sightings:
        from pipelines.world.scoring import score_run

        print(score_run(result.run_dir, sightings).summary())
    return 0
