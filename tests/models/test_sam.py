"""Specification of the SAM adapter: builder, strict loader, batched prompter and fast path.

The reference for every prompter result is segment_anything's own ``SamPredictor`` run one
point at a time. Random-init SAMs already give non-trivial masks (30-50% of the frame, varying
with the prompt), which the tests check, so no weight needs perturbing for the masks; the
relative-position tables are zero at initialisation, so the attention tests fill them with
random values to make the bias part of the comparison.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor, sam_model_registry
from segment_anything.modeling.image_encoder import Attention, Block
from segment_anything.utils.transforms import ResizeLongestSide

from models import sam as sam_module
from models.config import SamConfig
from models.errors import CheckpointError
from models.sam import (
    SAM_ARCHITECTURES,
    SamPrompter,
    SdpaAttention,
    build_sam,
    build_sam_model,
    preprocess_frames,
    resized_size,
    use_sdpa_attention,
)
from models.sam import prompter as sam_prompter


def _frame(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A seeded uint8 RGB frame ``[1, 3, H, W]`` of smooth blobs plus noise."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand((1, 3, 4, 8), generator=generator) * 255
    smooth = torch.nn.functional.interpolate(coarse, (height, width), mode="bilinear")
    noise = torch.randint(-20, 21, (1, 3, height, width), generator=generator)
    return (smooth + noise).clamp(0, 255).to(torch.uint8)


def _points(height: int, width: int, count: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(0, width, (count,), generator=generator)
    y = torch.randint(0, height, (count,), generator=generator)
    return torch.stack([x, y], dim=1)


def _reference(
    sam, image: torch.Tensor, points: torch.Tensor, embedding: torch.Tensor | None = None
) -> tuple[torch.Tensor, np.ndarray]:
    """SamPredictor, one positive point per call, best of three masks by predicted IoU.

    ``embedding`` (``[256, 64, 64]``) skips SamPredictor's own encoder run by setting the state
    ``set_torch_image`` would set: for vit_b, whose CPU encoder pass takes tens of seconds,
    when the preprocessing is known to be bit-identical (frames whose resize scale is 2).
    """
    predictor = SamPredictor(sam)
    if embedding is None:
        predictor.set_image(image[0].permute(1, 2, 0).numpy())
    else:
        predictor.original_size = tuple(image.shape[-2:])
        predictor.input_size = resized_size(*image.shape[-2:], sam.image_encoder.img_size)
        predictor.features = embedding[None]
        predictor.is_image_set = True
    masks, ious = [], []
    for point in points.numpy():
        multi, scores, _ = predictor.predict(point[None], np.array([1]), multimask_output=True)
        best = int(np.argmax(scores))
        masks.append(torch.from_numpy(multi[best]))
        ious.append(scores[best])
    return torch.stack(masks), np.array(ious, dtype=np.float32)


def _mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[N]`` IoU of paired boolean masks ``[N, H, W]`` (1 for two empty masks)."""
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def _randomise_rel_pos(module: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if "rel_pos" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)


@pytest.fixture(scope="module")
def tiny_sam():
    """Seeded random-init vit_tiny on the CPU (tests must not modify it)."""
    return build_sam(SamConfig(model_type="vit_tiny", seed=0))


@pytest.fixture(scope="module")
def tiny_prompter(tiny_sam) -> SamPrompter:
    """SamPredictor's preprocessing, so that results compare with it end to end."""
    return SamPrompter(tiny_sam, preprocess="antialiased")


# --------------------------------------------------------------------------- builder / loader


@pytest.mark.parametrize("model_type", ["vit_h", "vit_l", "vit_b"])
def test_architecture_matches_segment_anything_registry(model_type: str) -> None:
    with torch.device("meta"):
        ours = build_sam_model(model_type).state_dict()
        theirs = sam_model_registry[model_type]().state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_vit_tiny_is_sam_with_a_two_block_encoder(tiny_sam) -> None:
    encoder = tiny_sam.image_encoder
    assert SAM_ARCHITECTURES["vit_tiny"].global_attn_indexes == (1,)
    assert encoder.img_size == 1024
    assert encoder.patch_embed.proj.out_channels == 128
    assert len(encoder.blocks) == 2
    assert [block.window_size for block in encoder.blocks] == [14, 0]
    assert [block.attn.num_heads for block in encoder.blocks] == [4, 4]
    assert encoder.neck[0].out_channels == 256
    assert not tiny_sam.training
    # The prompt encoder and mask decoder are the full-size ones of every SAM.
    with torch.device("meta"):
        vit_b = build_sam_model("vit_b").state_dict()
    tiny = tiny_sam.state_dict()
    decoder_keys = [k for k in vit_b if not k.startswith("image_encoder.")]
    assert all(tiny[k].shape == vit_b[k].shape for k in decoder_keys)


