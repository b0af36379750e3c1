"""Forward SDEs of the linear-Gaussian family: VP (Ornstein–Uhlenbeck), sub-VP and VE.

Every SDE here is dx = f(t) x dt + g(t) dW with marginal x_t = α(t) x_0 + σ(t) ε
(Song et al. 2021, "Score-Based Generative Modeling through SDEs", §3.4 and App. B).
The abstract :class:`SDE` holds what is written once for all of them: the checked public
methods, ``reverse`` (Anderson 1982) and ``discretize`` (the discrete Markov chain read on a
time grid). Conventions: docs/conventions.md §1. No module here imports ``torch.nn``.

Time runs t ∈ [0, T]: data at 0, noise at T. Schedules and grids are computed in float64;
a float32 ``t`` gives float32 results computed stably (σ from ``expm1``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ._checks import append_dims, as_time, positive_finite
from .grids import time_grid
from .registry import Registry
from .schedules import SCHEDULES, BetaSchedule, LinearBeta, PiecewiseConstantBeta

__all__ = ["SDE", "SDES", "VESDE", "VPSDE", "DiscreteChain", "ReverseSDE", "SubVPSDE", "make_sde"]

ScoreFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class DiscreteChain:
    """A forward SDE read on a time grid t_0 < t_1 < … < t_N (float64 throughout).

    Index conventions follow Ho et al. (2020): step i = 1..N goes from t_{i−1} to t_i and is
    stored at position ``i − 1`` of the length-N fields; the length-(N+1) fields are indexed
    by i = 0..N.

    Attributes:
        times: (N+1,) the grid t_i.
        alpha_bars: (N+1,) ᾱ_i = α(t_i)² — exactly the SDE's ᾱ at the grid times.
        sigmas: (N+1,) marginal σ(t_i) (σ² = 1 − ᾱ for VP).
        betas: (N,) β_i, the variance of q(x_i | x_{i−1}) = N(√α_i x_{i−1}, β_i I).
        alphas: (N,) α_i, the squared mean coefficient of that kernel (α_i = 1 − β_i for VP).
        posterior_variances: (N,) β̃_i = σ²_{i−1}/σ²_i · β_i, the variance of
            q(x_{i−1} | x_i, x_0) (Ho et al. 2020, eq. 7).
    """

    times: Tensor
    alpha_bars: Tensor
    sigmas: Tensor
    betas: Tensor
    alphas: Tensor
    posterior_variances: Tensor

    @property
    def N(self) -> int:
        return self.betas.numel()


class SDE(ABC):
    """dx = f(t) x dt + g(t) dW on [0, T], with Gaussian marginals x_t = α x_0 + σ ε.

    Subclasses implement the unchecked analytic pieces (``_log_alpha``, ``_sigma``,
    ``_drift_coef``, ``_g2``); the public methods validate their input first.
    """

    T: float
    prior_std: float = 1.0

    # ---- analytic pieces (unchecked; t is a float tensor) --------------------------------
    @abstractmethod
    def _log_alpha(self, t: Tensor) -> Tensor:
        """log α(t), the log of the marginal mean coefficient."""

    @abstractmethod
    def _sigma(self, t: Tensor) -> Tensor:
        """σ(t), the marginal standard deviation."""

    @abstractmethod
    def _drift_coef(self, t: Tensor) -> Tensor:
        """f(t) in the drift f(x, t) = f(t) x."""

    @abstractmethod
    def _g2(self, t: Tensor) -> Tensor:
        """g(t)², the squared diffusion coefficient."""

    def _transition(self, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(log a, v) of the kernel q(x_t | x_s) = N(a x_s, v I) for s < t.

        From the marginals: a = α_t/α_s, v = σ_t² − a² σ_s² (Gaussian composition).
        """
        log_a = self._log_alpha(t) - self._log_alpha(s)
        return log_a, self._sigma(t) ** 2 - torch.exp(2 * log_a) * self._sigma(s) ** 2

    def _log_snr(self, t: Tensor) -> Tensor:
        return 2 * (self._log_alpha(t) - torch.log(self._sigma(t)))

    # ---- public ---------------------------------------------------------------------------
    # Every coefficient takes t (a tensor or a float) and returns the same shape. ``check=True``
    # validates t (finite, inside [0, T]); hot loops that built t themselves pass ``check=False``
    # (then t must be a float tensor), which skips the host sync of the check.
    def _time(self, t: Tensor | float, check: bool) -> Tensor:
        return as_time(t, self.T) if check or not isinstance(t, Tensor) else t

    def marginal(self, t: Tensor | float, *, check: bool = True) -> tuple[Tensor, Tensor]:
        """(α(t), σ(t)) with x_t = α(t) x_0 + σ(t) ε; same shape and dtype as ``t``."""
        t = self._time(t, check)
        return torch.exp(self._log_alpha(t)), self._sigma(t)

    def alpha(self, t: Tensor | float, *, check: bool = True) -> Tensor:
        """α(t), the marginal mean coefficient."""
        return torch.exp(self._log_alpha(self._time(t, check)))

    def sigma(self, t: Tensor | float, *, check: bool = True) -> Tensor:
        """σ(t), the marginal standard deviation."""
        return self._sigma(self._time(t, check))

    def drift_coef(self, t: Tensor | float, *, check: bool = True) -> Tensor:
        """f(t) in the drift f(x, t) = f(t) x."""
        return self._drift_coef(self._time(t, check))

    def g2(self, t: Tensor | float, *, check: bool = True) -> Tensor:
        """g(t)², the squared diffusion coefficient."""
        return self._g2(self._time(t, check))

    diffusion_squared = g2

    def transition(self, s: Tensor | float, t: Tensor | float, *, check: bool = True) -> tuple[Tensor, Tensor]:
        """(log a, v) of the kernel q(x_t | x_s) = N(a x_s, v I) for s < t."""
        return self._transition(self._time(s, check), self._time(t, check))

    def drift(self, x: Tensor, t: Tensor | float) -> Tensor:
        """f(x, t) = f(t) x for x of shape (batch, ...) and t of shape (batch,) or scalar."""
        t = self._batch_time(x, t)
        return append_dims(self._drift_coef(t), x.ndim) * x

    def diffusion(self, t: Tensor | float) -> Tensor:
        """g(t), same shape as ``t``."""
        t = as_time(t, self.T)
        return torch.sqrt(self._g2(t))

    def log_snr(self, t: Tensor | float, *, check: bool = True) -> Tensor:
        """λ(t) = log(α(t)² / σ(t)²); +inf at t = 0."""
        return self._log_snr(self._time(t, check))

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        """Inverse of :meth:`log_snr` (float64 bisection; subclasses give closed forms)."""
        lam = torch.as_tensor(lam, dtype=torch.float64)
        lo = torch.zeros_like(lam)
        hi = torch.full_like(lam, self.T)
        for _ in range(80):  # λ is decreasing in t
            mid = 0.5 * (lo + hi)
            above = self._log_snr(mid) > lam
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return 0.5 * (lo + hi)

    def prior_sample(
        self,
        shape: tuple[int, ...] | torch.Size,
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw x_T from the prior N(0, prior_std² I)."""
        if generator is not None and device is None:
            device = generator.device
        return self.prior_std * torch.randn(tuple(shape), generator=generator, dtype=dtype, device=device)

    def prior_logp(self, x: Tensor) -> Tensor:
        """log N(x; 0, prior_std² I) summed over all but the batch dimension, shape (batch,)."""
        d = x[0].numel()
        sq = x.flatten(1).pow(2).sum(1)
        return -0.5 * d * math.log(2 * math.pi * self.prior_std**2) - 0.5 * sq / self.prior_std**2

    def reverse(self, score_fn: ScoreFn | None, probability_flow: bool = False) -> ReverseSDE:
        """The reverse-time SDE (Anderson 1982) or the probability-flow ODE (Song et al. 2021, eq. 13).

        ``score_fn`` may be None for solvers that only read the coefficient form
        (:meth:`ReverseSDE.drift_coefs`) and supply the score themselves.
        """
        return ReverseSDE(self, score_fn, probability_flow)

    def discretize(self, N: int, grid: str | Tensor = "uniform", t_min: float = 0.0, **grid_options) -> DiscreteChain:
        """Read the SDE on a time grid of N steps: the discrete chain it defines exactly.

        With the default uniform grid on [0, T] and a VP SDE this is DDPM's chain: ᾱ_i = ᾱ(t_i)
        and β_i = 1 − ᾱ_i/ᾱ_{i−1} = 1 − e^{−2Δτ_i} (docs/conventions.md §1). ``grid`` is a name from
        ``TIME_GRIDS`` or an explicit increasing tensor of times (then N is ignored).
        """
        times = time_grid(self, N, grid, t_min=t_min, **grid_options)
        log_a, var = self._transition(times[:-1], times[1:])
        sigmas = self._sigma(times)
        return DiscreteChain(
            times=times,
            alpha_bars=torch.exp(2 * self._log_alpha(times)),
            sigmas=sigmas,
            betas=var,
            alphas=torch.exp(2 * log_a),
            posterior_variances=var * (sigmas[:-1] / sigmas[1:]) ** 2,
        )

    # ---- helpers --------------------------------------------------------------------------
    def _batch_time(self, x: Tensor, t: Tensor | float) -> Tensor:
        t = as_time(t, self.T, reference=x)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        elif t.shape != (x.shape[0],):
            raise ValueError(f"t must be a scalar or have shape (batch,) = ({x.shape[0]},), got {tuple(t.shape)}")
        return t


class ReverseSDE:
    """dx = [f(x,t) − c·g(t)² s(x,t)] dt + g̃(t) dW̄, integrated from T down to 0.

    c = 1, g̃ = g for the reverse SDE (Anderson 1982; Song et al. 2021, eq. 6); c = ½, g̃ = 0 for
    the probability-flow ODE (eq. 13). Times are forward times; steps have dt < 0.
    """

    def __init__(self, sde: SDE, score_fn: ScoreFn | None, probability_flow: bool = False) -> None:
        self.sde = sde
        self.score_fn = score_fn
        self.probability_flow = bool(probability_flow)
        self.T = sde.T

    def drift_coefs(self, t: Tensor | float, *, check: bool = True) -> tuple[Tensor, Tensor]:
        """(f(t), c·g(t)²): the drift is f(t) x − c·g(t)² s(x, t) (c = ½ for the ODE, 1 for the SDE).

        The one formula of the reverse drift; tabled solvers read it on their grid in float64.
        """
        t = self.sde._time(t, check)
        c = 0.5 if self.probability_flow else 1.0
        return self.sde._drift_coef(t), c * self.sde._g2(t)

    def diffusion_squared(self, t: Tensor | float, *, check: bool = True) -> Tensor:
        """g̃(t)²: g(t)² for the reverse SDE, 0 for the probability-flow ODE."""
        t = self.sde._time(t, check)
        return torch.zeros_like(t) if self.probability_flow else self.sde._g2(t)

    def drift(self, x: Tensor, t: Tensor | float) -> Tensor:
        """f(t) x − c·g(t)² s(x, t) for x of shape (batch, ...) and t of shape (batch,) or scalar."""
        if self.score_fn is None:
            raise ValueError("this ReverseSDE was built without a score function; pass score_fn to sde.reverse")
        t = self.sde._batch_time(x, t)
        f, cg2 = self.drift_coefs(t, check=False)
        return append_dims(f, x.ndim) * x - append_dims(cg2, x.ndim) * self.score_fn(x, t)

    def diffusion(self, t: Tensor | float) -> Tensor:
        return torch.sqrt(self.diffusion_squared(t))


class VPSDE(SDE):
    """Variance-preserving SDE dx = −½β(t) x dt + √β(t) dW (Song et al. 2021, eq. 11).

    α(t) = exp(−½B(t)), σ(t)² = −expm1(−B(t)), B(t) = ∫₀ᵗ β. The OU clock τ = ½B(t) turns it
    into dx = −x dτ + √2 dW (the seed note). DDPM is this SDE on a grid (:meth:`discretize`);
    any discrete chain is this SDE with a piecewise-constant β (:meth:`from_betas`).

    Args:
        beta_min, beta_max: ends of the linear schedule β(t) (defaults 0.1 and 20).
        T: the end time (default 1).
        schedule: a :class:`~scoresde.schedules.BetaSchedule` or a name from ``SCHEDULES``
            instead of the linear schedule.
    """

    def __init__(
        self,
        beta_min: float | None = None,
        beta_max: float | None = None,
        T: float = 1.0,
        *,
        schedule: BetaSchedule | str | None = None,
    ) -> None:
        self.schedule = _resolve_schedule(beta_min, beta_max, T, schedule)
        self.T = self.schedule.T

    @classmethod
    def from_betas(cls, betas: Tensor | list[float], T: float = 1.0) -> VPSDE:
        """The continuous VP SDE exact on the betas' grid t_i = iT/N (β(t) piecewise constant).

        ``VPSDE.from_betas(b).discretize(len(b))`` returns ``b`` again (up to rounding).
        """
        return cls(schedule=PiecewiseConstantBeta(betas, T))

    def _B(self, t: Tensor) -> Tensor:
        return self.schedule.integral(t)

    def _log_alpha(self, t: Tensor) -> Tensor:
        return -0.5 * self._B(t)

    def _sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(-self._B(t)))

    def _drift_coef(self, t: Tensor) -> Tensor:
        return -0.5 * self.schedule.beta(t)

    def _g2(self, t: Tensor) -> Tensor:
        return self.schedule.beta(t)

    def _transition(self, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        dB = self._B(t) - self._B(s)  # = 2Δτ; β = 1 − e^{−2Δτ} without cancellation
        return -0.5 * dB, -torch.expm1(-dB)

    def _log_snr(self, t: Tensor) -> Tensor:
        return -torch.log(torch.expm1(self._B(t)))  # log(ᾱ/(1 − ᾱ)) = −log(e^B − 1)

    def beta(self, t: Tensor | float) -> Tensor:
        """β(t)."""
        return self.schedule.beta(as_time(t, self.T))

    def log_alpha_bar(self, t: Tensor | float) -> Tensor:
        """log ᾱ(t) = −B(t)."""
        return -self._B(as_time(t, self.T))

    def ou_time(self, t: Tensor | float) -> Tensor:
        """The seed's OU clock τ(t) = ½B(t), in which dx = −x dτ + √2 dW."""
        return 0.5 * self._B(as_time(t, self.T))

    def t_from_ou_time(self, tau: Tensor) -> Tensor:
        """Inverse of :meth:`ou_time`."""
        return self.schedule.inverse_integral(2 * torch.as_tensor(tau, dtype=torch.float64))

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        """t(λ): B = log(1 + e^{−λ}) (a stable softplus), then t = B⁻¹."""
        lam = torch.as_tensor(lam, dtype=torch.float64)
        B = torch.logaddexp(torch.zeros_like(lam), -lam)
        return self.schedule.inverse_integral(B)

    def __repr__(self) -> str:
        return f"VPSDE(schedule={self.schedule!r})"


class SubVPSDE(VPSDE):
    """Sub-VP SDE dx = −½β x dt + √(β(1 − e^{−2B})) dW (Song et al. 2021, eq. 29).

    Same mean as VP; σ(t) = 1 − e^{−B(t)} (the *standard deviation*, not the variance).
    """

    def _sigma(self, t: Tensor) -> Tensor:
        return -torch.expm1(-self._B(t))

    def _g2(self, t: Tensor) -> Tensor:
        return self.schedule.beta(t) * -torch.expm1(-2 * self._B(t))

    def _transition(self, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        return SDE._transition(self, s, t)

    def _log_snr(self, t: Tensor) -> Tensor:
        return SDE._log_snr(self, t)

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        return SDE.t_from_log_snr(self, lam)

    def __repr__(self) -> str:
        return f"SubVPSDE(schedule={self.schedule!r})"


class VESDE(SDE):
    """Variance-exploding SDE dx = √(d[σ²]/dt) dW, σ_n(t) = σ_min (σ_max/σ_min)^t (Song et al. 2021, eq. 9).

    α = 1 and the marginal variance is σ(t)² = σ_n(t)² − σ_n(0)² = σ_min² expm1(2t log r), the exact
    variance accumulated since t = 0 (score_sde_pytorch reports σ_n(t), which omits σ_min²). The
    prior is N(0, σ_max² I) as in the paper.
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, T: float = 1.0) -> None:
        sigma_min = positive_finite(sigma_min, "sigma_min")
        sigma_max = positive_finite(sigma_max, "sigma_max")
        if sigma_min >= sigma_max:
            raise ValueError(f"need sigma_min < sigma_max, got {sigma_min} >= {sigma_max}")
        self.sigma_min, self.sigma_max, self.T = sigma_min, sigma_max, positive_finite(T, "T")
        self.prior_std = sigma_max
        self._k = 2 * math.log(sigma_max / sigma_min) / self.T  # d log σ_n² / dt

    def _log_alpha(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def _sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * torch.sqrt(torch.expm1(self._k * t))

    def _drift_coef(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def _g2(self, t: Tensor) -> Tensor:
        return self.sigma_min**2 * self._k * torch.exp(self._k * t)

    def _log_snr(self, t: Tensor) -> Tensor:
        return -2 * math.log(self.sigma_min) - torch.log(torch.expm1(self._k * t))

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        lam = torch.as_tensor(lam, dtype=torch.float64)
        return torch.log1p(torch.exp(-lam) / self.sigma_min**2) / self._k

    def __repr__(self) -> str:
        return f"VESDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, T={self.T})"


def _resolve_schedule(
    beta_min: float | None, beta_max: float | None, T: float, schedule: BetaSchedule | str | None
) -> BetaSchedule:
    if schedule is None:
        return LinearBeta(0.1 if beta_min is None else beta_min, 20.0 if beta_max is None else beta_max, T)
    if beta_min is not None or beta_max is not None:
        raise ValueError("give either beta_min/beta_max (linear schedule) or schedule=..., not both")
    if isinstance(schedule, str):
        return SCHEDULES.get(schedule)(T)
    if not isinstance(schedule, BetaSchedule):
        raise TypeError(f"schedule must be a BetaSchedule or a name, got {type(schedule).__name__}")
    return schedule


SDES: Registry[type[SDE]] = Registry("SDE")
SDES.register("vp")(VPSDE)
SDES.register("subvp")(SubVPSDE)
SDES.register("ve")(VESDE)


def make_sde(name: str = "vp", schedule: str | None = None, **kwargs) -> SDE:
    """Build an SDE from its CLI name (``vp``, ``subvp``, ``ve``) and, for VP/sub-VP, a schedule name."""
    cls = SDES.get(name)
    if schedule is not None:
        if not issubclass(cls, VPSDE):
            raise ValueError(f"--schedule applies to the VP family (vp, subvp), not to {name!r}")
        kwargs["schedule"] = schedule
    return cls(**kwargs)
