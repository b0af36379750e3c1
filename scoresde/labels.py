"""Class labels for conditional models: the null-label convention and the one check of labels.

A conditional model over K classes takes labels y ∈ {0, …, K − 1}, plus the *null* label ∅ = K
that stands for "no class" (the unconditional model of classifier-free guidance, trained by
label dropout; Ho & Salimans 2022, §3.2). Networks, analytic models and the guidance wrapper
share this convention and this check.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_labels"]


def check_labels(
    y: Tensor, batch: int, num_classes: int, *, name: str = "y", check_range: bool | None = None
) -> Tensor:
    """``y`` as int64 after checking it is an integer tensor of shape (batch,) with values in 0 … num_classes.

    The value ``num_classes`` is the null label ∅. By default (``check_range=None``) the range is
    checked only for CPU tensors: on an accelerator the check waits for the device, so per-call
    checks (the networks) skip it and public entry points (:class:`scoresde.guidance.Guided`)
    check once with ``check_range=True``.
    """
    if not isinstance(y, Tensor):
        raise TypeError(f"{name} must be a LongTensor of class labels, got {type(y).__name__}")
    if y.dtype == torch.bool or y.dtype.is_floating_point or y.dtype.is_complex:
        raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if tuple(y.shape) != (batch,):
        raise ValueError(f"{name} must have shape (batch,) = ({batch},), got {tuple(y.shape)}")
    if (y.device.type == "cpu" if check_range is None else check_range) and y.numel():
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi > num_classes:
            raise ValueError(
                f"{name} must lie in 0 … {num_classes} ({num_classes} classes, id {num_classes} = unconditional), "
                f"got values in [{lo}, {hi}]"
            )
    return y.long()
