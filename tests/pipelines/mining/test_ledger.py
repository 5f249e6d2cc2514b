"""The ledger: what a finished run recorded, saved atomically, read back per fingerprint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.mining.ledger import Ledger, RunInProgressError, ledger_lock, ledger_path
from pipelines.mining.schema import ERRORS_SCHEMA, FRAMES_SCHEMA


def write_run(run_dir: Path, ok: list[str], failed: list[str]) -> None:
    """A finished run's frames/ and errors/ tables holding just the given URIs."""
    for table, schema, uris in (("frames", FRAMES_SCHEMA, ok), ("errors", ERRORS_SCHEMA, failed)):
        folder = run_dir / table
        folder.mkdir(parents=True)
        rows = []
        for index, uri in enumerate(uris):
            row = {name: None for name in schema.names}
            row.update(
                run_id="r",
                frame_key=f"log/{index:06d}",
                frame_uri=uri,
                log_id="log",
                frame_index=index,
                status="ok",
                frame_height=1,
                frame_width=1,
                num_instances=0,
                max_anomaly_score=0.0,
                max_fused_score=0.0,
                decode_ms=0.0,
                inference_ms=0.0,
                compact_ms=0.0,
                rows_ms=0.0,
                config_fingerprint="fp",
                ugains_version="0",
                stage="decode",
                error_type="E",
                reason="bad",
            )
            rows.append({name: row[name] for name in schema.names})
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "part-0.parquet")


def test_a_missing_ledger_is_empty(tmp_path: Path) -> None:
    ledger = Ledger.load(str(tmp_path), "fp")
    assert ledger.entries == {}
    assert ledger.seen() == frozenset()
    assert ledger.path == str(tmp_path / "ledger" / "fp.parquet")


def test_recorded_run_round_trips_and_errors_are_skipped_unless_retried(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "r1"
    write_run(run_dir, ok=["a.png", "b.png"], failed=["bad.png"])

    ledger = Ledger.load(str(tmp_path), "fp")
    assert ledger.record_run(str(run_dir), "r1") == 3
    ledger.save()

    again = Ledger.load(str(tmp_path), "fp")
    assert again.entries == {
        "a.png": ("log/000000", "ok", "r1"),
        "b.png": ("log/000001", "ok", "r1"),
        "bad.png": ("log/000000", "error", "r1"),
    }
    assert again.seen() == {"a.png", "b.png", "bad.png"}
    assert again.seen(retry_errors=True) == {"a.png", "b.png"}
    assert Ledger.load(str(tmp_path), "other").entries == {}
    # Saved atomically: no temporary file is left beside the ledger.
    assert sorted(p.name for p in (tmp_path / "ledger").iterdir()) == ["fp.parquet"]


def test_a_later_run_updates_entries_it_mined_again(tmp_path: Path) -> None:
    write_run(tmp_path / "runs" / "r1", ok=[], failed=["x.png"])
    write_run(tmp_path / "runs" / "r2", ok=["x.png"], failed=[])
    ledger = Ledger.load(str(tmp_path), "fp")
    ledger.record_run(str(tmp_path / "runs" / "r1"), "r1")
    ledger.record_run(str(tmp_path / "runs" / "r2"), "r2")
    ledger.save()
    again = Ledger.load(str(tmp_path), "fp")
    assert again.entries == {"x.png": ("log/000000", "ok", "r2")}
    # r1 names no frame any more, but it is a recorded run: reconciliation leaves it alone
    assert again.runs == {"r1", "r2"}
    assert ledger_path(str(tmp_path), "fp") == str(tmp_path / "ledger" / "fp.parquet")


def test_a_ledger_written_before_the_run_list_knows_the_runs_its_entries_name(
    tmp_path: Path,
) -> None:
    write_run(tmp_path / "runs" / "r1", ok=["a.png"], failed=[])
    ledger = Ledger.load(str(tmp_path), "fp")
    ledger.record_run(str(tmp_path / "runs" / "r1"), "r1")
    ledger.save()
    path = ledger_path(str(tmp_path), "fp")
    pq.write_table(pq.read_table(path).replace_schema_metadata(None), path)
    assert Ledger.load(str(tmp_path), "fp").runs == {"r1"}


def test_a_save_interrupted_before_the_rename_leaves_the_previous_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_run(tmp_path / "runs" / "r1", ok=["a.png"], failed=[])
    write_run(tmp_path / "runs" / "r2", ok=["b.png"], failed=[])
    ledger = Ledger.load(str(tmp_path), "fp")
    ledger.record_run(str(tmp_path / "runs" / "r1"), "r1")
    ledger.save()

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("os.replace", crash)
    monkeypatch.setattr("apache_beam.io.filesystems.FileSystems.rename", crash)
    ledger.record_run(str(tmp_path / "runs" / "r2"), "r2")
    with pytest.raises(KeyboardInterrupt):
        ledger.save()

    assert Ledger.load(str(tmp_path), "fp").entries == {"a.png": ("log/000000", "ok", "r1")}


def test_the_run_lock_is_exclusive_names_its_holder_and_is_released(tmp_path: Path) -> None:
    root = str(tmp_path / "out")
    with ledger_lock(root, "fp"):
        with (
            pytest.raises(RunInProgressError, match=r"fingerprint fp.*\"pid\": \d+.*fp\.lock"),
            ledger_lock(root, "fp"),
        ):
            pass
        with ledger_lock(root, "other"):  # one lock per fingerprint
            pass
    with ledger_lock(root, "fp"):  # released on leaving the block
        pass


def test_a_run_lock_dies_with_its_process(tmp_path: Path) -> None:
    # A run killed mid-way must not block the next scheduled run: the kernel drops a flock
    # when its process ends, whatever the way.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pipelines.mining.ledger import ledger_lock\n"
            f"with ledger_lock({str(tmp_path)!r}, 'fp'):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        with (
            pytest.raises(RunInProgressError, match=f'"pid": {holder.pid}'),
            ledger_lock(str(tmp_path), "fp"),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
    with ledger_lock(str(tmp_path), "fp"):
        pass
