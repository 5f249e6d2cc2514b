"""Read the Mask2Former checkpoints users bring and rename them to transformers' parameter names.

Two source formats (docs/engineering.md, "Checkpoints a user brings"):

``rba``
    An RbA model-zoo ``model_final.pth``: detectron2's ``{"model": state_dict, "trainer": ...,
    "iteration": ...}`` with the keys of Mask2Former's ``MaskFormer`` meta-architecture
    (``backbone.*``, ``sem_seg_head.pixel_decoder.*``, ``sem_seg_head.predictor.*``,
    ``criterion.empty_weight``).
``ugains``
    The UGainS Lightning checkpoint (``rude0fhk.ckpt``): ``{"state_dict": ..., ...}`` whose
    model keys are those of the official ``NLSSegmentation`` (``backbone.*``,
    ``pixel_decoder.*``, ``sem_seg_head.*``). The official code loads it with
    ``strict=False``, so every other entry of the state dict is ignored; so are they here.

Either may also be a bare state dict (what :func:`safe_torch_load`'s error message asks users
to re-save when a file needs arbitrary unpickling). Both are read with ``weights_only=True``.

The renaming follows transformers' own Mask2Former conversion script, on the parameter names
of the installed transformers (Swin ``q_proj``/``k_proj``/``v_proj``/``o_proj``). Checked
against the original RbA and UGainS code run at small dimensions:
``tests/fixtures/mask2former/README.md``.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from models.checkpoints import safe_torch_load
from models.errors import CheckpointError
from models.mask2former.architecture import (
    Mask2FormerMultiLevelForUniversalSegmentation,
    architecture_config,
)

__all__ = [
    "CheckpointFormat",
    "convert_state_dict",
    "load_state_dict_for",
]

CheckpointFormat = Literal["rba", "ugains"]

# --- Key renaming rules -------------------------------------------------------------------------
# A rule pairs a source-key template (relative to its section prefix) with a target-key template
# (absolute). ``{x}`` fields match digits, ``{p}`` matches weight|bias; a target field may be
# shifted (detectron2's ``norm0`` is transformers' ``stage1``). ``{qkv}`` in a target marks a
# fused projection split into thirds (query, key, value) along dim 0. A rule with no target
# names a source key that is deliberately unused.


@dataclass(frozen=True)
class _Rule:
    source: str
    target: str | None
    shift: int = 0  # added to field "i" in the target

    @functools.cached_property
    def source_re(self) -> re.Pattern[str]:
        return _compile(self.source)

    @functools.cached_property
    def target_re(self) -> re.Pattern[str] | None:
        return None if self.target is None else _compile(self.target)


def _compile(template: str) -> re.Pattern[str]:
    pattern = re.escape(template)
    pattern = pattern.replace(r"\{p\}", r"(?P<p>weight|bias)")
    pattern = pattern.replace(r"\{qkv\}", r"(?P<qkv>[qkv])")
    pattern = pattern.replace(r"\{rest\}", r"(?P<rest>.+)")
    pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>\\d+)", pattern)
    return re.compile(pattern + "$")


_SWIN = "model.pixel_level_module.encoder."
_BLOCK = _SWIN + "swin.encoder.layers.{i}.blocks.{j}."
_BACKBONE_RULES = (
    _Rule("patch_embed.proj.{p}", _SWIN + "swin.embeddings.patch_embeddings.projection.{p}"),
    _Rule("patch_embed.norm.{p}", _SWIN + "swin.embeddings.norm.{p}"),
    _Rule("layers.{i}.blocks.{j}.norm1.{p}", _BLOCK + "layernorm_before.{p}"),
    _Rule("layers.{i}.blocks.{j}.attn.qkv.{p}", _BLOCK + "attention.{qkv}_proj.{p}"),
    _Rule("layers.{i}.blocks.{j}.attn.proj.{p}", _BLOCK + "attention.o_proj.{p}"),
    _Rule(
        "layers.{i}.blocks.{j}.attn.relative_position_bias_table",
        _BLOCK + "attention.relative_position_bias.relative_position_bias_table",
    ),
    # A function of the window size; transformers rebuilds it (non-persistent buffer).
    _Rule("layers.{i}.blocks.{j}.attn.relative_position_index", None),
    _Rule("layers.{i}.blocks.{j}.norm2.{p}", _BLOCK + "layernorm_after.{p}"),
    _Rule("layers.{i}.blocks.{j}.mlp.fc{n}.{p}", _BLOCK + "mlp.fc{n}.{p}"),
    _Rule(
        "layers.{i}.downsample.reduction.weight",
        _SWIN + "swin.encoder.layers.{i}.downsample.reduction.weight",
    ),
    _Rule("layers.{i}.downsample.norm.{p}", _SWIN + "swin.encoder.layers.{i}.downsample.norm.{p}"),
    _Rule("norm{i}.{p}", _SWIN + "hidden_states_norms.stage{i}.{p}", shift=1),
)

_PIXEL = "model.pixel_level_module.decoder."
_ENCODER = "transformer.encoder.layers.{i}."
_PIXEL_DECODER_RULES = (
    _Rule("input_proj.{i}.{k}.{p}", _PIXEL + "input_projections.{i}.{k}.{p}"),
    _Rule("transformer.level_embed", _PIXEL + "level_embed"),
    *(
        _Rule(
            _ENCODER + f"self_attn.{name}.{{p}}",
            _PIXEL + f"encoder.layers.{{i}}.self_attn.{name}.{{p}}",
        )
        for name in ("sampling_offsets", "attention_weights", "value_proj", "output_proj")
    ),
    _Rule(_ENCODER + "linear1.{p}", _PIXEL + "encoder.layers.{i}.fc1.{p}"),
    _Rule(_ENCODER + "linear2.{p}", _PIXEL + "encoder.layers.{i}.fc2.{p}"),
    _Rule(_ENCODER + "norm1.{p}", _PIXEL + "encoder.layers.{i}.self_attn_layer_norm.{p}"),
    _Rule(_ENCODER + "norm2.{p}", _PIXEL + "encoder.layers.{i}.final_layer_norm.{p}"),
    _Rule("mask_features.{p}", _PIXEL + "mask_projection.{p}"),
    # detectron2 Conv2d(norm=GN): the conv's weight and its .norm child -> Sequential(conv, GN).
    _Rule("adapter_{i}.weight", _PIXEL + "adapter_{i}.0.weight"),
    _Rule("adapter_{i}.norm.{p}", _PIXEL + "adapter_{i}.1.{p}"),
    _Rule("layer_{i}.weight", _PIXEL + "layer_{i}.0.weight"),
    _Rule("layer_{i}.norm.{p}", _PIXEL + "layer_{i}.1.{p}"),
)

_MODULE = "model.transformer_module."
_LAYER = _MODULE + "decoder.layers.{i}."
_SELF, _CROSS, _FFN = (
    "transformer_self_attention_layers.{i}.",
    "transformer_cross_attention_layers.{i}.",
    "transformer_ffn_layers.{i}.",
)
_PREDICTOR_RULES = (
    _Rule("query_embed.weight", _MODULE + "queries_embedder.weight"),
    _Rule("query_feat.weight", _MODULE + "queries_features.weight"),
    _Rule("level_embed.weight", _MODULE + "level_embed.weight"),
    _Rule("input_proj.{i}.{p}", _MODULE + "input_projections.{i}.{p}"),
    _Rule(_SELF + "self_attn.in_proj_{p}", _LAYER + "self_attn.{qkv}_proj.{p}"),
    _Rule(_SELF + "self_attn.out_proj.{p}", _LAYER + "self_attn.out_proj.{p}"),
    _Rule(_SELF + "norm.{p}", _LAYER + "self_attn_layer_norm.{p}"),
    _Rule(_CROSS + "multihead_attn.in_proj_{p}", _LAYER + "cross_attn.in_proj_{p}"),
    _Rule(_CROSS + "multihead_attn.out_proj.{p}", _LAYER + "cross_attn.out_proj.{p}"),
    _Rule(_CROSS + "norm.{p}", _LAYER + "cross_attn_layer_norm.{p}"),
    _Rule(_FFN + "linear1.{p}", _LAYER + "fc1.{p}"),
    _Rule(_FFN + "linear2.{p}", _LAYER + "fc2.{p}"),
    _Rule(_FFN + "norm.{p}", _LAYER + "final_layer_norm.{p}"),
    _Rule("decoder_norm.{p}", _MODULE + "decoder.layernorm.{p}"),
    _Rule("mask_embed.layers.{i}.{p}", _MODULE + "decoder.mask_predictor.mask_embedder.{i}.0.{p}"),
    _Rule("class_embed.{p}", "class_predictor.{p}"),
)


@dataclass(frozen=True)
class _Layout:
    """Where a format keeps each part of the model, and what else its state dict may hold."""

    sections: tuple[tuple[str, tuple[_Rule, ...]], ...]  # (source prefix, rules)
    top_rules: tuple[_Rule, ...]  # whole-key rules for keys outside the sections
    other_keys_unused: bool  # keys outside the sections and top rules: unused (else an error)
    container_key: str  # where the state dict sits in the saved dict


_LAYOUTS: dict[str, _Layout] = {
    "rba": _Layout(
        sections=(
            ("backbone.", _BACKBONE_RULES),
            ("sem_seg_head.pixel_decoder.", _PIXEL_DECODER_RULES),
            (
                "sem_seg_head.predictor.",
                # RbA's optional DenseHybrid head (MASK_FORMER.DENSE_HYBRID_LOSS) does not
                # feed the class or mask logits.
                (*_PREDICTOR_RULES, _Rule("ood_pred.{rest}", None)),
            ),
        ),
        top_rules=(_Rule("criterion.empty_weight", "criterion.empty_weight"),),
        other_keys_unused=False,
        container_key="model",
    ),
    "ugains": _Layout(
        sections=(
            ("backbone.", _BACKBONE_RULES),
            ("pixel_decoder.", _PIXEL_DECODER_RULES),
            ("sem_seg_head.", _PREDICTOR_RULES),
        ),
        top_rules=(),
        # The official loader (load_state_dict(strict=False)) ignores them.
        other_keys_unused=True,
        container_key="state_dict",
    ),
}

# Model keys no source provides: transformers' SwinBackbone never applies the SwinModel's final
# layernorm (its `_keys_to_ignore_on_load_missing`), and the loss weight follows the config.
_OPTIONAL_TARGETS = (
    re.compile(re.escape(_SWIN + "swin.layernorm.") + r"(weight|bias)$"),
    re.compile(r"criterion\.empty_weight$"),
)

# transformers' masked-attention decoder always has three level embeddings; RbA's has one per
# decoder level it attends to (DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES: res5 -> 1).
_DECODER_LEVEL_EMBED = _MODULE + "level_embed.weight"
_DECODER_LEVELS = 3


def load_state_dict_for(
    format: CheckpointFormat, path: str | os.PathLike[str], *, architecture: str
) -> tuple[dict[str, Tensor], set[str]]:
    """Read a ``format`` checkpoint and return it with transformers' key names.

    Returns ``(state_dict, unused)``: the state dict for
    :class:`models.mask2former.Mask2FormerMultiLevelForUniversalSegmentation` of
    ``architecture`` and the source keys deliberately not used (training-only entries, buffers
    transformers recomputes). Raises :class:`CheckpointError` naming the file and the source key
    when the checkpoint does not fit the architecture (missing or unexpected keys), when its
    layout is not the format's, or when it cannot be read safely (see :func:`safe_torch_load`).
    """
    if format not in _LAYOUTS:
        raise ValueError(f"format must be one of {sorted(_LAYOUTS)}, got {format!r}")
    path = os.fspath(path)
    loaded = safe_torch_load(path)
    source = _extract_state_dict(format, loaded, path)
    try:
        return convert_state_dict(format, source, architecture=architecture)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None


def _extract_state_dict(format: str, loaded: Any, path: str) -> dict[str, Tensor]:
    """The state dict inside a loaded file: ``loaded[container]`` or ``loaded`` itself."""
    container = _LAYOUTS[format].container_key
    if isinstance(loaded, Mapping) and isinstance(loaded.get(container), Mapping):
        state = loaded[container]
    elif isinstance(loaded, Mapping) and any(
        isinstance(k, str) and k.startswith("backbone.") for k in loaded
    ):
        state = loaded  # a bare state dict
    else:
        found = (
            f"a dict with keys {sorted(map(str, loaded))[:10]}"
            if isinstance(loaded, Mapping)
            else f"a {type(loaded).__name__}"
        )
        others = [
            name
            for name, layout in _LAYOUTS.items()
            if isinstance(loaded, Mapping) and isinstance(loaded.get(layout.container_key), Mapping)
        ]
        hint = f"; its layout is format {others[0]!r}'s" if others else ""
        raise CheckpointError(
            f"{path}: not a {format!r} checkpoint: expected a dict with a {container!r} state "
            f"dict (or a bare state dict with 'backbone.*' keys), found {found}{hint}"
        )
    tensors: dict[str, Tensor] = {}
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise CheckpointError(
                f"{path}: state dict entry {key!r} is a {type(value).__name__}, not a tensor"
            )
        tensors[key] = value
    return tensors


def convert_state_dict(
    format: CheckpointFormat, source: Mapping[str, Tensor], *, architecture: str
) -> tuple[dict[str, Tensor], set[str]]:
    """Rename a ``format`` state dict to transformers' keys (see :func:`load_state_dict_for`).

    Key names are checked against ``architecture`` (every model parameter is provided, no
    source parameter is left over); shapes are checked when the result is loaded strictly.
    """
    layout = _LAYOUTS[format]
    _check_format(format, source)
    converted: dict[str, Tensor] = {}
    origin: dict[str, str] = {}  # target key -> source key, for error messages
    unused: set[str] = set()
    for key, value in source.items():
        rule, fields = _match_source(layout, key)
        if rule is None:
            if layout.other_keys_unused and not _in_sections(layout, key):
                unused.add(key)
                continue
            raise CheckpointError(
                f"unexpected key {key!r}: not a parameter of the {format!r} Mask2Former "
                f"({architecture})"
            )
        if rule.target is None:
            unused.add(key)
            continue
        for target, tensor in _apply(rule, fields, value, key):
            converted[target] = tensor
            origin[target] = key

    _pad_decoder_level_embed(converted, source, layout)
    _check_against_architecture(converted, origin, layout, architecture)
    return converted, unused


def _check_format(format: str, source: Mapping[str, Tensor]) -> None:
    """Fail early, with a hint, when the keys are the other format's."""
    signature = {"rba": "sem_seg_head.pixel_decoder.", "ugains": "pixel_decoder."}
    if any(k.startswith(signature[format]) for k in source):
        return
    others = [f for f, prefix in signature.items() if any(k.startswith(prefix) for k in source)]
    hint = f"; its keys look like format {others[0]!r}" if others else ""
    raise CheckpointError(
        f"no key starts with {signature[format]!r}, so this is not a {format!r} checkpoint{hint}"
    )


