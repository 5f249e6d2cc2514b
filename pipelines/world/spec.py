"""What a world is: its seed, frame size, split sizes and drive logs (no drawing here, so the
command line reads it without importing the renderer)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FRAME_SIZE", "WorldSpec"]

FRAME_SIZE = (256, 512)  # (H, W)


@dataclass(frozen=True)
class WorldSpec:
    """What ``write_world`` writes: split sizes, drive logs and the seed.

    Raises:
        ValueError: a count or ``logs`` below 0, ``log_frames`` below 1, ``height`` or
            ``width`` below 32, or ``anomaly_fraction`` outside [0, 1] (one line, naming it).
    """

    seed: int = 0
    height: int = FRAME_SIZE[0]
    width: int = FRAME_SIZE[1]
    train: int = 1000
    ood: int = 500
    val: int = 60
    test: int = 100
    logs: int = 2
    log_frames: int = 200
    anomaly_fraction: float = 0.05

    def __post_init__(self) -> None:
        minimum = dict(height=32, width=32, train=0, ood=0, val=0, test=0, logs=0, log_frames=1)
        for name, low in minimum.items():
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, not {getattr(self, name)}")
        if not 0.0 <= self.anomaly_fraction <= 1.0:
            raise ValueError(f"anomaly_fraction must be in [0, 1], not {self.anomaly_fraction}")
