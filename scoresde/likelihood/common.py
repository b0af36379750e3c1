"""What both likelihood estimators share: their report (:class:`LikelihoodInfo`), the checks of
the data they are given, and the model at class labels for −log p(x | y)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..guidance import guided
from .quantized import level_spacing

__all__ = ["LikelihoodInfo", "check_data", "conditional"]


@dataclass
class LikelihoodInfo:
    """What :func:`~scoresde.likelihood.log_likelihood` did, returned with ``return_info=True``.

    Attributes:
        method: ``ode`` or ``vlb``.
        nfe: network evaluations per sample (ODE: the solver's function evaluations; VLB: N).
        terms: per-sample contributions in nats, each of shape (batch,), summing to the NLL.
            ODE: ``prior`` (−log π(x_T)), ``divergence`` (−∫∇·f̃ dt) and, with ``levels``,
            ``dequantization`` (−D log Δ). VLB: ``prior`` (L_T), ``diffusion`` (Σ L_{i−1}),
            ``decoder`` (L_0).
        per_step: VLB only — (N,) batch means of L_0, L_1, …, L_{N−1} (index i − 1 ↔ L_{i−1}).
        times: VLB only — (N+1,) the grid t_0..t_N.
        details: the settings used (t_min, tolerances, divergence estimator, decoder, …).
    """

    method: str
    nfe: int
    terms: dict[str, Tensor]
    per_step: Tensor | None = None
    times: Tensor | None = None
    details: dict[str, object] = field(default_factory=dict)


def conditional(model, y, guidance, batch: int):
    """The model at labels y and w = 1 (or 0), checked; the model itself without labels."""
    if y is None:
        if guidance is not None:
            raise ValueError(f"guidance={guidance!r} needs class labels y; pass y= for log p(x | y)")
        return model
    w = 1.0 if guidance is None else guidance
    if w not in (0, 1):
        raise ValueError(
            f"guidance must be 1 (log p(x | y)) or 0 (log p(x)) for a likelihood, got {w!r}: a guided model "
            "at another scale is not the score of p(x | y), so it gives no likelihood of the data"
        )
    model = guided(model, y, float(w))
    if model.rows is not None and model.rows != batch:
        raise ValueError(f"y holds {model.rows} labels for {batch} samples x; give one label per sample")
    return model


def check_data(x: Tensor, levels: int | None, data_range: tuple[float, float]) -> None:
    """Refuse what no estimator can score: not a (batch, ...) float tensor, NaN/inf, bad ``levels``."""
    if not isinstance(x, Tensor) or x.ndim < 2 or x.shape[0] == 0:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor of shape (batch, ...) with batch >= 1, got {shape}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or inf")
    if levels is not None:
        level_spacing(levels, data_range)  # validates
