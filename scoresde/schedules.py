"""β schedules of the VP family.

A *β schedule* is the continuous noise rate β(t) of the VP SDE together with its
integral B(t) = ∫₀ᵗ β(s) ds and the inverse t(B). Everything the SDEs need follows
from B (docs/conventions.md §1): α(t) = exp(−½B), σ(t)² = −expm1(−B), the OU clock τ = ½B.

Two families cover every schedule we ship:

* :class:`LinearBeta` — β(t) = β_min + t (β_max − β_min) (Song et al. 2021, eq. 32 / the
  continuous limit of Ho et al. 2020's linear betas);
* :class:`PiecewiseConstantBeta` — the *exact* continuous bridge of a discrete chain
  β_1..β_N on the grid t_i = iT/N: B(t_i) = −Σ_{j≤i} log(1 − β_j), B linear between knots,
  so ᾱ(t_i) = ∏_{j≤i}(1 − β_j) exactly (docs/conventions.md §1, "any discrete schedule defines a
  continuous VP SDE that is exact on its grid").

Named schedules (:data:`SCHEDULES`, the CLI's ``--schedule``):
``linear`` (β_min=0.1, β_max=20), ``ddpm-linear`` (Ho et al. 2020: betas linear in
1e-4..0.02, N=1000) and ``cosine`` (Nichol & Dhariwal 2021, eq. 17, s=0.008, betas clipped
at 0.999, N=1000).

The time grids samplers walk on live in :mod:`scoresde.grids`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor

from ._checks import check_int, positive_finite
from .registry import Registry

__all__ = [
    "SCHEDULES",
    "BetaSchedule",
    "LinearBeta",
    "PiecewiseConstantBeta",
    "cosine_betas",
    "ddpm_linear_betas",
]


class BetaSchedule(ABC):
    """β(t) on [0, T] with its integral B(t) and the inverse of the integral."""

    T: float

    @abstractmethod
    def beta(self, t: Tensor) -> Tensor:
        """The noise rate β(t)."""

    @abstractmethod
    def integral(self, t: Tensor) -> Tensor:
        """B(t) = ∫₀ᵗ β(s) ds (so ᾱ(t) = exp(−B(t)))."""

    @abstractmethod
    def inverse_integral(self, B: Tensor) -> Tensor:
        """The time t with B(t) = B (B is strictly increasing)."""


class LinearBeta(BetaSchedule):
    """β(t) = β_min + t(β_max − β_min) (Song et al. 2021, §C, eq. 32)."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0) -> None:
        for name, value in (("beta_min", beta_min), ("beta_max", beta_max)):
            if not math.isfinite(float(value)) or float(value) < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if beta_min > beta_max:
            raise ValueError(f"beta_min must not exceed beta_max, got beta_min={beta_min} > beta_max={beta_max}")
        if beta_max == 0:
            raise ValueError("beta_max must be > 0 (a schedule with no noise is not a diffusion)")
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)
        self.T = positive_finite(T, "T")
        # slope of β(t): for T != 1 the schedule still goes from β_min at 0 to β_max at T
        self._slope = (self.beta_max - self.beta_min) / self.T

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * self._slope

    def integral(self, t: Tensor) -> Tensor:
        return t * self.beta_min + 0.5 * t * t * self._slope

    def inverse_integral(self, B: Tensor) -> Tensor:
        # root of ½ k t² + β_min t − B = 0, written without cancellation:
        # t = 2B / (β_min + sqrt(β_min² + 2kB))
        return 2 * B / (self.beta_min + torch.sqrt(self.beta_min**2 + 2 * self._slope * B))

    def __repr__(self) -> str:
        return f"LinearBeta(beta_min={self.beta_min}, beta_max={self.beta_max}, T={self.T})"


