"""``ugains evaluate``: variants, the metrics CombineFn, and the whole command on tiny models."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from models.config import Mask2FormerConfig, MethodConfig, ModelsConfig, SamConfig
from pipelines.cli import main
from pipelines.config import InferenceConfig, load_config
from pipelines.evaluation.pipeline import EvaluationCombineFn, FrameEvaluation
from pipelines.evaluation.report import format_table, make_row
from pipelines.evaluation.variants import Variant, expand_variants
from transforms.metrics import (
    ComponentMetrics,
    PixelMetrics,
    instance_ap,
    pixel_metrics,
    point_metrics,
)


def test_expand_variants_builds_table_rows():
    rows = expand_variants(["ugains", "rba", "dense-grid"], ["fps", "oracle", "random"], [50, 20])
    assert [row.key() for row in rows] == [
        ("ugains", "fps", "50"),
        ("ugains", "fps", "20"),
        ("ugains", "oracle", "-"),  # the oracle has no point budget: one row
        ("ugains", "random", "50"),
        ("ugains", "random", "20"),
        ("rba", "-", "-"),
        ("dense-grid", "-", "-"),
    ]
    method = Variant("ugains", "kmeans", 20).method(MethodConfig(candidate_threshold=-1.0))
    assert (method.mode, method.sampler, method.num_points) == ("ugains", "kmeans", 20)
    assert method.candidate_threshold == -1.0  # the rest comes from the config
    assert Variant("dense-grid").method(MethodConfig()).mode == "dense_grid"


def test_variants_run_sam_on_every_frame_whatever_the_configs_frame_gating():
    # A mining config may turn frame gating on; evaluation follows the paper (no gating).
    for variant in (Variant("ugains", "fps", 50), Variant("dense-grid"), Variant("rba")):
        assert variant.method(MethodConfig(frame_gating=True)).frame_gating is False
        assert variant.method(MethodConfig()).frame_gating is False


def random_frames(seed: int, n: int = 4, shape=(20, 30)) -> list[FrameEvaluation]:
    rng = np.random.default_rng(seed)
    frames = []
    for index in range(n):
        labels = np.zeros(shape, np.uint8)
        ids = np.zeros(shape, np.int32)
        for k in range(1, 3):
            y, x = rng.integers(0, shape[0] - 6), rng.integers(0, shape[1] - 6)
            labels[y : y + 5, x : x + 5] = 1
            ids[y : y + 5, x : x + 5] = k
        ids[labels != 1] = 0
        labels[-3:, :] = 255
        ids[-3:, :] = 0
        scores = np.round(rng.normal(size=shape) + 2.0 * (labels == 1), 1).astype(np.float32)
        masks = np.stack([ids == 1, np.roll(ids == 2, 1, axis=1), labels == 255])
        frames.append(
            FrameEvaluation(
                variant=0,
                name=f"f{index}",
                pixel_scores=scores,
                masks=masks,
                scores=rng.random(3).astype(np.float32),
                prompt_points=rng.integers(0, 20, size=(5, 2)),
                labels=labels,
                instance_ids=ids,
            )
        )
    return frames


def test_combine_fn_equals_the_metrics_over_all_frames():
    frames = random_frames(0)
    combine = EvaluationCombineFn(components=(1.0, 3, 10))
    partial = [combine.create_accumulator(), combine.create_accumulator()]
    for index, frame in enumerate(frames):
        partial[index % 2] = combine.add_input(partial[index % 2], frame)
    result = combine.extract_output(combine.merge_accumulators(partial))

    pixel = pixel_metrics(
        np.stack([f.pixel_scores for f in frames]), np.stack([f.labels for f in frames])
    )
    instance = instance_ap(
        [(f.masks, f.scores) for f in frames],
        [(f.instance_ids, f.labels == 255) for f in frames],
        min_region_size=10,
    )
    point = point_metrics([f.prompt_points for f in frames], [f.instance_ids for f in frames])
    components = ComponentMetrics(1.0, min_segment_size=3, min_instance_size=10)
    for frame in frames:
        components.update(frame.pixel_scores, frame.labels)
    component = components.compute()
    accumulator = PixelMetrics()
    for frame in frames:
        accumulator.update(frame.pixel_scores, frame.labels)
    assert result.pop("curves") == accumulator.curves()  # the merged histogram's curves
    assert result == {
        "frames": 4,
        "pAP": pytest.approx(100 * pixel["ap"], abs=1e-9),
        "FPR95": pytest.approx(100 * pixel["fpr95"], abs=1e-9),
        "AUROC": pytest.approx(100 * pixel["auroc"], abs=1e-9),
        "iAP": pytest.approx(100 * instance["ap"], abs=1e-9),
        "iAP50": pytest.approx(100 * instance["ap50"], abs=1e-9),
        "point_precision": pytest.approx(100 * point["precision"], abs=1e-9),
        "point_recall": pytest.approx(100 * point["recall"], abs=1e-9),
        "sIoU": pytest.approx(100 * component["siou"], abs=1e-9),
        "PPV": pytest.approx(100 * component["ppv"], abs=1e-9),
        "mean_F1": pytest.approx(100 * component["mean_f1"], abs=1e-9),
    }
    assert 0 < result["iAP"] < 100  # the case is not degenerate
    assert 0 < result["mean_F1"] < 100


def test_rows_and_table_show_the_paper_figures_for_matching_rows():
    metrics = {"frames": 100, "pAP": 80.1, "FPR95": 6.6, "AUROC": 98.0, "iAP": 30.0}
    metrics |= {"iAP50": 48.0, "point_precision": 40.0, "point_recall": 90.0}
    row = make_row("fishyscapes_lf", Variant("ugains", "fps", 50), metrics)
    assert row["paper"] == {"pAP": 80.08, "FPR95": 6.61, "iAP": 29.75, "iAP50": 48.35}
    pixel_only = make_row("road_anomaly", Variant("rba"), metrics | {"iAP": float("nan")})
    assert pixel_only["iAP"] is None
    assert "paper" not in pixel_only
    lines = format_table([row, pixel_only]).splitlines()
    assert lines[0].split() == [
        "dataset",
        "mode",
        "sampler",
        "points",
        "frames",
        "pAP",
        "FPR95",
        "AUROC",
        "iAP",
        "iAP50",
        "point_precision",
        "point_recall",
    ]
    assert lines[1].split() == [
        "fishyscapes_lf",
        "ugains",
        "fps",
        "50",
        "100",
        "80.10",
        "6.60",
        "98.00",
        "30.00",
        "48.00",
        "40.00",
        "90.00",
    ]
    assert lines[2].split() == ["paper", "80.08", "6.61", "-", "29.75", "48.35", "-", "-"]
    assert lines[3].split()[:4] == ["road_anomaly", "rba", "-", "-"]
    assert lines[3].split()[-4:] == ["-", "-", "-", "-"]


# ------------------------------------------------------------------------ the whole command

SIZE = (64, 128)
# Tiny random-init models of the real architectures; thresholds low enough that the random
# model yields candidate points (its scores sit far below the paper's -0.15).
METHOD = {"reference_size": list(SIZE), "candidate_threshold": -48.0, "fallback_threshold": -60.0}
MODELS = {
    "mask2former": {"format": "random", "architecture": "tiny_1dl"},
    "sam": {"model_type": "vit_tiny"},
    "method": METHOD,
    "device": "cpu",
}


def fake_fishyscapes(root: Path, frames: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    out = []
    for index in range(frames):
        frame = f"04_Street_{index:06d}_000010"
        rgb = rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)
        labels = np.zeros(SIZE, np.uint8)
        labels[20:30, 40 + 10 * index : 56 + 10 * index] = 1
        labels[5:8, 100:103] = 1  # a 9-pixel instance: below the 10-pixel minimum
        labels[-6:, :] = 255
        (root / "laf_images").mkdir(parents=True, exist_ok=True)
        (root / "fishyscapes_lostandfound").mkdir(exist_ok=True)
        cv2.imwrite(str(root / "laf_images" / f"{frame}_leftImg8bit.png"), rgb[..., ::-1])
        cv2.imwrite(
            str(root / "fishyscapes_lostandfound" / f"{index:04d}_{frame}_labels.png"), labels
        )
        out.append((rgb, labels))
    return out


@pytest.mark.slow
def test_evaluate_command_reports_what_the_ugains_step_computes(tmp_path, capsys):
    from models.ugains import build_ugains
    from pipelines.evaluation.datasets import instance_ids_from_labels

    data = fake_fishyscapes(tmp_path / "fs", frames=2)
    config = {"name": "eval-test", "models": MODELS, "output": {"root": str(tmp_path / "runs")}}
    # One frame per batch: batched CPU kernels round differently, and the reference below
    # runs frame by frame. One in-process worker: one model load.
    config["inference"] = {"max_batch_size": 1}
    config["runner"] = {
        "runner": "FnApiRunner",
        "direct_num_workers": 1,
        "direct_running_mode": "in_memory",
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    argv = ["evaluate", "--config", str(tmp_path / "config.yaml"), "--data", str(tmp_path / "fs")]
    argv += ["--dataset", "fishyscapes_lf", "--mode", "ugains", "--mode", "rba"]
    argv += ["--sampler", "fps", "--sampler", "oracle", "--points", "3"]
    argv += ["--out", str(tmp_path / "out"), "--component-threshold", "-47"]
    assert main(argv) == 0

    results = json.loads((tmp_path / "out" / "results.json").read_text())
    rows = {(r["mode"], r["sampler"], r["points"]): r for r in results["rows"]}
    assert list(rows) == [("ugains", "fps", "3"), ("ugains", "oracle", "-"), ("rba", "-", "-")]
    with open(tmp_path / "out" / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [r["sampler"] for r in table] == ["fps", "oracle", "-"]
    assert list(table[0])[-3:] == ["sIoU", "PPV", "mean_F1"]
    assert "ugains  fps" in capsys.readouterr().out
    # Beside the table: the pixel PR and ROC curves of every variant, as PNG.
    for name in ("pr_curve.png", "roc_curve.png"):
        image = cv2.imread(str(tmp_path / "out" / name))
        assert image is not None
        assert image.shape[:2] == (520, 640)
    curve = rows[("rba", "-", "-")]["curves"]
    assert curve["pr"][-1][0] == 1.0  # the PR curve ends at full recall
    assert curve["roc"][0] == [0.0, 0.0]
    assert curve["roc"][-1] == [1.0, 1.0]
    # The oracle prompts one point per instance (the 9-pixel ones too), each on its instance.
    oracle = rows[("ugains", "oracle", "-")]
    assert oracle["frames"] == 2
    assert oracle["point_precision"] == 100.0
    assert oracle["point_recall"] == 100.0
    assert rows[("rba", "-", "-")]["iAP"] is None

    # Independent reference: the same step called directly, metrics over all frames.
    labels = [lab for _, lab in data]
    ids = [instance_ids_from_labels(lab) for lab in labels]
    for mode in ("ugains", "rba"):
        row = rows[(mode, "fps", "3") if mode == "ugains" else (mode, "-", "-")]
        step = build_ugains(
            ModelsConfig(
                mask2former=Mask2FormerConfig(format="random", architecture="tiny_1dl"),
                sam=SamConfig(model_type="vit_tiny"),
                method=MethodConfig(**METHOD, mode=mode, num_points=3),
                device="cpu",
            )
        )
        out = [step(torch.from_numpy(rgb).permute(2, 0, 1)[None])[0] for rgb, _ in data]
        maps = [(r.fused_score if mode == "ugains" else r.anomaly_score).numpy() for r in out]
        pixel = pixel_metrics(np.stack(maps), np.stack(labels))
        assert row["frames"] == 2
        assert row["pAP"] == pytest.approx(100 * pixel["ap"], abs=1e-9)
        assert row["FPR95"] == pytest.approx(100 * pixel["fpr95"], abs=1e-9)
        assert row["AUROC"] == pytest.approx(100 * pixel["auroc"], abs=1e-9)
        components = ComponentMetrics(-47.0)  # Fishyscapes: the anomaly track's sizes
        for score_map, lab in zip(maps, labels, strict=True):
            components.update(score_map, lab)
        component = components.compute()
        for ours, theirs in (("sIoU", "siou"), ("PPV", "ppv"), ("mean_F1", "mean_f1")):
            # Undefined metrics (NaN) are written as null.
            expected = None if np.isnan(component[theirs]) else 100 * component[theirs]
            assert row[ours] == pytest.approx(expected, abs=1e-9)
        if mode == "rba":
            continue
        assert sum(r.num_instances for r in out) > 0  # instance metrics see real masks
        targets = [(i, lab == 255) for i, lab in zip(ids, labels, strict=True)]
        instance = instance_ap([(r.masks, r.scores) for r in out], targets)
        point = point_metrics([r.prompt_points for r in out], ids)
        assert row["iAP"] == pytest.approx(100 * instance["ap"], abs=1e-9)
        assert row["iAP50"] == pytest.approx(100 * instance["ap50"], abs=1e-9)
        assert row["point_precision"] == pytest.approx(100 * point["precision"], abs=1e-9)
        assert row["point_recall"] == pytest.approx(100 * point["recall"], abs=1e-9)


def test_evaluate_command_errors_name_the_problem(tmp_path, caplog, capsys):
    # The CLI logs to stderr through its own handler; pytest's handler may or may not survive
    # the CLI's logging setup, so look at both.
    def logged() -> str:
        return caplog.text + capsys.readouterr().err

    config = tmp_path / "my_run.yaml"
    config.write_text(yaml.safe_dump({"models": MODELS}))
    assert main(["evaluate", "--config", str(config), "--data", str(tmp_path)]) == 2
    assert "pass --dataset" in logged()
    argv = ["evaluate", "--config", str(config), "--data", str(tmp_path / "missing")]
    assert main([*argv, "--dataset", "road_anomaly"]) == 2
    assert "does not exist; expected the layout <root>/frame_list.json" in logged()
    # A copy of a paper config under another file name: the config's name tells the dataset.
    copy = tmp_path / "my_fishyscapes.yaml"
    copy.write_text(yaml.safe_dump({"name": "fishyscapes_lf", "models": MODELS}))
    argv = ["evaluate", "--config", str(copy), "--data", str(tmp_path / "missing")]
    assert main(argv) == 2
    assert "fishyscapes_lf: dataset root" in logged()


def test_frames_of_another_size_run_at_the_model_size_and_are_scored_at_label_size():
    from models.ugains import build_ugains
    from pipelines.evaluation.pipeline import EvalInput, EvaluationModelHandler
    from pipelines.mining.inference import load_ugains

    method = METHOD | {"reference_size": [32, 64]}
    models = ModelsConfig.model_validate(MODELS | {"method": method})
    handler = EvaluationModelHandler(models, InferenceConfig(), [Variant("rba")])
    rng = np.random.default_rng(1)
    model_image = rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)
    labels = np.zeros(SIZE, np.uint8)
    labels[10:20, 10:30] = 1
    ids = (labels == 1).astype(np.int32)
    element = EvalInput("f", model_image, labels, ids)
    (result,) = handler.run_inference([element], load_ugains(handler.models))
    (frame,) = result.inference  # one evaluation per variant
    assert frame.pixel_scores.shape == SIZE
    assert frame.masks.shape == (0, *SIZE)
    # Reference: the step at the model size, scores upsampled bilinearly (half-pixel centres).
    step = build_ugains(models.model_copy(update={"method": MethodConfig(**method, mode="rba")}))
    (direct,) = step(torch.from_numpy(model_image).permute(2, 0, 1)[None])
    expected = torch.nn.functional.interpolate(
        direct.anomaly_score[None, None], size=SIZE, mode="bilinear", align_corners=False
    )[0, 0]
    np.testing.assert_allclose(frame.pixel_scores, expected.numpy(), rtol=0, atol=1e-5)


def test_points_and_masks_map_to_the_label_pixel_under_their_centre():
    from pipelines.geometry import points_to_frame, resize_nearest

    points = np.array([[0, 0], [63, 31], [10, 5]])
    mapped = points_to_frame(points, (32, 64), (64, 128))
    assert mapped.tolist() == [[1, 1], [127, 63], [21, 11]]
    mask = np.zeros((1, 2, 4), bool)
    mask[0, 1, 3] = True
    assert resize_nearest(mask, (4, 8))[0].astype(int).tolist() == [
        [0] * 8,
        [0] * 8,
        [0] * 6 + [1, 1],
        [0] * 6 + [1, 1],
    ]


@pytest.mark.parametrize("name", ["fishyscapes_lf", "road_anomaly"])
def test_paper_configs_hold_the_papers_settings(name):
    config = load_config(Path(__file__).parents[3] / "mining_configs" / f"{name}.yaml")
    assert config.name == name  # `ugains evaluate` infers the dataset from it
    assert config.models.mask2former.format == "rba"
    assert config.models.mask2former.checkpoint.endswith("swin_b_1dl_rba_ood_coco/model_final.pth")
    assert config.models.sam.model_type == "vit_h"
    assert config.models.sam.checkpoint.endswith("sam_vit_h_4b8939.pth")
    method = config.models.method
    assert (method.mode, method.score, method.sampler, method.num_points) == (
        "ugains",
        "rba_nls",
        "fps",
        50,
    )
    assert (method.candidate_threshold, method.fallback_threshold) == (-0.15, -15.0)
    assert method.frame_gating is False
    # Every other constant is the paper's (the schema's defaults, docs/method.md);
    # Fishyscapes at 1024x2048.
    own = {"reference_size", "ignore_mask", "frame_gating"}
    assert method.model_dump(exclude=own) == MethodConfig().model_dump(exclude=own)
    if name == "fishyscapes_lf":
        assert method.reference_size == (1024, 2048)
        assert method.ignore_mask is not None


def test_set_overrides_reach_the_config_instead_of_beam(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Before --set existed, it was passed on to Beam as an unknown pipeline option and ignored.
    from pipelines.cli import main

    config = Path(__file__).resolve().parents[3] / "mining_configs" / "world.yaml"
    argv = ["evaluate", "--config", str(config), "--data", str(tmp_path)]
    assert main([*argv, "--set", "models.method.num_points=0"]) == 2
    assert "models.method.num_points" in caplog.text