@pytest.fixture(scope="module")
def sam_512():
    """Seeded random-init vit_tiny_512 on the CPU (tests must not modify it)."""
    return build_sam(SamConfig(model_type="vit_tiny_512", seed=0))


def test_vit_tiny_512_is_vit_tiny_at_a_512_input(tiny_sam, sam_512) -> None:
    assert SAM_ARCHITECTURES["vit_tiny"].image_size == 1024
    assert all(SAM_ARCHITECTURES[m].image_size == 1024 for m in ("vit_h", "vit_l", "vit_b"))
    assert SAM_ARCHITECTURES["vit_tiny_512"].image_size == 512
    encoder = sam_512.image_encoder
    assert encoder.img_size == 512
    assert tuple(encoder.pos_embed.shape) == (1, 32, 32, 128)
    assert [block.window_size for block in encoder.blocks] == [14, 0]
    assert sam_512.prompt_encoder.image_embedding_size == (32, 32)
    assert sam_512.prompt_encoder.input_image_size == (512, 512)
    assert sam_512.prompt_encoder.mask_input_size == (128, 128)
    # Only the grid-sized tensors differ from vit_tiny: the position embedding and the
    # relative-position tables of the global block (2 * 32 - 1 rows instead of 2 * 64 - 1).
    small, large = sam_512.state_dict(), tiny_sam.state_dict()
    assert small.keys() == large.keys()
    differing = sorted(k for k in small if small[k].shape != large[k].shape)
    assert differing == [
        "image_encoder.blocks.1.attn.rel_pos_h",
        "image_encoder.blocks.1.attn.rel_pos_w",
        "image_encoder.pos_embed",
    ]
    assert tuple(small["image_encoder.blocks.1.attn.rel_pos_h"].shape) == (63, 32)


def test_image_size_must_be_a_multiple_of_the_patch() -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        sam_module.SamArchitecture(128, 2, 4, (1,), image_size=500)


def test_prompter_takes_its_geometry_from_a_512_model(sam_512) -> None:
    prompter = SamPrompter(sam_512)
    assert prompter.image_size == 512
    assert prompter.embedding_shape == (256, 32, 32)
    assert prompter.low_res_size == (128, 128)
    image, points = _frame(256, 512, seed=6), _points(256, 512, 8, seed=6)
    # 256x512 fills the 512 input's top half unresized: plain normalisation, zero padding.
    x = prompter.preprocess(image)
    assert x.shape == (1, 3, 512, 512)
    torch.testing.assert_close(x[:, :, :256], sam_512.preprocess(image.float())[:, :, :256])
    assert not x[:, :, 256:].any()
    embedding = prompter.encode(image)[0]
    assert embedding.shape == (256, 32, 32)
    masks, iou = prompter.segment(embedding, points, (256, 512))
    assert masks.shape == (8, 256, 512)
    assert masks.dtype == torch.bool
    assert iou.shape == (8,)
    low, low_iou = prompter.segment(embedding, points, (256, 512), output="low")
    assert low.shape == (8, 128, 128)
    assert torch.equal(prompter.upsample_masks(low, (256, 512)), masks)
    torch.testing.assert_close(low_iou, iou)
    # A frame of another size: points are scaled by 512 / its long side, masks come back at
    # its size; everything agrees with SamPredictor (which reads the size off the model) when
    # the prompter preprocesses as it does.
    predictor_like = SamPrompter(sam_512, preprocess="antialiased")
    for size, seed in (((256, 512), 6), ((96, 160), 7)):
        frame, prompts = _frame(*size, seed=seed), _points(*size, 6, seed=seed)
        ours, ours_iou = predictor_like(frame, [prompts])[0]
        assert ours.shape == (6, *size)
        expected, expected_iou = _reference(sam_512, frame, prompts)
        assert _mask_iou(ours, expected).min().item() >= 0.99
        np.testing.assert_allclose(ours_iou.numpy(), expected_iou, rtol=1e-4, atol=1e-5)
        coverage = ours.float().mean(dim=(1, 2))
        assert bool(((coverage > 0.01) & (coverage < 0.99)).all())


