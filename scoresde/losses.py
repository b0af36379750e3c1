"""The denoising loss, its weightings λ(t) and the samplers of training times.

    L(θ) = E_{t, x_0, ε} [ w(t) ‖ε − ε̂_θ(x_t, t)‖² ],   x_t = α(t) x_0 + σ(t) ε

(docs/conventions.md §1). :func:`denoising_loss` returns the *per-sample* values (shape (batch,)); the
caller reduces. Every weighting is written on the ε-loss; a network predicting ``x0``, ``v``
or ``score`` is trained on the same objective, its error converted exactly to the ε scale:
‖ε − ε̂‖² = c(t)‖target − prediction‖² with c = (α/σ)² for x_0, (α/(α²+σ²))² for v and σ² for
the score (scoresde.param relations), so the choice of λ(t) and of the parametrization are
independent.

Weightings (:data:`WEIGHTINGS`, the CLI's ``--weighting``; each entry is a factory taking the
weighting's options and returning a :class:`Weighting`):

=============  ======================================  ========================================
``simple``     1                                       DDPM L_simple (Ho et al. 2020, eq. 14)
``elbo``       β_i²/(2 σ_i² α_i (1 − ᾱ_i))             L_{i−1} of the discrete ELBO (Ho et al. eq. 12)
``likelihood`` g(t)²/(2 σ(t)²)  (= β/(2σ²) for VP)     continuous ELBO (Song et al. 2021b; Kingma et al. 2021)
``score``      1/σ(t)²                                 ‖s_θ − ∇ log p_{0t}‖², unweighted DSM
``min-snr``    min(SNR, γ)/SNR                         Hang et al. 2023, eq. 9 (ε-prediction form)
``edm``        (σ̃² + σ_d²)/σ_d²,  σ̃ = σ/α              Karras et al. 2022, Table 1, λ(σ) on the ε-loss
=============  ======================================  ========================================

Times (:data:`TIME_SAMPLERS`, ``--time``): ``discrete`` draws i ~ U{1..N} on the chain
``sde.discretize(N)``; ``continuous`` draws t ~ U[ε_t, T]. Either can be importance-sampled
with density ∝ w; the draw then carries the weights p_uniform/q, so the estimate stays unbiased.
``lognormal`` draws ln σ̃ ~ N(P_mean, P_std²) (EDM's training distribution, −1.2 and 1.2), i.e.
log-SNR λ = −2 ln σ̃ ~ N(−2 P_mean, 4 P_std²), mapped to t by ``sde.t_from_log_snr`` and kept in
[ε_t, T]; it changes the objective itself (no importance weights), as EDM intends.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from ._checks import append_dims, check_int, check_name
from .param import resolve_prediction
from .registry import Registry
from .sde import SDE, DiscreteChain

__all__ = [
    "TIME_SAMPLERS",
    "WEIGHTINGS",
    "ContinuousTime",
    "DiscreteTime",
    "LogNormalTime",
    "TimeDraw",
    "Weighting",
    "denoising_loss",
    "make_time_sampler",
    "make_weighting",
]


@dataclass(frozen=True)
class TimeDraw:
    """A batch of training times with everything a weighting may need (float64).

    Attributes:
        t: (batch,) continuous times in [0, T].
        alpha, sigma: (batch,) the marginal coefficients at ``t``.
        importance: (batch,) importance weights p_uniform/q (ones without importance sampling).
        index: (batch,) the discrete step i ∈ {1..N} (``None`` for continuous time).
        chain: the discrete chain the indices refer to (``None`` for continuous time).
    """

    t: Tensor
    alpha: Tensor
    sigma: Tensor
    importance: Tensor
    index: Tensor | None = None
    chain: DiscreteChain | None = None


class Weighting(Protocol):
    """``w(sde, draw) -> (batch,)``: the weight on ‖ε − ε̂‖² at the drawn times."""

    def __call__(self, sde: SDE, draw: TimeDraw) -> Tensor: ...


WEIGHTINGS: Registry[Callable[..., Weighting]] = Registry("weighting")
"""Named weightings; each entry is a factory ``make(**options) -> Weighting``."""


def _g2_over_sigma2(sde: SDE, t: Tensor) -> Tensor:
    return sde.g2(t, check=False) / sde.sigma(t, check=False) ** 2


@WEIGHTINGS.register("simple")
def simple() -> Weighting:
    """w = 1: DDPM's L_simple (Ho et al. 2020, eq. 14)."""

    def w(sde: SDE, draw: TimeDraw) -> Tensor:
        return torch.ones_like(draw.t)

    return w


