"""Mask2Former's architecture for UGainS (method step 1), on Hugging Face transformers.

The checkpoints users bring (RbA model zoo, UGainS) use a Mask2Former head that transformers'
stock model cannot hold: their MSDeformAttn pixel decoder runs the deformable encoder on res5
only, with FPN levels for res4, res3 and res2. :class:`MultiLevelPixelDecoder` generalises
transformers' pixel decoder to any number of deformable levels (stored in the HF config as
``encoder_feature_levels``; absent = 3 = stock) and
:class:`Mask2FormerMultiLevelForUniversalSegmentation` plugs it into the stock model. Every
parameter keeps transformers' name, so checkpoints convert with transformers' key mapping and
``save_pretrained`` / ``from_pretrained`` round-trip. :data:`ARCHITECTURES` names the presets.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import Mask2FormerConfig as HFMask2FormerConfig
from transformers import SwinConfig
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerForUniversalSegmentation,
    Mask2FormerPixelDecoder,
    Mask2FormerPixelDecoderEncoderLayer,
    Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention,
    Mask2FormerPixelDecoderEncoderOnly,
    Mask2FormerPixelDecoderOutput,
    Mask2FormerSinePositionEmbedding,
)

__all__ = [
    "ARCHITECTURES",
    "ENCODER_FEATURE_LEVELS",
    "IGNORED_KEY_SUFFIXES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "OPTIONAL_KEYS",
    "Mask2FormerMultiLevelForUniversalSegmentation",
    "MultiLevelPixelDecoder",
    "architecture_config",
    "encoder_feature_levels",
]

# Name of the extra HF config attribute holding the number of deformable encoder levels.
ENCODER_FEATURE_LEVELS = "encoder_feature_levels"
# transformers' transformer decoder always cross-attends to three scales of the pixel decoder.
_DECODER_FEATURE_LEVELS = 3

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # RGB, 0-255 scale
IMAGENET_STD = (58.395, 57.12, 57.375)

# The head of the RbA / UGainS checkpoints (detectron2 MaskFormer config):
# res5-only deformable encoder, 6 encoder layers, one masked-attention decoder layer.
_CHECKPOINT_HEAD: dict[str, Any] = {
    "feature_size": 256,
    "mask_feature_size": 256,
    "hidden_dim": 256,
    "encoder_feedforward_dim": 1024,
    "dim_feedforward": 2048,
    "num_attention_heads": 8,
    "encoder_layers": 6,
    # transformers builds `decoder_layers - 1` masked-attention layers (the first "layer" is the
    # prediction from the learned queries before any attention), exactly like detectron2's
    # `DEC_LAYERS - 1`; the checkpoints' DEC_LAYERS 2 (one layer) is therefore decoder_layers 2.
    "decoder_layers": 2,
    ENCODER_FEATURE_LEVELS: 1,
}

# Backbone (Swin, out_features res2-res5) and head of every named architecture.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "swin_b_1dl": {
        "backbone": {
            "embed_dim": 128,
            "depths": [2, 2, 18, 2],
            "num_heads": [4, 8, 16, 32],
            "window_size": 12,
        },
        "head": _CHECKPOINT_HEAD,
    },
    "swin_l_1dl": {
        "backbone": {
            "embed_dim": 192,
            "depths": [2, 2, 18, 2],
            "num_heads": [6, 12, 24, 48],
            "window_size": 12,
        },
        "head": _CHECKPOINT_HEAD,
    },
    # Same structure at toy sizes, for tests and CPU demos (GroupNorm(32, .) needs 32 | dims).
    "tiny_1dl": {
        "backbone": {
            "embed_dim": 32,
            "depths": [2, 2, 2, 2],
            "num_heads": [1, 2, 4, 8],
            "window_size": 7,
        },
        "head": {
            **_CHECKPOINT_HEAD,
            "feature_size": 32,
            "mask_feature_size": 32,
            "hidden_dim": 32,
            "encoder_feedforward_dim": 64,
            "dim_feedforward": 64,
            "num_attention_heads": 4,
        },
    },
}

# Keys a checkpoint may lack (loaded like any other tensor when present): the loss's class
# weights, derived from the config, and the Swin model's final LayerNorm, which transformers'
# Swin backbone never applies (it norms each stage with `hidden_states_norms`); neither
# detectron2's nor transformers' own Mask2Former checkpoints have it. A test checks both are
# dead weight for the outputs.
OPTIONAL_KEYS = frozenset(
    {
        "criterion.empty_weight",
        "model.pixel_level_module.encoder.swin.layernorm.weight",
        "model.pixel_level_module.encoder.swin.layernorm.bias",
    }
)
# Keys a checkpoint may have beyond the model: Swin's relative position indices, buffers the
# model recomputes from its window size (the original Swin and older transformers saved them).
IGNORED_KEY_SUFFIXES = (".relative_position_index",)


def architecture_config(
    architecture: str, *, num_classes: int = 19, num_queries: int = 100
) -> HFMask2FormerConfig:
    """The transformers config of a named architecture (see :data:`ARCHITECTURES`)."""
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"architecture must be one of {sorted(ARCHITECTURES)}, got {architecture!r}"
        )
    spec = ARCHITECTURES[architecture]
    backbone = SwinConfig(
        **spec["backbone"],
        drop_path_rate=0.3,  # the checkpoints' training value; inactive in eval mode
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    return HFMask2FormerConfig(
        backbone_config=backbone,
        num_labels=num_classes,
        num_queries=num_queries,
        **spec["head"],
    )


def encoder_feature_levels(config: HFMask2FormerConfig) -> int:
    """Number of deformable encoder levels of a config; stock transformers configs have 3."""
    return int(getattr(config, ENCODER_FEATURE_LEVELS, 3))


class _EncoderLayer(Mask2FormerPixelDecoderEncoderLayer):
    """transformers' deformable encoder layer, attending over ``num_levels`` levels (not 3)."""

    def __init__(self, config: HFMask2FormerConfig, num_levels: int) -> None:
        super().__init__(config)
        if num_levels != self.self_attn.n_levels:
            self.self_attn = Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention(
                embed_dim=self.embed_dim,
                num_heads=config.num_attention_heads,
                n_levels=num_levels,
                n_points=self.self_attn.n_points,
            )


