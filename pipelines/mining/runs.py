"""Run directories: claimed, written in a staging place, committed in one step, listed
(``ugains runs``).

A run is **committed** when its directory ``<root>/runs/<run_id>/`` holds ``run.json``; only
committed runs are results (the ledger, ``ugains review`` and ``ugains runs`` read nothing
else). How a run gets there, so that a kill at any moment leaves no half-visible run:

- Local roots: the run writes everything (tables, maps, plan, ``run.json`` last) into
  ``<root>/runs/.staging/<fingerprint>/<run_id>/`` and commits by renaming that directory to
  ``<root>/runs/<run_id>`` (one atomic ``rename``). Paths stored in the tables (fused maps)
  already name the final directory. A killed run leaves only a staging directory, which the
  next run of the same config removes (it holds the config's lock, so that run is dead), and
  which ``ugains runs --clean`` removes for any config whose lock is free.
- Object stores (``gs://``, ``s3://``: no rename of a folder in one step): the run writes
  into its final directory and ``run.json`` is the commit marker, written last; a directory
  without it is an uncommitted leftover, listed by ``ugains runs`` and never read.

The ledger can lag the committed runs by one (a kill after the commit, before the ledger is
saved): :func:`reconcile_ledger` records every committed run of the config that the ledger
does not know, before a run plans its frames.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import posixpath
import shutil
import signal
import sys
from collections.abc import Container
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipelines.config import is_local_uri

if TYPE_CHECKING:
    from pipelines.mining.ledger import Ledger

__all__ = [
    "RUN_RECORD",
    "STAGING",
    "CommittedRun",
    "clean_leftovers",
    "clean_staging",
    "commit_run",
    "committed_runs",
    "configure_parser",
    "crash_point",
    "reconcile_ledger",
    "run",
    "staging_dir",
    "uncommitted_runs",
]

_LOG = logging.getLogger(__name__)

RUN_RECORD = "run.json"  # written last: its presence is what makes a run committed
STAGING = ".staging"  # under <root>/runs/; hidden from `runs/*` globs


def _filesystems() -> Any:
    """Beam's FileSystems, imported on first use: ``ugains runs --help`` must start at once."""
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def staging_dir(root: str, fingerprint: str, run_id: str) -> str:
    """Where a local run of ``fingerprint`` writes before it commits."""
    return os.path.join(root, "runs", STAGING, fingerprint, run_id)


def crash_point(name: str) -> None:
    """Kill this process outright (SIGKILL) when ``UGAINS_CRASH_AT`` names ``name``.

    Fault injection for the crash-consistency tests, which kill real runs at chosen moments;
    without the variable it does nothing.
    """
    if os.environ.get("UGAINS_CRASH_AT") == name:
        _LOG.warning("UGAINS_CRASH_AT=%s: killing this process", name)
        os.kill(os.getpid(), signal.SIGKILL)


def commit_run(write_dir: str, run_dir: str, record: dict[str, Any]) -> None:
    """Write ``run.json`` into ``write_dir`` and make the run visible at ``run_dir``."""
    with _filesystems().create(_filesystems().join(write_dir, RUN_RECORD)) as handle:
        handle.write(json.dumps(record, indent=2).encode())
    if write_dir != run_dir:
        os.rename(write_dir, run_dir)  # atomic; fails if run_dir exists and is not empty
        _remove_empty_parents(write_dir, stop=os.path.dirname(run_dir))
    crash_point("committed")


def _remove_empty_parents(path: str, stop: str) -> None:
    """Remove the now empty staging folders above ``path`` (another run may still use them)."""
    parent = os.path.dirname(path)
    while parent != stop and parent.startswith(stop):
        try:
            os.rmdir(parent)
        except OSError:  # not empty (another run is staging) or already gone
            return
        parent = os.path.dirname(parent)


@dataclass(frozen=True)
class CommittedRun:
    run_id: str
    run_dir: str
    record: dict[str, Any]

    @property
    def fingerprint(self) -> str | None:
        return self.record.get("config_fingerprint")


def _run_dirs(root: str) -> list[str]:
    runs = _filesystems().join(root, "runs")
    if is_local_uri(root):
        if not os.path.isdir(runs):
            return []
        return sorted(
            os.path.join(runs, name)
            for name in os.listdir(runs)
            if not name.startswith(".") and os.path.isdir(os.path.join(runs, name))
        )
    matches = _filesystems().match([_filesystems().join(runs, "*", "*")])[0].metadata_list
    prefix = runs.rstrip("/") + "/"
    names = {m.path[len(prefix) :].split("/", 1)[0] for m in matches if m.path.startswith(prefix)}
    return sorted(_filesystems().join(runs, name) for name in names if not name.startswith("."))


