"""models.training.mask2former and mask2former_targets: targets, the RbA outlier loss,
freezing, resume, fp16 export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.config import Mask2FormerConfig
from models.mask2former import (
    Mask2FormerMultiLevelForUniversalSegmentation,
    architecture_config,
    build_mask2former,
)
from models.training.mask2former import (
    OE_TRAINABLE_PREFIXES,
    TrainConfig,
    export_huggingface,
    train_mask2former,
)
from models.training.mask2former_targets import (
    OUTLIER_ID,
    augment,
    outlier_hinge_map,
    rba_outlier_loss,
    semantic_targets,
)

SIZE = (64, 128)


def _model(seed: int = 0) -> Mask2FormerMultiLevelForUniversalSegmentation:
    config = architecture_config("tiny_1dl")
    config.train_num_points = 256
    torch.manual_seed(seed)
    return Mask2FormerMultiLevelForUniversalSegmentation(config)


def _frames(count: int, outliers: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(7 + outliers)
    frames = []
    for i in range(count):
        image = torch.randint(0, 256, (3, *SIZE), dtype=torch.uint8, generator=generator)
        labels = torch.full(SIZE, 0, dtype=torch.int64)
        labels[: SIZE[0] // 2] = 10  # sky
        labels[:, : 20 + i] = 2  # building
        labels[-4:] = 255
        if outliers:
            labels[40:52, 60:80] = OUTLIER_ID
        frames.append((image, labels))
    return frames


def test_semantic_targets_exact() -> None:
    labels = torch.tensor(
        [
            [[0, 0, 5], [255, 18, 5]],
            [[254, 255, 255], [255, 255, 255]],  # nothing in-distribution
        ]
    )
    masks, classes = semantic_targets(labels, num_classes=19)
    assert classes[0].tolist() == [0, 5, 18]
    assert classes[0].dtype == torch.int64
    assert masks[0].dtype == torch.float32
    expected = torch.tensor(
        [[[1, 1, 0], [0, 0, 0]], [[0, 0, 1], [0, 0, 1]], [[0, 0, 0], [0, 1, 0]]],
        dtype=torch.float32,
    )
    assert torch.equal(masks[0], expected)
    assert classes[1].shape == (0,)
    assert masks[1].shape == (0, 2, 3)


def test_outlier_hinge_zero_and_positive_exactly_where_expected() -> None:
    labels = torch.tensor([[[0, 3, OUTLIER_ID, OUTLIER_ID, 255, 253]]])
    scores = torch.tensor([[[-1.0, -0.2, -0.5, 0.0, 0.0, 0.0]]])
    hinge, inlier, outlier = outlier_hinge_map(
        scores, labels, inlier_threshold=-0.5, outlier_threshold=-0.1
    )
    # inliers pay above -0.5 only, outliers below -0.1 only; void / other ids never pay
    assert torch.allclose(hinge, torch.tensor([[[0.0, 0.09, 0.16, 0.0, 0.0, 0.0]]]))
    assert inlier.tolist() == [[[True, True, False, False, False, False]]]
    assert outlier.tolist() == [[[False, False, True, True, False, False]]]
    loss = rba_outlier_loss(scores, labels, inlier_threshold=-0.5, outlier_threshold=-0.1)
    assert loss.item() == pytest.approx(0.5 * (0.09 / 2 + 0.16 / 2))
    # RbA's released thresholds (0, 5) on a tanh score in [-K, 0]: inliers never pay,
    # outliers always do
    hinge, _, _ = outlier_hinge_map(scores, labels)
    assert hinge[0, 0, :2].eq(0).all()
    assert hinge[0, 0, 2:4].gt(0).all()
    # no outlier pixel: the mean inlier hinge alone (no 0.5)
    no_outlier = rba_outlier_loss(scores[..., :2], labels[..., :2], inlier_threshold=-0.5)
    assert no_outlier.item() == pytest.approx(0.09 / 2)


def test_augment_keeps_pixels_and_labels_aligned() -> None:
    image = torch.arange(SIZE[0] * SIZE[1], dtype=torch.int64).view(SIZE) % 251
    image = image.to(torch.uint8).expand(3, *SIZE).contiguous()
    labels = image[0].long() % 19
    generator = torch.Generator().manual_seed(0)
    for _ in range(4):  # scale 1: crop is the frame, maybe flipped; labels follow pixels
        pixels, out = augment(image, labels, SIZE, generator, scale_range=(1.0, 1.0))
        assert pixels.shape == (3, *SIZE)
        assert out.shape == SIZE
        assert torch.equal(pixels[0].long() % 19, out)
    pixels, out = augment(image, labels, SIZE, generator, scale_range=(0.5, 0.5))
    assert out[SIZE[0] // 2 :].eq(255).all()  # padding is void


def test_same_seed_same_weights_and_resume_equals_uninterrupted(tmp_path: Path) -> None:
    frames = _frames(3, outliers=False)
    config = TrainConfig(stage="semantic", steps=3, batch_size=2, size=SIZE, checkpoint_every=1)
    whole = _model()
    result = train_mask2former(whole, [frames], config, tmp_path / "whole", progress=False)
    assert (result.start_step, result.step, len(result.losses)) == (0, 3, 3)

    killed = _model()
    train_mask2former(killed, [frames], config, tmp_path / "resumed", stop_after=2, progress=False)
    resumed = _model(seed=1)  # weights come from the checkpoint
    result = train_mask2former(resumed, [frames], config, tmp_path / "resumed", progress=False)
    assert (result.start_step, result.step) == (2, 3)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    other = TrainConfig(stage="semantic", steps=3, batch_size=1, size=SIZE)
    with pytest.raises(ValueError, match=r"state\.pt"):
        train_mask2former(_model(), [frames], other, tmp_path / "whole", progress=False)


def test_outlier_exposure_trains_only_rba_heads(tmp_path: Path) -> None:
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(stage="oe", steps=2, batch_size=2, size=SIZE, lr=1e-3, ood_prob=0.5)
    sources = [_frames(2, outliers=True), _frames(2, outliers=False)]
    result = train_mask2former(model, sources, config, tmp_path, progress=False)
    assert all(torch.isfinite(torch.tensor(result.losses)))
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed
    assert all(k.startswith(OE_TRAINABLE_PREFIXES) for k in changed)
    assert any(k.startswith("class_predictor.") for k in changed)
    assert any("mask_embedder" in k for k in changed)


def test_outlier_exposure_on_decoders_trains_both_decoders_but_not_the_backbone(
    tmp_path: Path,
) -> None:
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(stage="oe", steps=2, batch_size=2, size=SIZE, oe_trainable="decoders")
    sources = [_frames(2, outliers=True), _frames(2, outliers=False)]
    train_mask2former(model, sources, config, tmp_path, progress=False)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert not any(k.startswith("model.pixel_level_module.encoder.") for k in changed)
    assert any(k.startswith("model.pixel_level_module.decoder.") for k in changed)
    assert any(k.startswith("model.transformer_module.decoder.layers.") for k in changed)
    assert any(k.startswith("class_predictor.") for k in changed)


def test_fp16_export_loads_in_float32_through_the_loader(tmp_path: Path) -> None:
    model = _model().eval()
    directory = export_huggingface(model, tmp_path / "hf")
    assert next(model.parameters()).dtype == torch.float32  # the original is untouched
    from safetensors.torch import load_file

    stored = load_file(str(directory / "model.safetensors"))
    assert {t.dtype for t in stored.values() if t.is_floating_point()} == {torch.float16}
    segmenter = build_mask2former(
        Mask2FormerConfig(format="huggingface", checkpoint=str(directory), architecture="tiny_1dl")
    )
    assert {p.dtype for p in segmenter.parameters()} == {torch.float32}
    images = torch.randint(0, 256, (1, 3, *SIZE), dtype=torch.uint8)
    reference = type(segmenter)(model)
    with torch.no_grad():
        cls, masks = segmenter(images)
        ref_cls, ref_masks = reference(images)
    assert cls.dtype == torch.float32
    assert torch.allclose(cls, ref_cls, atol=0.05)
    assert torch.allclose(masks, ref_masks, atol=0.05)


def test_pasted_crops_cover_their_mask_only_with_fresh_ids_and_repeat_with_the_seed() -> None:
    from models.training.paste import paste_masked_crops

    image = torch.full((3, 64, 128), 100, dtype=torch.uint8)
    segments = torch.zeros(64, 128, dtype=torch.int64)
    crop = torch.full((3, 10, 12), 7, dtype=torch.uint8)
    mask = torch.zeros(10, 12, dtype=torch.bool)
    mask[2:8, 3:9] = True  # 36 px
    objects = [(crop, mask), (crop, mask)]
    first = paste_masked_crops(image, segments, objects, torch.Generator().manual_seed(1))
    again = paste_masked_crops(image, segments, objects, torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    pasted_image, pasted = first
    assert set(pasted.unique().tolist()) <= {0, 1, 2}
    assert (pasted > 0).any()
    covered = pasted > 0
    assert (pasted_image[:, covered] == 7).all()  # the crop's pixels exactly where it lies
    assert (pasted_image[:, ~covered] == 100).all()  # nothing outside the mask
    # Scale jitter 0.6-1.4 of 36 px, two objects (the later may cover the earlier).
    assert 0 < int(covered.sum()) <= 2 * 36 * 1.4**2 + 20
    assert (pasted.nonzero()[:, 0] >= 64 // 3 - 14).all()  # the lower two thirds (the road)


def test_paste_outliers_labels_shapes_and_pool_objects_as_outliers() -> None:
    from models.training.mask2former_targets import paste_outliers

    image = torch.full((3, 64, 128), 100, dtype=torch.uint8)
    labels = torch.zeros(64, 128, dtype=torch.int64)
    crop = torch.full((3, 8, 8), 7, dtype=torch.uint8)
    pool = [(crop, torch.ones(8, 8, dtype=torch.bool))]
    none = paste_outliers(image, labels, torch.Generator().manual_seed(0))
    assert torch.equal(none[0], image)
    assert torch.equal(none[1], labels)
    for kwargs in ({"shapes": 3}, {"pool": pool, "pool_objects": 2}):
        pasted, out = paste_outliers(image, labels, torch.Generator().manual_seed(0), **kwargs)
        changed = (pasted != image).any(dim=0)
        assert (out == OUTLIER_ID).any()
        assert set(out.unique().tolist()) == {0, OUTLIER_ID}
        assert not (changed & (out != OUTLIER_ID)).any()  # every changed pixel is an outlier


def test_outlier_exposure_with_a_pool_needs_the_pool_and_trains(tmp_path: Path) -> None:
    config = TrainConfig(stage="oe", steps=2, batch_size=2, size=SIZE, pool_objects=2)
    sources = [_frames(2, outliers=True), _frames(2, outliers=False)]
    with pytest.raises(ValueError, match="outlier_pool"):
        train_mask2former(_model(), sources, config, tmp_path / "a", progress=False)
    crop = torch.randint(0, 256, (3, 12, 16), dtype=torch.uint8)
    pool = [(crop, torch.ones(12, 16, dtype=torch.bool))]
    model = _model()
    result = train_mask2former(
        model, sources, config, tmp_path / "b", progress=False, outlier_pool=pool
    )
    assert result.step == 2
    assert all(torch.isfinite(torch.tensor(result.losses)))


def test_rejected_candidates_are_pasted_as_inliers_of_no_class_for_the_hinge_only() -> None:
    from models.training.mask2former_targets import (
        INLIER_ID,
        outlier_hinge_map,
        paste_outliers,
        semantic_targets,
    )

    image = torch.zeros((3, 32, 64), dtype=torch.uint8)
    labels = torch.full((32, 64), 3, dtype=torch.int64)
    rejected = [(torch.full((3, 8, 8), 90, dtype=torch.uint8), torch.ones(8, 8, dtype=torch.bool))]
    plain = paste_outliers(image, labels, torch.Generator().manual_seed(0))
    pasted, out = paste_outliers(
        image, labels, torch.Generator().manual_seed(0), rejected=rejected, rejected_objects=2
    )
    assert torch.equal(plain[1], labels)
    assert set(out.unique().tolist()) == {3, INLIER_ID}
    assert (pasted[:, out == INLIER_ID] == 90).all()
    # The class loss has no target there; the inlier hinge applies as on a known class.
    masks, classes = semantic_targets(out[None], num_classes=19)
    assert classes[0].tolist() == [3]
    assert bool((masks[0][0] == 0)[out == INLIER_ID].all())
    scores = torch.full((1, 32, 64), 2.0)
    hinge, inlier, outlier = outlier_hinge_map(scores, out[None], inlier_threshold=0.0)
    assert bool(inlier.all())
    assert not bool(outlier.any())
    assert torch.equal(hinge, torch.full_like(scores, 4.0))


def test_pool_rejected_needs_rejected_candidates(tmp_path: Path) -> None:
    config = TrainConfig(stage="oe", steps=1, batch_size=1, size=SIZE, pool_rejected=1)
    sources = [_frames(1, outliers=True), _frames(1, outliers=False)]
    with pytest.raises(ValueError, match="rejected_pool"):
        train_mask2former(_model(), sources, config, tmp_path / "a", progress=False)


def test_a_run_saved_before_a_setting_existed_resumes_at_its_default(tmp_path: Path) -> None:
    frames = _frames(2, outliers=False)
    config = TrainConfig(stage="semantic", steps=2, batch_size=1, size=SIZE, checkpoint_every=1)
    run = tmp_path / "run"
    train_mask2former(_model(), [frames], config, run, stop_after=1, progress=False)
    state = torch.load(run / "state.pt", weights_only=False)
    del state["extra"]["config"]["pool_rejected"]  # as written before the setting was added
    torch.save(state, run / "state.pt")
    result = train_mask2former(_model(), [frames], config, run, progress=False)
    assert (result.start_step, result.step) == (1, 2)
    changed = TrainConfig(stage="semantic", steps=2, batch_size=1, size=SIZE, pool_rejected=1)
    rejected = [(torch.zeros((3, 4, 4), dtype=torch.uint8), torch.ones(4, 4, dtype=torch.bool))]
    with pytest.raises(ValueError, match=r"state\.pt"):  # a different value is still refused
        train_mask2former(_model(), [frames], changed, run, progress=False, rejected_pool=rejected)
