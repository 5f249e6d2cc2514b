"""The runner of local multi-process runs, its workers started without Beam's start-up noise.

``direct_running_mode: multi_processing`` starts one worker process per worker. Beam's own
worker entry point prints lines per process that say nothing to a user of this tool;
:class:`LocalRunner` starts the workers with ``python -m pipelines.beam_worker`` instead
(see there for what it drops).
"""

from __future__ import annotations

import shlex
import sys
from typing import Any

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.transforms.environments import SubprocessSDKEnvironment

WORKER_COMMAND = f"{shlex.quote(sys.executable)} -m pipelines.beam_worker"


class LocalRunner(FnApiRunner):
    """The FnApiRunner, its multi-process workers started with :data:`WORKER_COMMAND`."""

    def run_pipeline(self, pipeline: Any, options: PipelineOptions) -> Any:
        direct = options.view_as(DirectOptions)
        mode = direct.direct_running_mode
        if mode != "multi_processing":
            return super().run_pipeline(pipeline, options)
        # For "multi_processing" Beam puts in its own worker command; with no mode set it
        # keeps the environment given here, whose workers are processes all the same.
        self._default_environment = SubprocessSDKEnvironment.from_command_string(WORKER_COMMAND)
        direct.direct_running_mode = None
        try:
            return super().run_pipeline(pipeline, options)
        finally:
            direct.direct_running_mode = mode
