"""Checkpoint converters: the RbA and UGainS files reproduce the original code's outputs.

The fixtures (tests/fixtures/mask2former/README.md) are small random-init instances of the
ORIGINAL RbA (detectron2) and UGainS (Lightning) Mask2Former code, saved in their formats,
with the class and mask logits that code produced on a fixed input.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import SwinConfig

from models.checkpoints import safe_torch_load
from models.errors import CheckpointError
from models.mask2former import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Mask2FormerMultiLevelForUniversalSegmentation,
    architecture_config,
    load_strict,
)
from models.mask2former.conversion import convert_state_dict, load_state_dict_for

FIXTURES = Path(__file__).parents[1] / "fixtures" / "mask2former"
RBA = FIXTURES / "rba_tiny_model_final.pth"
UGAINS = FIXTURES / "ugains_tiny.ckpt"
# The fixtures' Swin is narrower than tiny_1dl's (to keep the files small); the head is
# tiny_1dl's. Window 3 makes every stage pad, as Swin-B's window 12 does on 1024x2048 frames.
FIXTURE_SWIN = {"embed_dim": 8, "depths": [2, 2, 2, 2], "num_heads": [1, 2, 4, 8], "window_size": 3}
FIXTURE_QUERIES = 12
# Swin's relative position indices: 4 stages x 2 blocks, rebuilt by transformers.
POSITION_INDICES = {
    f"backbone.layers.{i}.blocks.{j}.attn.relative_position_index"
    for i in range(4)
    for j in range(2)
}


def fixture_model() -> Mask2FormerMultiLevelForUniversalSegmentation:
    config = architecture_config("tiny_1dl", num_classes=19, num_queries=FIXTURE_QUERIES)
    config.backbone_config = SwinConfig(
        **FIXTURE_SWIN, out_features=["stage1", "stage2", "stage3", "stage4"]
    )
    torch.manual_seed(0)
    return Mask2FormerMultiLevelForUniversalSegmentation(config).eval()


def fixture_input() -> torch.Tensor:
    """The reference run's input: uint8 frames [2, 3, 128, 256], ImageNet-normalised."""
    image = safe_torch_load(str(FIXTURES / "input_uint8.pt"))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (image.float() - mean) / std


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


@pytest.mark.parametrize(
    ("fmt", "checkpoint", "outputs", "unused"),
    [
        ("rba", RBA, "rba_tiny_outputs.pt", POSITION_INDICES),
        (
            "ugains",
            UGAINS,
            "ugains_tiny_outputs.pt",
            POSITION_INDICES | {"inlier_criterion.empty_weight"},
        ),
    ],
)
def test_converted_checkpoint_reproduces_the_original_code(
    fmt: str, checkpoint: Path, outputs: str, unused: set[str]
) -> None:
    state, unused_keys = load_state_dict_for(fmt, str(checkpoint), architecture="tiny_1dl")
    assert unused_keys == unused
    model = fixture_model()
    load_strict(model, state, unused_ok=unused_keys)

    with torch.no_grad():
        out = model(pixel_values=fixture_input())
    reference = safe_torch_load(str(FIXTURES / outputs))
    assert out.class_queries_logits.shape == (2, FIXTURE_QUERIES, 20)
    assert out.masks_queries_logits.shape == (2, FIXTURE_QUERIES, 32, 64)
    assert relative_error(out.class_queries_logits, reference["class_logits"]) < 1e-4
    assert relative_error(out.masks_queries_logits, reference["mask_logits"]) < 1e-4


def rba_state() -> dict[str, torch.Tensor]:
    return dict(safe_torch_load(str(RBA))["model"])