class PiecewiseConstantBeta(BetaSchedule):
    """The continuous VP schedule that is exact on a discrete chain's grid.

    Given betas β_1..β_N in (0, 1) on t_i = iT/N, β(t) is constant on (t_{i−1}, t_i] with
    value −log(1 − β_i)/Δt, so that B(t_i) = −Σ log(1 − β_j) and ᾱ(t_i) = ∏(1 − β_j).
    """

    def __init__(self, betas: Tensor | list[float], T: float = 1.0) -> None:
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
        if betas.numel() == 0:
            raise ValueError("betas must hold at least one value, got an empty sequence")
        if not torch.isfinite(betas).all():
            raise ValueError("betas must be finite; found NaN or inf")
        if (betas <= 0).any() or (betas >= 1).any():
            lo, hi = betas.min().item(), betas.max().item()
            raise ValueError(f"betas must lie strictly inside (0, 1), got values in [{lo:.6g}, {hi:.6g}]")
        self.T = positive_finite(T, "T")
        self.betas = betas
        self.N = betas.numel()
        self.knots_t = torch.arange(self.N + 1, dtype=torch.float64) * (self.T / self.N)
        self.knots_B = torch.cat([betas.new_zeros(1), torch.cumsum(-torch.log1p(-betas), 0)])
        self.rates = (self.knots_B[1:] - self.knots_B[:-1]) / (self.T / self.N)

    def _segment(self, t: Tensor) -> Tensor:
        # index i of the segment (t_{i}, t_{i+1}] holding t (t = 0 belongs to segment 0)
        idx = torch.searchsorted(self.knots_t.to(t.device), t.to(torch.float64).contiguous(), right=False) - 1
        return idx.clamp(0, self.N - 1)

    def beta(self, t: Tensor) -> Tensor:
        return self.rates.to(t.device)[self._segment(t)].to(t.dtype)

    def integral(self, t: Tensor) -> Tensor:
        i = self._segment(t)
        t64 = t.to(torch.float64)
        kt, kB, r = (v.to(t.device) for v in (self.knots_t, self.knots_B, self.rates))
        return (kB[i] + (t64 - kt[i]) * r[i]).to(t.dtype)

    def inverse_integral(self, B: Tensor) -> Tensor:
        kt, kB, r = (v.to(B.device) for v in (self.knots_t, self.knots_B, self.rates))
        B64 = B.to(torch.float64)
        i = (torch.searchsorted(kB, B64, right=False) - 1).clamp(0, self.N - 1)
        return (kt[i] + (B64 - kB[i]) / r[i]).to(B.dtype)

    def __repr__(self) -> str:
        return f"PiecewiseConstantBeta(N={self.N}, T={self.T})"


# --------------------------------------------------------------------------- discrete betas


def ddpm_linear_betas(N: int = 1000, beta_1: float = 1e-4, beta_N: float = 0.02) -> Tensor:
    """Ho et al. 2020 (§4): betas linear from 1e-4 to 0.02 over N = 1000 steps.

    For other N the endpoints are scaled by 1000/N, as in Nichol & Dhariwal (2021, §3.2
    code), so the chain approximates the same continuous schedule.
    """
    N = check_int(N, "N")
    scale = 1000 / N
    return torch.linspace(scale * beta_1, min(scale * beta_N, 0.999), N, dtype=torch.float64)


def cosine_betas(N: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Nichol & Dhariwal 2021, eq. 17: ᾱ(t) = f(t)/f(0), f(t) = cos²(((t/T + s)/(1 + s))·π/2).

    β_i = 1 − ᾱ_i/ᾱ_{i−1}, clipped at ``max_beta`` (0.999 in the paper) so that β_N < 1.
    """
    N = check_int(N, "N")
    i = torch.arange(N + 1, dtype=torch.float64)
    log_f = 2 * torch.log(torch.cos((i / N + s) / (1 + s) * math.pi / 2).clamp_min(0))
    betas = -torch.expm1(log_f[1:] - log_f[:-1])
    return betas.clamp(max=max_beta)


SCHEDULES: Registry[Callable[[float], BetaSchedule]] = Registry("schedule")
"""Named β schedules; each entry is ``factory(T) -> BetaSchedule``."""

SCHEDULES.register("linear")(lambda T=1.0: LinearBeta(0.1, 20.0, T))
SCHEDULES.register("ddpm-linear")(lambda T=1.0: PiecewiseConstantBeta(ddpm_linear_betas(1000), T))
SCHEDULES.register("cosine")(lambda T=1.0: PiecewiseConstantBeta(cosine_betas(1000), T))
