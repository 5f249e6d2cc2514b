"""The batched SAM prompter UGainS uses (method step 6).

:class:`SamPrompter` encodes a batch of frames at once and decodes all point prompts of a
frame in ONE mask-decoder call (up to 256 prompts; a dense grid's 1024 go in calls of 256),
keeping per prompt the best of SAM's three masks by predicted IoU. Its results match
``SamPredictor`` run one point at a time (``tests/models/test_sam.py``).

The fast path (default on CUDA) runs the image encoder and the mask decoder under bf16
autocast (the prompt encoder stays float32) and the encoder's attention on SDPA
(:mod:`models.sam.attention`).
"""

from __future__ import annotations

import contextlib
import numbers
import warnings
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from torch import Tensor, nn

from models.sam.attention import use_sdpa_attention
from models.sam.preprocess import (
    SAM_PREPROCESSING,
    SamPreprocess,
    preprocess_frames,
    resized_size,
)
from transforms.masks import best_of_multimask

__all__ = ["SamPrompter"]

# upsample_masks works through the masks in chunks of at most this many float32 elements of
# intermediate maps (256 MiB), so a 4000x3000 frame with 50 prompts does not need 5 GiB at once.
_UPSAMPLE_BUDGET = 1 << 26
# Prompts per mask-decoder call. The decoder's activations grow linearly with the prompts
# (~28 MiB each in float32: 128 prompts took 3.6 GiB on the CPU), so the 1024 prompts of a
# dense 32x32 grid go in four calls; UGainS's 50 prompts are always one call (method step 6).
_MAX_PROMPTS_PER_CALL = 256


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
            (docs/engineering.md: first compiled calls of 107-182 s on an H100); keep batches
            a fixed size and set
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
