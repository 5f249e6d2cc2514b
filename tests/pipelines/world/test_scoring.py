"""Scoring a mining run against a world log's ground truth: recall@K, precision@K, gating."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipelines.mining.schema import EMBEDDING_DIM, EMBEDDING_TYPE, TABLES
from pipelines.world.generate import _sighting
from pipelines.world.scoring import load_ground_truth, score_run, world_frame_id
from transforms.masks import encode_rle

H, W = 32, 64


def _box(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _write(run: Path, table: str, rows: list[dict]) -> None:
    schema = TABLES[table]
    defaults = {
        pa.string(): "",
        pa.binary(): b"",
        pa.float32(): 0.0,
        pa.float64(): 0.0,
        EMBEDDING_TYPE: [0.0] * EMBEDDING_DIM,
    }
    full = [{f.name: row.get(f.name, defaults.get(f.type, 0)) for f in schema} for row in rows]
    (run / table).mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(full, schema=schema), run / table / "part-0.parquet")


def _frame(index: int, status: str = "ok") -> dict:
    uri = f"/data/world/logs/drive_00/images/frame_{index:06d}.png"
    # The run's own keys need not match the log's frame numbers (a glob over a subset).
    return {
        "frame_key": f"images/{index + 100:06d}",
        "frame_uri": uri,
        "status": status,
        "frame_height": H,
        "frame_width": W,
    }


def _instance(frame: dict, number: int, score: float, mask: np.ndarray) -> dict:
    (rle,) = encode_rle(torch.from_numpy(mask)[None])
    return {
        "frame_key": frame["frame_key"],
        "instance_id": f"{frame['frame_key']}#{number}",
        "score": score,
        "mask_rle": rle,
        "frame_height": H,
        "frame_width": W,
    }


@pytest.fixture
def truth(tmp_path: Path) -> list[dict]:
    rows = [
        _sighting("drive_00", 1, 1, "box", _box(0, 0, 20, 10)),  # 200 px: planted
        _sighting("drive_00", 1, 2, "tyre", _box(40, 0, 44, 4)),  # 16 px: small, neutral
        _sighting("drive_00", 2, 3, "ball", _box(10, 10, 30, 20)),  # 200 px: planted
        {**_sighting("drive_00", 3, 4, "cargo", _box(0, 0, 64, 32)), "ignore": True},
    ]
    path = tmp_path / "drive_00_gt.json"
    path.write_text(json.dumps({"log_id": "drive_00", "frames": 4, "instances": rows}))
    return load_ground_truth([path, path])  # the same file twice counts once


def test_world_frames_are_identified_by_file_name_not_by_run_key() -> None:
    assert world_frame_id("/w/logs/drive_03/images/frame_000042.png") == ("drive_03", 42)
    assert world_frame_id("/w/logs/drive_00.avi#frame=7") == ("drive_00", 7)
    assert world_frame_id("/elsewhere/img_000001.png") is None


def test_recall_and_precision_count_planted_objects_in_the_top_k(tmp_path: Path, truth) -> None:
    frames = [_frame(0), _frame(1), _frame(2), _frame(3)]
    _write(tmp_path, "frames", frames)
    _write(
        tmp_path,
        "instances",
        [
            _instance(frames[1], 0, -0.1, _box(0, 0, 20, 9)),  # hit (IoU 0.9)
            _instance(frames[1], 1, -0.2, _box(40, 0, 44, 4)),  # the small tyre: neutral
            _instance(frames[0], 0, -0.3, _box(0, 20, 10, 30)),  # nothing there: false alarm
            _instance(frames[2], 0, -0.9, _box(10, 10, 30, 20)),  # a hit, but ranked 4th
        ],
    )
    score = score_run(str(tmp_path), truth)
    assert len(truth) == 4
    assert (score.planted, score.k) == (2, 2)  # K = planted; the ignored and small ones aside
    assert score.hits == 1  # only the top 2 count: the ball's mask is ranked 4th
    assert score.false_alarms == 0  # the top 2 are a hit and a neutral small-object match
    assert score.recall == 0.5
    assert score.precision == 1.0
    assert (score.frames_with_objects, score.gated_frames_with_objects) == (2, 0)


def test_gated_frames_with_planted_objects_are_counted(tmp_path: Path, truth) -> None:
    _write(tmp_path, "frames", [_frame(1), _frame(2, status="gated")])
    _write(tmp_path, "instances", [])
    score = score_run(str(tmp_path), truth)
    assert score.gated_frames_with_objects == 1
    assert score.hits == 0


def test_a_run_over_other_frames_is_an_error_not_a_nan(tmp_path: Path, truth) -> None:
    frame = {**_frame(1), "frame_uri": "/data/other/img.png"}
    _write(tmp_path, "frames", [frame])
    _write(tmp_path, "instances", [])
    with pytest.raises(ValueError, match="mined no frame of the ground truth's logs"):
        score_run(str(tmp_path), truth)


def test_a_file_that_is_not_ground_truth_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match=r"bad\.json: not a world ground-truth file"):
        load_ground_truth([bad])
