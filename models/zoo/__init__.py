"""Checkpoints shipped inside the package: the world's trained tiny models.

A config names them as ``zoo:<name>`` (e.g. ``zoo:world_mask2former_tiny_1dl``); the config
schema resolves that to the file or folder here, so configs work from any working directory
and on workers that install the package. Each entry has a model card (``<name>.md``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ZOO_DIR", "ZOO_PREFIX", "resolve_zoo_path"]

ZOO_DIR = Path(__file__).resolve().parent
ZOO_PREFIX = "zoo:"


def resolve_zoo_path(checkpoint: str | None) -> str | None:
    """``zoo:<name>`` -> the shipped checkpoint's absolute path; anything else unchanged.

    Raises:
        ValueError: ``<name>`` is not shipped (the message lists what is).
    """
    if checkpoint is None or not checkpoint.startswith(ZOO_PREFIX):
        return checkpoint
    name = checkpoint[len(ZOO_PREFIX) :]
    path = ZOO_DIR / name
    if not name or "/" in name or name.startswith(".") or not path.exists():
        shipped = sorted(
            p.name
            for p in ZOO_DIR.iterdir()
            if not p.name.startswith(("_", ".")) and p.suffix != ".md"
        )
        raise ValueError(f"no shipped checkpoint {checkpoint!r}; the zoo has {shipped}")
    return str(path)
