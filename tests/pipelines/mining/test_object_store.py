"""Mining with everything on an object store: sources, checkpoints, runs and the ledger.

``objstore://`` (tests/fixtures/object_store.py) keeps GCS's and S3's semantics (flat keys,
listing by prefix, rename = copy + delete) in a local folder, so the code paths for ``gs://``
and ``s3://`` run here without credentials or network.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from models.untrained import MASK2FORMER_DIR, SAM_FILE, write_checkpoints
from pipelines.config import parse_config
from pipelines.mining.ledger import Ledger
from pipelines.mining.run import mine, with_mining_defaults
from pipelines.mining.runs import committed_runs
from pipelines.mining.tables import read_table
from tests.fixtures.object_store import ROOT_ENV, upload

pytestmark = pytest.mark.slow

IN_MEMORY = ["--runner=FnApiRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]
BUCKET = "objstore://bucket"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The object store's folder, holding a drive log of 4 frames and the checkpoints."""
    folder = tmp_path / "store"
    folder.mkdir()
    monkeypatch.setenv(ROOT_ENV, str(folder))
    local = tmp_path / "local"
    (local / "cam").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(4):
        frame = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)
        cv2.imwrite(str(local / "cam" / f"frame_{index:03d}.png"), frame)
    write_checkpoints(local)
    upload(local / "cam", f"{BUCKET}/logs/cam")
    upload(local / MASK2FORMER_DIR, f"{BUCKET}/weights/{MASK2FORMER_DIR}")
    upload(local / SAM_FILE, f"{BUCKET}/weights/{SAM_FILE}")
    return folder


def _config(root: str):
    return with_mining_defaults(
        parse_config(
            {
                "name": "remote",
                "sources": [
                    {"kind": "images", "path": f"{BUCKET}/logs/cam/*.png", "log_id": "cam"}
                ],
                "models": {
                    "device": "cpu",
                    "mask2former": {
                        "format": "huggingface",
                        "architecture": "tiny_1dl",
                        "checkpoint": f"{BUCKET}/weights/{MASK2FORMER_DIR}",
                    },
                    "sam": {"model_type": "vit_tiny", "checkpoint": f"{BUCKET}/weights/{SAM_FILE}"},
                    "method": {
                        "reference_size": [64, 128],
                        "num_points": 2,
                        "fallback_threshold": -1000.0,
                    },
                },
                "inference": {"min_batch_size": 1, "max_batch_size": 2, "min_image_side": 16},
                "output": {"root": root, "top_n": 3},
            }
        )
    )


def test_a_run_reads_and_writes_only_object_store_urls_and_commits_with_its_marker(
    store: Path,
) -> None:
    root = f"{BUCKET}/ugains"
    config = _config(root)

    result = mine(config, beam_args=IN_MEMORY)

    assert result.planned == 4
    assert result.run_dir.startswith(f"{root}/runs/")
    runs = committed_runs(root)
    assert [run.run_dir for run in runs] == [result.run_dir]
    assert runs[0].record["counts"]["frames"] == 4
    keys = sorted(read_table(result.run_dir, "frames").column("frame_key").to_pylist())
    assert keys == [f"cam/{i:06d}" for i in range(4)]
    assert read_table(result.run_dir, "errors").num_rows == 0
    # nothing of the run or its staging is left outside the run's prefix (no staging folders:
    # on an object store the commit is run.json, written last)
    objects = {p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file()}
    written = {o for o in objects if o.startswith("bucket/ugains/")}
    run_prefix = result.run_dir.removeprefix("objstore://") + "/"
    ledger = f"bucket/ugains/ledger/{config.fingerprint()}.parquet"
    assert written - {ledger} == {o for o in written if o.startswith(run_prefix)}
    assert f"{run_prefix}run.json" in written

    # the ledger lives on the store too: a rerun mines nothing
    assert sorted(k for k, _, _ in Ledger.load(root, config.fingerprint()).entries.values()) == keys
    again = mine(config, beam_args=IN_MEMORY)
    assert (again.planned, again.run_dir) == (0, None)


def test_a_run_without_its_marker_is_not_a_committed_run(store: Path) -> None:
    root = f"{BUCKET}/ugains"
    upload_dir = store / "bucket" / "ugains" / "runs" / "20260101T000000Z-abc" / "frames"
    upload_dir.mkdir(parents=True)
    (upload_dir / "part-00000-of-00001.parquet").write_bytes(b"half a table")
    assert committed_runs(root) == []
