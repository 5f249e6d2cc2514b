"""Input checks shared by the transforms: every failure is a ``ValueError`` naming the argument."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def check_tensor(
    name: str,
    value: object,
    *,
    ndim: int | Sequence[int] | None = None,
    dtypes: Sequence[torch.dtype] | None = None,
    kind: str = "",
) -> torch.Tensor:
    """Check that ``value`` is a tensor of the given rank(s) and dtype(s); return it.

    ``kind`` names the expected dtype family in the message (e.g. "floating point").
    """
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.ndim not in allowed:
            want = " or ".join(str(n) for n in allowed)
            raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(value.shape)}")
    if dtypes is not None and value.dtype not in dtypes:
        want = kind or ", ".join(str(d) for d in dtypes)
        raise ValueError(f"{name} must have dtype {want}, got {value.dtype}")
    return value


def check_float(name: str, value: object, *, ndim: int | Sequence[int]) -> torch.Tensor:
    """A floating-point tensor of the given rank."""
    return check_tensor(name, value, ndim=ndim, dtypes=FLOAT_DTYPES, kind="floating point")


def check_bool(name: str, value: object, *, ndim: int | Sequence[int]) -> torch.Tensor:
    """A boolean tensor of the given rank."""
    return check_tensor(name, value, ndim=ndim, dtypes=(torch.bool,), kind="torch.bool")


def check_points(name: str, value: object) -> torch.Tensor:
    """Integer pixel coordinates ``[N, 2]`` (x, y)."""
    value = check_tensor(name, value, ndim=2, dtypes=INT_DTYPES, kind="integer")
    if value.shape[1] != 2:
        raise ValueError(f"{name} must have shape [N, 2] (x, y), got {tuple(value.shape)}")
    return value


def check_no_nan(name: str, value: torch.Tensor) -> None:
    """Reject NaN (a host sync: callers use it on per-frame maps only)."""
    if bool(torch.isnan(value).any()):
        raise ValueError(f"{name} contains NaN")


def check_same_shape(
    name: str, shape: Sequence[int], other_name: str, other_shape: Sequence[int]
) -> None:
    """Two (partial) shapes must agree."""
    if tuple(shape) != tuple(other_shape):
        raise ValueError(
            f"{name} shape {tuple(shape)} does not match {other_name} shape {tuple(other_shape)}"
        )


def check_same_device(name: str, value: torch.Tensor, other_name: str, other: torch.Tensor) -> None:
    """Two tensors must live on the same device."""
    if value.device != other.device:
        raise ValueError(f"{name} is on {value.device} but {other_name} is on {other.device}")


def check_count(name: str, value: object, *, minimum: int | None = 0) -> int:
    """A Python integer >= ``minimum`` (any integer when ``minimum`` is None)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_finite(name: str, value: object) -> float:
    """A finite real Python number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)
