"""SAM's encoder input: resize to the longest side, normalise, pad (method step 6).

The one geometry that :class:`models.sam.SamPrompter` (inference) and ``ugains train sam``
(training) both feed the image encoder; every size is read from the model, so any input size
is served (the registry models keep 1024).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

__all__ = [
    "IMAGE_SIZE",
    "PIXEL_MEAN",
    "PIXEL_STD",
    "SAM_PREPROCESSING",
    "SamPreprocess",
    "preprocess_frames",
    "resized_size",
]

IMAGE_SIZE = 1024  # the registry SAMs' square encoder input; the longest side is resized to it
# SAM normalises with the ImageNet mean / std on the 0-255 scale (RGB).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


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
