"""The model sizes a throughput benchmark runs at: the paper's on a GPU, toy sizes on a CPU."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Setting:
    size: tuple[int, int]
    mask2former: str
    sam: str
    reduced: bool


def choose_setting(device: torch.device, size: str | None) -> Setting:
    """Swin-B + ViT-H at 1024x2048 on CUDA; tiny models at 256x512 elsewhere; ``size`` "HxW"."""
    if device.type == "cuda":
        default, m2f, sam, reduced = (1024, 2048), "swin_b_1dl", "vit_h", False
    else:
        default, m2f, sam, reduced = (256, 512), "tiny_1dl", "vit_tiny", True
    if size:
        height, width = (int(v) for v in size.lower().split("x"))
        default = (height, width)
        reduced = reduced or default != (1024, 2048)
    return Setting(default, m2f, sam, reduced)
