"""Quantized data: the level grid, uniform dequantization, bits per dimension, the discretized Gaussian.

Data with ``levels`` equally spaced values
in ``data_range`` = [lo, hi] (8-bit images: 256 levels; scaled to [−1, 1] by x/127.5 − 1) sit on
a grid of spacing Δ = (hi − lo)/(levels − 1). Each level y_k owns the bin [y_k − Δ/2, y_k + Δ/2)
and, for a continuous density p (Theis et al. 2016; Ho et al. 2019, eq. 3),

    −log P(y_k) ≤ E_{u~U[0,1)^D} [−log p(y_k + Δ(u − ½))] − D log Δ,

so with ``levels`` given, ``method="ode"`` dequantizes x and returns the right-hand side (a
discrete NLL bound in nats), and ``bits/dim = NLL / (D ln 2)`` (:func:`bits_per_dim`) is
independent of the bit depth and of the scaling of the data. For 8-bit data in [−1, 1] the
−D log Δ term adds log₂(127.5) ≈ 6.99 bits/dim to the density's nats/(D ln 2); a density
uniform over all 256 bins gives exactly 8 bits/dim.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import check_int

__all__ = ["bits_per_dim", "check_quantized", "dequantize", "discretized_gaussian_log_likelihood", "level_spacing"]


def level_spacing(levels: int, data_range: tuple[float, float] = (-1.0, 1.0)) -> float:
    """Δ = (hi − lo)/(levels − 1), the distance between neighbouring quantization levels."""
    check_int(levels, "levels", minimum=2, detail=" (256 for 8-bit data)")
    lo, hi = (float(v) for v in data_range)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"data_range must be (lo, hi) with finite lo < hi, got {data_range!r}")
    return (hi - lo) / (levels - 1)


def dequantize(
    x: Tensor,
    levels: int,
    data_range: tuple[float, float] = (-1.0, 1.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """y = x + Δ(u − ½), u ~ U[0, 1)^D: spread each level uniformly over its own bin.

    ``x`` must lie on the grid of ``levels`` values over ``data_range`` (checked to Δ/4).
    """
    delta = level_spacing(levels, data_range)
    check_quantized(x, levels, data_range)
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return x + delta * (u - 0.5)


def bits_per_dim(nll: Tensor | float, dim: int) -> Tensor | float:
    """bits/dim = NLL / (D ln 2) for a *discrete* NLL in nats (see the module docstring).

    Pass the output of :func:`log_likelihood` computed with ``levels`` given: the −D log Δ of
    dequantization is then already included, so the value does not depend on the data scaling.
    """
    check_int(dim, "dim", detail=" (the number of dimensions per sample)")
    return nll / (dim * math.log(2))


def discretized_gaussian_log_likelihood(
    x: Tensor, mean: Tensor, std: Tensor, levels: int = 256, data_range: tuple[float, float] = (-1.0, 1.0)
) -> Tensor:
    """log ∫_bin N(y; mean, std²) dy per element (Ho et al. 2020, eq. 13); x on the level grid.

    Bins are [x − Δ/2, x + Δ/2), with the lowest extended to −∞ and the highest to +∞, so the
    masses of all levels sum to one.
    """
    delta = level_spacing(levels, data_range)
    lo = float(data_range[0])
    k = torch.round((x - lo) / delta)
    lower = torch.where(k <= 0, torch.full_like(x, -math.inf), x - delta / 2)
    upper = torch.where(k >= levels - 1, torch.full_like(x, math.inf), x + delta / 2)
    return _log_normal_mass((lower - mean) / std, (upper - mean) / std)


def check_quantized(x: Tensor, levels: int, data_range: tuple[float, float]) -> None:
    """Refuse ``x`` that does not lie on the grid of ``levels`` values over ``data_range`` (to Δ/4)."""
    delta = level_spacing(levels, data_range)
    lo = float(data_range[0])
    k = (x.to(torch.float64) - lo) / delta
    off = (k - torch.round(k)).abs().max().item()
    kmin, kmax = torch.round(k).min().item(), torch.round(k).max().item()
    if off > 0.25 or kmin < 0 or kmax > levels - 1:
        raise ValueError(
            f"x is not quantized to {levels} levels over {tuple(data_range)} (spacing {delta:.6g}); "
            "pass the data as loaded (not dequantized), or levels=None for continuous data"
        )


def _log_normal_mass(a: Tensor, b: Tensor) -> Tensor:
    """log(Φ(b) − Φ(a)) for a ≤ b, stable in both tails (the upper tail is mirrored)."""
    flip = a > 0
    a, b = torch.where(flip, -b, a), torch.where(flip, -a, b)
    log_b, log_a = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    return log_b + torch.log(-torch.expm1(torch.clamp(log_a - log_b, max=0.0)))