def test_fused_projections_are_split_query_key_value() -> None:
    source = rba_state()
    state, _ = convert_state_dict("rba", source, architecture="tiny_1dl")
    qkv = source["backbone.layers.2.blocks.1.attn.qkv.weight"]  # [3 * 32, 32]
    block = "model.pixel_level_module.encoder.swin.encoder.layers.2.blocks.1.attention."
    assert torch.equal(state[block + "q_proj.weight"], qkv[:32])
    assert torch.equal(state[block + "k_proj.weight"], qkv[32:64])
    assert torch.equal(state[block + "v_proj.weight"], qkv[64:])
    in_proj = source[
        "sem_seg_head.predictor.transformer_self_attention_layers.0.self_attn.in_proj_bias"
    ]
    layer = "model.transformer_module.decoder.layers.0.self_attn."
    assert torch.equal(state[layer + "v_proj.bias"], in_proj[64:])
    # detectron2's norm0 (stride 4) is transformers' stage1.
    assert torch.equal(
        state["model.pixel_level_module.encoder.hidden_states_norms.stage1.bias"],
        source["backbone.norm0.bias"],
    )


def test_rba_one_level_decoder_embedding_gets_two_zero_rows() -> None:
    source = rba_state()
    state, _ = convert_state_dict("rba", source, architecture="tiny_1dl")
    level_embed = state["model.transformer_module.level_embed.weight"]
    assert level_embed.shape == (3, 32)
    assert torch.equal(level_embed[0], source["sem_seg_head.predictor.level_embed.weight"][0])
    assert torch.equal(level_embed[1:], torch.zeros(2, 32))


def save(path: Path, obj: object) -> str:
    torch.save(obj, path)
    return str(path)


def test_missing_source_key_is_named(tmp_path: Path) -> None:
    state = rba_state()
    del state["sem_seg_head.pixel_decoder.adapter_1.norm.weight"]
    path = save(tmp_path / "model_final.pth", {"model": state})
    with pytest.raises(CheckpointError) as error:
        load_state_dict_for("rba", path, architecture="tiny_1dl")
    message = str(error.value)
    assert path in message
    assert "missing key 'sem_seg_head.pixel_decoder.adapter_1.norm.weight'" in message


@pytest.mark.parametrize(
    "extra",
    [
        # A second decoder layer: a checkpoint with more layers than the architecture.
        "sem_seg_head.predictor.transformer_ffn_layers.1.linear1.weight",
        "backbone.layers.0.blocks.0.attn.unknown.weight",
        "sem_seg_head.something_else",
    ],
)
def test_unexpected_source_key_is_named(tmp_path: Path, extra: str) -> None:
    state = rba_state()
    state[extra] = torch.zeros(64, 32)
    path = save(tmp_path / "model_final.pth", {"model": state})
    with pytest.raises(CheckpointError, match=f"unexpected key '{re.escape(extra)}'"):
        load_state_dict_for("rba", path, architecture="tiny_1dl")


def test_wrong_shape_is_named_with_both_shapes(tmp_path: Path) -> None:
    state = rba_state()
    state["sem_seg_head.predictor.class_embed.weight"] = torch.zeros(20, 31)
    path = save(tmp_path / "model_final.pth", {"model": state})
    converted, unused = load_state_dict_for("rba", path, architecture="tiny_1dl")
    with pytest.raises(CheckpointError, match=r"class_predictor\.weight: checkpoint \(20, 31\) "):
        load_strict(fixture_model(), converted, unused_ok=unused)


def test_fused_projection_of_wrong_size_is_named(tmp_path: Path) -> None:
    state = rba_state()
    state["backbone.layers.0.blocks.0.attn.qkv.weight"] = torch.zeros(25, 8)
    path = save(tmp_path / "model_final.pth", {"model": state})
    with pytest.raises(
        CheckpointError,
        match=r"'backbone\.layers\.0\.blocks\.0\.attn\.qkv\.weight' has shape \(25, 8\)",
    ):
        load_state_dict_for("rba", path, architecture="tiny_1dl")


def test_architecture_with_other_depths_is_refused() -> None:
    with pytest.raises(
        CheckpointError,
        match=r"missing key 'backbone\.layers\.2\.blocks\.2\.attn\.qkv\.weight' \(model key "
        r"'model\.pixel_level_module\.encoder\.swin\.encoder\.layers\.2\.blocks\.2\.attention"
        r"\.q_proj\.weight'\) needed by architecture 'swin_b_1dl'",
    ):
        convert_state_dict("rba", rba_state(), architecture="swin_b_1dl")


