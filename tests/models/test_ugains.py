"""One UGainS step (docs/method.md steps 1-10) on synthetic frames with tiny random-init models.

The invariants of steps 7-10 are checked against plain-loop recomputations from the step's own
outputs, so they hold whatever the (untrained) models predict.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from models.config import Mask2FormerConfig, MethodConfig, ModelsConfig, SamConfig
from models.mask2former import build_mask2former, favour_no_object
from models.sam import SamPrompter, build_sam
from models.ugains import FrameResult, UGainS, build_ugains, load_ignore_mask
from transforms.embeddings import mask_embeddings

SIZE = (96, 192)


def road_scene(seed: int) -> np.ndarray:
    """A ``[H, W, 3]`` uint8 RGB road scene with a few odd objects on the road."""
    rng = np.random.default_rng(seed)
    height, width = SIZE
    image = np.empty((height, width, 3), np.uint8)
    image[: height // 2] = (135, 180, 235)
    image[height // 2 :] = (85, 85, 90)
    for _ in range(3):
        x, y = int(rng.integers(20, width - 20)), int(rng.integers(height // 2 + 8, height - 8))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.circle(image, (x, y), int(rng.integers(4, 10)), color, -1)
    return image


def as_batch(*images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def models() -> tuple[torch.nn.Module, SamPrompter]:
    # Untrained: U would sit near -Q/2 with no candidate pixel (see favour_no_object).
    segmenter = favour_no_object(
        build_mask2former(Mask2FormerConfig(format="random", architecture="tiny_1dl"))
    )
    sam = build_sam(SamConfig(model_type="vit_tiny", seed=0))
    return segmenter, SamPrompter(sam)


def make_step(models, ignore: torch.Tensor | None = None, **method) -> UGainS:
    segmenter, prompter = models
    config = MethodConfig(reference_size=SIZE, num_points=12, **method)
    return UGainS(segmenter, prompter, config, ignore=ignore)


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    return as_batch(road_scene(0), road_scene(1))


@pytest.fixture(scope="module")
def results(models, frames) -> list[FrameResult]:
    return make_step(models)(frames)


def test_outputs_have_the_documented_shapes_and_dtypes(results):
    assert len(results) == 2
    for result in results:
        m = result.num_instances
        assert result.semantic.shape == SIZE
        assert result.semantic.dtype == torch.uint8
        assert int(result.semantic.max()) < 19
        assert result.anomaly_score.shape == SIZE
        assert result.anomaly_score.dtype == torch.float32
        assert result.fused_score.shape == SIZE
        assert result.fused_score.dtype == torch.float32
        assert result.masks.shape == (m, *SIZE)
        assert result.masks.dtype == torch.bool
        assert result.scores.shape == (m,)
        assert result.scores.dtype == torch.float32
        assert result.sam_iou.shape == (m,)
        assert result.sam_iou.dtype == torch.float32
        assert result.points.shape == (m, 2)
        assert result.points.dtype == torch.int64
        assert result.prompt_points.shape == (12, 2)
        assert result.embeddings.shape == (m, 256)
        assert result.embeddings.dtype == torch.float32
        assert not result.gated
        assert {"mask2former", "score", "sampling", "sam_encoder", "sam_decoder"} <= set(
            result.timings
        )
    assert sum(r.num_instances for r in results) > 0, "the calibrated models must find masks"


def test_anomaly_score_is_the_negative_sum_in_its_range(results):
    for result in results:
        assert float(result.anomaly_score.max()) <= 0.0
        assert float(result.anomaly_score.min()) >= -100.0  # -Q


def test_prompts_are_distinct_candidate_pixels(results):
    for result in results:
        u = result.anomaly_score
        threshold = -0.15 if bool((u >= -0.15).any()) else -15.0
        xs, ys = result.prompt_points[:, 0], result.prompt_points[:, 1]
        assert bool((u[ys, xs] >= threshold).all())
        assert len({tuple(p) for p in result.prompt_points.tolist()}) == len(result.prompt_points)
        # Every kept instance came from one of the frame's prompts.
        prompts = {tuple(p) for p in result.prompt_points.tolist()}
        assert all(tuple(p) in prompts for p in result.points.tolist())


def test_instance_score_is_the_mean_anomaly_inside_its_mask_in_descending_order(results):
    for result in results:
        for mask, score in zip(result.masks, result.scores, strict=True):
            expected = -1.0 if not mask.any() else float(result.anomaly_score[mask].double().mean())
            assert float(score) == pytest.approx(expected, abs=1e-5)
        assert result.scores.tolist() == sorted(result.scores.tolist(), reverse=True)


def test_no_two_kept_masks_overlap_above_the_nms_threshold(results):
    for result in results:
        masks = result.masks
        for i in range(len(masks)):
            for j in range(i + 1, len(masks)):
                inter = int((masks[i] & masks[j]).sum())
                union = int((masks[i] | masks[j]).sum())
                assert union == 0 or inter / union <= 0.7


def test_fused_score_is_the_instance_map_plus_the_anomaly_score(results):
    for result in results:
        instance = torch.zeros(SIZE, dtype=torch.float64)
        for mask, score in zip(result.masks, result.scores, strict=True):
            instance += mask.double() * float(score)
        instance[instance == 0] = -1.0
        expected = instance + result.anomaly_score.double()
        torch.testing.assert_close(result.fused_score.double(), expected, atol=1e-5, rtol=0)


def test_the_same_frames_give_the_same_results(models, frames, results):
    again = make_step(models)(frames)
    for first, second in zip(results, again, strict=True):
        assert torch.equal(first.masks, second.masks)
        assert torch.equal(first.scores, second.scores)
        assert torch.equal(first.fused_score, second.fused_score)


def test_ignored_pixels_get_no_prompt_and_no_mask_covering_100_of_them(models, frames):
    ignore = torch.zeros(SIZE, dtype=torch.bool)
    ignore[SIZE[0] * 3 // 4 :] = True  # the car hood: bottom quarter of the frame
    for result in make_step(models, ignore=ignore)(frames):
        xs, ys = result.prompt_points[:, 0], result.prompt_points[:, 1]
        assert not bool(ignore[ys, xs].any())
        for mask in result.masks:
            assert int((mask & ignore).sum()) < 100


def test_frame_gating_skips_sam_on_frames_without_candidates(models, frames):
    # U <= 0 everywhere, so a threshold of 0.5 leaves no candidate pixel.
    step = make_step(models, candidate_threshold=0.5, frame_gating=True)
    for result in step(frames):
        assert result.gated
        assert result.num_instances == 0
        assert result.prompt_points.shape == (0, 2)
        assert "sam_encoder" not in result.timings
        torch.testing.assert_close(result.fused_score, result.anomaly_score - 1.0)


def test_each_kept_mask_gets_the_sam_features_pooled_inside_it(models, frames, results):
    _, prompter = models
    features = prompter.encode(frames)
    for index, result in enumerate(results):
        want = mask_embeddings(features[index], result.masks, prompter.image_size)
        torch.testing.assert_close(result.embeddings, want)
        torch.testing.assert_close(result.embeddings.norm(dim=1), torch.ones(result.num_instances))


def test_the_evaluation_can_skip_the_embeddings(models, frames, results):
    step = make_step(models)
    (plain,) = step.run_methods(frames, [step.method], embed=False)
    for got, full in zip(plain, results, strict=True):
        assert got.embeddings is None
        assert torch.equal(got.masks, full.masks)


def test_rba_mode_gives_pixel_scores_only(models, frames, results):
    segmenter, _ = models
    step = UGainS(segmenter, None, MethodConfig(mode="rba", reference_size=SIZE))
    for result, full in zip(step(frames), results, strict=True):
        assert result.num_instances == 0
        assert torch.equal(result.fused_score, result.anomaly_score)
        assert torch.equal(result.anomaly_score, full.anomaly_score)
        assert result.embeddings is None  # no SAM, no embedding


def test_dense_grid_mode_prompts_sam_on_a_grid(models, frames):
    result = make_step(models, mode="dense_grid", grid_size=4)(frames[:1])[0]
    assert result.prompt_points.shape == (16, 2)
    assert sorted(set(result.prompt_points[:, 0].tolist())) == [24, 72, 120, 168]
    assert sorted(set(result.prompt_points[:, 1].tolist())) == [12, 36, 60, 84]


def test_oracle_mode_prompts_one_point_per_ground_truth_instance(models, frames):
    ids = torch.zeros(SIZE, dtype=torch.int64)
    ids[10:21, 10:31] = 1  # centre (20, 15)
    ids[60:71, 100:111] = 2  # centre (105, 65)
    step = make_step(models, mode="oracle")
    result = step(frames[:1], instance_ids=[ids])[0]
    assert result.prompt_points.tolist() == [[20, 15], [105, 65]]
    with pytest.raises(ValueError, match="instance_ids"):
        step(frames[:1])


def test_several_methods_share_one_encoder_pass_and_each_equals_its_own_step(
    models, frames, monkeypatch
):
    segmenter, prompter = models
    ids = torch.zeros(SIZE, dtype=torch.int64)
    ids[10:21, 10:31] = 1
    instance_ids = [ids, ids]
    methods = [
        MethodConfig(reference_size=SIZE, mode="rba"),
        MethodConfig(reference_size=SIZE, num_points=12),
        MethodConfig(reference_size=SIZE, num_points=5, sampler="random"),
        MethodConfig(reference_size=SIZE, mode="dense_grid", grid_size=4),
        MethodConfig(reference_size=SIZE, mode="oracle"),
    ]
    separate = [UGainS(segmenter, prompter, method)(frames, instance_ids) for method in methods]
    # Count the real encoder passes of the shared call.
    calls = {"mask2former": 0, "sam_encoder": 0}
    hook = segmenter.register_forward_hook(
        lambda *_: calls.__setitem__("mask2former", 1 + calls["mask2former"])
    )
    encode = prompter.encode

    def counted_encode(images: torch.Tensor) -> torch.Tensor:
        calls["sam_encoder"] += 1
        return encode(images)

    monkeypatch.setattr(prompter, "encode", counted_encode)
    try:
        shared = make_step(models).run_methods(frames, methods, instance_ids)
    finally:
        hook.remove()

    assert calls == {"mask2former": 1, "sam_encoder": 1}
    assert len(shared) == len(methods)
    for ours, theirs in zip(shared, separate, strict=True):
        for got, expected in zip(ours, theirs, strict=True):
            for name in ("semantic", "anomaly_score", "fused_score", "masks", "scores"):
                assert torch.equal(getattr(got, name), getattr(expected, name)), name
            for name in ("sam_iou", "points", "prompt_points"):
                assert torch.equal(getattr(got, name), getattr(expected, name)), name
            if expected.embeddings is None:  # rba: no SAM
                assert got.embeddings is None
            else:
                assert torch.equal(got.embeddings, expected.embeddings)
            assert got.gated == expected.gated
    assert shared[0][0].num_instances == 0  # rba: pixel scores only
    assert shared[3][0].prompt_points.shape == (16, 2)  # the 4x4 grid


def test_methods_sharing_a_pass_must_share_the_pixel_score(models, frames):
    step = make_step(models)
    with pytest.raises(ValueError, match="method score 'max_softmax' differs"):
        step.run_methods(frames, [MethodConfig(reference_size=SIZE, score="max_softmax")])


def test_images_must_be_uint8_rgb_batches(models):
    step = make_step(models)
    with pytest.raises(ValueError, match="uint8"):
        step(torch.zeros((1, 3, *SIZE)))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        step(torch.zeros((3, *SIZE), dtype=torch.uint8))


@pytest.mark.parametrize("suffix", [".png", ".npy", ".pt"])
def test_ignore_masks_load_from_images_arrays_and_tensors(tmp_path, suffix):
    mask = np.zeros(SIZE, dtype=bool)
    mask[80:] = True
    path = tmp_path / f"hood{suffix}"
    if suffix == ".png":
        cv2.imwrite(str(path), mask.astype(np.uint8) * 255)
    elif suffix == ".npy":
        np.save(path, mask)
    else:
        torch.save(torch.from_numpy(mask), path)
    assert torch.equal(load_ignore_mask(path), torch.from_numpy(mask))


def test_unreadable_ignore_masks_are_named_in_the_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_ignore_mask(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"bad\.png"):
        load_ignore_mask(bad)


def test_build_ugains_loads_every_model_named_by_the_config(tmp_path):
    mask = np.zeros(SIZE, dtype=np.uint8)
    mask[90:] = 255
    cv2.imwrite(str(tmp_path / "hood.png"), mask)
    config = ModelsConfig(
        mask2former=Mask2FormerConfig(format="random", architecture="tiny_1dl"),
        sam=SamConfig(model_type="vit_tiny"),
        method=MethodConfig(reference_size=SIZE, ignore_mask=str(tmp_path / "hood.png")),
        device="cpu",
    )
    step = build_ugains(config)
    assert step.device == torch.device("cpu")
    assert step.model_size == SIZE
    assert int(step.ignore.sum()) == 6 * SIZE[1]
