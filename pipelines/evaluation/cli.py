"""``ugains evaluate``: the paper's metrics on a labelled dataset (the command line).

This module is the command line only, so that ``ugains evaluate --help`` and argument errors
print without importing Beam and torch; the run imports the pipeline.
"""

from __future__ import annotations

import argparse
import logging
import textwrap
from dataclasses import asdict
from pathlib import Path

from pipelines.config import ConfigError, add_set_argument, load_config, parse_overrides
from pipelines.evaluation.datasets import DATASETS, LAYOUTS
from pipelines.evaluation.variants import MODES

__all__ = ["ACCEPTS_BEAM_OPTIONS", "configure_parser", "run"]

ACCEPTS_BEAM_OPTIONS = True
_LOG = logging.getLogger(__name__)

SAMPLERS = ("fps", "kmeans", "random", "oracle")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    # The raw formatter keeps the epilog's layout table, so the description is wrapped here.
    parser.description = textwrap.fill(
        "Run UGainS over a labelled dataset and report the paper's metrics: pixel AP, FPR95, "
        "AUROC (percent), Cityscapes instance AP / AP50 and prompt-point precision / recall. "
        "Repeat --mode, --sampler or --points for several rows (Tables 2, 4, 5); every "
        "combination that means something becomes a row. Frame gating is always off (SAM "
        "runs on every frame, as in the paper). Extra arguments are Beam pipeline options "
        "(e.g. --direct_num_workers 1).",
        width=88,
    )
    layouts = "\n".join(f"  {name:15s} {layout}" for name, layout in LAYOUTS.items())
    parser.epilog = (
        f"dataset layouts under --data:\n{layouts}\n\n"
        "examples:\n"
        "  ugains evaluate --config mining_configs/fishyscapes_lf.yaml --data /data/fs_laf\n"
        "  ugains evaluate --config mining_configs/fishyscapes_lf.yaml --data /data/fs_laf \\\n"
        "      --sampler fps --sampler kmeans --sampler random --sampler oracle"
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--config", required=True, help="mining config YAML (models, method)")
    add_set_argument(parser)
    parser.add_argument("--data", required=True, help="dataset root (layouts below)")
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        help="dataset layout; default: the config's file name or its `name`, if one of these",
    )
    parser.add_argument(
        "--mode",
        action="append",
        choices=MODES,
        help="ugains: the method; rba: pixel scores only; dense-grid: SAM on a 32x32 grid "
        "scored by RbA; oracle: one prompt per ground-truth instance (default: the config's)",
    )
    parser.add_argument(
        "--sampler",
        action="append",
        choices=SAMPLERS,
        help="prompt sampler of mode ugains (default: the config's)",
    )
    parser.add_argument(
        "--points",
        action="append",
        type=_positive_int,
        help="prompt points per frame (default: the config's)",
    )
    parser.add_argument("--limit", type=_positive_int, help="evaluate only the first N frames")
    parser.add_argument(
        "--component-threshold",
        type=float,
        metavar="T",
        help="also report SegmentMeIfYouCan's component metrics (sIoU, PPV, mean F1) of the "
        "pixel scores thresholded at T (score > T; the benchmark's thresh_p)",
    )
    parser.add_argument(
        "--out",
        help="folder for results.json and results.csv (default: <output.root>/evaluate/<dataset>)",
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    from apache_beam.io.filesystems import FileSystems

    from pipelines.evaluation.datasets import DatasetError, list_samples
    from pipelines.evaluation.pipeline import evaluate
    from pipelines.evaluation.plots import write_curves
    from pipelines.evaluation.report import format_table, write_results
    from pipelines.evaluation.variants import expand_variants
    from pipelines.runners import UnsupportedRunnerError, pipeline_options, quiet_beam_logs

    quiet_beam_logs()  # as `ugains mine`: Beam's INFO lines would drown the report
    try:
        config = load_config(args.config, parse_overrides(args.overrides))
    except ConfigError as error:
        _LOG.error("%s", error)
        return 2
    dataset = args.dataset or next(
        (name for name in (Path(args.config).stem, config.name) if name in DATASETS), None
    )
    if dataset is None:
        _LOG.error(
            "cannot tell the dataset from the config file %r or its name %r: pass --dataset "
            "(one of %s)",
            Path(args.config).name,
            config.name,
            ", ".join(DATASETS),
        )
        return 2
    method = config.models.method
    if method.frame_gating:
        _LOG.warning("frame_gating is off for evaluation: SAM runs on every frame, as in the paper")
    variants = expand_variants(
        args.mode or [method.mode.replace("_", "-")],
        args.sampler or [method.sampler],
        args.points or [method.num_points],
    )
    try:
        entries = list_samples(dataset, args.data)
    except DatasetError as error:
        _LOG.error("%s", error)
        return 2
    entries = entries[: args.limit] if args.limit else entries
    _LOG.info(
        "evaluating %d variant(s) on %d %s frames from %s",
        len(variants),
        len(entries),
        dataset,
        args.data,
    )
    try:
        options = pipeline_options(config, getattr(args, "beam_options", []))
    except UnsupportedRunnerError as error:
        _LOG.error("%s", error)
        return 2
    rows = evaluate(config, dataset, entries, variants, options, args.component_threshold)
    print(format_table(rows))
    out = args.out or FileSystems.join(config.output.root, "evaluate", dataset)
    meta = {
        "config": str(args.config),
        "data": str(args.data),
        "fingerprint": config.fingerprint(),
        "models": config.models.model_dump(mode="json"),
        "variants": [asdict(variant) for variant in variants],
    }
    for path in [*write_results(rows, out, meta), *write_curves(rows, out, dataset)]:
        _LOG.info("wrote %s", path)
    return 0
