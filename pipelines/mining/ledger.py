"""The ledger of frames already mined, one Parquet file per config fingerprint.

``<output.root>/ledger/<fingerprint>.parquet`` holds one row per frame URI a run with that
fingerprint finished: ``status`` "ok" (in ``frames``) or "error" (in ``errors``). Frames are
identified by URI, not key: a key indexes a log's sorted images, and a file added to a log
folder can shift the indices, while a URI always names the same frame.

The ledger is updated only after a run's outputs are final (from the tables the run wrote),
and written to a temporary file first and then renamed, so an interrupted run leaves the
previous ledger intact and its frames are mined again next time.

Runs of one fingerprint are serialised by :func:`ledger_lock`: a run reads the ledger to
plan its frames and writes it when it is done, so two overlapping runs (a cron interval
shorter than a run) would otherwise mine the same new frames twice.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipelines.locks import file_lock
from pipelines.mining.tables import read_table

__all__ = ["LEDGER_SCHEMA", "Ledger", "RunInProgressError", "ledger_lock", "ledger_path"]

_LOG = logging.getLogger(__name__)

_RUNS_KEY = b"ugains.recorded_runs"  # schema metadata: JSON list of the recorded run ids
LEDGER_SCHEMA = pa.schema(
    [
        pa.field("frame_uri", pa.string(), nullable=False),
        pa.field("frame_key", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # "ok" | "error"
        pa.field("run_id", pa.string(), nullable=False),
    ],
    metadata={"ugains.table": "ledger", "ugains.schema_version": "1"},
)


def ledger_path(root: str, fingerprint: str) -> str:
    return FileSystems.join(root, "ledger", f"{fingerprint}.parquet")


class RunInProgressError(RuntimeError):
    """Another run of the same config fingerprint holds the ledger lock."""


@contextmanager
def ledger_lock(root: str, fingerprint: str) -> Iterator[None]:
    """Hold the run lock of ``fingerprint`` under ``root`` for the duration of the block.

    Local roots: an exclusive ``flock`` on ``<root>/ledger/<fingerprint>.lock``, taken
    without waiting (a second run raises :class:`RunInProgressError` naming the holder).
    The kernel drops the lock when the holding process ends, however it ends, so a crashed
    run never leaves a stale lock behind. Object stores (``gs://``, ``s3://``) have no such
    primitive in Beam's FileSystems: there the scheduler must not overlap runs (e.g.
    Airflow's ``max_active_runs=1``), and this logs a reminder.
    """
    if FileSystems.get_scheme(root) not in (None, "file"):
        _LOG.warning(
            "%s is not a local path: runs of one config are not locked against each other; "
            "keep the scheduler from overlapping them (e.g. Airflow max_active_runs=1)",
            root,
        )
        yield
        return
    path = os.path.join(root, "ledger", f"{fingerprint}.lock")
    try:
        with file_lock(path, wait=False) as handle:
            holder = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "since": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(holder))
            handle.flush()
            try:
                yield
            finally:
                handle.seek(0)
                handle.truncate()
    except BlockingIOError:
        with open(path) as noted:
            holder_text = noted.read().strip() or "unknown process"
        raise RunInProgressError(
            f"another run of this config (fingerprint {fingerprint}) is still in progress "
            f"({holder_text}; lock {path}); it would mine the same frames, so this run did "
            "not start"
        ) from None


@dataclass
class Ledger:
    """Frame URI -> (frame key, status, run id) of one fingerprint, and the runs recorded.

    ``runs`` is kept apart from the entries: after a rerun with ``--ignore-ledger`` the
    entries name only the newest run of each frame, yet the older runs are recorded too.
    """

    path: str
    entries: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    runs: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, root: str, fingerprint: str) -> Ledger:
        """The ledger of ``fingerprint`` under ``root`` (empty if there is none yet)."""
        path = ledger_path(root, fingerprint)
        ledger = cls(path)
        if FileSystems.exists(path):
            with FileSystems.open(path) as handle:
                parquet = pq.ParquetFile(handle)
                runs = (parquet.schema_arrow.metadata or {}).get(_RUNS_KEY)
                table = parquet.read().select(LEDGER_SCHEMA.names).cast(LEDGER_SCHEMA)
            for row in table.to_pylist():
                ledger.entries[row["frame_uri"]] = (row["frame_key"], row["status"], row["run_id"])
            # Ledgers written before the run list was kept: the runs their entries name.
            ledger.runs = set(json.loads(runs)) if runs else {e[2] for e in ledger.entries.values()}
        return ledger

    def seen(self, *, retry_errors: bool = False) -> frozenset[str]:
        """URIs a new run should skip: all recorded frames, or only the "ok" ones."""
        return frozenset(
            uri
            for uri, (_, status, _) in self.entries.items()
            if status == "ok" or not retry_errors
        )

    def record_run(self, run_dir: str, run_id: str, *, only_new: bool = False) -> int:
        """Add the frames and errors a finished run wrote; returns how many rows it added.

        ``only_new``: leave frames the ledger already has as they are (a late record of an
        older run must not undo a newer run's retry of its errors).
        """
        added = 0
        self.runs.add(run_id)
        for table, status in (("frames", "ok"), ("errors", "error")):
            rows = read_table(run_dir, table).select(["frame_uri", "frame_key"]).to_pylist()
            for row in rows:
                if only_new and row["frame_uri"] in self.entries:
                    continue
                self.entries[row["frame_uri"]] = (row["frame_key"], status, run_id)
                added += 1
        return added

    def save(self) -> None:
        """Write the ledger atomically (temporary file, then rename)."""
        uris = sorted(self.entries)
        table = pa.table(
            {
                "frame_uri": uris,
                "frame_key": [self.entries[u][0] for u in uris],
                "status": [self.entries[u][1] for u in uris],
                "run_id": [self.entries[u][2] for u in uris],
            },
            schema=LEDGER_SCHEMA,
        ).replace_schema_metadata({_RUNS_KEY: json.dumps(sorted(self.runs))})
        tmp = f"{self.path}.{uuid.uuid4().hex}.tmp"
        with FileSystems.create(tmp) as handle:
            pq.write_table(table, handle, compression="zstd")
        if FileSystems.get_scheme(self.path) in (None, "file"):
            os.replace(tmp, self.path)  # atomic: there is always a complete ledger
            return
        # Object stores rename by copy-then-delete; some refuse to overwrite.
        if FileSystems.exists(self.path):
            FileSystems.delete([self.path])
        FileSystems.rename([tmp], [self.path])
