"""Validation helpers used at the public boundary (errors written for people)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import torch
from torch import Tensor


def as_time(t: Tensor | float, T: float, name: str = "t", *, reference: Tensor | None = None) -> Tensor:
    """Return ``t`` as a tensor after checking it is finite and inside [0, T].

    A Python float becomes a float64 tensor (or ``reference``'s dtype/device when given).
    """
    if not isinstance(t, Tensor):
        if reference is not None:
            t = torch.as_tensor(t, dtype=reference.dtype, device=reference.device)
        else:
            t = torch.as_tensor(t, dtype=torch.float64)
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor of times, got dtype {t.dtype}")
    if t.numel():
        lo, hi = t.min().item(), t.max().item()
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"{name} must be finite, got values in [{lo}, {hi}]")
        # allow a few ulps of slack at T for grids computed in float32
        slack = 4 * torch.finfo(t.dtype).eps * max(T, 1.0)
        if lo < 0 or hi > T + slack:
            raise ValueError(f"{name} must lie in [0, T] = [0, {T}], got values in [{lo:.6g}, {hi:.6g}]")
    return t


def check_int(value: int, name: str, minimum: int = 1, detail: str = "") -> int:
    """``value`` as an int after checking it is an integer (not a bool, not a float) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        what = f"an integer >= {minimum}" + (" (a positive integer)" if minimum == 1 else "")
        raise ValueError(f"{name} must be {what}{detail}, got {value!r}")
    return int(value)


def check_name(value: str, name: str, choices: Iterable[str]) -> str:
    """``value`` after checking it is one of ``choices`` (names listed in the error)."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}")
    return value


def positive_finite(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dimensions so ``v`` (batch,) broadcasts against rank ``ndim``."""
    extra = ndim - v.ndim
    if extra < 0:
        raise ValueError(f"cannot broadcast a tensor of rank {v.ndim} to rank {ndim}")
    return v.reshape(*v.shape, *([1] * extra))
