"""Specification of the Mask2Former adapter (docs/method.md step 1, "Checkpoints a user brings")."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import Mask2FormerConfig as HFMask2FormerConfig
from transformers import Mask2FormerForUniversalSegmentation, SwinConfig
from transformers.modeling_outputs import BaseModelOutput

from models.config import Mask2FormerConfig
from models.errors import CheckpointError
from models.mask2former import (
    ARCHITECTURES,
    ENCODER_FEATURE_LEVELS,
    Mask2FormerMultiLevelForUniversalSegmentation,
    Mask2FormerSegmenter,
    architecture_config,
    build_mask2former,
    load_strict,
    resolve_format,
)

MEAN = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
DECODER = "model.pixel_level_module.decoder."


def _tiny_hf_config(**overrides: object) -> HFMask2FormerConfig:
    """``tiny_1dl`` as a plain transformers config (no extra attribute unless overridden)."""
    spec = ARCHITECTURES["tiny_1dl"]
    head = {k: v for k, v in spec["head"].items() if k != ENCODER_FEATURE_LEVELS}
    backbone = SwinConfig(**spec["backbone"], out_features=["stage1", "stage2", "stage3", "stage4"])
    return HFMask2FormerConfig(backbone_config=backbone, num_labels=19, **{**head, **overrides})


def _reference_logits(
    model: torch.nn.Module, images: torch.Tensor, output_size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Brute force: normalise, pad to /32, run, upsample to the padded size, crop, resize."""
    height, width = images.shape[-2:]
    pixels = (images.float() - MEAN) / STD
    padded_h, padded_w = -(-height // 32) * 32, -(-width // 32) * 32
    canvas = torch.zeros(images.shape[0], 3, padded_h, padded_w)
    canvas[:, :, :height, :width] = pixels
    with torch.no_grad():
        out = model(pixel_values=canvas)
    masks = F.interpolate(
        out.masks_queries_logits, size=(padded_h, padded_w), mode="bilinear", align_corners=False
    )[:, :, :height, :width]
    if output_size != (height, width):
        masks = F.interpolate(masks, size=output_size, mode="bilinear", align_corners=False)
    return out.class_queries_logits, masks


def _assert_same(
    got: tuple[torch.Tensor, torch.Tensor], expected: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """Class and mask logits are bit-identical."""
    assert torch.equal(got[0], expected[0])
    assert torch.equal(got[1], expected[1])


# --- architectures -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("architecture", "embed", "heads"),
    [("swin_b_1dl", 128, (4, 8, 16, 32)), ("swin_l_1dl", 192, (6, 12, 24, 48))],
)
def test_checkpoint_architectures_have_the_checkpoints_shapes(
    architecture: str, embed: int, heads: tuple[int, ...]
) -> None:
    with torch.device("meta"):  # structure only: nothing is allocated or run
        model = Mask2FormerMultiLevelForUniversalSegmentation(architecture_config(architecture))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    swin = "model.pixel_level_module.encoder.swin.encoder.layers."

    # Swin: depths 2-2-18-2, window 12 -> (2*12-1)^2 relative positions, heads per stage.
    for stage, (depth, num_heads) in enumerate(zip((2, 2, 18, 2), heads, strict=True)):
        blocks = {
            int(m[1]) for k in shapes if (m := re.match(rf"{swin}{stage}\.blocks\.(\d+)\.", k))
        }
        assert blocks == set(range(depth))
        table = (
            f"{swin}{stage}.blocks.0.attention.relative_position_bias.relative_position_bias_table"
        )
        assert shapes[table] == (23 * 23, num_heads)
    assert shapes[
        "model.pixel_level_module.encoder.swin.embeddings.patch_embeddings.projection.weight"
    ] == (embed, 3, 4, 4)

    # Deformable encoder on res5 only: one projection, one level embedding, 6 layers whose
    # attention samples 8 heads x 1 level x 4 points.
    assert shapes[DECODER + "level_embed"] == (1, 256)
    assert not any(k.startswith(DECODER + "input_projections.1.") for k in shapes)
    assert shapes[DECODER + "input_projections.0.0.weight"] == (256, 8 * embed, 1, 1)
    layers = {
        int(m[1]) for k in shapes if (m := re.match(rf"{DECODER}encoder\.layers\.(\d+)\.", k))
    }
    assert layers == set(range(6))
    assert shapes[DECODER + "encoder.layers.0.self_attn.sampling_offsets.weight"] == (
        8 * 1 * 4 * 2,
        256,
    )
    assert shapes[DECODER + "encoder.layers.0.self_attn.attention_weights.weight"] == (
        8 * 1 * 4,
        256,
    )
    # FPN for res2, res3, res4 (adapter_1 is the stride-4 feature), nothing more.
    for idx, channels in enumerate((embed, 2 * embed, 4 * embed), start=1):
        assert shapes[f"{DECODER}adapter_{idx}.0.weight"] == (256, channels, 1, 1)
        assert shapes[f"{DECODER}layer_{idx}.0.weight"] == (256, 256, 3, 3)
    assert f"{DECODER}adapter_4.0.weight" not in shapes

    # One masked-attention decoder layer, 100 queries, 19 classes + no-object.
    decoder_layers = {
        int(m[1])
        for k in shapes
        if (m := re.match(r"model\.transformer_module\.decoder\.layers\.(\d+)\.", k))
    }
    assert decoder_layers == {0}
    assert shapes["model.transformer_module.queries_features.weight"] == (100, 256)
    assert shapes["class_predictor.weight"] == (20, 256)
    assert shapes["model.transformer_module.level_embed.weight"] == (3, 256)


def test_unknown_architecture_is_refused() -> None:
    with pytest.raises(ValueError, match="swin_x"):
        architecture_config("swin_x")


def test_encoder_levels_must_fit_the_backbone() -> None:
    with pytest.raises(ValueError, match="encoder_feature_levels must be in \\[1, 4\\], got 5"):
        Mask2FormerMultiLevelForUniversalSegmentation(_tiny_hf_config(encoder_feature_levels=5))


# --- the generalised pixel decoder -----------------------------------------------------------


def test_three_levels_reproduce_the_stock_transformers_model_exactly() -> None:
    config = _tiny_hf_config()  # a stock config: no encoder_feature_levels attribute
    torch.manual_seed(1)
    stock = Mask2FormerForUniversalSegmentation(config).eval()
    ours = Mask2FormerMultiLevelForUniversalSegmentation(config).eval()
    assert load_strict(ours, stock.state_dict()) == []

    pixels = torch.randn(2, 3, 96, 160, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = stock(pixel_values=pixels, output_hidden_states=True)
        got = ours(pixel_values=pixels, output_hidden_states=True)
    assert torch.equal(got.class_queries_logits, expected.class_queries_logits)
    assert torch.equal(got.masks_queries_logits, expected.masks_queries_logits)
    assert torch.equal(
        got.pixel_decoder_last_hidden_state, expected.pixel_decoder_last_hidden_state
    )
    for mine, theirs in zip(
        got.pixel_decoder_hidden_states, expected.pixel_decoder_hidden_states, strict=True
    ):
        assert torch.equal(mine, theirs)


def test_res5_only_decoder_feeds_the_fpn_as_the_checkpoints_do(
    tiny_segmenter: Mask2FormerSegmenter,
) -> None:
    model = tiny_segmenter.model
    decoder = model.model.pixel_level_module.decoder
    pixels = torch.randn(1, 3, 128, 256, generator=torch.Generator().manual_seed(3))
    captured: dict[str, torch.Tensor] = {}

    def capture(_module: object, _inputs: object, output: BaseModelOutput) -> None:
        captured["encoded"] = output.last_hidden_state

    hook = decoder.encoder.register_forward_hook(capture)
    try:
        with torch.no_grad():
            features = model.model.pixel_level_module.encoder(pixels).feature_maps
            out = decoder(features)
    finally:
        hook.remove()

    # The encoder saw res5 only: 128x256 / 32 = 4x8 tokens.
    assert captured["encoded"].shape == (1, 4 * 8, 32)
    # FPN by hand: res4 (adapter_3), res3 (adapter_2), res2 (adapter_1), bilinear upsampling.
    res5 = captured["encoded"].transpose(1, 2).reshape(1, 32, 4, 8)
    expected = [res5]
    with torch.no_grad():
        for idx, feature in ((3, features[2]), (2, features[1]), (1, features[0])):
            lateral = getattr(decoder, f"adapter_{idx}")(feature)
            up = F.interpolate(
                expected[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False
            )
            expected.append(getattr(decoder, f"layer_{idx}")(lateral + up))
        mask_features = decoder.mask_projection(expected[-1])
    assert [tuple(x.shape[-2:]) for x in out.multi_scale_features] == [(4, 8), (8, 16), (16, 32)]
    for got, want in zip(out.multi_scale_features, expected[:3], strict=True):
        assert torch.equal(got, want)
    assert torch.equal(out.mask_features, mask_features)
    assert out.mask_features.shape == (1, 32, 32, 64)


# --- the segmenter ---------------------------------------------------------------------------


def test_forward_shapes_dtypes_and_sizes(
    tiny_segmenter: Mask2FormerSegmenter, frames: torch.Tensor
) -> None:
    assert (tiny_segmenter.num_classes, tiny_segmenter.num_queries) == (19, 100)
    assert not tiny_segmenter.training
    with torch.no_grad():
        class_logits, mask_logits = tiny_segmenter(frames)
        _, small = tiny_segmenter(frames, output_size=(32, 50))
    assert class_logits.shape == (2, 100, 20)
    assert class_logits.dtype == torch.float32
    assert mask_logits.shape == (2, 100, 64, 128)
    assert mask_logits.dtype == torch.float32
    assert small.shape == (2, 100, 32, 50)


def test_forward_normalises_and_upsamples_like_the_reference(
    tiny_segmenter: Mask2FormerSegmenter, frames: torch.Tensor
) -> None:
    expected_cls, expected_masks = _reference_logits(tiny_segmenter.model, frames, (64, 128))
    with torch.no_grad():
        class_logits, mask_logits = tiny_segmenter(frames)
        float_cls, float_masks = tiny_segmenter(frames.float())  # float 0-255 input, same values
    assert torch.equal(class_logits, expected_cls)
    assert torch.equal(mask_logits, expected_masks)
    assert torch.equal(float_cls, class_logits)
    assert torch.equal(float_masks, mask_logits)


@pytest.mark.parametrize("output_size", [(50, 100), (30, 40)])
def test_sizes_not_divisible_by_32_are_padded_then_cropped(
    tiny_segmenter: Mask2FormerSegmenter, frames: torch.Tensor, output_size: tuple[int, int]
) -> None:
    images = frames[:, :, :50, :100]  # padded to 64 x 128 inside
    expected_cls, expected_masks = _reference_logits(tiny_segmenter.model, images, output_size)
    with torch.no_grad():
        class_logits, mask_logits = tiny_segmenter(images, output_size=output_size)
    assert torch.equal(class_logits, expected_cls)
    assert torch.equal(mask_logits, expected_masks)


def test_batch_equals_frames_one_by_one(
    tiny_segmenter: Mask2FormerSegmenter, frames: torch.Tensor
) -> None:
    with torch.no_grad():
        batch = tiny_segmenter(frames)
        singles = [tiny_segmenter(frames[i : i + 1]) for i in range(2)]
    for i, (cls_i, masks_i) in enumerate(singles):
        torch.testing.assert_close(batch[0][i : i + 1], cls_i, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(batch[1][i : i + 1], masks_i, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.zeros(3, 64, 64, dtype=torch.uint8), r"images must be \[B, 3, H, W\]"),
        (torch.zeros(1, 4, 64, 64, dtype=torch.uint8), r"images must be \[B, 3, H, W\]"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.int32), "images must be uint8 or floating"),
        (torch.zeros(1, 3, 0, 64, dtype=torch.uint8), r"images must be \[B, 3, H, W\]"),
        (torch.zeros(0, 3, 64, 64, dtype=torch.uint8), r"images must be \[B, 3, H, W\]"),
        (np.zeros((1, 3, 64, 64), dtype=np.uint8), "images must be a torch.Tensor"),
    ],
)
def test_bad_images_are_refused(
    tiny_segmenter: Mask2FormerSegmenter, images: torch.Tensor, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_segmenter(images)


def test_bad_output_size_is_refused(tiny_segmenter: Mask2FormerSegmenter) -> None:
    for output_size in [(0, 64), (64.5, 64), (64,), (True, 64)]:
        with pytest.raises(ValueError, match="output_size"):
            tiny_segmenter(torch.zeros(1, 3, 64, 64), output_size=output_size)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fp32_matches_cpu_and_bf16_autocast_returns_float32(
    tiny_config: Mask2FormerConfig, frames: torch.Tensor
) -> None:
    cpu = build_mask2former(tiny_config.model_copy(update={"autocast_bf16": False}))
    gpu = build_mask2former(tiny_config.model_copy(update={"autocast_bf16": False})).cuda()
    with torch.no_grad():
        cpu_cls, cpu_masks = cpu(frames)
        gpu_cls, gpu_masks = gpu(frames.cuda())
        gpu.autocast_dtype = torch.bfloat16
        bf16_cls, bf16_masks = gpu(frames.cuda())
    torch.testing.assert_close(gpu_cls.cpu(), cpu_cls, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(gpu_masks.cpu(), cpu_masks, rtol=1e-3, atol=1e-3)
    assert bf16_cls.dtype == bf16_masks.dtype == torch.float32
    assert bf16_masks.shape == cpu_masks.shape
    # bf16 keeps ~3 significant digits; the logits stay close, not equal.
    torch.testing.assert_close(bf16_cls.cpu(), cpu_cls, rtol=0.1, atol=0.5)


# --- building and determinism ----------------------------------------------------------------


def test_same_seed_same_weights_and_the_global_rng_is_untouched(
    tiny_config: Mask2FormerConfig, tiny_segmenter: Mask2FormerSegmenter
) -> None:
    state = torch.random.get_rng_state()
    again = build_mask2former(tiny_config)
    other = build_mask2former(tiny_config.model_copy(update={"seed": 1}))
    assert torch.equal(torch.random.get_rng_state(), state)
    reference = tiny_segmenter.model.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in again.model.state_dict().items())
    weight = "class_predictor.weight"
    assert not torch.equal(other.model.state_dict()[weight], reference[weight])
    # Every weight is initialised (none left as uninitialised memory).
    assert all(torch.isfinite(v.float()).all() for v in reference.values())


def test_config_sizes_reach_the_model() -> None:
    segmenter = build_mask2former(
        Mask2FormerConfig(format="random", architecture="tiny_1dl", num_classes=7, num_queries=9)
    )
    with torch.no_grad():
        class_logits, mask_logits = segmenter(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    assert (segmenter.num_classes, segmenter.num_queries) == (7, 9)
    assert class_logits.shape == (1, 9, 8)
    assert mask_logits.shape == (1, 9, 64, 64)


@pytest.mark.parametrize(
    ("fmt", "name", "expected"),
    [("auto", "model_final.pth", "rba"), ("auto", "last.ckpt", "ugains"), ("rba", "x.bin", "rba")],
)
def test_the_checkpoint_format_is_the_configured_one_or_read_off_the_path(
    fmt: str, name: str, expected: str, tmp_path: Path
) -> None:
    assert resolve_format(fmt, str(tmp_path / name)) == expected


def test_format_auto_tells_a_huggingface_folder_from_an_rba_file(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert resolve_format("auto", str(tmp_path)) == "huggingface"
    with pytest.raises(ValueError, match=r"weights\.safetensors"):
        resolve_format("auto", str(tmp_path / "weights.safetensors"))


@pytest.mark.parametrize("fmt", ["huggingface", "rba", "ugains", "auto"])
def test_missing_checkpoint_is_a_clear_error(fmt: str, tmp_path: Path) -> None:
    missing = tmp_path / ("absent.pth" if fmt == "auto" else "absent")
    with pytest.raises(FileNotFoundError, match="absent"):
        build_mask2former(Mask2FormerConfig(format=fmt, checkpoint=str(missing)))


# --- Hugging Face directories ----------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, tiny_segmenter: Mask2FormerSegmenter) -> Path:
    """``tiny_segmenter`` written with ``save_pretrained`` (read-only for the tests)."""
    path = tmp_path_factory.mktemp("tiny_hf")
    tiny_segmenter.model.save_pretrained(path)
    return path


def _copy_with(saved: Path, target: Path, weights: dict[str, torch.Tensor]) -> Path:
    target.mkdir()
    (target / "config.json").write_text((saved / "config.json").read_text())
    save_file(weights, target / "model.safetensors", metadata={"format": "pt"})
    return target


@pytest.mark.parametrize("fmt", ["huggingface", "auto"])
def test_save_pretrained_round_trip_gives_identical_logits(
    saved: Path, tiny_segmenter: Mask2FormerSegmenter, frames: torch.Tensor, fmt: str
) -> None:
    assert json.loads((saved / "config.json").read_text())[ENCODER_FEATURE_LEVELS] == 1
    assert (saved / "model.safetensors").is_file()
    loaded = build_mask2former(Mask2FormerConfig(format=fmt, checkpoint=str(saved)))
    assert not loaded.training
    reference = tiny_segmenter.model.state_dict()
    assert loaded.model.state_dict().keys() == reference.keys()
    assert all(torch.equal(v, reference[k]) for k, v in loaded.model.state_dict().items())
    with torch.no_grad():
        expected, got = tiny_segmenter(frames), loaded(frames)
    _assert_same(got, expected)


def test_loading_draws_no_progress_bar_and_leaves_the_setting_as_it_was(
    saved: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from transformers.utils import logging as hf_logging

    assert hf_logging.is_progress_bar_enabled()
    build_mask2former(Mask2FormerConfig(format="huggingface", checkpoint=str(saved)))
    assert "Loading weights" not in capfd.readouterr().err  # one bar per worker otherwise
    assert hf_logging.is_progress_bar_enabled()


def _load_dir(path: Path, **fields: object) -> Mask2FormerSegmenter:
    return build_mask2former(
        Mask2FormerConfig(format="huggingface", checkpoint=str(path), **fields)
    )


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda w: w.pop("class_predictor.bias"), r"1 missing keys:\n  class_predictor.bias"),
        (
            lambda w: w.update({"model.extra.weight": torch.zeros(2)}),
            r"1 unexpected keys:\n  model.extra.weight",
        ),
        (
            lambda w: w.update({"class_predictor.bias": torch.zeros(5)}),
            re.escape("class_predictor.bias: checkpoint (5,) vs model (20,)"),
        ),
    ],
)
def test_huggingface_directory_must_fit_exactly(
    saved: Path, tmp_path: Path, edit: object, message: str
) -> None:
    weights = load_file(saved / "model.safetensors")
    edit(weights)  # type: ignore[operator]
    with pytest.raises(CheckpointError, match=message):
        _load_dir(_copy_with(saved, tmp_path / "edited", weights))


def test_huggingface_hub_layout_without_dead_keys_loads(
    saved: Path, tmp_path: Path, tiny_segmenter: Mask2FormerSegmenter, frames: torch.Tensor
) -> None:
    # transformers' own hub checkpoints lack the Swin final LayerNorm and older ones carry the
    # relative position indices; both are accepted.
    weights = load_file(saved / "model.safetensors")
    hub = {k: v for k, v in weights.items() if ".swin.layernorm." not in k}
    swin = "model.pixel_level_module.encoder.swin.encoder."
    hub[swin + "layers.0.blocks.0.attention.self.relative_position_index"] = torch.zeros(49).long()
    loaded = _load_dir(_copy_with(saved, tmp_path / "hub", hub))
    with torch.no_grad():
        expected, got = tiny_segmenter(frames), loaded(frames)
    _assert_same(got, expected)


def test_huggingface_sizes_must_match_the_config(saved: Path) -> None:
    with pytest.raises(CheckpointError, match=r"19 classes and 100 queries.*num_classes=150"):
        _load_dir(saved, num_classes=150)


def test_huggingface_directory_of_another_model_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "segformer"}))
    with pytest.raises(CheckpointError, match="'segformer', not 'mask2former'"):
        _load_dir(tmp_path)