def test_checkpoints_of_the_two_input_sizes_are_not_interchangeable(tmp_path) -> None:
    path = tmp_path / "sam_vit_tiny.pth"
    torch.save(build_sam(SamConfig(model_type="vit_tiny")).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"512-pixel input.*pos_embed"):
        build_sam(SamConfig(model_type="vit_tiny_512", checkpoint=str(path)))


def test_float16_checkpoint_loads_into_the_float32_model(tmp_path) -> None:
    source = build_sam(SamConfig(model_type="vit_tiny_512", seed=3)).state_dict()
    path = tmp_path / "sam_half.pth"
    torch.save({k: v.half() for k, v in source.items()}, path)
    loaded = build_sam(SamConfig(model_type="vit_tiny_512", seed=0, checkpoint=str(path)))
    for key, value in loaded.state_dict().items():
        assert value.dtype == torch.float32, key
        torch.testing.assert_close(value, source[key].half().float(), rtol=0, atol=0)
    bad = tmp_path / "sam_int.pth"
    torch.save({k: v.long() if k.endswith("pos_embed") else v for k, v in source.items()}, bad)
    with pytest.raises(CheckpointError, match="non-float"):
        build_sam(SamConfig(model_type="vit_tiny_512", checkpoint=str(bad)))


def test_unknown_model_type_is_rejected() -> None:
    with pytest.raises(ValueError, match="model_type must be one of"):
        build_sam_model("vit_s")


def test_random_init_is_seeded_and_leaves_global_rng_alone(tiny_sam) -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    again = build_sam(SamConfig(model_type="vit_tiny", seed=0)).state_dict()
    assert torch.equal(torch.rand(3), expected_next)
    assert all(torch.equal(v, again[k]) for k, v in tiny_sam.state_dict().items())
    other = build_sam(SamConfig(model_type="vit_tiny", seed=1)).state_dict()
    weight = "mask_decoder.iou_prediction_head.layers.0.weight"
    assert not torch.equal(other[weight], again[weight])


def test_a_saved_sam_state_dict_loads_back_exactly(tmp_path) -> None:
    source = build_sam(SamConfig(model_type="vit_tiny", seed=7)).state_dict()
    path = tmp_path / "sam_vit_tiny.pth"
    torch.save(source, path)
    loaded = build_sam(SamConfig(model_type="vit_tiny", seed=0, checkpoint=str(path)))
    assert not loaded.training
    state = loaded.state_dict()
    assert state.keys() == source.keys()
    assert all(torch.equal(state[k], v) for k, v in source.items())


def test_checkpoint_errors_name_the_keys(tmp_path) -> None:
    state = build_sam(SamConfig(model_type="vit_tiny", seed=0)).state_dict()
    bad = dict(state)
    del bad["mask_decoder.iou_token.weight"]
    bad["image_encoder.extra.weight"] = torch.zeros(1)
    bad["image_encoder.pos_embed"] = torch.zeros(1, 64, 64, 96)
    path = tmp_path / "bad.pth"
    torch.save(bad, path)
    config = SamConfig(model_type="vit_tiny", checkpoint=str(path))
    with pytest.raises(CheckpointError) as error:
        build_sam(config)
    message = str(error.value)
    assert "bad.pth" in message
    assert "missing keys (1): mask_decoder.iou_token.weight" in message
    assert "unexpected keys (1): image_encoder.extra.weight" in message
    assert "image_encoder.pos_embed (1, 64, 64, 96) (model (1, 64, 64, 128))" in message


def test_checkpoint_of_another_model_type_is_refused(tmp_path) -> None:
    path = tmp_path / "tiny.pth"
    torch.save(build_sam(SamConfig(model_type="vit_tiny")).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"is model_type right") as error:
        build_sam(SamConfig(model_type="vit_b", checkpoint=str(path)))
    # vit_b's blocks 2-11 are missing (10 x 14 tensors); blocks 0-1 (2 x 14), the patch
    # embedding (2), the position embedding and the neck's first conv have other shapes.
    assert "missing keys (140): image_encoder.blocks.10.attn.proj.bias" in str(error.value)
    assert "shape mismatches (32): image_encoder.blocks.0.attn.proj.bias (128,)" in str(error.value)


