"""The recipe of a SAM training run: every setting that changes what the weights become.

A resumed run must use the recipe it started with (``train_sam`` checks); the model card of
the shipped weights records it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SamTrainingConfig"]


@dataclass(frozen=True)
class SamTrainingConfig:
    """Recipe of a run. The defaults suit a from-scratch ``vit_tiny_512`` on one CPU thread."""

    steps: int = 1000
    batch_size: int = 2
    points_per_image: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50
    grad_clip: float = 1.0
    focal_weight: float = 20.0
    # Weight of the foreground pixels in the focal loss (the background gets 1 - alpha); None =
    # unweighted (RetinaNet's 0.25 favours the empty masks a from-scratch model falls into).
    focal_alpha: float | None = None
    dice_weight: float = 1.0
    iou_weight: float = 1.0
    # A prompt's segment is drawn with probability proportional to (its pixel count)^power:
    # 0 = uniform over segments (SAM's "a point in each mask"), 1 = uniform over pixels. On the
    # world (~20 segments a frame, most of them tiny) from-scratch runs with 0 or 0.5 collapsed
    # to empty, prompt-independent masks within 100 steps; with 1 the IoU rose (0.01 -> 0.15 in
    # 120 steps at lr 2e-3). Lower it when fine-tuning a model that already localises.
    segment_power: float = 1.0
    # Prompts go only to segments covering at most this fraction of the frame (1 = all). With
    # large "stuff" regions (road, sky, grass) among the targets, one fixed big mask scores a
    # fair IoU whatever the prompt, and the decoder learns to ignore the point; objects only
    # (cars, people, poles, pasted outliers) make the point the only cue.
    max_segment_fraction: float = 1.0
    hflip: bool = True  # flip each image (and its segments) left-right with probability 1/2
    # Random shapes pasted per frame (models/training/paste.py), each a segment of its own: a
    # SAM trained only on the world's few object kinds learns those kinds, not "the thing at
    # the point". 0 = none.
    pasted_objects: int = 0
    # Pasted shapes cast a shadow (about half of them) that is not part of their segment.
    pasted_shadows: bool = False
    # Up to this many objects of an outlier pool (``train_sam``'s ``outlier_pool``: anomalies a
    # reviewer confirmed) pasted into each frame, each a segment of its own; and the pool's
    # identity (a resumed run must use the same pool). 0 = none.
    pool_objects: int = 0
    pool_digest: str = ""
    # bf16 autocast of the image encoder and mask decoder (prompt encoder and losses stay
    # float32): 1.3x faster per step on this project's AMX CPUs, the usual choice on GPUs.
    bf16: bool = False
    seed: int = 0
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        if self.pool_objects < 0:
            raise ValueError(f"pool_objects must be >= 0, got {self.pool_objects}")
        for name in ("steps", "batch_size", "points_per_image", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.warmup_steps < 0:
            raise ValueError(
                f"lr must be > 0 and warmup_steps >= 0, got {self.lr}, {self.warmup_steps}"
            )
