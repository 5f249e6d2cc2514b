"""Checks a mining run makes before any work starts, each failing with one clear line.

The output root must be writable, local checkpoint files must hold weights only (read from
the pickles' opcodes, nothing loaded), and the models must load on the launcher's CPU; the
first two run also with ``--skip-model-check``, so that workers never meet a bad file.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from pipelines.config import MiningConfig, is_local_uri

__all__ = [
    "ModelLoadError",
    "OutputRootError",
    "check_checkpoint_files",
    "check_models",
    "check_output_root",
]

_LOG = logging.getLogger(__name__)


class OutputRootError(ValueError):
    """The config's output root cannot be written."""


class ModelLoadError(RuntimeError):
    """The config's models cannot be loaded; raised on the launcher before any work starts."""


def check_output_root(root: str) -> None:
    """Refuse, before any work, an output root this process cannot write (one line)."""
    if not is_local_uri(root):
        return  # object stores: permissions show on the first write (Beam's own errors)
    try:
        os.makedirs(root, exist_ok=True)
        probe = os.path.join(root, f".write-check-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise OutputRootError(f"output.root {root} cannot be written: {reason}") from None


def check_checkpoint_files(config: MiningConfig) -> None:
    """Refuse, before anything starts, local checkpoint files whose pickle needs code (read
    from the pickles' opcodes, nothing loaded): also with ``--skip-model-check``, so that
    workers never meet them."""
    from models.checkpoints import check_pickled_weights
    from models.errors import CheckpointError

    weights = config.models.weight_files()
    paths = [weights[role] for role in ("sam", "mask2former") if role in weights]
    files = []
    for path in paths:
        if not is_local_uri(path):
            continue
        files += sorted(Path(path).glob("*.bin")) if os.path.isdir(path) else [Path(path)]
    try:
        for file in files:
            check_pickled_weights(file)
    except CheckpointError as error:
        raise ModelLoadError(f"the models of this config cannot be loaded: {error}") from None


def check_models(config: MiningConfig) -> None:
    """Load the models once on the launcher's CPU: a bad checkpoint stops the run here."""
    from models.ugains import build_ugains
    from pipelines.mining.inference import stage_checkpoints

    started = time.perf_counter()
    try:
        build_ugains(stage_checkpoints(config.models), device="cpu")
    except Exception as error:
        raise ModelLoadError(f"the models of this config cannot be loaded: {error}") from error
    _LOG.info("models load (checked on the launcher in %.1f s)", time.perf_counter() - started)