CALLS: list[str] = []


def _record_call(note: str) -> str:
    CALLS.append(note)
    return note


class _ArbitraryObject:
    """Unpickling this calls a function: what a malicious pickle does."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_record_call, ("unpickled",))


def test_file_needing_arbitrary_unpickling_is_refused_without_running_it(tmp_path: Path) -> None:
    path = save(
        tmp_path / "rude0fhk.ckpt",
        {"state_dict": {"backbone.x": torch.zeros(1)}, "hyper_parameters": _ArbitraryObject()},
    )
    CALLS.clear()
    with pytest.raises(CheckpointError) as error:
        load_state_dict_for("ugains", path, architecture="tiny_1dl")
    assert CALLS == []
    message = str(error.value)
    assert f"refusing to load {path!r}: besides tensors and containers its pickle needs" in message
    assert f"{__name__}._record_call" in message
    assert 'torch.save(ckpt["state_dict"], "weights.pt")' in message


def test_bare_state_dict_is_accepted(tmp_path: Path) -> None:
    """What the refusal message asks users to re-save."""
    lightning = safe_torch_load(str(UGAINS))
    path = save(tmp_path / "weights.pt", lightning["state_dict"])
    bare, bare_unused = load_state_dict_for("ugains", path, architecture="tiny_1dl")
    full, full_unused = load_state_dict_for("ugains", str(UGAINS), architecture="tiny_1dl")
    assert bare_unused == full_unused
    assert bare.keys() == full.keys()
    assert all(torch.equal(bare[k], full[k]) for k in full)


def test_numpy_arrays_are_read_as_tensors(tmp_path: Path) -> None:
    state = rba_state()
    numpy_state = {k: v.numpy() for k, v in state.items()}
    path = save(tmp_path / "model_final.pth", {"model": numpy_state, "__author__": "detectron2"})
    converted, _ = load_state_dict_for("rba", path, architecture="tiny_1dl")
    expected, _ = convert_state_dict("rba", state, architecture="tiny_1dl")
    assert converted.keys() == expected.keys()
    assert all(torch.equal(converted[k], expected[k]) for k in expected)
    assert all(isinstance(v, torch.Tensor) for v in converted.values())
    assert isinstance(numpy_state["backbone.norm0.bias"], np.ndarray)


@pytest.mark.parametrize(
    ("obj", "found"),
    [
        ({"weights": {"a": torch.zeros(1)}}, r"found a dict with keys \['weights'\]"),
        ([torch.zeros(1)], "found a list"),
    ],
)
def test_unknown_top_level_layout_is_refused(tmp_path: Path, obj: object, found: str) -> None:
    path = save(tmp_path / "model_final.pth", obj)
    with pytest.raises(
        CheckpointError, match=rf"not a 'rba' checkpoint: expected a dict with a 'model' .*{found}"
    ):
        load_state_dict_for("rba", path, architecture="tiny_1dl")


def test_other_format_is_recognised() -> None:
    with pytest.raises(CheckpointError, match="its layout is format 'rba'"):
        load_state_dict_for("ugains", str(RBA), architecture="tiny_1dl")
    bare_rba = {k: v for k, v in rba_state().items()}
    with pytest.raises(CheckpointError, match="its keys look like format 'rba'"):
        convert_state_dict("ugains", bare_rba, architecture="tiny_1dl")


def test_non_tensor_entry_is_named(tmp_path: Path) -> None:
    state = rba_state()
    state["backbone.norm0.bias"] = [1.0, 2.0]
    path = save(tmp_path / "model_final.pth", {"model": state})
    with pytest.raises(CheckpointError, match=r"'backbone\.norm0\.bias' is a list, not a tensor"):
        load_state_dict_for("rba", path, architecture="tiny_1dl")


def test_missing_file_and_non_checkpoint_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
        load_state_dict_for("rba", missing, architecture="tiny_1dl")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="as a PyTorch checkpoint"):
        safe_torch_load(str(garbage))
