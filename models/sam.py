"""Segment Anything (method step 6): model builder, checkpoint loader and a batched prompter.

:func:`build_sam` builds the ``segment_anything`` :class:`~segment_anything.modeling.Sam` of a
registry name (``vit_h`` / ``vit_l`` / ``vit_b``) from a user's checkpoint, or randomly
initialised from a seed; ``vit_tiny`` is the same SAM with a two-block image encoder so that
pipeline tests and the demo run on a CPU (it has no checkpoint), and ``vit_tiny_512`` is that
encoder at a 512-pixel input (a 32x32 embedding grid), the size ``ugains train sam`` trains for
the world's frames. Every geometry (resize, padding, point scaling, mask sizes) is read from the
model, so the prompter serves any input size; the registry models keep 1024.

:class:`SamPrompter` is the thin predictor UGainS uses: it encodes a batch of frames at once
and decodes all point prompts of a frame in ONE mask-decoder call (up to 256 prompts; a dense
grid's 1024 go in calls of 256), keeping per prompt the best of SAM's three masks by predicted
IoU. Its results match ``SamPredictor`` run one point at a time (``tests/models/test_sam.py``).

The fast path (default on CUDA) runs the image encoder and the mask decoder under bf16
autocast (the prompt encoder stays float32) and replaces the image encoder's attention by
:func:`torch.nn.functional.scaled_dot_product_attention`, with SAM's decomposed
relative-position bias passed as ``attn_mask``. It swaps the class of the ``Attention``
modules only (:func:`use_sdpa_attention`), so parameter names, checkpoints and ``state_dict``
are unchanged.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)
from segment_anything.modeling.image_encoder import Attention, get_rel_pos
from segment_anything.utils.transforms import ResizeLongestSide
from torch import Tensor, nn
from torchvision.transforms.v2 import functional as TF

from models.checkpoints import safe_torch_load
from models.config import SamConfig
from models.errors import CheckpointError
from transforms.masks import best_of_multimask

__all__ = [
    "SAM_ARCHITECTURES",
    "SAM_PREPROCESSING",
    "CheckpointError",
    "SamArchitecture",
    "SamPreprocess",
    "SamPrompter",
    "SdpaAttention",
    "build_sam",
    "build_sam_model",
    "load_sam_checkpoint",
    "preprocess_frames",
    "resized_size",
    "use_sdpa_attention",
]

IMAGE_SIZE = 1024  # the registry SAMs' square encoder input; the longest side is resized to it
PATCH_SIZE = 16
PROMPT_EMBED_DIM = 256
# SAM normalises with the ImageNet mean / std on the 0-255 scale (RGB).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)

# upsample_masks works through the masks in chunks of at most this many float32 elements of
# intermediate maps (256 MiB), so a 4000x3000 frame with 50 prompts does not need 5 GiB at once.
_UPSAMPLE_BUDGET = 1 << 26
# Prompts per mask-decoder call. The decoder's activations grow linearly with the prompts
# (~28 MiB each in float32: 128 prompts took 3.6 GiB on the CPU), so the 1024 prompts of a
# dense 32x32 grid go in four calls; UGainS's 50 prompts are always one call (method step 6).
_MAX_PROMPTS_PER_CALL = 256


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


class SdpaAttention(Attention):
    """SAM's image-encoder attention computed by ``scaled_dot_product_attention``.

    Same parameters and result as :class:`segment_anything.modeling.image_encoder.Attention`;
    the decomposed relative-position terms ``rel_h[q, k_h] + rel_w[q, k_w]`` (computed from the
    unscaled queries, as SAM does) are broadcast to ``[L, L]`` and added as ``attn_mask``, which
    lets PyTorch pick a fused kernel (memory-efficient attention on CUDA) instead of three
    separate matmul / softmax passes. Instances are made by :func:`use_sdpa_attention`.
    """

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``[B, H, W, C]`` tokens (a window or the whole grid) -> ``[B, H, W, C]``."""
        batch, height, width, _ = x.shape
        # [3, B, heads, H*W, head_dim]
        qkv = self.qkv(x).reshape(batch, height * width, 3, self.num_heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        bias = None
        if self.use_rel_pos:
            bias = _rel_pos_bias(q, self.rel_pos_h, self.rel_pos_w, (height, width))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        out = out.transpose(1, 2).reshape(batch, height, width, -1)
        return self.proj(out)


def _rel_pos_table(size: int, rel_pos: Tensor) -> Tensor:
    """``[size, size, head_dim]`` embeddings of the offsets ``q - k`` along one axis."""
    if rel_pos.shape[0] != 2 * size - 1:
        # SAM's own function interpolates the table when the grid size differs from training.
        return get_rel_pos(size, size, rel_pos)
    coords = torch.arange(size, device=rel_pos.device)
    return rel_pos[coords[:, None] - coords[None, :] + (size - 1)]


def _rel_pos_bias(q: Tensor, rel_pos_h: Tensor, rel_pos_w: Tensor, size: tuple[int, int]) -> Tensor:
    """The decomposed relative-position bias ``[B, heads, H*W, H*W]`` of queries ``q``.

    ``q``: ``[B, heads, H*W, head_dim]``; the bias has ``q``'s dtype (bf16 under autocast), as
    SDPA requires of a float ``attn_mask``.
    """
    height, width = size
    table_h = _rel_pos_table(height, rel_pos_h).to(q.dtype)
    table_w = _rel_pos_table(width, rel_pos_w).to(q.dtype)
    r_q = q.reshape(*q.shape[:2], height, width, q.shape[-1])
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, table_h)  # [B, heads, H, W, k_h]
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, table_w)  # [B, heads, H, W, k_w]
    bias = rel_h[..., :, None] + rel_w[..., None, :]  # [B, heads, H, W, k_h, k_w]
    return bias.reshape(*q.shape[:2], height * width, height * width)