def test_unreadable_sam_checkpoints_are_refused_naming_the_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth"):
        build_sam(SamConfig(model_type="vit_tiny", checkpoint=str(tmp_path / "nowhere.pth")))
    not_a_state_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_state_dict)
    with pytest.raises(CheckpointError, match="flat state dict of tensors"):
        build_sam(SamConfig(model_type="vit_tiny", checkpoint=str(not_a_state_dict)))
    needs_code = tmp_path / "code.pth"
    torch.save({"optimizer": torch.optim.SGD}, needs_code)  # unpickling would import a class
    with pytest.raises(CheckpointError, match=r"refusing to load .*needs torch\.optim\.sgd\.SGD"):
        build_sam(SamConfig(model_type="vit_tiny", checkpoint=str(needs_code)))


# --------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize(
    ("height", "width", "resized"),
    [
        (256, 512, (512, 1024)),
        (1024, 2048, (512, 1024)),
        (37, 91, (416, 1024)),
        (300, 301, (1021, 1024)),
    ],
)
def test_resized_size_is_sams_rounding(height: int, width: int, resized: tuple[int, int]) -> None:
    assert resized_size(height, width) == resized
    assert resized == ResizeLongestSide(1024).get_preprocess_shape(height, width, 1024)
    half = ResizeLongestSide(512).get_preprocess_shape(height, width, 512)
    assert resized_size(height, width, 512) == half


@pytest.mark.parametrize(
    ("height", "width", "max_levels"), [(256, 512, 0), (37, 91, 1), (300, 301, 1)]
)
def test_antialiased_preprocessing_matches_sam_predictor(
    tiny_sam, height: int, width: int, max_levels: int
) -> None:
    """PIL resize (SamPredictor) vs torchvision's uint8 resize: equal at scale 2, else 1 level."""
    image = _frame(height, width, seed=3)
    resized = ResizeLongestSide(1024).apply_image(image[0].permute(1, 2, 0).numpy())
    expected = tiny_sam.preprocess(torch.from_numpy(resized).permute(2, 0, 1)[None].float())
    ours = SamPrompter(tiny_sam, preprocess="antialiased").preprocess(image)
    assert ours.shape == (1, 3, 1024, 1024)
    assert ours.dtype == torch.float32
    levels = ((ours - expected) * tiny_sam.pixel_std).abs()
    assert levels.max().item() == pytest.approx(max_levels, abs=1e-3)
    assert (levels > 0.5).float().mean().item() < 0.005


def _small_input_sam(size: int):
    """A real (random-init) SAM whose encoder takes a ``size`` x ``size`` input."""
    arch = sam_module.SamArchitecture(32, 1, 1, (), image_size=size)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(SAM_ARCHITECTURES, "small_input", arch)
        return build_sam_model("small_input")