@WEIGHTINGS.register("elbo")
def elbo(variance: str = "large") -> Weighting:
    """Discrete ELBO: w_i = β_i² / (2 σ_i² α_i (1 − ᾱ_i)) (Ho et al. 2020, eq. 12; the seed's λ(t)).

    ``variance`` picks the reverse-step variance σ_i²: ``large`` = β_i, ``small`` = β̃_i
    (Ho et al. §3.2; β̃_1 = 0 is clipped to β̃_2). With it, w_i‖ε − ε̂‖² is exactly the mean part
    of KL(q(x_{i−1}|x_i, x_0) ‖ p_θ(x_{i−1}|x_i)). Needs discrete time.
    """
    if variance not in ("large", "small"):
        raise ValueError(f"elbo variance must be 'large' (σ² = β) or 'small' (σ² = β̃), got {variance!r}")

    def w(sde: SDE, draw: TimeDraw) -> Tensor:
        if draw.chain is None or draw.index is None:
            raise ValueError(
                "the 'elbo' weighting is defined on a discrete chain; use --time discrete, "
                "or the 'likelihood' weighting (its continuous limit) with continuous time"
            )
        chain, i = draw.chain, draw.index
        k = i - 1  # step i is stored at position i − 1
        beta, alpha = chain.betas.to(i.device)[k], chain.alphas.to(i.device)[k]
        var = beta if variance == "large" else _clipped_posterior_variances(chain).to(i.device)[k]
        # σ(t_i)² is 1 − ᾱ_i for VP; written with the marginal σ the formula holds for any linear SDE
        # (μ̃ − μ_θ = β_i/(√α_i σ_i)·(ε̂ − ε), Ho et al. eqs. 7 and 11).
        sigma2 = chain.sigmas.to(i.device)[i] ** 2
        return beta**2 / (2 * var * alpha * sigma2)

    return w


@WEIGHTINGS.register("likelihood")
def likelihood() -> Weighting:
    """w(t) = g(t)²/(2σ(t)²), β/(2σ²) for VP: the continuous ELBO (Song et al. 2021b, Thm. 1 with λ = g²;
    Kingma et al. 2021, eq. 17: ½ (−dλ/dt) with λ the log-SNR). N × ``elbo`` → this as N → ∞."""

    def w(sde: SDE, draw: TimeDraw) -> Tensor:
        return 0.5 * _g2_over_sigma2(sde, draw.t)

    return w


@WEIGHTINGS.register("score")
def score() -> Weighting:
    """w(t) = 1/σ(t)²: plain denoising score matching ‖s_θ − ∇ log p_{0t}‖² (Vincent 2011)."""

    def w(sde: SDE, draw: TimeDraw) -> Tensor:
        return draw.sigma**-2

    return w


@WEIGHTINGS.register("min-snr")
def min_snr(gamma: float = 5.0) -> Weighting:
    """w(t) = min(SNR(t), γ)/SNR(t) on the ε-loss (Hang et al. 2023, "Min-SNR", eq. 9; γ = 5)."""
    if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma > 0):
        raise ValueError(f"min-snr gamma must be a positive number, got {gamma!r}")

    def w(sde: SDE, draw: TimeDraw) -> Tensor:
        snr = (draw.alpha / draw.sigma) ** 2
        return torch.clamp(snr, max=gamma) / snr

    return w


