"""Specification of the SAM training loop: points, targets, losses, determinism and resume."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch

from models.config import SamConfig
from models.sam import build_sam, load_sam_checkpoint
from models.training.sam import SamTrainingConfig, export_sam_weights, train_sam
from models.training.sam_losses import (
    batch_loss,
    low_res_targets,
    sam_losses,
    sample_points,
    step_generator,
)


def _data(count: int = 3, height: int = 32, width: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` frames of two coloured rectangles on a background, with their segments."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 40, (count, 3, height, width), dtype=torch.uint8, generator=generator)
    segments = torch.zeros((count, height, width), dtype=torch.int64)
    for i in range(count):
        top, left = 4 + i, 6 + 3 * i
        images[i, :, top : top + 10, left : left + 16] = torch.tensor([200, 30, 30])[:, None, None]
        segments[i, top : top + 10, left : left + 16] = 1
        images[i, :, 20:30, 40:60] = torch.tensor([30, 200, 90])[:, None, None]
        segments[i, 20:30, 40:60] = 2
        segments[i, :2] = -1  # a void strip
    return images, segments


def _batches(images: torch.Tensor, segments: torch.Tensor, batch: int = 2):
    def batches(start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        step = start
        while True:
            index = torch.arange(step * batch, step * batch + batch) % images.shape[0]
            yield images[index], segments[index]
            step += 1

    return batches


def test_points_are_inside_segments_drawn_uniformly_over_segments() -> None:
    segments = torch.full((40, 50), -1, dtype=torch.int64)
    segments[:30] = 7  # a large segment
    segments[35:37, 10:12] = 3  # a 4-pixel one
    points, ids = sample_points(segments, 4000, torch.Generator().manual_seed(1))
    assert points.shape == (4000, 2)
    assert points.dtype == torch.int64
    assert torch.equal(segments[points[:, 1], points[:, 0]], ids)
    share = (ids == 3).float().mean().item()
    assert 0.45 < share < 0.55  # segments are picked uniformly, not by area
    # Every pixel of the small segment is reached.
    small = points[ids == 3]
    assert len({tuple(p) for p in small.tolist()}) == 4
    # power 1 = uniform over pixels; 0.5 = in between (sqrt(4) : sqrt(1500) = 2 : 38.7).
    _, by_area = sample_points(segments, 4000, torch.Generator().manual_seed(1), power=1.0)
    assert (by_area == 3).float().mean().item() < 0.01
    _, by_sqrt = sample_points(segments, 4000, torch.Generator().manual_seed(1), power=0.5)
    assert 0.03 < (by_sqrt == 3).float().mean().item() < 0.07
    empty = sample_points(torch.full((4, 4), -1), 5, torch.Generator())
    assert empty[0].shape == (0, 2)
    assert empty[1].shape == (0,)


def test_segments_above_the_size_limit_get_no_prompt() -> None:
    segments = torch.zeros((40, 40), dtype=torch.int64)  # segment 0: the "road", 1596 px
    segments[:2, :2] = 3  # a 4-pixel object
    _, ids = sample_points(segments, 500, torch.Generator().manual_seed(1), max_fraction=0.05)
    assert set(ids.tolist()) == {3}
    none = sample_points(segments.fill_(0), 5, torch.Generator(), max_fraction=0.05)
    assert none[0].shape == (0, 2)


def test_low_res_targets_follow_the_prompter_geometry() -> None:
    # A 256x512 frame fills the top half of the 512 input unresized; the low-res grid is 128.
    segments = torch.zeros((256, 512), dtype=torch.int64)
    segments[8:24, 16:64] = 5
    segments[:4] = -1
    targets, valid = low_res_targets(segments, torch.tensor([5, 0, 5]), 512)
    assert targets.shape == (3, 128, 128)
    assert valid.shape == (128, 128)
    expected = torch.zeros((128, 128))
    expected[2:6, 4:16] = 1
    assert torch.equal(targets[0], expected)
    assert torch.equal(targets[2], expected)
    assert targets[1, 1:64].sum() == 64 * 128 - 4 * 12 - 128  # row 0 is void
    assert valid[1:64].all()
    assert not valid[0].any()  # void
    assert not valid[64:].any()  # padding
    # A 128x256 frame is resized 2x first: the same geometry.
    small = segments[::2, ::2]
    targets_small, valid_small = low_res_targets(small, torch.tensor([5]), 512)
    assert torch.equal(targets_small[0], expected)
    assert torch.equal(valid_small, valid)


def test_losses_pick_the_best_mask_and_measure_its_iou() -> None:
    targets = torch.zeros((2, 8, 8))
    targets[:, 2:6, 2:6] = 1
    valid = torch.ones((8, 8), dtype=torch.bool)
    logits = torch.full((2, 3, 8, 8), -10.0)
    logits[0, 1] = targets[0] * 20 - 10  # prompt 0: mask 1 is perfect
    logits[1, 2, 2:4, 2:6] = 10.0  # prompt 1: mask 2 is the top half of the object
    predicted = torch.tensor([[0.0, 1.0, 0.0], [0.9, 0.0, 0.1]])
    mask_loss, iou_loss, best_iou, selected_iou, best = sam_losses(
        logits, predicted, targets, valid, SamTrainingConfig()
    )
    assert best.tolist() == [1, 2]
    assert best_iou[0].item() == pytest.approx(1.0)
    assert best_iou[1].item() == pytest.approx(0.5)
    assert selected_iou.tolist() == pytest.approx([1.0, 0.0])
    assert mask_loss[0].item() < 0.01
    assert iou_loss[0].item() == pytest.approx(0.0, abs=1e-6)
    assert iou_loss[1].item() == pytest.approx((0.9**2 + 0 + (0.1 - 0.5) ** 2) / 3)


def test_batch_loss_runs_and_has_gradients() -> None:
    torch.set_num_threads(1)
    sam = build_sam(SamConfig(model_type="vit_tiny_512", seed=0)).train()
    images, segments = _data(2)
    config = SamTrainingConfig(points_per_image=3)
    result = batch_loss(sam, images, segments, config, step_generator(0, 0))
    assert result.prompts == 6
    assert math.isfinite(result.loss.item())
    assert 0.0 <= result.best_iou <= 1.0
    result.loss.backward()
    assert sam.mask_decoder.output_upscaling[0].weight.grad is not None
    assert sam.image_encoder.patch_embed.proj.weight.grad is not None
    with pytest.raises(ValueError, match="uint8"):
        batch_loss(sam, images.float(), segments, config, step_generator(0, 0))


def _train(run_dir, steps_before_kill: int | None = None, seed: int = 0) -> dict:
    torch.set_num_threads(1)
    sam = build_sam(SamConfig(model_type="vit_tiny_512", seed=seed))
    images, segments = _data()
    config = SamTrainingConfig(
        steps=4, points_per_image=2, warmup_steps=1, checkpoint_every=2, seed=seed
    )
    batches = _batches(images, segments)
    if steps_before_kill is not None:

        def killed(start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            stream = batches(start)
            for _ in range(steps_before_kill):
                yield next(stream)
            raise KeyboardInterrupt  # the process dies here

        with pytest.raises(KeyboardInterrupt):
            train_sam(sam, killed, config, run_dir, progress=False)
        sam = build_sam(SamConfig(model_type="vit_tiny_512", seed=seed))
    result = train_sam(sam, batches, config, run_dir, progress=False)
    assert result.steps == 4
    assert not sam.training
    return {k: v.clone() for k, v in sam.state_dict().items()}


def test_same_seed_same_weights_and_resume_equals_an_uninterrupted_run(tmp_path) -> None:
    straight = _train(tmp_path / "straight")
    resumed = _train(tmp_path / "resumed", steps_before_kill=3)  # killed after 3, saved at 2
    initial = build_sam(SamConfig(model_type="vit_tiny_512", seed=0)).state_dict()
    assert any(not torch.equal(straight[k], initial[k]) for k in straight)  # it trained
    for key, value in straight.items():
        assert torch.equal(value, resumed[key]), key
    # A finished run resumes to nothing and keeps its weights.
    assert _train(tmp_path / "straight")["image_encoder.pos_embed"].equal(
        straight["image_encoder.pos_embed"]
    )


def test_resume_under_another_recipe_is_refused(tmp_path) -> None:
    _train(tmp_path / "run")
    sam = build_sam(SamConfig(model_type="vit_tiny_512", seed=0))
    images, segments = _data()
    config = SamTrainingConfig(steps=4, points_per_image=2, warmup_steps=1, lr=1e-3)
    with pytest.raises(ValueError, match=r"another recipe.*lr"):
        train_sam(sam, _batches(images, segments), config, tmp_path / "run", progress=False)


def test_export_writes_float16_weights_the_loader_accepts(tmp_path) -> None:
    sam = build_sam(SamConfig(model_type="vit_tiny_512", seed=4))
    path = export_sam_weights(sam, tmp_path / "out" / "sam.pth")
    state = torch.load(path, weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    target = build_sam(SamConfig(model_type="vit_tiny_512", seed=0))
    load_sam_checkpoint(target, path)
    for key, value in target.state_dict().items():
        assert value.dtype == torch.float32
        assert torch.equal(value, sam.state_dict()[key].half().float()), key
    via_config = build_sam(SamConfig(model_type="vit_tiny_512", checkpoint=str(path)))
    assert torch.equal(via_config.image_encoder.pos_embed, target.image_encoder.pos_embed)


def test_pasted_objects_are_new_segments_over_what_they_cover_and_repeat_with_the_seed() -> None:
    from models.training.paste import paste_random_objects

    images = torch.full((2, 3, 64, 128), 100, dtype=torch.uint8)
    segments = torch.zeros((2, 64, 128), dtype=torch.int64)
    segments[:, 40:] = 1
    first = paste_random_objects(images, segments, 5, torch.Generator().manual_seed(3))
    again = paste_random_objects(images, segments, 5, torch.Generator().manual_seed(3))
    assert torch.equal(first[0], again[0])
    assert torch.equal(first[1], again[1])
    pasted_images, pasted = first
    for b in range(2):
        ids = pasted[b].unique().tolist()
        assert ids[:2] == [0, 1]
        assert 2 <= len(ids) - 2 <= 5  # new ids above the frame's, one per visible shape
        changed = pasted[b] >= 2
        assert (pasted_images[b][:, ~changed] == 100).all()  # nothing outside the shapes
    assert paste_random_objects(images, segments, 0, torch.Generator()) == (images, segments)
    assert torch.equal(images, torch.full((2, 3, 64, 128), 100, dtype=torch.uint8))  # not in place


def test_pasted_shadows_only_darken_what_lies_outside_the_shapes() -> None:
    from models.training.paste import paste_random_objects

    images = torch.full((2, 3, 64, 128), 100, dtype=torch.uint8)
    segments = torch.zeros((2, 64, 128), dtype=torch.int64)
    pasted_images, pasted = paste_random_objects(
        images, segments, 8, torch.Generator().manual_seed(5), min_radius=5, shadows=True
    )
    outside = (pasted == 0)[:, None].expand_as(pasted_images)
    shaded = pasted_images[outside]
    assert (shaded <= 100).all()  # a shadow darkens, and is never part of a segment
    assert (shaded < 100).any()  # some shapes cast one
    assert (shaded >= 35).all()  # at most to 35 % of the ground's brightness


def _pool() -> list[tuple[torch.Tensor, torch.Tensor]]:
    crop = torch.full((3, 6, 8), 250, dtype=torch.uint8)
    mask = torch.zeros(6, 8, dtype=torch.bool)
    mask[1:5, 2:7] = True
    return [(crop, mask)]


def test_pool_objects_are_pasted_as_new_segments_one_to_n_per_frame() -> None:
    from models.training.paste import paste_pool_sample

    image = torch.zeros((3, 32, 64), dtype=torch.uint8)
    segments = torch.zeros((32, 64), dtype=torch.int64)
    counts = set()
    for seed in range(20):
        pasted, ids = paste_pool_sample(
            image, segments, _pool(), 3, torch.Generator().manual_seed(seed)
        )
        new = sorted(set(ids.unique().tolist()) - {0})
        counts.add(len(new))
        assert new == list(range(1, len(new) + 1))  # fresh ids above the frame's largest
        assert (pasted[:, ids > 0] == 250).all()
        assert (pasted[:, ids == 0] == 0).all()
    assert counts <= {1, 2, 3}
    assert len(counts) > 1
    for pool, at_most in (((), 3), (_pool(), 0)):
        same = paste_pool_sample(image, segments, pool, at_most, torch.Generator())
        assert same[0] is image
        assert same[1] is segments


def test_training_with_a_pool_prompts_its_objects_and_needs_the_pool(tmp_path, monkeypatch) -> None:
    torch.set_num_threads(1)
    sam = build_sam(SamConfig(model_type="vit_tiny_512", seed=0))
    images, segments = _data()
    config = SamTrainingConfig(steps=2, points_per_image=2, warmup_steps=1, pool_objects=2)
    with pytest.raises(ValueError, match="needs a non-empty outlier_pool"):
        train_sam(sam, _batches(images, segments), config, tmp_path / "a", progress=False)
    before = {k: v.clone() for k, v in sam.state_dict().items()}
    result = train_sam(
        sam,
        _batches(images, segments),
        config,
        tmp_path / "b",
        progress=False,
        outlier_pool=_pool(),
    )
    assert result.steps == 2
    assert any(not torch.equal(before[k], v) for k, v in sam.state_dict().items())
    # The pool's objects are pasted before the points are drawn: they are segments to prompt.
    from models.training import sam_losses as module

    seen: list[torch.Tensor] = []

    def spy(frame_segments: torch.Tensor, *args: object) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append(frame_segments.clone())
        return sample_points(frame_segments, *args)

    monkeypatch.setattr(module, "sample_points", spy)
    sam.train()
    config = SamTrainingConfig(points_per_image=8, pool_objects=3, hflip=False)
    batch_loss(sam, images[:1], segments[:1], config, step_generator(0, 0), _pool())
    assert seen[0].max() > segments[0].max()  # new ids: the pasted objects
    pasted = seen[0] > segments[0].max()
    assert pasted.sum() >= 20  # at least one 4x5 object
    with pytest.raises(ValueError, match="pool_objects must be >= 0"):
        SamTrainingConfig(pool_objects=-1)


def test_a_run_saved_before_a_setting_existed_resumes_at_its_default(tmp_path) -> None:
    _train(tmp_path / "run")
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=False)
    for key in ("pool_objects", "pool_digest"):  # as written before the settings were added
        del state["extra"]["config"][key]
    torch.save(state, tmp_path / "run" / "state.pt")
    assert _train(tmp_path / "run")["image_encoder.pos_embed"].equal(
        state["model"]["image_encoder.pos_embed"]
    )
