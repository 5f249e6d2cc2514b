"""What every training loop here shares: seeding, a learning-rate schedule, resumable
checkpoints written atomically, and a progress bar with the loss and an ETA.

A run directory holds ``state.pt`` (model, optimizer, scheduler, step, RNG states), rewritten
every ``checkpoint_every`` steps through a temporary file and ``os.replace`` so that a kill at
any moment leaves the previous complete state. Resuming restores the RNG states too, so an
interrupted run and an uninterrupted one with the same seed reach the same weights.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "STATE_FILE",
    "TrainingProgress",
    "cosine_with_warmup",
    "cycle",
    "load_state",
    "save_state",
    "seed_everything",
]

STATE_FILE = "state.pt"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels where it has them."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))  # noqa: NPY002 - libraries still draw from the global state
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, floor: float = 0.02
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_steps``, then a cosine decay to ``floor`` x the base LR."""
    if total_steps < 1 or warmup_steps < 0:
        raise ValueError(
            f"total_steps must be >= 1 and warmup_steps >= 0, got {total_steps}, {warmup_steps}"
        )

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _rng_states() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002
        "torch": torch.get_rng_state(),
    }


def _set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])  # noqa: NPY002
    torch.set_rng_state(states["torch"])


def save_state(
    run_dir: str | os.PathLike[str],
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    step: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``run_dir/state.pt`` atomically (temporary file + ``os.replace``); return its path."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / STATE_FILE
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "step": step,
            "rng": _rng_states(),
            "extra": extra or {},
        },
        tmp,
    )
    os.replace(tmp, path)
    return path


def load_state(
    run_dir: str | os.PathLike[str],
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
) -> tuple[int, dict[str, Any]]:
    """Restore a run from ``run_dir/state.pt`` if it exists: ``(step, extra)``; ``(0, {})`` if not.

    The file holds optimizer state and RNG states (NumPy's is a tuple), so it is read with
    ``weights_only=False``: only resume runs this machine wrote.
    """
    path = Path(run_dir) / STATE_FILE
    if not path.is_file():
        return 0, {}
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    _set_rng_states(state["rng"])
    return int(state["step"]), dict(state["extra"])


class TrainingProgress:
    """A tqdm bar over the steps ``[start, total)`` showing a smoothed loss and tqdm's ETA."""

    def __init__(self, total: int, start: int, description: str, *, enabled: bool = True) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, initial=start, desc=description, disable=not enabled)
        self._smoothed: float | None = None

    def update(self, loss: float, **extra: float) -> None:
        self._smoothed = loss if self._smoothed is None else 0.95 * self._smoothed + 0.05 * loss
        postfix = {"loss": f"{self._smoothed:.4f}"}
        postfix.update({name: f"{value:.4g}" for name, value in extra.items()})
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(1)

    @property
    def smoothed_loss(self) -> float | None:
        return self._smoothed

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> TrainingProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cycle(batches: Any) -> Iterator[Any]:
    """Repeat an iterable (a DataLoader) forever."""
    while True:
        yield from batches
