"""Fixtures of the review tests: one real ``mongod`` per session, synthetic mining runs.

The ``mongod`` is the embedded one (``pipelines.review.database.EmbeddedMongod``) started on a
fresh temporary data directory; FiftyOne reaches it through ``FIFTYONE_DATABASE_URI``, so the
CLI and the App server (child processes) use it too. Both are removed after the session.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipelines import cli
from pipelines.review.database import EmbeddedMongod, _point_fiftyone_at
from pipelines.world.demo import ensure_demo
from tests.pipelines.review.synthetic_run import SyntheticRun, default_frames, write_run

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
REPO = Path(__file__).parents[3]


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URI of a mongod serving a temporary data directory for this test session."""
    database_dir = tmp_path_factory.mktemp("mongo")
    server = EmbeddedMongod(database_dir)
    uri = server.start()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FIFTYONE_DATABASE_NAME", "ugains-tests")
        patch.setenv("FIFTYONE_DATABASE_URI", uri)
        patch.setenv("FIFTYONE_DO_NOT_TRACK", "true")
        try:
            yield uri
        finally:
            _point_fiftyone_at(None)
            server.stop()
            shutil.rmtree(database_dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _fiftyone_uses_test_database(mongo_uri: str) -> None:
    # A test may point FiftyOne elsewhere (the embedded-mode test); point it back.
    import fiftyone as fo

    fo.config.database_name = "ugains-tests"
    _point_fiftyone_at(mongo_uri)


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def run_a(runs_root: Path) -> SyntheticRun:
    """The first run: two logs (PNG frames, a video), five frames, four with candidates."""
    return write_run(runs_root, "run-a", default_frames())


@pytest.fixture(scope="session")
def run_b(runs_root: Path) -> SyntheticRun:
    """A newer run: one frame's second object moved and rescored, one frame added."""
    return write_run(runs_root, "run-b", default_frames(variant=1))


@pytest.fixture
def dataset_name() -> Iterator[str]:
    """A fresh dataset name; the dataset is deleted after the test."""
    import fiftyone as fo

    name = f"review-test-{uuid.uuid4().hex[:8]}"
    yield name
    if fo.dataset_exists(name):
        fo.delete_dataset(name)


@pytest.fixture(scope="session")
def mined_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of the real pipeline (``ugains mine``, demo config) on generated frames.

    The demo's world drive log is generated in a temporary directory and mined with the
    shipped world models: five of its frames as images, two as video frames (frames that hold
    planted objects, so both logs have candidates); semantic maps are stored too.
    """
    root = tmp_path_factory.mktemp("mined")
    data = root / "demo_data"
    text = (REPO / "mining_configs" / "demo.yaml").read_text()
    config = yaml.safe_load(text.replace(".ugains_demo", str(data)))
    ensure_demo(data)
    log = data / "logs"
    config["sources"] = [
        {
            "kind": "images",
            "path": str(log / "drive_00" / "images" / "frame_00003[2-6].png"),
            "log_id": "drive_00",
        },
        {
            "kind": "video",
            "path": str(log / "drive_00.avi"),
            "log_id": "dashcam",
            "start": 29,
            "max_frames": 2,
        },
    ]
    config["output"].update(root=str(root / "out"), store_semantic=True)
    # One in-process worker: the suite shares two CPU cores.
    config["runner"].update(direct_num_workers=1, direct_running_mode="in_memory")
    path = root / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["mine", "--config", str(path), "--run-id", "mined"]) == 0
    return root / "out" / "runs" / "mined"
