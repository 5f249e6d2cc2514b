"""Beam runner choice and setup, shared by mining and evaluation.

The config's ``runner`` section gives the runner and its options; command-line Beam options
win. The DirectRunner is run as its batch engine, the FnApiRunner, with worker log levels set
(Beam at WARNING, ugains at INFO); the DaskRunner and the PrismRunner are refused with the
reason. Beam is imported only when options are built (the command line starts without it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pipelines.config import MiningConfig

if TYPE_CHECKING:
    from apache_beam.options.pipeline_options import PipelineOptions

__all__ = ["UnsupportedRunnerError", "pipeline_options", "quiet_beam_logs", "runner_for"]

# Runners this tool refuses, and why (both seen failing with apache-beam 2.77).
_REFUSED_RUNNERS = {
    "daskrunner": "Beam's DaskRunner silently drops the last partial batch of BatchElements "
    "and RunInference (16 of 20 elements came out in our test); use the DirectRunner locally "
    "or DataflowRunner / FlinkRunner / SparkRunner at scale",
    "prismrunner": "the PrismRunner downloads its binary at run time, which fails offline; "
    "use the DirectRunner (the default) locally",
}


class UnsupportedRunnerError(ValueError):
    """A Beam runner this pipeline refuses to run on."""


def pipeline_options(config: MiningConfig, beam_args: Sequence[str] = ()) -> PipelineOptions:
    """Beam options: the config's ``runner`` section, then command-line options on top.

    Raises:
        UnsupportedRunnerError: the DaskRunner or the PrismRunner was asked for.
    """
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    runner = config.runner
    flags = [
        f"--runner={runner.runner}",
        f"--direct_num_workers={runner.direct_num_workers}",
        f"--direct_running_mode={runner.direct_running_mode}",
    ]
    for name, value in runner.options.items():
        if value is True:
            flags.append(f"--{name}")
        elif value is not False:
            flags.append(f"--{name}={value}")
    options = PipelineOptions([*flags, *beam_args])
    chosen = str(options.view_as(StandardOptions).runner or "DirectRunner")
    name = chosen.rsplit(".", 1)[-1].lower()
    if not name.endswith("runner"):
        name += "runner"
    if name in _REFUSED_RUNNERS:
        raise UnsupportedRunnerError(f"runner {chosen} is not supported: {_REFUSED_RUNNERS[name]}")
    return options


def runner_for(options: PipelineOptions) -> Any:
    """The runner object; the DirectRunner is run as its batch engine, the FnApiRunner.

    apache-beam 2.77's DirectRunner first tries the PrismRunner, which downloads a binary at
    run time (no network here); the FnApiRunner is what it falls back to for batch pipelines,
    and it honours ``direct_num_workers`` / ``direct_running_mode``. Multi-process workers
    start through :mod:`pipelines.local_workers`.
    """
    from apache_beam.options.pipeline_options import StandardOptions, WorkerOptions

    name = str(options.view_as(StandardOptions).runner or "DirectRunner")
    if name in ("DirectRunner", "FnApiRunner"):
        from apache_beam.portability.api import beam_provision_api_pb2
        from apache_beam.runners.job.utils import dict_to_struct
        from apache_beam.runners.portability.fn_api_runner.fn_runner import (
            ExtendedProvisionInfo,
        )

        from pipelines.local_workers import LocalRunner

        # Worker processes read their log level from the provision info, which the bare
        # FnApiRunner leaves empty: they would log every gRPC channel they open at INFO.
        # Ours: Beam at WARNING, ugains' own progress lines at INFO; the options win.
        worker = options.view_as(WorkerOptions)
        worker_options = {
            "default_sdk_harness_log_level": worker.default_sdk_harness_log_level or "WARNING",
            "sdk_harness_log_level_overrides": {
                **{package: "INFO" for package in ("pipelines", "models", "transforms")},
                **(worker.sdk_harness_log_level_overrides or {}),
            },
        }
        provision = beam_provision_api_pb2.ProvisionInfo(
            retrieval_token="unused-retrieval-token",
            pipeline_options=dict_to_struct(
                {f"beam:option:{key}:v1": value for key, value in worker_options.items()}
            ),
        )
        return LocalRunner(provision_info=ExtendedProvisionInfo(provision))
    return name


def quiet_beam_logs() -> None:
    """Beam's own INFO lines (shard renames, batching statistics) drown the progress lines:
    log Beam at WARNING unless the user asked for DEBUG."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("apache_beam").setLevel(logging.WARNING)
