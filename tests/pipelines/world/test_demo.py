"""The demo: a world drive log generated once, mined with the shipped models, scored."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.config import ImageSource
from pipelines.world.demo import DEMO_FRAMES, demo_ground_truth, ensure_demo

DEMO_CONFIG = Path(__file__).resolve().parents[3] / "mining_configs" / "demo.yaml"


@pytest.mark.slow
def test_the_demo_command_mines_the_world_log_and_finds_the_planted_objects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # The demo config's paths are relative: run it from an empty directory, as `make demo` does.
    monkeypatch.chdir(tmp_path)
    # The config's own runner: the DirectRunner with two worker processes.
    argv = ["mine", "--config", str(DEMO_CONFIG)]

    assert main(argv) == 0

    captured = capfd.readouterr()  # file descriptors: the worker processes' stderr too
    printed = captured.out
    # The workers' own lines reach the user; Beam's start-up noise does not.
    assert "this worker has processed its first frame" in captured.err
    noises = ("apitools", "semi_persistent_directory", "Logging handler created", "Polyfit")
    for noise in (*noises, "cook_ds"):  # the batch-size estimator's divide-by-zero warning
        assert noise not in captured.err
    assert f"{DEMO_FRAMES} frames" in printed
    assert f"frames {DEMO_FRAMES}, errors 0" in printed
    assert "rank     score" in printed
    table = printed.split("rank     score", 1)[1].splitlines()
    assert [line.split()[0] for line in table[2:12]] == [str(rank) for rank in range(1, 11)]
    # The score against the log's ground truth is printed: K is the number of planted objects
    # of >= 100 px, and frame gating skipped none of the frames that hold one.
    score = re.search(r"recall@(\d+) [\d.]+ .* skipped by gating (\d+) of (\d+)", printed)
    assert score is not None, printed
    assert int(score[1]) == 20
    assert (int(score[2]), int(score[3])) == (0, 10)
    assert "UNTRAINED" not in printed
    demo = tmp_path / ".ugains_demo"
    assert "SYNTHETIC" in (demo / "README.txt").read_text()
    assert demo_ground_truth(demo).is_file()
    assert len(list((tmp_path / "demo_output" / "runs").iterdir())) == 1

    # Generated once: a second call rewrites nothing and returns the same source.
    stamps = {p: p.stat().st_mtime_ns for p in demo.rglob("*") if p.is_file()}
    sources = ensure_demo(".ugains_demo")
    assert {p: p.stat().st_mtime_ns for p in demo.rglob("*") if p.is_file()} == stamps
    assert sources == [ImageSource(path=".ugains_demo/logs/drive_00/images", log_id="drive_00")]

    # Run again: every frame is in the ledger, nothing to do.
    assert main(argv) == 0
    assert f"nothing new to mine: all {DEMO_FRAMES} frames" in capfd.readouterr().out
