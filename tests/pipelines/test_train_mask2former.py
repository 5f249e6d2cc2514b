"""`ugains train mask2former` on a tiny on-disk world and a Cityscapes-layout folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from models.config import Mask2FormerConfig
from models.mask2former import build_mask2former
from pipelines.training import mask2former as command

SIZE = (64, 128)
COMMON = ["--size", "64", "128", "--batch-size", "2", "--num-points", "256", "--threads", "1"]


def _write_world(root: Path, frames: int = 3) -> Path:
    """Frames in the layout of pipelines.world.layout (images, semantic, instances)."""
    rng = np.random.default_rng(0)
    for split in ("train", "ood"):
        for sub in ("images", "semantic", "instances"):
            (root / split / sub).mkdir(parents=True)
        for i in range(frames):
            image = rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)
            semantic = np.zeros(SIZE, np.uint8)
            semantic[: SIZE[0] // 2] = 10
            semantic[:, : 30 + i] = 13
            semantic[-3:] = 255
            instances = np.zeros(SIZE, np.uint16)
            if split == "ood":
                semantic[40:50, 60:80] = 254
                instances[40:50, 60:80] = 1
            key = f"{split}_{i:03d}"
            cv2.imwrite(str(root / split / "images" / f"{key}.png"), image[..., ::-1])
            cv2.imwrite(str(root / split / "semantic" / f"{key}.png"), semantic)
            cv2.imwrite(str(root / split / "instances" / f"{key}.png"), instances)
    return root


def _train(*args: str) -> int:
    """``ugains train mask2former ARGS`` through the subcommand's own parser and ``run``."""
    parser = argparse.ArgumentParser(prog="ugains train mask2former")
    command.configure_parser(parser)
    return command.run(parser.parse_args([*COMMON, "--no-progress", *args]))


def test_world_both_stages_write_a_loadable_model(tmp_path: Path) -> None:
    world = _write_world(tmp_path / "world")
    run = tmp_path / "run"
    argv = ["--world", str(world), "--out", str(run), "--steps", "2", "--oe-steps", "2"]
    assert _train(*argv, "--checkpoint-every", "1", "--eval-frames", "2") == 0
    for path in ("semantic/state.pt", "semantic/model/config.json", "oe/state.pt", "model"):
        assert (run / path).exists(), path
    segmenter = build_mask2former(
        Mask2FormerConfig(
            format="huggingface", checkpoint=str(run / "model"), architecture="tiny_1dl"
        )
    )
    cls, masks = segmenter(torch.zeros(1, 3, *SIZE, dtype=torch.uint8))
    assert cls.shape == (1, 100, 20)
    assert masks.shape == (1, 100, *SIZE)
    card = (run / "MODEL_CARD.md").read_text()
    assert "seed 0" in card
    assert "--oe-steps" in card
    assert "pixel_accuracy" in card
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["stages"]) == {"semantic", "oe"}
    assert metrics["metrics_oe_frames"]["anomaly_pixels"] > 0

    # The same command again resumes at the saved (final) step: no new steps.
    assert _train(*argv, "--checkpoint-every", "1", "--eval-frames", "0") == 0
    again = json.loads((run / "metrics.json").read_text())
    assert again["stages"]["semantic"]["seconds_this_call"] < 5


def test_resume_continues_from_the_saved_step(tmp_path: Path) -> None:
    world = _write_world(tmp_path / "world")
    run = tmp_path / "run"
    argv = ["--world", str(world), "--out", str(run), "--stage", "semantic", "--steps", "3"]
    argv += ["--checkpoint-every", "2", "--eval-frames", "0"]
    from models.training import mask2former as trainer

    calls: list[tuple[int, int]] = []
    real = trainer.train_mask2former

    def stop_after_two(*args: object, **kwargs: object) -> object:
        result = real(*args, stop_after=2, **kwargs)
        calls.append((result.start_step, result.step))
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer, "train_mask2former", stop_after_two)
        assert _train(*argv) == 0  # "killed" after step 2 (state saved at step 2)
    state = torch.load(run / "semantic" / "state.pt", weights_only=False)
    assert state["step"] == 2

    def record(*args: object, **kwargs: object) -> object:
        result = real(*args, **kwargs)
        calls.append((result.start_step, result.step))
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer, "train_mask2former", record)
        assert _train(*argv) == 0
    assert calls == [(0, 2), (2, 3)]
    assert torch.load(run / "semantic" / "state.pt", weights_only=False)["step"] == 3