def test_huggingface_pickles_are_loaded_weights_only(
    saved: Path, tmp_path: Path, tiny_segmenter: Mask2FormerSegmenter
) -> None:
    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return (open, (str(marker), "w"))  # runs on unpickling unless weights_only

    target = tmp_path / "bin"
    target.mkdir()
    (target / "config.json").write_text((saved / "config.json").read_text())
    torch.save(
        {**tiny_segmenter.model.state_dict(), "payload": Payload()}, target / "pytorch_model.bin"
    )
    with pytest.raises(CheckpointError) as error:
        _load_dir(target)
    assert not marker.exists()
    message = str(error.value)
    assert message.startswith(f"refusing to load {str(target / 'pytorch_model.bin')!r}")
    assert "io.open" in message  # `open` lives in io
    assert "\n" not in message
    assert "will likely succeed" not in message


# --- the strict loader -----------------------------------------------------------------------


@pytest.fixture
def fresh() -> Mask2FormerMultiLevelForUniversalSegmentation:
    """A second tiny model (seed 5) to load into."""
    torch.manual_seed(5)
    return Mask2FormerMultiLevelForUniversalSegmentation(architecture_config("tiny_1dl")).eval()


def test_load_strict_loads_everything(
    fresh: Mask2FormerMultiLevelForUniversalSegmentation,
    tiny_segmenter: Mask2FormerSegmenter,
    frames: torch.Tensor,
) -> None:
    source = tiny_segmenter.model.state_dict()
    assert load_strict(fresh, source) == []
    assert all(torch.equal(v, source[k]) for k, v in fresh.state_dict().items())
    with torch.no_grad():
        expected, got = tiny_segmenter(frames), Mask2FormerSegmenter(fresh)(frames)
    _assert_same(got, expected)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda sd: sd.pop(DECODER + "level_embed"), rf"1 missing keys:\n  {DECODER}level_embed"),
        (
            lambda sd: sd.update({"sem_seg_head.extra": torch.zeros(1)}),
            r"1 unexpected keys:\n  sem_seg_head.extra",
        ),
        (
            lambda sd: sd.update({DECODER + "level_embed": torch.zeros(3, 32)}),
            re.escape(f"{DECODER}level_embed: checkpoint (3, 32) vs model (1, 32)"),
        ),
        (
            lambda sd: sd.update({"class_predictor.bias": [0.0] * 20}),
            r"values that are not tensors:\n  class_predictor.bias",
        ),
    ],
)
def test_load_strict_names_every_misfit_and_leaves_the_model_untouched(
    fresh: Mask2FormerMultiLevelForUniversalSegmentation,
    tiny_segmenter: Mask2FormerSegmenter,
    edit: object,
    message: str,
) -> None:
    source = dict(tiny_segmenter.model.state_dict())
    edit(source)  # type: ignore[operator]
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(CheckpointError, match=message):
        load_strict(fresh, source)
    assert all(torch.equal(v, before[k]) for k, v in fresh.state_dict().items())


