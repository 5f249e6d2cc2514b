"""``ugains review app`` serves the FiftyOne App on 127.0.0.1 only, and stops cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from pipelines.review import build_dataset
from tests.review.synthetic_run import SyntheticRun

REPO = Path(__file__).parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read().decode()


def _wait_for_page(url: str, process: subprocess.Popen[Any], timeout_s: float) -> tuple:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return _get(url)
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"review app exited with {process.returncode}: {process.stdout.read()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the App did not answer on {url} within {timeout_s} s")
            time.sleep(0.5)


def _listening(processes: list[psutil.Process]) -> set[tuple[str, int]]:
    found = set()
    for process in processes:
        for conn in process.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                found.add((conn.laddr.ip, conn.laddr.port))
    return found


def test_app_answers_on_loopback_only_and_shuts_down_on_sigterm(
    run_a: SyntheticRun, dataset_name: str
) -> None:
    build_dataset(run_a.path, dataset_name)
    port = _free_port()
    command = [sys.executable, "-m", "pipelines.cli", "review", "app", "--dataset", dataset_name]
    process = subprocess.Popen(
        [*command, "--port", str(port)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        status, content_type, page = _wait_for_page(
            f"http://127.0.0.1:{port}/datasets/{dataset_name}", process, timeout_s=90
        )
        assert status == 200
        assert content_type.startswith("text/html")
        assert "<html" in page.lower()
        version = _get(f"http://127.0.0.1:{port}/fiftyone")
        assert version[0] == 200

        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
        listening = _listening(tree)
        assert ("127.0.0.1", port) in listening
        assert {ip for ip, _ in listening} == {"127.0.0.1"}  # nothing on 0.0.0.0 or ::
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, output
    assert f"http://127.0.0.1:{port}/datasets/{dataset_name}" in output
    _, alive = psutil.wait_procs(tree[1:], timeout=30)
    assert alive == []
    with pytest.raises(urllib.error.URLError, match="Connection refused"):
        _get(f"http://127.0.0.1:{port}/fiftyone")