def _in_sections(layout: _Layout, key: str) -> bool:
    return any(key.startswith(prefix) for prefix, _ in layout.sections)


def _match_source(layout: _Layout, key: str) -> tuple[_Rule | None, dict[str, str]]:
    # The longest matching prefix wins ("sem_seg_head.pixel_decoder." over "sem_seg_head.").
    for prefix, rules in sorted(layout.sections, key=lambda s: -len(s[0])):
        if key.startswith(prefix):
            rest = key[len(prefix) :]
            for rule in rules:
                match = rule.source_re.match(rest)
                if match:
                    return rule, match.groupdict()
            return None, {}
    for rule in layout.top_rules:
        match = rule.source_re.match(key)
        if match:
            return rule, match.groupdict()
    return None, {}


def _apply(
    rule: _Rule, fields: dict[str, str], value: Tensor, key: str
) -> list[tuple[str, Tensor]]:
    assert rule.target is not None
    fields = dict(fields)
    if "i" in fields and rule.shift:
        fields["i"] = str(int(fields["i"]) + rule.shift)
    if "{qkv}" not in rule.target:
        return [(rule.target.format(**fields), value)]
    if value.shape[0] % 3:
        raise CheckpointError(
            f"{key!r} has shape {tuple(value.shape)}: a fused query/key/value projection "
            "needs a first dimension divisible by 3"
        )
    return [
        (rule.target.format(**fields, qkv=name), part)
        for name, part in zip("qkv", value.chunk(3, dim=0), strict=True)
    ]