def test_load_strict_unused_ok_and_optional_keys(
    fresh: Mask2FormerMultiLevelForUniversalSegmentation,
    tiny_segmenter: Mask2FormerSegmenter,
) -> None:
    source = {
        k: v
        for k, v in tiny_segmenter.model.state_dict().items()
        if k != "criterion.empty_weight" and ".swin.layernorm." not in k
    }
    source["sem_seg_head.extra"] = torch.zeros(1)
    assert load_strict(fresh, source, unused_ok=["sem_seg_head.extra"]) == ["sem_seg_head.extra"]
    # The derived loss weights keep their config value: 1 per class, 0.1 for no-object.
    assert torch.equal(fresh.criterion.empty_weight, torch.tensor([1.0] * 19 + [0.1]))


def test_optional_swin_layernorm_is_dead_weight(
    tiny_config: Mask2FormerConfig, frames: torch.Tensor
) -> None:
    segmenter = build_mask2former(tiny_config)
    with torch.no_grad():
        before = segmenter(frames)
        segmenter.model.model.pixel_level_module.encoder.swin.layernorm.weight.mul_(-3.0)
        segmenter.model.model.pixel_level_module.encoder.swin.layernorm.bias.add_(7.0)
        after = segmenter(frames)
    _assert_same(before, after)