def test_bad_input_is_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "cs"
    image = root / "leftImg8bit" / "train" / "aachen" / "aachen_000000_000019_leftImg8bit.png"
    image.parent.mkdir(parents=True)
    cv2.imwrite(str(image), np.zeros((*SIZE, 3), np.uint8))
    assert _train("--cityscapes", str(root), "--out", str(tmp_path / "run")) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "aachen_000000_000019_gtFine_labelTrainIds.png" in err
    assert "missing" in err

    label = root / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelTrainIds.png"
    label.parent.mkdir(parents=True)
    cv2.imwrite(str(label), np.zeros((10, 10), np.uint8))
    assert _train("--cityscapes", str(root), "--out", str(tmp_path / "run"), "--steps", "1") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(label) in err
    assert "do not match" in err

    assert _train("--world", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r2")) == 1
    assert "nowhere" in capsys.readouterr().err
    assert _train("--world", str(root), "--out", str(tmp_path / "r3"), "--stage", "oe") == 1
    assert "--init" in capsys.readouterr().err


def _write_pool(root: Path, count: int = 2) -> Path:
    """A pool folder as `ugains review pool` writes it."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    objects = []
    for i in range(count):
        crop = np.full((9, 11, 3), 40 * i, np.uint8)
        mask = np.zeros((9, 11), np.uint8)
        mask[2:7, 2:9] = 255
        cv2.imwrite(str(root / "images" / f"d{i}.png"), crop)
        cv2.imwrite(str(root / "masks" / f"d{i}.png"), mask)
        objects.append(
            {
                "image": f"images/d{i}.png",
                "mask": f"masks/d{i}.png",
                "run_id": "run-a",
                "instance_id": f"k{i}:0",
                "log_id": "drive_00",
                "frame_key": f"k{i}",
                "score": -0.5,
            }
        )
    (root / "manifest.json").write_text(json.dumps({"count": count, "objects": objects}))
    return root


def test_a_review_pool_is_pasted_as_outliers_and_named_in_the_model_card(tmp_path: Path) -> None:
    world = _write_world(tmp_path / "world")
    pool = _write_pool(tmp_path / "pool")
    run = tmp_path / "run"
    argv = ["--world", str(world), "--out", str(run), "--steps", "1", "--oe-steps", "2"]
    argv += ["--outliers", str(pool), "--pool-objects", "2", "--ood-prob", "0"]
    assert _train(*argv, "--eval-frames", "0") == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["stages"]["oe"]["config"]["pool_objects"] == 2
    assert metrics["stages"]["oe"]["config"]["ood_prob"] == 0
    assert [o["instance_id"] for o in metrics["outlier_pool"]["objects"]] == ["k0:0", "k1:0"]
    card = (run / "MODEL_CARD.md").read_text()
    assert "## Outlier pool" in card
    assert "| run-a | k1:0 | drive_00 | k1 | -0.5 |" in card


def test_a_broken_pool_is_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = _write_world(tmp_path / "world")
    argv = ["--world", str(world), "--steps", "1", "--oe-steps", "1", "--eval-frames", "0"]
    assert _train(*argv, "--out", str(tmp_path / "r1"), "--outliers", str(tmp_path)) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "manifest.json: missing" in err
    pool = _write_pool(tmp_path / "pool")
    (pool / "masks" / "d1.png").write_bytes(b"not a png")
    assert _train(*argv, "--out", str(tmp_path / "r2"), "--outliers", str(pool)) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(pool / "masks" / "d1.png") in err