def _pad_decoder_level_embed(
    converted: dict[str, Tensor], source: Mapping[str, Tensor], layout: _Layout
) -> None:
    """Give RbA's one-level decoder level embedding transformers' three rows.

    With one masked-attention layer transformers reads only row 0 (layer ``l`` attends to level
    ``l % 3``), exactly as RbA's decoder does, so rows 1-2 never enter the computation; they
    are zero. With more layers the two models would attend to different levels: refused.
    """
    embed = converted.get(_DECODER_LEVEL_EMBED)
    if embed is None or embed.shape[0] == _DECODER_LEVELS:
        return
    predictor = next(p for p, rules in layout.sections if rules[0] is _PREDICTOR_RULES[0])
    layers = {
        k[len(predictor) :].split(".")[1]
        for k in source
        if k.startswith(predictor + "transformer_cross_attention_layers.")
    }
    if embed.shape[0] != 1 or len(layers) != 1:
        raise CheckpointError(
            f"{predictor}level_embed.weight has {embed.shape[0]} levels and the decoder "
            f"{len(layers)} layers; transformers' decoder cycles through 3 levels, which matches "
            "only 3 levels, or 1 level with a single decoder layer"
        )
    padded = embed.new_zeros((_DECODER_LEVELS, *embed.shape[1:]))
    padded[0] = embed[0]
    converted[_DECODER_LEVEL_EMBED] = padded


