"""The one safe way this project reads a pickled checkpoint: tensors and plain data only.

Every loader (SAM state dicts, Mask2Former ``rba`` / ``ugains`` files, a Hugging Face folder's
``pytorch_model.bin``) goes through :func:`safe_torch_load`. A file whose pickle would need any
other class or function is refused with ONE line naming the file and those globals, found by
reading the pickle's opcodes (nothing in it runs). PyTorch's own advice to retry with
``weights_only=False`` is never shown: that is exactly what must not be done with an untrusted
file.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import re
import warnings
import zipfile
from typing import Any

import numpy as np
import torch

from models.errors import CheckpointError

__all__ = ["check_pickled_weights", "pickle_globals", "safe_torch_load"]

# numpy arrays are plain data: allowlisting their reconstruction lets weights_only read
# checkpoints that hold them (detectron2 writes some) without running code from the file.
_NUMPY_CORE = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core
_NUMPY_GLOBALS: tuple[Any, ...] = (
    _NUMPY_CORE.multiarray._reconstruct,
    np.ndarray,
    np.dtype,
    *(type(np.dtype(t)) for t in ("bool", "u1", "i1", "i2", "i4", "i8", "f2", "f4", "f8")),
)


def safe_torch_load(path: str | os.PathLike[str]) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``, with errors that say what to do.

    Only tensors, numpy arrays and Python containers/scalars are read: a file whose pickle
    needs any other class or function (custom objects, e.g. a config object in a Lightning
    checkpoint's hyper-parameters) is refused with a :class:`CheckpointError` naming the file
    and those globals. A missing file raises :class:`FileNotFoundError`.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path!r}")
    try:
        with torch.serialization.safe_globals(list(_NUMPY_GLOBALS)), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes about legacy formats
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        names = _unsafe_globals(path)
        if not names:  # the unpickler stopped on something that is not a pickle of globals
            detail = re.sub(r"\s+", " ", str(error).split("WeightsUnpickler error:")[-1])
            raise CheckpointError(
                f"cannot read {path!r} as a PyTorch checkpoint ({detail.strip()[:200]})"
            ) from None
        raise CheckpointError(_unsafe_file_message(path, names)) from None
    except Exception as error:  # torch raises KeyError/RuntimeError/... on non-checkpoints
        raise CheckpointError(
            f"cannot read {path!r} as a PyTorch checkpoint ({type(error).__name__}: {error})"
        ) from error


def check_pickled_weights(path: str | os.PathLike[str]) -> None:
    """Refuse ``path`` (:class:`CheckpointError`, one line) if its pickle needs code, without
    loading it: only the pickle's opcodes are read (for a zip checkpoint, its small
    ``data.pkl``, not the tensors). Safetensors and missing files pass (their loaders decide).
    """
    path = os.fspath(path)
    if not os.path.isfile(path) or path.endswith(".safetensors"):
        return
    names = _unsafe_globals(path)
    if names:
        raise CheckpointError(_unsafe_file_message(path, names))


def pickle_globals(data: bytes) -> list[str]:
    """``module.name`` of every global a pickle references, read from its opcodes (not run).

    ``data`` is a plain pickle, or a zip checkpoint (``torch.save``'s format), whose
    ``*/data.pkl`` is read. Unreadable data gives the globals found before the damage.
    """
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            inner = [n for n in archive.namelist() if n.endswith("data.pkl")]
            data = archive.read(inner[0]) if inner else b""
    names: list[str] = []
    strings: list[str] = []  # STACK_GLOBAL takes module and name from the last two pushed
    try:
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name == "GLOBAL":
                names.append(str(arg).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # truncated or not a pickle: report what was found
        pass
    return list(dict.fromkeys(names))


def _unsafe_globals(path: str) -> list[str]:
    """Names of the classes/functions a refused file needs, beyond tensors and numpy arrays."""
    if zipfile.is_zipfile(path):  # torch.save's format: the pickle is one small member
        with zipfile.ZipFile(path) as archive:
            inner = [n for n in archive.namelist() if n.endswith("data.pkl")]
            names = pickle_globals(archive.read(inner[0])) if inner else []
    else:
        with open(path, "rb") as handle:
            names = pickle_globals(handle.read())
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in _NUMPY_GLOBALS}
    allowed |= set(_torch_allowed_globals())
    return [name for name in names if name not in allowed]


def _torch_allowed_globals() -> list[str]:
    """What ``torch.load(weights_only=True)`` itself allows (tensor rebuilds, dtypes, ...)."""
    try:
        from torch import _weights_only_unpickler

        return list(_weights_only_unpickler._get_allowed_globals())
    except Exception:  # a private helper: without it, report every global (more, not fewer)
        return []


def _unsafe_file_message(path: str, names: list[str]) -> str:
    return (
        f"refusing to load {path!r}: besides tensors and containers its pickle needs "
        f"{', '.join(names)}. Unpickling that could run arbitrary code, so checkpoints are read "
        "with weights_only=True only. If you trust the file, re-save just its weights once, "
        "e.g. `ckpt = torch.load(path, weights_only=False); "
        'torch.save(ckpt["state_dict"], "weights.pt")` (ckpt["model"] for detectron2 files), '
        "and pass the new file."
    )
