"""The segmenter UGainS runs: normalisation, padding, the last decoder layer's class and mask
logits, mask upsampling to the frame (method steps 1-2 take it from here)."""

from __future__ import annotations

import contextlib
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerForUniversalSegmentation,
)

from models.mask2former.architecture import (
    IMAGENET_MEAN,
    IMAGENET_STD,
)

__all__ = ["Mask2FormerSegmenter", "favour_no_object"]


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