def use_sdpa_attention(module: nn.Module, enabled: bool = True) -> int:
    """Switch every SAM image-encoder ``Attention`` inside ``module`` to SDPA (or back).

    The modules keep their parameters; only their class (hence ``forward``) changes, so state
    dicts and checkpoints are unaffected. Returns the number of attention modules switched.
    """
    target = SdpaAttention if enabled else Attention
    count = 0
    for child in module.modules():
        if type(child) in (Attention, SdpaAttention):
            child.__class__ = target
            count += 1
    return count


def resized_size(height: int, width: int, long_side: int = IMAGE_SIZE) -> tuple[int, int]:
    """``(h, w)`` of a ``height`` x ``width`` frame resized to longest side ``long_side``.

    SAM's rounding (``ResizeLongestSide.get_preprocess_shape``): 256x512 -> 512x1024,
    1024x2048 -> 512x1024, 37x91 -> 416x1024; with ``long_side=512``: 256x512 -> 256x512.
    """
    h, w = ResizeLongestSide.get_preprocess_shape(height, width, long_side)
    return int(h), int(w)


SamPreprocess = Literal["official", "antialiased"]
SAM_PREPROCESSING: tuple[str, ...] = ("official", "antialiased")


def preprocess_frames(sam: Sam, images: Tensor, method: SamPreprocess = "official") -> Tensor:
    """``sam``'s encoder input ``[B, 3, S, S]`` float32 from uint8 RGB ``[B, 3, H, W]``.

    ``S = sam.image_encoder.img_size``; the frame is resized to longest side ``S``
    (:func:`resized_size`) and zero-padded at the bottom / right. ``method`` sets the order:

    - ``"official"`` (the UGainS code, docs/method.md step 6): ``(x - mean) / std`` on the float
      frame, then plain bilinear interpolation (``align_corners=False``, no antialiasing).
    - ``"antialiased"`` (``SamPredictor.set_image``): antialiased bilinear resize of the uint8
      frame (rounded back to uint8), then ``(x - mean) / std``. It aliases less when a large
      frame is shrunk; choose it for SAM weights fine-tuned that way, or to match
      ``SamPredictor`` outputs.

    The two agree exactly when no resize is needed (a 256x512 frame at ``S = 512``). Runs on
    ``images``' device; this is what :class:`SamPrompter` and ``ugains train sam`` feed the
    encoder, so training and inference see one geometry.
    """
    if method not in SAM_PREPROCESSING:
        raise ValueError(f"method must be one of {SAM_PREPROCESSING}, got {method!r}")
    size = sam.image_encoder.img_size
    height, width = images.shape[-2:]
    h, w = resized_size(height, width, size)
    mean = sam.pixel_mean.to(images.device, torch.float32)
    std = sam.pixel_std.to(images.device, torch.float32)
    if method == "official":
        x = (images.float() - mean) / std
        if (h, w) != (height, width):
            x = F.interpolate(x, (h, w), mode="bilinear", align_corners=False)
    else:
        x = images
        if (h, w) != (height, width):
            x = TF.resize(x, [h, w], antialias=True)
        x = (x.float() - mean) / std
    return F.pad(x, (0, size - w, 0, size - h))