def _bilinear_by_loops(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``F.interpolate(bilinear, align_corners=False)`` recomputed pixel by pixel (float64)."""
    channels, in_h, in_w = image.shape
    out = np.zeros((channels, height, width))
    for y in range(height):
        sy = max((y + 0.5) * in_h / height - 0.5, 0.0)
        y0 = min(int(sy), in_h - 1)
        y1, fy = min(y0 + 1, in_h - 1), sy - y0
        for x in range(width):
            sx = max((x + 0.5) * in_w / width - 0.5, 0.0)
            x0 = min(int(sx), in_w - 1)
            x1, fx = min(x0 + 1, in_w - 1), sx - x0
            top = image[:, y0, x0] * (1 - fx) + image[:, y0, x1] * fx
            bottom = image[:, y1, x0] * (1 - fx) + image[:, y1, x1] * fx
            out[:, y, x] = top * (1 - fy) + bottom * fy
    return out


def test_official_preprocessing_normalises_then_shrinks_without_antialiasing() -> None:
    """The UGainS code's order: (x - mean) / std on the float frame, plain bilinear, pad."""
    sam = _small_input_sam(32)
    image = _frame(24, 56, seed=4)  # longest side 56 -> 32: a 14x32 input, 18 rows of padding
    x = preprocess_frames(sam, image)
    assert x.shape == (1, 3, 32, 32)
    mean = np.array(sam_module.PIXEL_MEAN)[:, None, None]
    std = np.array(sam_module.PIXEL_STD)[:, None, None]
    normalised = (image[0].double().numpy() - mean) / std
    expected = _bilinear_by_loops(normalised, 14, 32)
    np.testing.assert_allclose(x[0, :, :14].double().numpy(), expected, atol=1e-5)
    assert not x[0, :, 14:].any()
    # Resizing the uint8 frame with antialiasing first (SamPredictor's order) differs.
    antialiased = preprocess_frames(sam, image, "antialiased")
    assert (antialiased - x).abs().max().item() > 0.1


def test_preprocessing_methods_agree_when_the_frame_needs_no_resize(sam_512) -> None:
    image = _frame(256, 512, seed=5)
    official = preprocess_frames(sam_512, image, "official")
    torch.testing.assert_close(preprocess_frames(sam_512, image, "antialiased"), official)


def test_unknown_preprocessing_is_refused(tiny_sam) -> None:
    with pytest.raises(ValueError, match="preprocess must be one of"):
        SamPrompter(tiny_sam, preprocess="pil")


def test_encode_is_batched_and_equals_the_encoder(tiny_sam, tiny_prompter: SamPrompter) -> None:
    images = torch.cat([_frame(64, 128, seed=1), _frame(64, 128, seed=2)])
    embeddings = tiny_prompter.encode(images)
    assert embeddings.shape == (2, 256, 64, 64)
    assert embeddings.dtype == torch.float32
    with torch.no_grad():
        single = tiny_sam.image_encoder(tiny_prompter.preprocess(images[1:]))
    torch.testing.assert_close(embeddings[1:], single, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- prompting


@pytest.mark.parametrize(("height", "width"), [(256, 512), (37, 91)])
def test_segment_matches_sam_predictor_one_point_at_a_time(
    tiny_sam, tiny_prompter: SamPrompter, height: int, width: int
) -> None:
    image, points = _frame(height, width, seed=4), _points(height, width, 8, seed=4)
    embedding = tiny_prompter.encode(image)[0]
    # End to end (SamPredictor encodes with its PIL resize) where the resizes may differ.
    shared = embedding if (height, width) == (256, 512) else None
    expected_masks, expected_iou = _reference(tiny_sam, image, points, shared)
    masks, iou = tiny_prompter.segment(embedding, points, (height, width))
    assert masks.shape == (8, height, width)
    assert masks.dtype == torch.bool
    assert iou.dtype == torch.float32
    assert _mask_iou(masks, expected_masks).min().item() >= 0.99
    np.testing.assert_allclose(iou.numpy(), expected_iou, rtol=1e-4, atol=1e-5)
    # Non-trivial: no empty or full mask, and the masks depend on the prompt.
    coverage = masks.float().mean(dim=(1, 2))
    assert bool(((coverage > 0.01) & (coverage < 0.99)).all())
    assert _mask_iou(masks[:1].expand_as(masks[1:]), masks[1:]).min().item() < 0.95


@pytest.fixture(scope="module")
def vit_b_results():
    """vit_b (seed 0) on one 256x512 frame with 8 prompts: the prompter, then SamPredictor.

    The encoder runs once (the prompter's); its preprocessing equals SamPredictor's bit for bit
    at this size (test_antialiased_preprocessing_matches_sam_predictor), so SamPredictor
    decodes from it.
    """
    sam = build_sam(SamConfig(model_type="vit_b", seed=0))
    image, points = _frame(256, 512, seed=5), _points(256, 512, 8, seed=5)
    prompter = SamPrompter(sam, preprocess="antialiased")
    embedding = prompter.encode(image)[0]
    ours = prompter.segment(embedding, points, (256, 512))
    expected = _reference(sam, image, points, embedding)
    return expected, ours


@pytest.mark.slow
def test_vit_b_prompter_matches_sam_predictor(vit_b_results) -> None:
    (expected_masks, expected_iou), (masks, iou) = vit_b_results
    assert masks.shape == (8, 256, 512)
    assert _mask_iou(masks, expected_masks).mean().item() >= 0.99
    np.testing.assert_allclose(iou.numpy(), expected_iou, rtol=1e-4, atol=1e-5)
    coverage = masks.float().mean(dim=(1, 2))
    assert bool(((coverage > 0.01) & (coverage < 0.99)).all())


def test_low_resolution_output_then_upsample_equals_full(
    tiny_sam, tiny_prompter: SamPrompter, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = (96, 160)
    embedding = tiny_prompter.encode(_frame(*size, seed=6))[0]
    points = _points(*size, 5, seed=6).float() + 0.25
    full, iou_full = tiny_prompter.segment(embedding, points, size)
    low, iou_low = tiny_prompter.segment(embedding, points, size, output="low")
    assert low.shape == (5, 256, 256)
    assert low.dtype == torch.float32
    assert torch.equal(iou_low, iou_full)
    expected = tiny_sam.postprocess_masks(low[:, None], resized_size(*size), size)[:, 0] > 0
    assert torch.equal(tiny_prompter.upsample_masks(low, size), expected)
    assert torch.equal(full, expected)
    # Chunked upsampling (two masks per chunk) gives the same masks.
    monkeypatch.setattr(sam_prompter, "_UPSAMPLE_BUDGET", 2 * (1024 * 1024 + 96 * 160))
    assert torch.equal(tiny_prompter.upsample_masks(low, size), expected)


def test_many_prompts_are_decoded_in_calls_of_bounded_size(
    tiny_prompter: SamPrompter, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = (96, 160)
    embedding = tiny_prompter.encode(_frame(*size, seed=8))[0]
    points = _points(*size, 7, seed=8)
    one_call = tiny_prompter.segment(embedding, points, size, output="low")
    monkeypatch.setattr(sam_prompter, "_MAX_PROMPTS_PER_CALL", 3)
    calls: list[int] = []
    hook = tiny_prompter.sam.mask_decoder.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(kwargs["sparse_prompt_embeddings"].shape[0]),
        with_kwargs=True,
    )
    try:
        low, iou = tiny_prompter.segment(embedding, points, size, output="low")
    finally:
        hook.remove()
    assert calls == [3, 3, 1]
    torch.testing.assert_close(low, one_call[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(iou, one_call[1], rtol=1e-5, atol=1e-5)


def test_no_prompts_give_empty_results(tiny_prompter: SamPrompter) -> None:
    embedding = torch.zeros(256, 64, 64)
    masks, iou = tiny_prompter.segment(embedding, torch.zeros((0, 2), dtype=torch.long), (30, 40))
    assert (masks.shape, masks.dtype, iou.shape, iou.dtype) == (
        (0, 30, 40),
        torch.bool,
        (0,),
        torch.float32,
    )
    low, _ = tiny_prompter.segment(embedding, torch.zeros((0, 2)), (30, 40), output="low")
    assert low.shape == (0, 256, 256)
    assert tiny_prompter.upsample_masks(low, (30, 40)).shape == (0, 30, 40)


def test_call_segments_each_frame_of_a_batch(tiny_prompter: SamPrompter) -> None:
    images = torch.cat([_frame(48, 80, seed=8), _frame(48, 80, seed=9), _frame(48, 80, seed=10)])
    points = [_points(48, 80, 3, seed=8), torch.zeros((0, 2)), _points(48, 80, 2, seed=10)]
    results = tiny_prompter(images, points)
    assert [tuple(m.shape) for m, _ in results] == [(3, 48, 80), (0, 48, 80), (2, 48, 80)]
    assert [tuple(iou.shape) for _, iou in results] == [(3,), (0,), (2,)]
    embeddings = tiny_prompter.encode(images[[0, 2]])
    for index, embedding in zip((0, 2), embeddings, strict=True):
        masks, iou = tiny_prompter.segment(embedding, points[index], (48, 80))
        assert torch.equal(results[index][0], masks)
        torch.testing.assert_close(results[index][1], iou, rtol=1e-5, atol=1e-6)


def test_a_large_frame_gets_its_low_res_masks_upsampled(tiny_prompter: SamPrompter) -> None:
    image = torch.zeros((1, 3, 4000, 3000), dtype=torch.uint8)
    image[:, :, 1000:3000, 500:2500] = 200
    points = torch.tensor([[0, 0], [2999, 3999], [1500.5, 2000.25]])
    embedding = tiny_prompter.encode(image)[0]
    masks, iou = tiny_prompter.segment(embedding, points, (4000, 3000))
    assert masks.shape == (3, 4000, 3000)
    assert iou.shape == (3,)
    low, _ = tiny_prompter.segment(embedding, points, (4000, 3000), output="low")
    assert torch.equal(masks, tiny_prompter.upsample_masks(low, (4000, 3000)))


# --------------------------------------------------------------------------- input validation


@pytest.mark.parametrize(
    "point", [[91.0, 0.0], [-1, 5], [0, 37], [90.5, 36.5], [float("nan"), 1.0]]
)
def test_prompts_outside_the_frame_are_refused(tiny_prompter: SamPrompter, point) -> None:
    points = torch.tensor([[0.0, 0.0], point])
    with pytest.raises(ValueError, match=r"points must lie inside the 37x91 frame .* 1 do not"):
        tiny_prompter.segment(torch.zeros(256, 64, 64), points, (37, 91))
    with pytest.raises(ValueError, match=r"points\[0\] must lie inside"):
        tiny_prompter(torch.zeros((1, 3, 37, 91), dtype=torch.uint8), [points])


def test_bad_inputs_are_refused(tiny_prompter: SamPrompter) -> None:
    images = torch.zeros((1, 3, 20, 30), dtype=torch.uint8)
    points = torch.zeros((1, 2))
    with pytest.raises(ValueError, match=r"images must be uint8 RGB .* got dtype torch\.float32"):
        tiny_prompter.encode(images.float())
    with pytest.raises(ValueError, match=r"images must have shape \[B>0, 3, H, W\]"):
        tiny_prompter.encode(images[0])
    with pytest.raises(ValueError, match=r"images must have shape"):
        tiny_prompter(images[:, :1], [points])
    with pytest.raises(ValueError, match="one \\[N, 2\\] tensor per frame: 1 frames, 2"):
        tiny_prompter(images, [points, points])
    with pytest.raises(ValueError, match=r"points must have shape \[N, 2\]"):
        tiny_prompter.segment(torch.zeros(256, 64, 64), torch.zeros(3), (20, 30))
    with pytest.raises(ValueError, match=r"embedding must have shape \(256, 64, 64\)"):
        tiny_prompter.segment(torch.zeros(1, 256, 64, 64), points, (20, 30))
    with pytest.raises(ValueError, match="frame_size must be"):
        tiny_prompter.segment(torch.zeros(256, 64, 64), points, (0, 30))
    with pytest.raises(ValueError, match="frame_size must be"):
        tiny_prompter.segment(torch.zeros(256, 64, 64), points, 30)
    with pytest.raises(ValueError, match=r"points must be a tensor \[N, 2\]"):
        tiny_prompter.segment(torch.zeros(256, 64, 64), [[1, 2]], (20, 30))
    with pytest.raises(ValueError, match=r"images must be a uint8 tensor"):
        tiny_prompter.encode(images.numpy())
    with pytest.raises(ValueError, match="output must be 'full' or 'low'"):
        tiny_prompter.segment(torch.zeros(256, 64, 64), points, (20, 30), output="half")
    with pytest.raises(ValueError, match=r"low_res_logits must have shape"):
        tiny_prompter.upsample_masks(torch.zeros(2, 128, 128), (20, 30))
    with pytest.raises(TypeError, match="segment_anything Sam"):
        SamPrompter(torch.nn.Linear(1, 1))


# --------------------------------------------------------------------------- fast path


def test_sdpa_attention_equals_sam_attention_vit_tiny() -> None:
    sam = build_sam(SamConfig(model_type="vit_tiny", seed=2))
    _randomise_rel_pos(sam, seed=2)
    keys = list(sam.state_dict())
    x = SamPrompter(sam, fast_path=False).preprocess(_frame(64, 128, seed=2))
    with torch.no_grad():
        expected = sam.image_encoder(x)
        assert use_sdpa_attention(sam, True) == 2
        assert all(type(block.attn) is SdpaAttention for block in sam.image_encoder.blocks)
        fast = sam.image_encoder(x)
    assert list(sam.state_dict()) == keys
    relative = ((fast - expected).norm() / expected.norm()).item()
    assert relative < 1e-3
    assert use_sdpa_attention(sam, False) == 2
    assert all(type(block.attn) is Attention for block in sam.image_encoder.blocks)


def test_sdpa_attention_equals_sam_attention_one_vit_b_block() -> None:
    """A global-attention vit_b block on the full 64x64 grid (vit_tiny covers windows)."""
    arch = SAM_ARCHITECTURES["vit_b"]
    torch.manual_seed(0)
    block = Block(
        arch.embed_dim,
        arch.num_heads,
        norm_layer=torch.nn.LayerNorm,
        use_rel_pos=True,
        window_size=0,
        input_size=(64, 64),
    ).eval()
    _randomise_rel_pos(block, seed=0)
    x = torch.randn((1, 64, 64, arch.embed_dim), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = block(x)
        assert use_sdpa_attention(block, True) == 1
        fast = block(x)
    # Compare the residual branches: x itself would hide errors in the attention.
    assert ((fast - expected).norm() / (expected - x).norm()).item() < 1e-3


def test_fast_path_choice_on_cpu() -> None:
    sam = build_sam(SamConfig(model_type="vit_tiny", seed=0))
    assert SamPrompter(sam).fast_path is False
    assert type(sam.image_encoder.blocks[0].attn) is Attention
    prompter = SamPrompter(sam, fast_path=True)
    assert prompter.device == torch.device("cpu")
    assert type(sam.image_encoder.blocks[0].attn) is SdpaAttention
    with pytest.warns(UserWarning, match="CUDA-only"):
        assert SamPrompter(sam, compile=True).compiled is False


def test_fast_path_autocast_leaves_the_prompt_encoder_in_float32(
    tiny_sam, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the mask decoder runs under the fast path's bf16 autocast (the CPU's autocast
    stands in for CUDA's here): it receives the float32 point embeddings and dense positional
    encoding, bit for bit, not bf16 Fourier features of the prompt coordinates."""
    prompter = SamPrompter(tiny_sam)
    monkeypatch.setattr(prompter, "_autocast", lambda: torch.autocast("cpu", torch.bfloat16))
    size = (256, 512)
    points = _points(*size, 4, seed=7)
    embedding = torch.randn((256, 64, 64), generator=torch.Generator().manual_seed(7))
    received: dict[str, torch.Tensor] = {}
    hook = tiny_sam.mask_decoder.register_forward_pre_hook(
        lambda module, args, kwargs: received.update(kwargs), with_kwargs=True
    )
    try:
        masks, iou = prompter.segment(embedding, points, size)
    finally:
        hook.remove()
    coords = (points.double() * 2).float()[:, None, :]  # 512 -> 1024
    labels = torch.ones((4, 1), dtype=torch.int64)
    with torch.no_grad():
        sparse, dense = tiny_sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        image_pe = tiny_sam.prompt_encoder.get_dense_pe()
    assert torch.equal(received["sparse_prompt_embeddings"], sparse)
    assert torch.equal(received["dense_prompt_embeddings"], dense)
    assert torch.equal(received["image_pe"], image_pe)
    assert (masks.dtype, iou.dtype) == (torch.bool, torch.float32)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_fast_path_matches_fp32_reference() -> None:
    sam = build_sam(SamConfig(model_type="vit_tiny", seed=0)).cuda()
    _randomise_rel_pos(sam, seed=0)
    image, points = _frame(256, 512, seed=11), _points(256, 512, 8, seed=11)
    reference = SamPrompter(sam, fast_path=False)
    expected_embedding = reference.encode(image)
    [(expected_masks, expected_iou)] = reference(image, [points])
    fast = SamPrompter(sam)
    assert fast.fast_path is True
    embedding = fast.encode(image.cuda())
    assert embedding.dtype == torch.float32
    relative = (embedding - expected_embedding).norm() / expected_embedding.norm()
    assert relative.item() < 2e-2
    [(masks, iou)] = fast(image, [points.cuda()])
    assert masks.device.type == "cuda"
    assert _mask_iou(masks, expected_masks).mean().item() >= 0.95
    torch.testing.assert_close(iou, expected_iou, rtol=0, atol=2e-2)


def test_no_warning_on_default_construction(tiny_sam) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SamPrompter(tiny_sam)
