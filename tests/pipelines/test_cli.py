"""The command line starts at once: help and argument errors come before Beam and torch load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_PROBE = """
import sys
from pipelines.cli import main
try:
    main({argv!r})
except SystemExit as exit:
    print("exit", exit.code)
heavy = sorted(m for m in ("apache_beam", "torch", "transformers") if m in sys.modules)
print("heavy", ",".join(heavy) or "none")
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["mine", "--help"],
        ["mine"],  # no --config: an argument error
        ["evaluate", "--help"],
        ["evaluate", "--config", "c.yaml"],  # no --data
        ["runs", "--help"],
        ["review", "--help"],
        ["report", "--help"],
        ["world", "confirm", "--help"],
        ["world", "generate", "--help"],
        ["weights", "--help"],
        ["train", "--help"],
        ["train", "sam", "--help"],
        ["train", "mask2former", "--help"],
        ["train"],  # no trainer named: an argument error
    ],
    ids=lambda argv: " ".join(argv),
)
def test_help_and_argument_errors_print_without_importing_beam_or_torch(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(argv=argv)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == "heavy none", done.stdout + done.stderr
    assert lines[-2] == ("exit 0" if "--help" in argv else "exit 2")


def test_worker_lines_relayed_by_the_local_job_service_are_not_printed_twice() -> None:
    import logging

    from pipelines.cli import _DropRelayedWorkerLogs

    def record(name: str, message: str) -> logging.LogRecord:
        return logging.LogRecord(name, logging.WARNING, __file__, 1, message, None, None)

    keep = _DropRelayedWorkerLogs().filter
    relay = "apache_beam.runners.portability.local_job_service"
    assert not keep(record(relay, 'Worker: severity: WARN message: "No semi_persistent..."'))
    assert keep(record(relay, "Job failed"))  # the job service's own lines stay
    assert keep(record("pipelines.mining.rows", "Worker: a line of ours"))