class SamPrompter:
    """Batched SAM inference with one positive point per prompt (docs/method.md step 6).

    Args:
        sam: the model (any device; the prompter follows it when it is moved).
        fast_path: SDPA attention in the image encoder, plus bf16 autocast of the image
            encoder and the mask decoder on CUDA (the prompt encoder stays float32). ``None`` =
            on iff the model is on CUDA. On the CPU the fast path is SDPA in fp32 only. The
            prompter sets the attention implementation of ``sam``'s encoder accordingly (in
            place, parameters untouched).
        preprocess: how frames become the encoder input (:func:`preprocess_frames`):
            ``"official"`` (default, the UGainS code's order) or ``"antialiased"``
            (``SamPredictor``'s).
        compile: ``torch.compile`` the image encoder (CUDA only; ignored with a warning on the
            CPU). The first call of each new batch size compiles, which takes minutes for ViT-H
            (DESIGN.md: first compiled calls of 107-182 s on an H100); keep batches a fixed
            size and set
            ``TORCHINDUCTOR_CACHE_DIR`` to a persistent directory so that later processes reuse
            the compiled kernels (inductor's FX-graph cache is on by default).

    The outputs do not depend on the batch a frame is encoded in, nor on how many prompts are
    decoded together (up to floating-point rounding).
    """

    def __init__(
        self,
        sam: Sam,
        *,
        fast_path: bool | None = None,
        compile: bool = False,
        preprocess: SamPreprocess = "official",
    ) -> None:
        if not isinstance(sam, Sam):
            raise TypeError(f"sam must be a segment_anything Sam, got {type(sam).__name__}")
        if preprocess not in SAM_PREPROCESSING:
            raise ValueError(f"preprocess must be one of {SAM_PREPROCESSING}, got {preprocess!r}")
        self.preprocessing: SamPreprocess = preprocess
        self.sam = sam.eval()
        self.fast_path = self.device.type == "cuda" if fast_path is None else bool(fast_path)
        use_sdpa_attention(sam.image_encoder, self.fast_path)
        self.compiled = False
        self._encoder: nn.Module = sam.image_encoder
        if compile:
            if self.device.type != "cuda":
                warnings.warn(
                    "SamPrompter(compile=True) is CUDA-only; the image encoder runs uncompiled "
                    f"on {self.device}",
                    stacklevel=2,
                )
            else:
                # Fixed shapes (dynamic=False): the encoder always sees [B, 3, S, S].
                self._encoder = torch.compile(sam.image_encoder, dynamic=False)
                self.compiled = True
        self.image_size: int = sam.image_encoder.img_size
        grid = sam.prompt_encoder.image_embedding_size
        self.embedding_shape: tuple[int, int, int] = (sam.prompt_encoder.embed_dim, *grid)
        self.low_res_size: tuple[int, int] = (4 * grid[0], 4 * grid[1])

    @property
    def device(self) -> torch.device:
        """The device of the model's weights, where the prompter computes."""
        return next(self.sam.parameters()).device

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.fast_path and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def preprocess(self, images: Tensor) -> Tensor:
        """SAM's encoder input ``[B, 3, S, S]`` float32 from uint8 RGB ``[B, 3, H, W]``.

        ``S`` = :attr:`image_size` (1024 for the registry models, 512 for ``vit_tiny_512``), in
        the order :attr:`preprocessing` names (:func:`preprocess_frames`). With
        ``"antialiased"`` it is ``SamPredictor.set_image``'s input: SamPredictor resizes with
        PIL; torchvision's antialiased uint8 resize equals PIL's bit for bit when the scale is 2
        and differs by at most one grey level on about 0.1% of pixels otherwise (measured in the
        tests); on CUDA that resize runs in float32 and is rounded to uint8, same tolerance.
        """
        _check_images(images)
        frames = images.to(self.device, non_blocking=True)
        return preprocess_frames(self.sam, frames, self.preprocessing)

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Image embeddings ``[B, 256, g, g]`` float32 of uint8 RGB frames ``[B, 3, H, W]``.

        ``g = S / 16`` (:attr:`embedding_shape`): 64 for the registry models, 32 at 512.

        ``images`` may be on any device; they are moved to :attr:`device`.
        """
        x = self.preprocess(images)
        with self._autocast():
            embeddings = self._encoder(x)
        return embeddings.float()

    @torch.no_grad()
    def segment(
        self,
        embedding: Tensor,
        points: Tensor,
        frame_size: tuple[int, int],
        *,
        output: Literal["full", "low"] = "full",
    ) -> tuple[Tensor, Tensor]:
        """Masks of ``N`` single-point prompts on one frame, decoded in one call (in calls of
        256 prompts when ``N`` is larger, to bound the decoder's memory).

        Args:
            embedding: ``[256, g, g]`` float (:attr:`embedding_shape`), one frame's row of
                :meth:`encode`.
            points: ``[N, 2]`` (x, y) frame-pixel coordinates, integer or float, each a positive
                point with ``0 <= x <= W - 1`` and ``0 <= y <= H - 1``.
            frame_size: ``(H, W)`` of the frame the points and masks refer to.
            output: ``"full"`` for binary masks at frame size, ``"low"`` for SAM's low-resolution
                logits (to be passed to :meth:`upsample_masks` later).

        Returns:
            ``masks``: ``[N, H, W]`` bool (``"full"``) or ``[N, 4g, 4g]`` float32 logits
            (``"low"``), the best of SAM's three masks by predicted IoU; ``iou``: ``[N]`` float32
            predicted IoU of that mask. Both on :attr:`device`.
        """
        if output not in ("full", "low"):
            raise ValueError(f"output must be 'full' or 'low', got {output!r}")
        height, width = _check_frame_size(frame_size)
        if not isinstance(embedding, Tensor) or tuple(embedding.shape) != self.embedding_shape:
            shape = tuple(embedding.shape) if isinstance(embedding, Tensor) else type(embedding)
            raise ValueError(f"embedding must have shape {self.embedding_shape}, got {shape}")
        _check_points(points, height, width)
        device = self.device
        count = points.shape[0]
        if count == 0:
            return self._empty((height, width), output)
        h, w = resized_size(height, width, self.image_size)
        # SamPredictor scales coordinates in float64 (numpy) and casts to float32.
        scale = torch.tensor([w / width, h / height], dtype=torch.float64, device=device)
        coords = (points.to(device, torch.float64) * scale).float()[:, None, :]  # [N, 1, 2]
        labels = torch.ones((count, 1), dtype=torch.int64, device=device)
        embedding = embedding.to(device, torch.float32)
        # The prompt encoder runs in float32 even on the fast path: its random Fourier features
        # (`coords @ gaussian_matrix`, then sin/cos of 2*pi*that) would be computed in bf16
        # under autocast, quantising the prompt to ~2 px of the 1024 input and the phases to
        # ~0.06 rad. It is a few small ops; only the decoder's transformer gains from bf16.
        sparse, dense = self.sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        image_pe = self.sam.prompt_encoder.get_dense_pe()
        low_res = torch.empty((count, *self.low_res_size), dtype=torch.float32, device=device)
        iou = torch.empty(count, dtype=torch.float32, device=device)
        for start in range(0, count, _MAX_PROMPTS_PER_CALL):
            part = slice(start, start + _MAX_PROMPTS_PER_CALL)
            with self._autocast():
                logits, predicted = self.sam.mask_decoder(
                    image_embeddings=embedding[None],
                    image_pe=image_pe,
                    sparse_prompt_embeddings=sparse[part],
                    dense_prompt_embeddings=dense[part],
                    multimask_output=True,
                )  # [n, 3, 4g, 4g], [n, 3]
            low_res[part], iou[part] = best_of_multimask(logits.float(), predicted.float())
        if output == "low":
            return low_res, iou
        return self.upsample_masks(low_res, (height, width)), iou

    @torch.no_grad()
    def upsample_masks(self, low_res_logits: Tensor, frame_size: tuple[int, int]) -> Tensor:
        """Binary frame-size masks ``[N, H, W]`` bool from low-res logits ``[N, 4g, 4g]``.

        As ``Sam.postprocess_masks`` followed by ``> mask_threshold`` (0): bilinear
        (align_corners=False) to ``S x S``, crop the padding, bilinear to ``frame_size``.
        Computed in float32, in chunks of masks to bound the memory of the float maps.
        """
        height, width = _check_frame_size(frame_size)
        if (
            not isinstance(low_res_logits, Tensor)
            or low_res_logits.ndim != 3
            or tuple(low_res_logits.shape[1:]) != self.low_res_size
        ):
            shape = tuple(low_res_logits.shape) if isinstance(low_res_logits, Tensor) else None
            raise ValueError(
                f"low_res_logits must have shape [N, *{self.low_res_size}], got {shape}"
            )
        h, w = resized_size(height, width, self.image_size)
        size = self.image_size
        masks = torch.empty(
            (low_res_logits.shape[0], height, width), dtype=torch.bool, device=low_res_logits.device
        )
        chunk = max(1, _UPSAMPLE_BUDGET // (size * size + height * width))
        for start in range(0, low_res_logits.shape[0], chunk):
            logits = low_res_logits[start : start + chunk, None].float()
            logits = F.interpolate(logits, (size, size), mode="bilinear", align_corners=False)
            logits = logits[..., :h, :w]
            logits = F.interpolate(logits, (height, width), mode="bilinear", align_corners=False)
            masks[start : start + chunk] = logits[:, 0] > self.sam.mask_threshold
        return masks

    def __call__(self, images: Tensor, points: Sequence[Tensor]) -> list[tuple[Tensor, Tensor]]:
        """Masks of every frame: ``[(masks [N_i, H, W] bool, iou [N_i] float32), ...]``.

        ``images``: ``[B, 3, H, W]`` uint8 RGB; ``points``: ``B`` tensors ``[N_i, 2]`` (x, y).
        Frames without prompts are not encoded.
        """
        _check_images(images)
        if len(points) != images.shape[0]:
            raise ValueError(
                f"points must hold one [N, 2] tensor per frame: {images.shape[0]} frames, "
                f"{len(points)} point tensors"
            )
        size = (images.shape[-2], images.shape[-1])
        for index, frame_points in enumerate(points):
            _check_points(frame_points, *size, name=f"points[{index}]")
        wanted = [i for i, frame_points in enumerate(points) if frame_points.shape[0] > 0]
        embeddings = self.encode(images[wanted]) if wanted else None
        row_of = {frame: row for row, frame in enumerate(wanted)}
        return [
            self.segment(embeddings[row_of[i]], frame_points, size)
            if i in row_of
            else self._empty(size, "full")
            for i, frame_points in enumerate(points)
        ]

    def _empty(self, frame_size: tuple[int, int], output: str) -> tuple[Tensor, Tensor]:
        """The result of zero prompts: ``[0, H, W]`` bool (or ``[0, 4g, 4g]``), ``[0]``."""
        iou = torch.zeros(0, dtype=torch.float32, device=self.device)
        if output == "low":
            return torch.zeros((0, *self.low_res_size), device=self.device), iou
        return torch.zeros((0, *frame_size), dtype=torch.bool, device=self.device), iou


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor):
        raise ValueError(f"images must be a uint8 tensor [B, 3, H, W], got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 RGB (0-255), got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        raise ValueError(f"images must have shape [B>0, 3, H, W], got {tuple(images.shape)}")
    if images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"images must not be empty, got shape {tuple(images.shape)}")


def _check_frame_size(frame_size: tuple[int, int]) -> tuple[int, int]:
    if (
        not isinstance(frame_size, Sequence)
        or len(frame_size) != 2
        or not all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0
            for s in frame_size
        )
    ):
        raise ValueError(f"frame_size must be (H, W) positive integers, got {frame_size!r}")
    return int(frame_size[0]), int(frame_size[1])


def _check_points(points: Tensor, height: int, width: int, name: str = "points") -> None:
    """Raise ``ValueError`` unless ``points`` is ``[N, 2]`` (x, y) inside a ``height`` x ``width``
    frame."""
    if not isinstance(points, Tensor):
        raise ValueError(f"{name} must be a tensor [N, 2] of (x, y), got {type(points).__name__}")
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"{name} must have shape [N, 2] (x, y), got {tuple(points.shape)}")
    if points.dtype == torch.bool or points.is_complex():
        raise ValueError(f"{name} must be integer or floating point, got {points.dtype}")
    if points.shape[0] == 0:
        return
    x, y = points[:, 0], points[:, 1]
    inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)  # False for NaN
    if not bool(inside.all()):
        bad = points[~inside][0].tolist()
        raise ValueError(
            f"{name} must lie inside the {height}x{width} frame (0 <= x <= {width - 1}, "
            f"0 <= y <= {height - 1}); {int((~inside).sum())} do not, e.g. (x, y) = {bad}"
        )