@WEIGHTINGS.register("edm")
def edm(sigma_data: float = 0.5) -> Weighting:
    """w = (σ̃² + σ_d²)/σ_d² with σ̃ = σ/α: EDM's loss weight (Karras et al. 2022, Table 1) on the ε-loss.

    EDM weights the x_0 error of its denoiser D by λ(σ̃) = (σ̃² + σ_d²)/(σ̃ σ_d)². On our scale
    x_t = α x_0 + σ ε, i.e. x̃ = x_t/α = x_0 + σ̃ ε, the ε implied by D is ε̂ = (x̃ − D)/σ̃, so
    ε − ε̂ = (D − x_0)/σ̃ and ‖ε − ε̂‖² = ‖D − x_0‖²/σ̃². Hence
    λ(σ̃)‖D − x_0‖² = λ(σ̃) σ̃² ‖ε − ε̂‖² = (σ̃² + σ_d²)/σ_d² · ‖ε − ε̂‖². With the ``edm``
    preconditioning (:class:`scoresde.param.EDMPrecond`) this is unit weight on the network's own
    target: λ c_out² = 1. ``sigma_data`` is σ_d (the config takes it from ``model.sigma_data``).
    """
    if not (isinstance(sigma_data, (int, float)) and math.isfinite(sigma_data) and sigma_data > 0):
        raise ValueError(f"edm sigma_data must be a positive number, got {sigma_data!r}")

    def w(sde: SDE, draw: TimeDraw) -> Tensor:
        return 1 + (draw.sigma / (draw.alpha * sigma_data)) ** 2

    return w


def _clipped_posterior_variances(chain: DiscreteChain) -> Tensor:
    """β̃_i with β̃_1 (= 0 when t_0 = 0: step 1 is the decoder, not a KL) replaced by β̃_2 (by β_1 if N = 1),
    as Nichol & Dhariwal 2021 clip it (``posterior_log_variance_clipped``)."""
    var = chain.posterior_variances.clone()
    var[0] = var[1] if chain.N > 1 else chain.betas[0]
    return var


def make_weighting(weighting: str | Weighting, **options) -> Weighting:
    """A weighting from its name (with options, e.g. ``gamma=5``) or a user callable ``w(sde, draw)``."""
    if isinstance(weighting, str):
        return WEIGHTINGS.get(weighting)(**options)
    if callable(weighting):
        if options:
            raise ValueError("options apply to named weightings only; bake them into your callable")
        return weighting
    raise TypeError(f"weighting must be a name ({', '.join(WEIGHTINGS)}) or a callable, got {type(weighting).__name__}")


# --------------------------------------------------------------------------- time samplers

_CHAINS: weakref.WeakKeyDictionary[SDE, dict[int, DiscreteChain]] = weakref.WeakKeyDictionary()


def _chain(sde: SDE, N: int) -> DiscreteChain:
    per_sde = _CHAINS.setdefault(sde, {})
    if N not in per_sde:
        per_sde[N] = sde.discretize(N)
    return per_sde[N]


class DiscreteTime:
    """i ~ U{1..N} on ``sde.discretize(N)`` (Ho et al. 2020, Algorithm 1, line 3), or i ∝ w_i.

    With ``importance=True`` index i is drawn with probability q_i = w_i/Σw and carries the weight
    (1/N)/q_i, so E[weight · w_i ℓ_i] is unchanged (an unbiased, lower-variance estimate).
    """

    def __init__(self, N: int = 1000, importance: bool = False) -> None:
        N = check_int(N, "the number of discrete steps N")
        self.N, self.importance = N, bool(importance)

    def at(self, sde: SDE, index: Tensor) -> TimeDraw:
        """The draw at given step indices i ∈ {1..N} (importance weights 1)."""
        index = torch.as_tensor(index, dtype=torch.long)
        if index.numel() and (index.min() < 1 or index.max() > self.N):
            raise ValueError(f"step indices must lie in 1..{self.N}, got {index.min().item()}..{index.max().item()}")
        return self._at(sde, index)

    def _at(self, sde: SDE, index: Tensor) -> TimeDraw:
        chain = _chain(sde, self.N)
        t = chain.times.to(index.device)[index]
        alpha, sigma = sde.marginal(t, check=False)  # grid times: no check (no host sync per step)
        return TimeDraw(t, alpha, sigma, torch.ones_like(t), index, chain)

    def __call__(
        self, sde: SDE, batch: int, weighting: Weighting, *, generator: torch.Generator | None, device=None
    ) -> TimeDraw:
        if not self.importance:
            index = torch.randint(1, self.N + 1, (batch,), generator=generator, device=device)
            return self._at(sde, index)
        every = self._at(sde, torch.arange(1, self.N + 1, device=device))
        q = _as_probabilities(weighting(sde, every), "discrete")
        k = torch.multinomial(q, batch, True, generator=generator)
        draw = self._at(sde, k + 1)
        return TimeDraw(draw.t, draw.alpha, draw.sigma, (1.0 / self.N) / q[k], draw.index, draw.chain)

    def __repr__(self) -> str:
        return f"DiscreteTime(N={self.N}, importance={self.importance})"


