"""``ugains review app`` serves the FiftyOne App on 127.0.0.1 only, and stops cleanly."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from pipelines.review import build_dataset
from tests.pipelines.review.synthetic_run import SyntheticRun

REPO = Path(__file__).parents[3]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read().decode()


def _graphql(port: int, query: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _post(port: int, route: str, payload: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{route}",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _wait_for_line(lines: queue.Queue[str | None], text: str, timeout_s: float) -> list[str]:
    """Lines read until one contains ``text``; fails when the output ends or time runs out."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while not any(text in line for line in seen):
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            pytest.fail(f"no line with {text!r} within {timeout_s} s; output: {seen}")
        if line is None:
            pytest.fail(f"review app exited before printing {text!r}; output: {seen}")
        seen.append(line)
    return seen


def _listening(processes: list[psutil.Process]) -> set[tuple[str, int]]:
    found = set()
    for process in processes:
        for conn in process.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                found.add((conn.laddr.ip, conn.laddr.port))
    return found


def test_app_answers_on_loopback_only_offers_review_buttons_and_shuts_down_on_sigterm(
    run_a: SyntheticRun, dataset_name: str
) -> None:
    import fiftyone as fo

    build_dataset(run_a.path, dataset_name)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/datasets/{dataset_name}?view=ranked"  # opens ranked
    command = [sys.executable, "-m", "pipelines.cli", "review", "app", "--dataset", dataset_name]
    process = subprocess.Popen(
        [*command, "--port", str(port)],  # no --host: the default must be loopback
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        printed = _wait_for_line(lines, url, timeout_s=90)  # printed once the server listens
        printed += _wait_for_line(lines, "review: select detections", timeout_s=10)

        status, content_type, page = _get(url)
        assert status == 200
        assert content_type.startswith("text/html")
        assert "<html" in page.lower()
        # the App's server reads the dataset from the same database
        query = f'{{ dataset(name: "{dataset_name}") {{ name savedViews {{ name }} }} }}'
        answer = _graphql(port, query)["data"]["dataset"]
        assert answer["name"] == dataset_name
        assert [v["name"] for v in answer["savedViews"]] == [
            "top-50",
            "ranked",
            "log-drive_a",
            "log-drive_b",
            "anomaly-patches",
            "distinct-objects",
            "tracks",
        ]

        # One button per review tag above the grid; a click runs the operator on the selection.
        listed = _post(port, "/operators", {"dataset_name": dataset_name})
        review_ops = sorted(o["uri"] for o in listed["operators"] if "ugains" in o["uri"])
        assert review_ops == [
            "@ugains/review/review_confirmed",
            "@ugains/review/review_rejected",
            "@ugains/review/review_relabel",
        ], listed["errors"]
        dataset = fo.load_dataset(dataset_name)
        sample = dataset.match({"frame_key": "drive_a/0"}).first()
        detection = sample.anomalies.detections[0]
        click = {
            "operator_uri": "@ugains/review/review_confirmed",
            "dataset_name": dataset_name,
            "view": [],
            "params": {},
            "selected": [],
            "selected_labels": [
                {"label_id": detection.id, "sample_id": sample.id, "field": "anomalies"}
            ],
        }
        answer = _post(port, "/operators/execute", click)
        assert answer["result"] == {"tagged": 1}, answer
        dataset.reload()
        assert dataset.count_label_tags("anomalies") == {"confirmed": 1}

        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
        listening = _listening(tree)
        assert ("127.0.0.1", port) in listening
        assert {ip for ip, _ in listening} == {"127.0.0.1"}  # nothing on 0.0.0.0 or ::
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        reader.join(timeout=10)
    assert process.returncode == 0
    _, alive = psutil.wait_procs(tree[1:], timeout=30)
    assert alive == []
    with pytest.raises(urllib.error.URLError, match="Connection refused"):
        _get(f"http://127.0.0.1:{port}/fiftyone")
