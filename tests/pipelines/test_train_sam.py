"""``ugains train sam``: training segments, a short run on a tiny world, resume, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from models.config import SamConfig
from models.sam import SamPrompter, build_sam
from pipelines import cli
from pipelines.training import sam_data as train_sam_data
from pipelines.training.sam_data import SegmentFrames, StepBatches, frame_segments, world_sources


def test_segments_are_class_components_and_instances() -> None:
    v = 255
    semantic = np.array(
        [
            [0, 0, 1, 1, 1, 0, 0, 0],
            [0, 0, 1, 1, 1, 0, 0, 0],
            [v, v, v, v, v, v, v, v],
            [2, 2, 2, 2, 2, 2, 2, 3],
            [2, 2, 2, 2, 2, 2, 2, 2],
        ],
        np.uint8,
    )
    instances = np.zeros(semantic.shape, np.uint16)
    instances[3:5, 2:5] = 9  # an object over class 2 (splits it into two components)
    instances[0, 7] = 4  # an object of one pixel: too small
    segments = frame_segments(semantic, instances, min_pixels=2)
    n = -1
    expected = np.array(
        [
            [0, 0, 2, 2, 2, 1, 1, n],
            [0, 0, 2, 2, 2, 1, 1, 1],
            [n, n, n, n, n, n, n, n],
            [3, 3, 5, 5, 5, 4, 4, n],
            [3, 3, 5, 5, 5, 4, 4, 4],
        ]
    )
    # class 0: left and right blobs (8-connected components, OpenCV's scan order); class 1;
    # class 2 left and right of the object; class 3's one pixel is dropped; object 9 last.
    np.testing.assert_array_equal(segments, expected)
    assert segments.dtype == np.int64
    # Diagonal neighbours are connected (8-connectivity); no instances = class components only.
    diagonal = np.array([[1, 255], [255, 1]], np.uint8)
    np.testing.assert_array_equal(frame_segments(diagonal, None, min_pixels=1), [[0, -1], [-1, 0]])


def test_step_batches_depend_on_the_step_only() -> None:
    def take(sampler: StepBatches, count: int) -> list[list[int]]:
        stream = iter(sampler)
        return [next(stream) for _ in range(count)]

    full = take(StepBatches(5, 2, seed=3), 6)
    assert take(StepBatches(5, 2, seed=3, start=4), 2) == full[4:]
    first_epoch = [index for batch in full[:2] for index in batch] + full[2][:1]
    assert sorted(first_epoch) == [0, 1, 2, 3, 4]  # an epoch covers every frame once
    assert take(StepBatches(5, 2, seed=4), 6) != full


def _write_world(root: Path, frames: int = 2, height: int = 64, width: int = 128) -> Path:
    """A tiny world: ``frames`` frames in each of ``train`` and ``ood``."""
    rng = np.random.default_rng(0)
    for split in ("train", "ood"):
        for name in ("images", "semantic", "instances"):
            (root / split / name).mkdir(parents=True, exist_ok=True)
        for index in range(frames):
            key = f"{split}_{index:03d}"
            semantic = np.zeros((height, width), np.uint8)  # road
            semantic[: height // 3] = 10  # sky
            semantic[height // 3 : height // 2, width // 2 :] = 2  # a building
            semantic[-4:] = 255
            instances = np.zeros((height, width), np.uint16)
            if split == "ood":
                semantic[40:52, 20:40] = 254
                instances[40:52, 20:40] = 1
            palette = rng.integers(0, 256, (256, 3)).astype(np.uint8)
            image = palette[semantic] + rng.integers(0, 8, (height, width, 3)).astype(np.uint8)
            cv2.imwrite(str(root / split / "images" / f"{key}.png"), image[..., ::-1])
            cv2.imwrite(str(root / split / "semantic" / f"{key}.png"), semantic)
            cv2.imwrite(str(root / split / "instances" / f"{key}.png"), instances)
    return root


def test_dataset_reads_world_frames_at_the_model_size(tmp_path) -> None:
    root = _write_world(tmp_path / "world")
    dataset = SegmentFrames(world_sources(root), image_size=512)
    assert len(dataset) == 4
    image, segments = dataset[3]  # ood: the object is its own segment
    assert image.shape == (3, 256, 512)
    assert image.dtype == torch.uint8
    assert segments.shape == (256, 512)
    assert segments.dtype == torch.int64
    assert set(segments.unique().tolist()) == {-1, 0, 1, 2, 3}
    assert (segments[160:208, 80:160] == 3).all()  # the 12x20 object, resized 4x


def _train_argv(root: Path, run: Path, steps: int) -> list[str]:
    return [
        *("train", "sam", "--world", str(root), "--out", str(run), "--steps", str(steps)),
        *("--batch-size", "2", "--points-per-image", "2", "--threads", "1"),
        *("--checkpoint-every", "1", "--warmup-steps", "1", "--no-progress"),
    ]


def _train(root: Path, run: Path, steps: int = 2) -> int:
    return cli.main(_train_argv(root, run, steps))


def test_train_sam_writes_weights_that_the_pipeline_loads(tmp_path) -> None:
    root, run = _write_world(tmp_path / "world"), tmp_path / "run"
    assert _train(root, run) == 0
    weights = run / "sam_vit_tiny_512.pth"
    sam = build_sam(SamConfig(model_type="vit_tiny_512", checkpoint=str(weights)))
    untrained = build_sam(SamConfig(model_type="vit_tiny_512", seed=0))
    assert not torch.equal(
        sam.mask_decoder.iou_token.weight, untrained.mask_decoder.iou_token.weight
    )
    masks, _ = SamPrompter(sam)(
        torch.zeros((1, 3, 64, 128), dtype=torch.uint8), [torch.tensor([[5, 5]])]
    )[0]
    assert masks.shape == (1, 64, 128)
    card = (run / "MODEL_CARD.md").read_text()
    for text in (
        "--steps 2",
        "| seed | 0 |",
        "| steps | 2 ",
        "4 frames",
        "mask IoU",
        "vit_tiny_512",
    ):
        assert text in card, text
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2]
    assert {"loss", "iou", "selected_iou", "lr", "seconds"} <= set(lines[0])


def test_a_second_stage_starts_from_the_first_stages_weights(tmp_path) -> None:
    root, first = _write_world(tmp_path / "world"), tmp_path / "first"
    assert _train(root, first) == 0
    weights = first / "sam_vit_tiny_512.pth"
    second = tmp_path / "second"
    argv = ["--init", str(weights), "--segment-power", "0"]
    assert cli.main([*_train_argv(root, second, 1), *argv]) == 0
    assert f"--init {weights}" in (second / "MODEL_CARD.md").read_text()


def test_a_pool_fine_tune_records_the_pool_and_a_bad_pool_is_a_one_line_error(
    tmp_path, capsys
) -> None:
    from pipelines.outlier_pool import PoolObject, write_pool_files

    root, run = _write_world(tmp_path / "world"), tmp_path / "run"
    mask = np.zeros((6, 8), bool)
    mask[1:5, 2:7] = True
    record = {"run_id": "r1", "instance_id": "log/000001#0", "log_id": "log"}
    record |= {"frame_key": "log/000001", "score": -0.1, "decision": "confirmed"}
    crop = np.full((6, 8, 3), 200, np.uint8)
    write_pool_files(tmp_path / "pool", [PoolObject("a", crop, mask, record)])
    argv = [*_train_argv(root, run, 1), "--outliers", str(tmp_path / "pool")]
    assert cli.main([*argv, "--pool-objects", "2"]) == 0
    card = (run / "MODEL_CARD.md").read_text()
    assert "--outliers" in card
    assert "--pool-objects 2" in card
    assert "## Outlier pool" in card
    assert "log/000001#0" in card
    assert torch.load(run / "state.pt", weights_only=False)["extra"]["config"]["pool_objects"] == 2
    missing = [*_train_argv(root, tmp_path / "other", 1), "--outliers", str(tmp_path / "none")]
    assert cli.main(missing) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "manifest.json: missing" in err[0]


def test_an_interrupted_run_resumes_from_its_saved_step(tmp_path, monkeypatch) -> None:
    root, run = _write_world(tmp_path / "world"), tmp_path / "run"
    calls = {"n": 0}
    collate = train_sam_data._collate

    def dies_at_third_batch(items):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return collate(items)

    # _run looks it up on sam_data at each call
    monkeypatch.setattr(train_sam_data, "_collate", dies_at_third_batch)
    with pytest.raises(KeyboardInterrupt):
        _train(root, run, steps=3)
    assert torch.load(run / "state.pt", weights_only=False)["step"] == 2
    assert not (run / "sam_vit_tiny_512.pth").exists()
    monkeypatch.setattr(train_sam_data, "_collate", collate)
    assert _train(root, run, steps=3) == 0
    assert "resumed from step 2" in (run / "MODEL_CARD.md").read_text()
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3]
    # Another recipe in the same run directory is refused with a clear message.
    assert _train(root, run, steps=5) == 2


def test_a_bad_label_file_is_named(tmp_path, capsys) -> None:
    root = _write_world(tmp_path / "world")
    bad = root / "train" / "semantic" / "train_001.png"
    bad.write_bytes(b"not a png")
    assert _train(root, tmp_path / "run") == 2
    assert str(bad) in capsys.readouterr().err


def test_the_model_card_command_spells_out_every_recipe_option() -> None:
    import argparse

    from pipelines.training.sam import _command, configure_parser

    parser = argparse.ArgumentParser()
    configure_parser(parser)
    argv = ["--world", "w", "--out", "o", "--paste-objects", "6", "--paste-shadows"]
    args = parser.parse_args(argv)
    command = _command(args) + " "
    assert "--paste-objects 6" in command
    skipped = {"world", "cityscapes", "cityscapes_split", "no_progress", "help"}
    for action in parser._actions:
        if action.dest not in skipped and getattr(args, action.dest) not in (None, False):
            assert f"--{action.dest.replace('_', '-')} " in command, action.dest
    assert "--paste-shadows" not in _command(parser.parse_args(argv[:-1]))  # a flag: when set
