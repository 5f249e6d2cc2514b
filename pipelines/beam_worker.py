"""A local worker process: Beam's SDK worker, without the lines that say nothing to a user.

Started by :class:`pipelines.local_workers.LocalRunner`, one per worker. Dropped from this
process's stderr: an absent optional BigQuery client (logged when Beam is imported), "Logging
handler created", "No semi_persistent_directory found" (no staging directory in a local run)
and numpy's "Polyfit may be poorly conditioned" and "divide by zero" (its outlier test, when
all but one of its timings share a batch size) from the batch-size estimator of
``BatchElements``. Everything else, warnings included, is kept. Nothing of Beam may be
imported before :func:`main` installs the filter.
"""

from __future__ import annotations

import logging
import sys
import warnings

# Message prefixes of the log lines dropped (apache-beam 2.77).
STARTUP_NOISE = (
    "apitools not found",
    "Logging handler created",
    "No semi_persistent_directory found",
)


class StartupNoiseFilter(logging.Filter):
    """Drops the records whose message starts with one of :data:`STARTUP_NOISE`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(STARTUP_NOISE)


def main(argv: list[str]) -> None:
    # The handler Beam's worker would get implicitly (same format), with the filter on it.
    logging.basicConfig()
    for handler in logging.getLogger().handlers:
        handler.addFilter(StartupNoiseFilter())
    # numpy puts its own "always" filter for RankWarning first when it is imported: import it
    # before adding ours, which then comes first.
    import numpy  # noqa: F401

    warnings.filterwarnings("ignore", message="Polyfit may be poorly conditioned")
    warnings.filterwarnings(
        "ignore",
        message="divide by zero encountered",
        category=RuntimeWarning,
        module="apache_beam.transforms.util",
    )
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main(argv)


if __name__ == "__main__":
    main(sys.argv)
