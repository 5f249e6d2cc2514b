"""``ugains world confirm``: the ground truth stands in for a reviewer and writes a pool."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pipelines import cli
from pipelines.outlier_pool import OutlierPool
from pipelines.world.generate import _sighting
from tests.pipelines.world.test_scoring import H, W, _box, _frame, _instance, _write


@pytest.fixture
def world_log(tmp_path: Path) -> Path:
    """A ground-truth file beside the log's frame images, as `ugains world generate` writes."""
    logs = tmp_path / "logs"
    (logs / "drive_00" / "images").mkdir(parents=True)
    for index in range(3):
        image = np.full((H, W, 3), 10 * index, np.uint8)
        image[:, :, 2] = np.arange(W, dtype=np.uint8)[None]  # columns tell crops apart
        cv2.imwrite(str(logs / "drive_00" / "images" / f"frame_{index:06d}.png"), image)
    rows = [
        _sighting("drive_00", 1, 1, "box", _box(0, 0, 20, 10)),  # 200 px
        _sighting("drive_00", 1, 2, "tyre", _box(40, 0, 44, 4)),  # 16 px: too small
        _sighting("drive_00", 2, 3, "ball", _box(10, 10, 30, 20)),  # 200 px
    ]
    path = logs / "drive_00_gt.json"
    path.write_text(json.dumps({"log_id": "drive_00", "frames": 3, "instances": rows}))
    return path


def test_candidates_matching_planted_objects_are_confirmed_those_off_every_object_rejected(
    tmp_path: Path, world_log: Path
) -> None:
    run = tmp_path / "runs" / "run-1"
    frames = [_frame(0), _frame(1), _frame(2)]
    _write(run, "frames", frames)
    _write(
        run,
        "instances",
        [
            _instance(frames[1], 0, -0.1, _box(0, 0, 20, 9)),  # the box (IoU 0.9): confirmed
            _instance(frames[1], 1, -0.2, _box(40, 0, 44, 4)),  # the small tyre: not pooled
            _instance(frames[0], 0, -0.3, _box(0, 20, 10, 30)),  # nothing there
            _instance(frames[2], 0, -0.9, _box(10, 10, 18, 20)),  # 40 % of the ball, 4th
        ],
    )
    out = tmp_path / "pool"
    argv = ["world", "confirm", "--run", str(run), "--ground-truth", str(world_log)]
    assert cli.main([*argv, "--out", str(out), "--top", "3"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [
        (o["instance_id"], o["rank"], o["kind"], o["decision"]) for o in manifest["objects"]
    ] == [
        ("images/000101#0", 1, "box", "confirmed"),
        ("images/000100#0", 3, None, "rejected"),  # touches no sighting: not an anomaly
    ]
    pool = OutlierPool.read(out)
    (crop, mask), (record,) = pool.objects[0], pool.provenance
    ((_, rejected_mask),) = pool.rejected
    assert rejected_mask.shape == (10, 10)
    assert pool.card()["rejected"] == 1
    assert record["run_id"] == "run-1"
    assert mask.shape == (9, 20)  # the run's mask, not the truth's
    assert bool(mask.all())
    frame = cv2.imread(str(world_log.parent / "drive_00" / "images" / "frame_000001.png"))
    assert torch.equal(crop, torch.from_numpy(frame[0:9, 0:20, ::-1].copy()).permute(2, 0, 1))

    # A reviewer who looks further down the list confirms the ball too: the candidate shows
    # it (mask IoU 0.4 >= 0.3), though mining recall would not count it (< 0.5).
    assert cli.main([*argv, "--out", str(tmp_path / "pool4"), "--top", "4"]) == 0
    assert len(OutlierPool.read(tmp_path / "pool4").objects) == 2
    # A stricter one confirms only the box; the ball's partial mask is neither confirmed nor
    # rejected (it lies on an object).
    strict = ["--out", str(tmp_path / "strict"), "--top", "4", "--min-iou", "0.5"]
    assert cli.main([*argv, *strict]) == 0
    decisions = [
        o["decision"]
        for o in json.loads((tmp_path / "strict" / "manifest.json").read_text())["objects"]
    ]
    assert decisions == ["confirmed", "rejected"]


def test_confirm_refuses_a_used_folder_and_a_missing_frame_in_one_line(
    tmp_path: Path, world_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    frames = [_frame(1)]
    _write(run, "frames", frames)
    _write(run, "instances", [_instance(frames[0], 0, -0.1, _box(0, 0, 20, 10))])
    argv = ["world", "confirm", "--run", str(run), "--ground-truth", str(world_log)]
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("keep")
    assert cli.main([*argv, "--out", str(tmp_path / "used")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "used: not empty" in err[0]
    (world_log.parent / "drive_00" / "images" / "frame_000001.png").unlink()
    assert cli.main([*argv, "--out", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "frame_000001.png: missing" in err[0]


def test_every_sighting_pools_each_planted_object_with_its_true_mask_without_a_run(
    tmp_path: Path, world_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "truth"
    argv = ["world", "confirm", "--every-sighting", "--ground-truth", str(world_log)]
    assert cli.main([*argv, "--out", str(out)]) == 0
    assert "2 confirmed objects, 0 rejected" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert [
        (o["frame_key"], o["kind"], o["area"], o["bbox_xywh"]) for o in manifest["objects"]
    ] == [
        ("drive_00/000001", "box", 200, [0, 0, 20, 10]),  # the 16-px tyre is not planted
        ("drive_00/000002", "ball", 200, [10, 10, 20, 10]),
    ]
    pool = OutlierPool.read(out)
    assert [m.shape for _, m in pool.objects] == [(10, 20), (10, 20)]
    assert all(bool(m.all()) for _, m in pool.objects)  # the truth's outline, whole
    frame = cv2.imread(str(world_log.parent / "drive_00" / "images" / "frame_000002.png"))
    ball = torch.from_numpy(frame[10:20, 10:30, ::-1].copy()).permute(2, 0, 1)
    assert torch.equal(pool.objects[1][0], ball)
    assert {p["run_id"] for p in pool.provenance} == {"ground-truth"}


def test_confirm_takes_a_run_or_every_sighting_not_both(
    tmp_path: Path, world_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    both = ["world", "confirm", "--run", "r", "--every-sighting", "--ground-truth", str(world_log)]
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*both, "--out", str(tmp_path / "p")])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