def committed_runs(root: str, skip: Container[str] = ()) -> list[CommittedRun]:
    """Every committed run under ``root``, by run id, but those whose id is in ``skip``
    (their ``run.json`` is not read: a scheduled run's start stays cheap as runs pile up)."""
    runs = []
    for run_dir in _run_dirs(root):
        if posixpath.basename(run_dir.rstrip("/")) in skip:
            continue
        record_path = _filesystems().join(run_dir, RUN_RECORD)
        if not _filesystems().exists(record_path):
            continue
        with _filesystems().open(record_path) as handle:
            record = json.loads(handle.read())
        runs.append(CommittedRun(record.get("run_id", os.path.basename(run_dir)), run_dir, record))
    return runs


def uncommitted_runs(root: str) -> list[str]:
    """Directories of runs that never committed: staging directories (local) and run
    directories without ``run.json``."""
    leftovers = [
        d for d in _run_dirs(root) if not _filesystems().exists(_filesystems().join(d, RUN_RECORD))
    ]
    staging = os.path.join(root, "runs", STAGING)
    if is_local_uri(root) and os.path.isdir(staging):
        for fingerprint in sorted(os.listdir(staging)):
            folder = os.path.join(staging, fingerprint)
            leftovers += [os.path.join(folder, run_id) for run_id in sorted(os.listdir(folder))]
    return leftovers


def clean_staging(root: str, fingerprint: str) -> list[str]:
    """Remove the staging directories of ``fingerprint`` (call with its lock held)."""
    folder = os.path.join(root, "runs", STAGING, fingerprint)
    if not is_local_uri(root) or not os.path.isdir(folder):
        return []
    removed = []
    for run_id in sorted(os.listdir(folder)):
        path = os.path.join(folder, run_id)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
        _LOG.warning("removed %s: a run of this config that was killed before it committed", path)
    with contextlib.suppress(OSError):  # a run of this config may be staging again meanwhile
        os.rmdir(folder)
    return removed


def reconcile_ledger(ledger: Ledger, root: str, fingerprint: str) -> list[str]:
    """Record in ``ledger`` the committed runs of ``fingerprint`` it does not know (a run
    killed between its commit and its ledger update); returns their run ids."""
    added = []
    for run in committed_runs(root, skip=ledger.runs):
        if run.fingerprint == fingerprint and run.run_id not in ledger.runs:
            rows = ledger.record_run(run.run_dir, run.run_id, only_new=True)
            added.append(run.run_id)
            _LOG.warning(
                "ledger: run %s was committed but not in the ledger (killed before its ledger "
                "update); recorded it (%d new frames)",
                run.run_id,
                rows,
            )
    return added


def clean_leftovers(root: str) -> tuple[list[str], list[str]]:
    """Remove every uncommitted leftover under ``root`` whose config is not running now.

    Returns ``(removed, kept)``; a staging directory is kept while its config's lock is held
    (that run is alive). Run directories without ``run.json`` (object stores, or runs of
    ugains versions before staging) are removed.
    """
    from pipelines.mining.ledger import RunInProgressError, ledger_lock

    removed: list[str] = []
    kept: list[str] = []
    staging = os.path.join(root, "runs", STAGING)
    if is_local_uri(root) and os.path.isdir(staging):
        for fingerprint in sorted(os.listdir(staging)):
            try:
                with ledger_lock(root, fingerprint):
                    removed += clean_staging(root, fingerprint)
            except RunInProgressError:
                folder = os.path.join(staging, fingerprint)
                kept += [os.path.join(folder, run_id) for run_id in sorted(os.listdir(folder))]
    for run_dir in uncommitted_runs(root):
        if run_dir.startswith(staging):
            continue
        _filesystems().delete([run_dir])
        removed.append(run_dir)
    return removed, kept


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "List the committed mining runs under an output root and the leftovers of runs that "
        "were killed before they committed (never read as results); --clean removes those."
    )
    parser.add_argument("--root", required=True, help="the mining config's output.root")
    parser.add_argument(
        "--clean", action="store_true", help="remove the leftovers of runs that are not running"
    )


def run(args: argparse.Namespace) -> int:
    root = args.root
    if is_local_uri(root) and not os.path.isdir(root):
        print(f"ugains runs: {root} is not a directory", file=sys.stderr)
        return 2
    runs = committed_runs(root)
    print(f"{len(runs)} committed run(s) under {root}")
    for committed in runs:
        counts = committed.record.get("counts", {})
        print(
            f"  {committed.run_id}  config {committed.record.get('config_name')!s:<12} "
            f"frames {counts.get('frames', '?'):>6}  errors {counts.get('errors', '?'):>4}  "
            f"finished {committed.record.get('finished_at', '?')}"
        )
    leftovers = uncommitted_runs(root)
    if args.clean:
        removed, kept = clean_leftovers(root)
        print(f"removed {len(removed)} uncommitted leftover(s)")
        for path in kept:
            print(f"  kept {path}: its config is running now")
    else:
        print(f"{len(leftovers)} uncommitted leftover(s) (remove with --clean)")
        for path in leftovers:
            print(f"  {path}")
    return 0