def _check_against_architecture(
    converted: Mapping[str, Tensor], origin: Mapping[str, str], layout: _Layout, architecture: str
) -> None:
    ordered = _architecture_keys(architecture)
    expected = set(ordered)
    unexpected = sorted(k for k in converted if k not in expected)
    if unexpected:
        raise CheckpointError(
            f"unexpected key {origin[unexpected[0]]!r} (model key {unexpected[0]!r}): not part "
            f"of architecture {architecture!r}"
            + (f" ({len(unexpected) - 1} more)" if len(unexpected) > 1 else "")
        )
    missing = [
        k for k in ordered if k not in converted and not any(p.match(k) for p in _OPTIONAL_TARGETS)
    ]
    if missing:
        raise CheckpointError(
            f"missing key {_source_name(layout, missing[0])!r} (model key {missing[0]!r}) "
            f"needed by architecture {architecture!r}"
            + (f" ({len(missing) - 1} more)" if len(missing) > 1 else "")
        )


def _source_name(layout: _Layout, target: str) -> str:
    """The source key a model key is converted from (for messages); the model key if none."""
    candidates = [(prefix, rule) for prefix, rules in layout.sections for rule in rules]
    candidates += [("", rule) for rule in layout.top_rules]
    for prefix, rule in candidates:
        match = rule.target_re.match(target) if rule.target_re is not None else None
        if match:
            fields = {k: v for k, v in match.groupdict().items() if k != "qkv"}
            if "i" in fields and rule.shift:
                fields["i"] = str(int(fields["i"]) - rule.shift)
            return prefix + rule.source.format(**fields)
    return target


@functools.lru_cache(maxsize=8)
def _architecture_keys(architecture: str) -> tuple[str, ...]:
    """Parameter and buffer names of ``architecture`` (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = Mask2FormerMultiLevelForUniversalSegmentation(architecture_config(architecture))
    return tuple(model.state_dict())  # model order: errors name the first missing module
