"""Class labels for conditional models: the null-label convention and the one check of labels.

A conditional model over K classes takes labels y ∈ {0, …, K − 1}, plus the *null* label ∅ = K
that stands for "no class" (the unconditional model of classifier-free guidance, trained by
label dropout; Ho & Salimans 2022, §3.2). Networks, analytic models and the guidance wrapper
share this convention and this check.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_labels", "class_rows", "drop_labels"]


def check_labels(
    y: Tensor, batch: int | None, num_classes: int, *, name: str = "y", check_range: bool | None = None
) -> Tensor:
    """``y`` as int64 after checking it is an integer tensor of shape (batch,) with values in 0 … num_classes.

    ``batch=None`` accepts any length (one dimension).
    The value ``num_classes`` is the null label ∅. By default (``check_range=None``) the range is
    checked only for CPU tensors: on an accelerator the check waits for the device, so per-call
    checks (the networks) skip it and public entry points (:class:`scoresde.guidance.Guided`)
    check once with ``check_range=True``.
    """
    if not isinstance(y, Tensor):
        raise TypeError(f"{name} must be a LongTensor of class labels, got {type(y).__name__}")
    if y.dtype == torch.bool or y.dtype.is_floating_point or y.dtype.is_complex:
        raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if batch is None and y.ndim != 1:
        raise ValueError(f"{name} must have shape (n,), one class per sample, got {tuple(y.shape)}")
    if batch is not None and tuple(y.shape) != (batch,):
        raise ValueError(f"{name} must have shape (batch,) = ({batch},), got {tuple(y.shape)}")
    if (y.device.type == "cpu" if check_range is None else check_range) and y.numel():
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi > num_classes:
            raise ValueError(
                f"{name} must lie in 0 … {num_classes} ({num_classes} classes, id {num_classes} = unconditional), "
                f"got values in [{lo}, {hi}]"
            )
    return y.long()


def drop_labels(y: Tensor, p: float, num_classes: int, generator: torch.Generator | None = None) -> Tensor:
    """Replace each label by the null label ∅ = ``num_classes`` with probability ``p``.

    The label dropout that trains one network as both the conditional and the unconditional
    model of classifier-free guidance (Ho & Salimans 2022, Alg. 1, p_uncond; they use 0.1–0.2).
    The draws come from ``generator`` on y's device (never the global RNG).
    """
    p = float(p)
    if not 0 <= p <= 1:
        raise ValueError(f"the label dropout probability must lie in [0, 1], got {p}")
    y = check_labels(y, None, num_classes, name="labels")
    if p == 0:
        return y
    drop = torch.rand(y.shape, generator=generator, device=y.device) < p
    return torch.where(drop, torch.full_like(y, num_classes), y)


def class_rows(num_classes: int, per_class: int) -> Tensor:
    """Labels [0 … 0, 1 … 1, …, K−1 …] with ``per_class`` of each: a grid with one row per class."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be an integer >= 1, got {per_class!r}")
    return torch.arange(num_classes).repeat_interleave(per_class)
