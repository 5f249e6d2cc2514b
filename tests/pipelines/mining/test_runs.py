"""Run directories: committed runs are the ones with run.json; `ugains runs` lists and cleans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.mining.ledger import Ledger, ledger_lock
from pipelines.mining.runs import commit_run, committed_runs, reconcile_ledger, uncommitted_runs


def _runs(root: Path) -> None:
    """A committed run, a killed run's staging directory and a run dir without run.json."""
    staged = root / "runs" / ".staging" / "fp1" / "r1"
    staged.mkdir(parents=True)
    (staged / "frames").mkdir()
    commit_run(
        str(staged),
        str(root / "runs" / "r1"),
        {
            "run_id": "r1",
            "config_name": "c",
            "config_fingerprint": "fp1",
            "counts": {"frames": 3, "errors": 1},
        },
    )
    (root / "runs" / ".staging" / "fp2" / "r2" / "frames").mkdir(parents=True)
    (root / "runs" / "r3" / "frames").mkdir(parents=True)


def test_commit_renames_the_staging_directory_into_place_with_run_json_inside(
    tmp_path: Path,
) -> None:
    _runs(tmp_path)
    assert (tmp_path / "runs" / "r1" / "frames").is_dir()
    assert json.loads((tmp_path / "runs" / "r1" / "run.json").read_text())["run_id"] == "r1"
    assert not (tmp_path / "runs" / ".staging" / "fp1").exists()  # empty parents removed
    assert [run.run_id for run in committed_runs(str(tmp_path))] == ["r1"]
    assert uncommitted_runs(str(tmp_path)) == [
        str(tmp_path / "runs" / "r3"),
        str(tmp_path / "runs" / ".staging" / "fp2" / "r2"),
    ]


def test_runs_command_lists_committed_runs_and_leftovers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _runs(tmp_path)
    assert main(["runs", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 committed run(s)" in out
    assert "r1  config c" in out
    assert "frames      3  errors    1" in out
    assert "2 uncommitted leftover(s) (remove with --clean)" in out


def test_runs_clean_removes_leftovers_but_not_those_of_a_config_running_now(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _runs(tmp_path)
    with ledger_lock(str(tmp_path), "fp2"):
        assert main(["runs", "--root", str(tmp_path), "--clean"]) == 0
    out = capsys.readouterr().out
    assert "removed 1 uncommitted leftover(s)" in out
    assert "r2: its config is running now" in out
    assert not (tmp_path / "runs" / "r3").exists()
    assert main(["runs", "--root", str(tmp_path), "--clean"]) == 0
    assert "removed 1 uncommitted leftover(s)" in capsys.readouterr().out
    assert uncommitted_runs(str(tmp_path)) == []
    assert [run.run_id for run in committed_runs(str(tmp_path))] == ["r1"]


def test_runs_command_refuses_a_root_that_is_not_a_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["runs", "--root", str(tmp_path / "missing")]) == 2
    assert (
        capsys.readouterr().err.strip() == f"ugains runs: {tmp_path / 'missing'} is not a directory"
    )


def test_a_start_reads_no_run_json_of_the_runs_its_ledger_recorded(tmp_path: Path) -> None:
    _runs(tmp_path)
    (tmp_path / "runs" / "r1" / "run.json").write_text("not json: read it and fail")
    known = Ledger(str(tmp_path / "ledger" / "fp1.parquet"), runs={"r1"})

    assert reconcile_ledger(known, str(tmp_path), "fp1") == []  # r1 was not opened
    assert committed_runs(str(tmp_path), skip={"r1"}) == []
    with pytest.raises(json.JSONDecodeError):  # an unknown run's record is read
        reconcile_ledger(Ledger(str(tmp_path / "ledger" / "fp1.parquet")), str(tmp_path), "fp1")
