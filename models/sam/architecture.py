"""SAM's architectures (``vit_h`` / ``vit_l`` / ``vit_b`` and the test-sized ``vit_tiny``
encoders), the model builder and the strict checkpoint loader.

:func:`build_sam` builds the ``segment_anything`` :class:`~segment_anything.modeling.Sam` of a
registry name from a user's checkpoint, or randomly initialised from a seed; ``vit_tiny`` is
the same SAM with a two-block image encoder so that pipeline tests and the demo run on a CPU
(it has no checkpoint), and ``vit_tiny_512`` is that encoder at a 512-pixel input (a 32x32
embedding grid), the size ``ugains train sam`` trains for the world's frames.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)
from torch import Tensor, nn

from models.checkpoints import safe_torch_load
from models.config import SamConfig
from models.errors import CheckpointError
from models.sam.preprocess import IMAGE_SIZE, PIXEL_MEAN, PIXEL_STD

__all__ = [
    "PATCH_SIZE",
    "PROMPT_EMBED_DIM",
    "SAM_ARCHITECTURES",
    "SamArchitecture",
    "build_sam",
    "build_sam_model",
    "load_sam_checkpoint",
]

PATCH_SIZE = 16
PROMPT_EMBED_DIM = 256


@dataclass(frozen=True)
class SamArchitecture:
    """The image-encoder hyper-parameters that tell SAM's variants apart.

    ``image_size`` is the square encoder input (the longest frame side is resized to it); the
    embedding grid is ``image_size / 16`` and the low-resolution masks ``image_size / 4`` a side.
    Everything else (16-pixel patches, window 14, 256-channel neck, prompt encoder and mask
    decoder) is shared by all variants.
    """

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    image_size: int = IMAGE_SIZE

    def __post_init__(self) -> None:
        if self.image_size <= 0 or self.image_size % PATCH_SIZE:
            raise ValueError(
                f"image_size must be a positive multiple of {PATCH_SIZE}, got {self.image_size}"
            )


SAM_ARCHITECTURES: dict[str, SamArchitecture] = {
    # The segment-anything registry (sam_vit_h_4b8939 / sam_vit_l_0b3195 / sam_vit_b_01ec64).
    "vit_h": SamArchitecture(1280, 32, 16, (7, 15, 23, 31)),
    "vit_l": SamArchitecture(1024, 24, 16, (5, 11, 17, 23)),
    "vit_b": SamArchitecture(768, 12, 12, (2, 5, 8, 11)),
    # Tests and the demo: one windowed and one global block keep both attention kinds covered.
    "vit_tiny": SamArchitecture(128, 2, 4, (1,)),
    # The same encoder at a 512-pixel input (32x32 grid): trained on the world by `ugains train
    # sam` (its 256x512 frames are resized 2x, as 1024x2048 frames are halved for ViT-H).
    "vit_tiny_512": SamArchitecture(128, 2, 4, (1,), image_size=512),
}


def build_sam_model(model_type: str) -> Sam:
    """The SAM architecture named ``model_type`` with PyTorch's default initialisation.

    Built exactly as ``segment_anything.sam_model_registry[model_type]`` builds it (same module
    tree, parameter names and shapes), in eval mode, on the current default device (build under
    ``torch.device("meta")`` to get the structure without allocating weights).

    Raises:
        ValueError: ``model_type`` is not a key of :data:`SAM_ARCHITECTURES`.
    """
    if model_type not in SAM_ARCHITECTURES:
        raise ValueError(
            f"model_type must be one of {sorted(SAM_ARCHITECTURES)}, got {model_type!r}"
        )
    arch = SAM_ARCHITECTURES[model_type]
    size = arch.image_size
    grid = size // PATCH_SIZE
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=size,
            patch_size=PATCH_SIZE,
            embed_dim=arch.embed_dim,
            depth=arch.depth,
            num_heads=arch.num_heads,
            mlp_ratio=4.0,
            out_chans=PROMPT_EMBED_DIM,
            qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=14,
            global_attn_indexes=arch.global_attn_indexes,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=PROMPT_EMBED_DIM,
            image_embedding_size=(grid, grid),
            input_image_size=(size, size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2, embedding_dim=PROMPT_EMBED_DIM, mlp_dim=2048, num_heads=8
            ),
            transformer_dim=PROMPT_EMBED_DIM,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=list(PIXEL_MEAN),
        pixel_std=list(PIXEL_STD),
    )
    return sam.eval()


def load_sam_checkpoint(sam: Sam, path: str | os.PathLike[str]) -> None:
    """Load a SAM state dict from ``path`` into ``sam``, strictly, without running pickled code.

    The file is read with ``torch.load(..., weights_only=True)`` onto the CPU. Every parameter
    and persistent buffer of ``sam`` must be in the file with its shape, and nothing else.
    Floating-point tensors may have another dtype (e.g. float16 exports): they are cast to the
    model's dtype on loading.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file is not a plain state dict of tensors, or it does not fit
            ``sam``; the message names the file and the missing / unexpected / mis-shaped keys.
            ``sam`` is left untouched.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"SAM checkpoint {path!r} does not exist")
    state = safe_torch_load(path)
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(
            f"SAM checkpoint {path!r} must hold a flat state dict of tensors "
            "(as the official sam_vit_*.pth files do)"
        )
    expected = sam.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{k} {tuple(state[k].shape)} (model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    )
    mistyped = sorted(
        f"{k} {state[k].dtype} (model {v.dtype})"
        for k, v in expected.items()
        if k in state and v.is_floating_point() and not state[k].is_floating_point()
    )
    problems = [
        f"{label} ({len(keys)}): {_abbreviate(keys)}"
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
            ("non-float tensors for float weights", mistyped),
        )
        if keys
    ]
    if problems:
        raise CheckpointError(
            f"SAM checkpoint {path!r} does not fit the {type(sam.image_encoder).__name__} with "
            f"embed_dim {sam.image_encoder.patch_embed.proj.out_channels}, "
            f"{len(sam.image_encoder.blocks)} blocks and a {sam.image_encoder.img_size}-pixel "
            "input (is model_type right?); " + "; ".join(problems)
        )
    sam.load_state_dict(state, strict=True)


def _abbreviate(keys: Sequence[str], limit: int = 8) -> str:
    """``keys`` joined by commas, the tail replaced by a count past ``limit``."""
    shown = ", ".join(keys[:limit])
    return shown if len(keys) <= limit else f"{shown}, ... and {len(keys) - limit} more"


def build_sam(config: SamConfig) -> Sam:
    """Build the SAM of ``config`` on the CPU in eval mode.

    ``config.checkpoint`` is loaded strictly (:func:`load_sam_checkpoint`); without one the
    weights are PyTorch's default initialisation drawn from ``config.seed`` (tests, the demo),
    without touching the global RNG state. The caller moves the model to its device.
    """
    with torch.device("cpu"), torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        sam = build_sam_model(config.model_type)
    if config.checkpoint is not None:
        load_sam_checkpoint(sam, config.checkpoint)
    return sam.eval()
