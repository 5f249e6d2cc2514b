"""Array inputs of the metrics: NumPy arrays or torch tensors, without importing torch."""

from __future__ import annotations

from typing import Any

import numpy as np

ArrayLike = Any  # np.ndarray | torch.Tensor; torch is not imported by this module


def _to_numpy(value: ArrayLike, name: str) -> np.ndarray:
    """A NumPy view/copy of an array or torch tensor (bf16/fp16 tensors become float32)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor, without importing it
        tensor = value.detach().cpu()
        if tensor.is_floating_point() and tensor.element_size() < 4:
            tensor = tensor.float()  # NumPy has no bfloat16; float16/bf16 -> float32 is exact
        return tensor.numpy()
    try:
        return np.asarray(value)
    except Exception as error:  # e.g. ragged nested lists
        raise ValueError(f"{name} is not array-like: {error}") from None


def _score_array(value: ArrayLike, name: str) -> np.ndarray:
    """Scores as float32 or float64 without changing any value (so ties stay ties)."""
    array = _to_numpy(value, name)
    if array.dtype == np.float16:
        array = array.astype(np.float32)
    elif array.dtype.kind in "biu":
        array = array.astype(np.float64)  # exact for |ints| < 2**53
    elif array.dtype not in (np.float32, np.float64):
        raise ValueError(f"{name} must be real numbers, got dtype {array.dtype}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array