class ContinuousTime:
    """t ~ U[ε_t, T] (Song et al. 2021, eq. 7), or t ∝ w(t) by importance sampling.

    Importance sampling uses a piecewise-constant proposal q(t) ∝ w on ``cells`` cells (log-spaced
    near ε_t, where likelihood weights blow up, and uniform elsewhere); t is drawn exactly from q
    and weighted by p_uniform(t)/q(t), so the estimate is unbiased for any w, not only approximately.

    ``t_min`` is ε_t, the smallest training time.
    """

    def __init__(self, t_min: float = 1e-5, importance: bool = False, cells: int = 2048) -> None:
        if not (isinstance(t_min, (int, float)) and math.isfinite(t_min) and t_min >= 0):
            raise ValueError(f"the smallest training time t_min must be a number >= 0, got {t_min!r}")
        self.t_min, self.importance, self.cells = float(t_min), bool(importance), int(cells)

    def at(self, sde: SDE, t: Tensor) -> TimeDraw:
        """The draw at given continuous times (importance weights 1)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        alpha, sigma = sde.marginal(t, check=False)  # drawn in [t_min, T]: no check (no host sync per step)
        return TimeDraw(t, alpha, sigma, torch.ones_like(t))

    def _proposal(self, sde: SDE, weighting: Weighting, device) -> tuple[Tensor, Tensor]:
        lo, hi = self.t_min, sde.T
        if lo >= hi:
            raise ValueError(f"need t_min < T, got t_min={lo}, T={hi}")
        uniform = torch.linspace(lo, hi, self.cells // 2 + 1, dtype=torch.float64)
        log_lo = math.log(max(lo, 1e-12 * hi))
        geometric = torch.exp(torch.linspace(log_lo, math.log(hi), self.cells // 2 + 1, dtype=torch.float64))
        edges = torch.unique(torch.cat([uniform, geometric.clamp(lo, hi)])).to(device)
        mid = 0.5 * (edges[1:] + edges[:-1])
        mass = _as_probabilities(weighting(sde, self.at(sde, mid)) * (edges[1:] - edges[:-1]), "continuous")
        return edges, mass

    def __call__(
        self, sde: SDE, batch: int, weighting: Weighting, *, generator: torch.Generator | None, device=None
    ) -> TimeDraw:
        span = sde.T - self.t_min
        if span <= 0:
            raise ValueError(f"need t_min < T, got t_min={self.t_min}, T={sde.T}")
        u = torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
        if not self.importance:
            return self.at(sde, self.t_min + span * u)
        edges, mass = self._proposal(sde, weighting, device)
        k = torch.multinomial(mass, batch, True, generator=generator)
        width = edges[k + 1] - edges[k]
        draw = self.at(sde, edges[k] + u * width)
        q = mass[k] / width  # density of the proposal at t
        return TimeDraw(draw.t, draw.alpha, draw.sigma, (1.0 / span) / q)

    def __repr__(self) -> str:
        return f"ContinuousTime(t_min={self.t_min}, importance={self.importance})"


def _as_probabilities(w: Tensor, kind: str) -> Tensor:
    if not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"importance sampling of {kind} time needs finite weights >= 0 with a positive sum")
    return w / w.sum()


class LogNormalTime:
    """ln σ̃ ~ N(P_mean, P_std²) with σ̃ = σ(t)/α(t) (Karras et al. 2022, §5 and Table 1: −1.2, 1.2).

    σ̃ is the noise level of x_t/α, so this is log-SNR λ = −2 ln σ̃ ~ N(−2 P_mean, 4 P_std²); t is
    ``sde.t_from_log_snr(λ)``, clamped to [t_min, T] (the SDE's range of noise levels: draws beyond
    either end — a fraction ~1e-4 with EDM's values on the default VP — land on it). The draw has
    importance weights 1: it defines the training distribution of times, not an estimate under
    uniform t.
    """

    def __init__(self, p_mean: float = -1.2, p_std: float = 1.2, t_min: float = 1e-5):
        for name, v in (("p_mean", p_mean), ("p_std", p_std), ("t_min", t_min)):
            if not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise ValueError(f"lognormal {name} must be a finite number, got {v!r}")
        if p_std <= 0 or t_min < 0:
            raise ValueError(f"lognormal needs p_std > 0 and t_min >= 0, got p_std={p_std}, t_min={t_min}")
        self.p_mean, self.p_std, self.t_min = float(p_mean), float(p_std), float(t_min)

    def at(self, sde: SDE, t: Tensor) -> TimeDraw:
        """The draw at given continuous times (importance weights 1)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        alpha, sigma = sde.marginal(t, check=False)
        return TimeDraw(t, alpha, sigma, torch.ones_like(t))

    def __call__(
        self, sde: SDE, batch: int, weighting: Weighting, *, generator: torch.Generator | None, device=None
    ) -> TimeDraw:
        if self.t_min >= sde.T:
            raise ValueError(f"need t_min < T, got t_min={self.t_min}, T={sde.T}")
        z = torch.randn(batch, generator=generator, device=device, dtype=torch.float64)
        lam = -2 * (self.p_mean + self.p_std * z)
        return self.at(sde, sde.t_from_log_snr(lam).to(device).clamp(self.t_min, sde.T))

    def __repr__(self) -> str:
        return f"LogNormalTime(p_mean={self.p_mean}, p_std={self.p_std}, t_min={self.t_min})"


TIME_SAMPLERS: Registry[type] = Registry("time sampler")
TIME_SAMPLERS.register("discrete")(DiscreteTime)
TIME_SAMPLERS.register("continuous")(ContinuousTime)
TIME_SAMPLERS.register("lognormal")(LogNormalTime)

TimeSampler = DiscreteTime | ContinuousTime | LogNormalTime


def make_time_sampler(time: str | TimeSampler, **options) -> TimeSampler:
    """A time sampler from its name (``discrete`` with N=, ``continuous`` with t_min=; importance=) or as is."""
    if isinstance(time, str):
        return TIME_SAMPLERS.get(time)(**options)
    if isinstance(time, (DiscreteTime, ContinuousTime, LogNormalTime)):
        return time
    raise TypeError(f"time must be 'discrete', 'continuous', 'lognormal' or a time sampler, got {type(time).__name__}")


# --------------------------------------------------------------------------- the loss


def _target_and_scale(prediction: str, x0: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
    """The regression target for ``prediction`` and c(t) with ‖ε − ε̂‖² = c ‖target − pred‖² (scoresde.param)."""
    if prediction == "eps":
        return eps, torch.ones_like(sigma)
    if prediction == "x0":  # ε − ε̂ = (α/σ)(x̂_0 − x_0)
        return x0, (alpha / sigma) ** 2
    if prediction == "v":  # ε = (α v + σ x)/(α² + σ²)  ⇒  ε − ε̂ = α (v − v̂)/(α² + σ²)
        return alpha * eps - sigma * x0, (alpha / (alpha**2 + sigma**2)) ** 2
    return -eps / sigma, sigma**2  # score: ε = −σ s


def denoising_loss(
    model: Callable[[Tensor, Tensor], Tensor],
    sde: SDE,
    x0: Tensor,
    *,
    weighting: str | Weighting = "simple",
    time: str | TimeSampler | TimeDraw = "discrete",
    prediction: str | None = None,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
    reduce: str = "sum",
    return_draw: bool = False,
    cond: dict[str, Any] | None = None,
) -> Tensor | tuple[Tensor, TimeDraw]:
    """Per-sample weighted denoising loss w(t)·‖ε − ε̂_θ(x_t, t)‖² × importance weight, shape (batch,).

    Args:
        model: ``model(x_t, t, **cond) -> prediction`` with t of shape (batch,) in continuous time.
        sde: the forward SDE giving α(t), σ(t) (and the chain, for discrete time).
        x0: clean data of shape (batch, ...).
        weighting: a name from :data:`WEIGHTINGS` (default options) or a callable ``w(sde, draw)``;
            build one with options via :func:`make_weighting`, e.g. ``make_weighting("min-snr", gamma=1)``.
        time: ``"discrete"`` (N = 1000), ``"continuous"`` (ε_t = 1e-5), a sampler from
            :func:`make_time_sampler`, or a fixed :class:`TimeDraw`.
        prediction: for a plain function without a ``prediction`` attribute, what it returns:
            ``eps`` (default), ``x0``, ``v`` or ``score``; contradicting ``model.prediction`` is an error.
        generator: the random source for the times and the noise.
        noise: ε to use instead of drawing it (same shape as ``x0``).
        reduce: ``sum`` (the norm ‖·‖², the ELBO's scale) or ``mean`` over the non-batch dimensions.
        return_draw: also return the :class:`TimeDraw` (for per-time diagnostics).
        cond: conditioning passed to the model, ``model(x_t, t, **cond)``, e.g. ``{"y": labels}``
            for a class-conditional model (labels (batch,) in 0 … K, K the null label).

    With importance sampling the returned values already include the weights p/q: their mean is
    an unbiased estimate of E_{t uniform}[w(t) ℓ(t)].
    """
    prediction = resolve_prediction(model, prediction)
    check_name(reduce, "reduce", ("sum", "mean"))
    if not isinstance(x0, Tensor) or x0.ndim < 2 or not x0.is_floating_point():
        got = tuple(x0.shape) if isinstance(x0, Tensor) else type(x0).__name__
        raise ValueError(f"x0 must be a floating-point tensor of shape (batch, ...), got {got}")
    weight_fn = make_weighting(weighting)
    batch = x0.shape[0]
    if isinstance(time, TimeDraw):
        draw = time
        if draw.t.shape != (batch,):
            raise ValueError(f"the time draw has shape {tuple(draw.t.shape)}, expected ({batch},)")
    else:
        draw = make_time_sampler(time)(sde, batch, weight_fn, generator=generator, device=x0.device)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    elif noise.shape != x0.shape:
        raise ValueError(f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}")

    alpha, sigma = (append_dims(v.to(x0.dtype), x0.ndim) for v in (draw.alpha, draw.sigma))
    x_t = alpha * x0 + sigma * noise  # the marginal q(x_t | x_0) (Ho et al. eq. 4)
    pred = model(x_t, draw.t.to(x0.dtype), **cond) if cond else model(x_t, draw.t.to(x0.dtype))
    target, scale = _target_and_scale(prediction, x0, noise, alpha, sigma)
    dtype = torch.promote_types(pred.dtype, torch.float32)  # bf16 outputs: the loss in float32
    err = (pred.to(dtype) - target.to(dtype)).pow(2).flatten(1)
    err = err.sum(1) if reduce == "sum" else err.mean(1)
    w = (weight_fn(sde, draw) * draw.importance).to(dtype) * scale.flatten().to(dtype)
    loss = w * err
    return (loss, draw) if return_draw else loss