class _DeformableEncoder(Mask2FormerPixelDecoderEncoderOnly):
    """transformers' deformable encoder built from :class:`_EncoderLayer` (forward inherited)."""

    def __init__(self, config: HFMask2FormerConfig, num_levels: int) -> None:
        nn.Module.__init__(self)  # the parent's __init__ would build three-level layers
        self.config = config
        self.dropout = config.dropout
        self.layers = nn.ModuleList(
            [_EncoderLayer(config, num_levels) for _ in range(config.encoder_layers)]
        )


class MultiLevelPixelDecoder(Mask2FormerPixelDecoder):
    """Mask2Former's MSDeformAttn pixel decoder with a configurable number of deformable levels.

    The deformable encoder sees the ``L = config.encoder_feature_levels`` lowest-resolution
    backbone features; the remaining higher-resolution ones (``log2(min encoder stride) -
    log2(common_stride)`` of them) join through FPN lateral/output convolutions. The transformer
    decoder gets the first three outputs (lowest resolution first), the mask features come from
    the last (stride ``common_stride``). With ``L = 3`` this is transformers' stock decoder, with
    the same parameter names; it subclasses it so transformers' weight init applies.
    """

    def __init__(self, config: HFMask2FormerConfig, feature_channels: Sequence[int]) -> None:
        nn.Module.__init__(self)  # the parent's __init__ hard-wires three deformable levels
        levels = encoder_feature_levels(config)
        strides = list(config.feature_strides)
        if len(strides) != len(feature_channels):
            raise ValueError(
                f"config.feature_strides {strides} must have one stride per backbone feature "
                f"(got {len(feature_channels)} features)"
            )
        if not 1 <= levels <= len(feature_channels):
            raise ValueError(
                f"config.{ENCODER_FEATURE_LEVELS} must be in [1, {len(feature_channels)}], "
                f"got {levels}"
            )
        self.config = config
        self.num_feature_levels = levels
        self.feature_channels = list(feature_channels)
        self.transformer_feature_strides = strides[-levels:]
        self.common_stride = config.common_stride
        self.num_fpn_levels = int(
            math.log2(min(self.transformer_feature_strides)) - math.log2(self.common_stride)
        )
        if levels + self.num_fpn_levels < _DECODER_FEATURE_LEVELS:
            raise ValueError(
                f"the pixel decoder makes {levels + self.num_fpn_levels} scales but the "
                f"transformer decoder needs {_DECODER_FEATURE_LEVELS}"
            )

        feature_dim = config.feature_size
        self.position_embedding = Mask2FormerSinePositionEmbedding(
            num_position_features=feature_dim // 2, normalize=True
        )
        self.level_embed = nn.Parameter(torch.empty(levels, feature_dim))
        # One 1x1 projection per deformable level, lowest resolution first.
        self.input_projections = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, feature_dim, kernel_size=1), nn.GroupNorm(32, feature_dim)
            )
            for channels in self.feature_channels[-levels:][::-1]
        )
        self.encoder = _DeformableEncoder(config, levels)
        self.mask_projection = nn.Conv2d(feature_dim, config.mask_feature_size, kernel_size=1)

        # FPN levels, registered highest resolution first (adapter_1 = stride-4 feature) as in
        # transformers and detectron2; applied lowest resolution first.
        lateral, output = [], []
        for idx, channels in enumerate(self.feature_channels[: self.num_fpn_levels]):
            lateral_conv = nn.Sequential(
                nn.Conv2d(channels, feature_dim, kernel_size=1, bias=False),
                nn.GroupNorm(32, feature_dim),
            )
            output_conv = nn.Sequential(
                nn.Conv2d(feature_dim, feature_dim, kernel_size=3, padding=1, bias=False),
                nn.GroupNorm(32, feature_dim),
                nn.ReLU(),
            )
            self.add_module(f"adapter_{idx + 1}", lateral_conv)
            self.add_module(f"layer_{idx + 1}", output_conv)
            lateral.append(lateral_conv)
            output.append(output_conv)
        self.lateral_convolutions = lateral[::-1]
        self.output_convolutions = output[::-1]

    def forward(
        self,
        features: Sequence[Tensor],
        encoder_outputs: Any = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> Mask2FormerPixelDecoderOutput:
        """Backbone features ``[B, C_i, H_i, W_i]`` (highest resolution first) -> decoder inputs.

        Returns ``mask_features [B, mask_dim, H_0, W_0]`` and three ``multi_scale_features``
        ``[B, feature_dim, h, w]``, lowest resolution first. Images of a batch share one size
        (no padding mask), so every encoder position is valid.
        """
        deformable = list(features[::-1][: self.num_feature_levels])
        embeds = [proj(x) for proj, x in zip(self.input_projections, deformable, strict=True)]
        shapes = [(int(e.shape[2]), int(e.shape[3])) for e in embeds]
        inputs_flat = torch.cat([e.flatten(2).transpose(1, 2) for e in embeds], 1)
        position_flat = torch.cat(
            [
                self.position_embedding(x.shape, x.device, x.dtype).flatten(2).transpose(1, 2)
                + self.level_embed[i].view(1, 1, -1)
                for i, x in enumerate(deformable)
            ],
            1,
        )
        batch_size = inputs_flat.shape[0]
        sizes = [h * w for h, w in shapes]
        level_start_index = torch.tensor(
            [0, *itertools.accumulate(sizes[:-1])], dtype=torch.long, device=inputs_flat.device
        )
        valid_ratios = inputs_flat.new_ones(batch_size, self.num_feature_levels, 2)

        if encoder_outputs is None:
            encoder_outputs = self.encoder(
                inputs_embeds=inputs_flat,
                attention_mask=None,
                position_embeddings=position_flat,
                spatial_shapes_list=shapes,
                level_start_index=level_start_index,
                valid_ratios=valid_ratios,
                output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
                return_dict=return_dict,
            )
        encoded = torch.split(encoder_outputs.last_hidden_state, sizes, dim=1)
        outputs = [
            x.transpose(1, 2).reshape(batch_size, -1, h, w)
            for x, (h, w) in zip(encoded, shapes, strict=True)
        ]
        for idx, feature in enumerate(features[: self.num_fpn_levels][::-1]):
            lateral = self.lateral_convolutions[idx](feature)
            upsampled = F.interpolate(
                outputs[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False
            )
            outputs.append(self.output_convolutions[idx](lateral + upsampled))

        return Mask2FormerPixelDecoderOutput(
            mask_features=self.mask_projection(outputs[-1]),
            multi_scale_features=tuple(outputs[:_DECODER_FEATURE_LEVELS]),
            attentions=encoder_outputs.attentions,
        )


class Mask2FormerMultiLevelForUniversalSegmentation(Mask2FormerForUniversalSegmentation):
    """transformers' ``Mask2FormerForUniversalSegmentation`` with a :class:`MultiLevelPixelDecoder`.

    ``config.encoder_feature_levels`` (default 3) sets the deformable encoder's levels; every
    other part, every parameter name and ``save_pretrained`` / ``from_pretrained`` are
    transformers'. A stock checkpoint loads unchanged (3 levels).
    """

    def __init__(self, config: HFMask2FormerConfig) -> None:
        super().__init__(config)
        pixel_level = self.model.pixel_level_module
        pixel_level.decoder = MultiLevelPixelDecoder(config, pixel_level.encoder.channels)
        # transformers marks initialised modules, so this initialises only the new decoder.
        self.post_init()
