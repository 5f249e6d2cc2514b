"""Mask2Former, the in-distribution model of UGainS (method step 1), on Hugging Face transformers.

The checkpoints users bring (RbA model zoo, UGainS) use a Mask2Former head that transformers'
stock model cannot hold: their MSDeformAttn pixel decoder runs the deformable encoder on res5
only, with FPN levels for res4, res3 and res2. :class:`MultiLevelPixelDecoder` generalises
transformers' pixel decoder to any number of deformable levels (stored in the HF config as
``encoder_feature_levels``; absent = 3 = stock) and
:class:`Mask2FormerMultiLevelForUniversalSegmentation` plugs it into the stock model. Every
parameter keeps transformers' name, so checkpoints convert with transformers' key mapping and
``save_pretrained`` / ``from_pretrained`` round-trip.

:func:`build_mask2former` builds a :class:`Mask2FormerSegmenter` (normalisation, padding, last
decoder layer, mask upsampling) from a :class:`models.config.Mask2FormerConfig`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import numbers
import pickle
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
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

from models.config import Mask2FormerConfig
from models.errors import CheckpointError
from models.safe_load import safe_torch_load

__all__ = [
    "ARCHITECTURES",
    "ENCODER_FEATURE_LEVELS",
    "IGNORED_KEY_SUFFIXES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "OPTIONAL_KEYS",
    "CheckpointError",
    "Mask2FormerMultiLevelForUniversalSegmentation",
    "Mask2FormerSegmenter",
    "MultiLevelPixelDecoder",
    "architecture_config",
    "build_mask2former",
    "encoder_feature_levels",
    "favour_no_object",
    "load_strict",
    "no_progress_bars",
    "resolve_format",
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


class Mask2FormerSegmenter(nn.Module):
    """Thin predictor: RGB frames in, the last decoder layer's class and mask logits out.

    Normalises with ImageNet mean/std, zero-pads (after normalisation, bottom/right, as
    detectron2 does) to a multiple of 32 when needed, runs the whole batch in one call, and
    upsamples the stride-4 mask logits bilinearly (``align_corners=False``): without padding
    straight to ``output_size``; with padding first to the padded size, cropped to the input,
    then resized to ``output_size`` if that differs (detectron2's ``sem_seg_postprocess``).

    ``autocast_dtype`` (e.g. ``torch.bfloat16``) runs the model under autocast on CUDA only;
    CPU always runs fp32 (CPU autocast is slower there and would change reference numbers).
    Outputs are float32 either way.
    """

    size_divisibility = 32

    def __init__(
        self,
        model: Mask2FormerForUniversalSegmentation,
        *,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.autocast_dtype = autocast_dtype
        self.register_buffer(
            "pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False
        )

    @property
    def num_classes(self) -> int:
        """K, the number of in-distribution classes (the logits have K + 1: no-object last)."""
        return int(self.model.config.num_labels)

    @property
    def num_queries(self) -> int:
        """Q, the number of object queries."""
        return int(self.model.config.num_queries)

    def normalize(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` RGB on the 0-255 scale (any dtype) -> float32 ImageNet-normalised.

        The model's input transform; training (``models.training.mask2former``) calls it too, so
        that the model sees at inference exactly what it saw in training. Moves to the model's
        device; does not pad.
        """
        images = images.to(self.pixel_mean.device, non_blocking=True)
        return (images.float() - self.pixel_mean) / self.pixel_std

    def forward(
        self, images: Tensor, output_size: tuple[int, int] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Segment a batch of frames.

        Args:
            images: ``[B, 3, H, W]`` RGB, uint8 or floating point on the 0-255 scale, on any
                device (moved to the model's).
            output_size: ``(H', W')`` of the returned mask logits; default ``(H, W)``.

        Returns:
            ``class_logits [B, Q, K + 1]`` and ``mask_logits [B, Q, H', W']``, both float32 on
            the model's device.
        """
        if not isinstance(images, Tensor):
            raise ValueError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.ndim != 4 or images.shape[1] != 3 or 0 in images.shape:
            raise ValueError(
                f"images must be [B, 3, H, W] RGB with B, H, W >= 1, got shape "
                f"{tuple(images.shape)}"
            )
        if images.dtype != torch.uint8 and not images.dtype.is_floating_point:
            raise ValueError(f"images must be uint8 or floating point, got {images.dtype}")
        height, width = int(images.shape[2]), int(images.shape[3])
        if output_size is None:
            output_size = (height, width)
        elif len(output_size) != 2 or not all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1
            for s in output_size
        ):
            raise ValueError(
                f"output_size must be (height, width) integers >= 1, got {output_size}"
            )
        output_size = (int(output_size[0]), int(output_size[1]))

        pixels = self.normalize(images)
        divisor = self.size_divisibility
        pad_h, pad_w = -height % divisor, -width % divisor
        if pad_h or pad_w:
            pixels = F.pad(pixels, (0, pad_w, 0, pad_h))

        if self.autocast_dtype is not None and pixels.device.type == "cuda":
            precision = torch.autocast("cuda", dtype=self.autocast_dtype)
        else:
            precision = contextlib.nullcontext()
        with precision:
            outputs = self.model(pixel_values=pixels)
        class_logits = outputs.class_queries_logits.float()
        mask_logits = outputs.masks_queries_logits.float()

        if pad_h or pad_w:
            mask_logits = F.interpolate(
                mask_logits, size=pixels.shape[-2:], mode="bilinear", align_corners=False
            )[:, :, :height, :width]
            if output_size == (height, width):
                return class_logits, mask_logits
        mask_logits = F.interpolate(
            mask_logits, size=output_size, mode="bilinear", align_corners=False
        )
        return class_logits, mask_logits


def favour_no_object(segmenter: Mask2FormerSegmenter, bias: float = 9.0) -> Mask2FormerSegmenter:
    """Give an UNTRAINED model a trained one's habit of answering "no object" on most queries.

    A random-init Mask2Former spreads each query's class mass over the K classes, which puts the
    RbA score near ``-Q / 2`` on every pixel, far below both candidate thresholds, so nothing
    would ever be sampled. Raising the bias of the no-object logit (the last class) leaves a
    little class mass per query, as in a trained model, and puts ``U`` in the range the method's
    thresholds are made for. For demos, tests and benchmarks of untrained models only; returns
    ``segmenter``, modified in place.
    """
    with torch.no_grad():
        segmenter.model.class_predictor.bias[-1] = bias
    return segmenter


def load_strict(
    model: nn.Module, state_dict: Mapping[str, Tensor], *, unused_ok: Iterable[str] = ()
) -> list[str]:
    """Load ``state_dict`` into ``model`` so that nothing is left out on either side.

    Every persistent parameter and buffer of ``model`` must be in ``state_dict`` with its shape
    (except :data:`OPTIONAL_KEYS`), and every tensor of ``state_dict`` must be used unless its
    key is in ``unused_ok`` or ends with one of :data:`IGNORED_KEY_SUFFIXES`. Values are cast to
    the model's dtypes.

    Returns:
        The keys of ``state_dict`` that were left unused, sorted.

    Raises:
        CheckpointError: naming every missing key, unexpected key, non-tensor value and shape
            mismatch (with both shapes); the model is then left untouched.
    """
    expected = model.state_dict()
    allowed_unused = set(unused_ok)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected and k not in allowed_unused]
    not_tensors = [k for k, v in state_dict.items() if not isinstance(v, Tensor)]
    mismatched = [
        (k, tuple(v.shape), tuple(expected[k].shape))
        for k, v in state_dict.items()
        if k in expected and isinstance(v, Tensor) and v.shape != expected[k].shape
    ]
    _raise_unless_fits(type(model).__name__, missing, unexpected, mismatched, not_tensors)
    model.load_state_dict({k: v for k, v in state_dict.items() if k in expected}, strict=False)
    return sorted(k for k in state_dict if k not in expected)


def _raise_unless_fits(
    target: str,
    missing: Iterable[str],
    unexpected: Iterable[str],
    mismatched: Iterable[tuple[str, tuple[int, ...], tuple[int, ...]]],
    not_tensors: Iterable[str] = (),
) -> None:
    """Raise a :class:`CheckpointError` listing every problem, or nothing if there is none."""
    missing = sorted(set(missing) - OPTIONAL_KEYS)
    unexpected = sorted(k for k in unexpected if not k.endswith(IGNORED_KEY_SUFFIXES))
    shapes = [f"{k}: checkpoint {ckpt} vs model {mine}" for k, ckpt, mine in sorted(mismatched)]
    problems = []
    for title, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", shapes),
        ("values that are not tensors", sorted(not_tensors)),
    ):
        if items:
            shown = "\n  ".join(items[:_MAX_LISTED])
            more = (
                f"\n  ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
            )
            problems.append(f"{len(items)} {title}:\n  {shown}{more}")
    if problems:
        raise CheckpointError(f"checkpoint does not fit {target}:\n" + "\n".join(problems))


_MAX_LISTED = 20  # keys listed per kind of problem in an error message


_FORMAT_BY_SUFFIX = {".ckpt": "ugains", ".pth": "rba"}


def resolve_format(fmt: str, checkpoint: str | None) -> str:
    """The concrete format of a checkpoint: ``fmt`` itself unless it is ``"auto"``.

    ``auto``: a directory with ``config.json`` is a Hugging Face model, ``*.ckpt`` the UGainS
    Lightning checkpoint, ``*.pth`` an RbA model-zoo ``model_final.pth``.
    """
    if fmt != "auto":
        return fmt
    if not checkpoint:
        raise ValueError("format 'auto' needs a checkpoint path")
    path = Path(checkpoint)
    if path.is_dir() and (path / "config.json").is_file():
        return "huggingface"
    if path.suffix in _FORMAT_BY_SUFFIX:
        return _FORMAT_BY_SUFFIX[path.suffix]
    raise ValueError(
        f"cannot tell the format of Mask2Former checkpoint {checkpoint!r}: expected a Hugging "
        "Face model directory (with config.json), a .pth (RbA) or a .ckpt (UGainS) file; "
        "set mask2former.format explicitly"
    )


def build_mask2former(config: Mask2FormerConfig) -> Mask2FormerSegmenter:
    """Build the in-distribution model of ``config``, in eval mode, on the CPU.

    ``random``: the named architecture, initialised from ``config.seed`` (the global RNG is
    left as it was). ``huggingface``: a local model directory (never a download; safetensors
    or ``weights_only`` pickles) whose ``config.json`` defines the architecture (the config's
    ``architecture`` is not used; its sizes are checked). ``rba`` / ``ugains``: converted by
    :func:`models.checkpoints.load_state_dict_for`, loaded with :func:`load_strict` into the
    named architecture.

    Raises:
        FileNotFoundError: the checkpoint does not exist.
        CheckpointError: the checkpoint does not fit the model or the config.
    """
    fmt = resolve_format(config.format, config.checkpoint)
    if fmt not in ("random", "huggingface", "rba", "ugains"):
        raise ValueError(f"unknown Mask2Former format {fmt!r}")
    if fmt == "huggingface":
        model = _load_huggingface(Path(str(config.checkpoint)))
        _check_sizes(model, config)
    else:
        path = Path(str(config.checkpoint))
        if fmt != "random" and not path.is_file():
            raise FileNotFoundError(f"Mask2Former checkpoint not found: {path}")
        hf_config = architecture_config(
            config.architecture, num_classes=config.num_classes, num_queries=config.num_queries
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = Mask2FormerMultiLevelForUniversalSegmentation(hf_config)
        if fmt != "random":
            # Imported here: the converters pull in their own dependencies only when needed.
            from models.checkpoints import load_state_dict_for

            # `skipped`: source keys the converter leaves out on purpose (training-only state).
            state_dict, _skipped = load_state_dict_for(
                fmt, str(path), architecture=config.architecture
            )
            load_strict(model, state_dict)
    autocast_dtype = torch.bfloat16 if config.autocast_bf16 else None
    return Mask2FormerSegmenter(model.eval(), autocast_dtype=autocast_dtype).eval()


@contextlib.contextmanager
def no_progress_bars() -> Iterator[None]:
    """Silence transformers' progress bars (one per load or save) inside the block.

    Every Beam worker loads the model; a bar per worker per load is noise in a job's log.
    """
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _load_huggingface(path: Path) -> Mask2FormerMultiLevelForUniversalSegmentation:
    """``from_pretrained`` of a local directory; any missing or unused weight is an error."""
    if not path.is_dir():
        raise FileNotFoundError(f"Hugging Face Mask2Former directory not found: {path}")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"Hugging Face Mask2Former directory without config.json: {path}")
    model_type = json.loads(config_file.read_text()).get("model_type")
    if model_type != "mask2former":
        raise CheckpointError(f"{config_file} has model_type {model_type!r}, not 'mask2former'")
    if not any(path.glob("*.safetensors")):
        # Pickled weights: checked by the project's one safe loader first, so that a file
        # needing code is refused in one line naming its globals (transformers' own error
        # would advise weights_only=False).
        for weights in sorted(path.glob("*.bin")):
            safe_torch_load(weights)
    try:
        with no_progress_bars():
            model, info = Mask2FormerMultiLevelForUniversalSegmentation.from_pretrained(
                path,
                local_files_only=True,
                weights_only=True,
                dtype=torch.float32,
                # Mismatches are collected and reported below, naming the keys and shapes.
                ignore_mismatched_sizes=True,
                output_loading_info=True,
            )
    except (OSError, RuntimeError, pickle.UnpicklingError) as error:
        raise CheckpointError(
            f"cannot load Hugging Face Mask2Former from {path}: {error}"
        ) from error
    _raise_unless_fits(
        f"{type(model).__name__} ({path})",
        info["missing_keys"],
        info["unexpected_keys"],
        [(k, tuple(ckpt), tuple(mine)) for k, ckpt, mine in info["mismatched_keys"]],
    )
    return model


def _check_sizes(model: Mask2FormerForUniversalSegmentation, config: Mask2FormerConfig) -> None:
    """The loaded model must have the classes and queries the config promises."""
    got = (int(model.config.num_labels), int(model.config.num_queries))
    if got != (config.num_classes, config.num_queries):
        raise CheckpointError(
            f"checkpoint {config.checkpoint} has {got[0]} classes and {got[1]} queries, the "
            f"config says num_classes={config.num_classes}, num_queries={config.num_queries}"
        )
