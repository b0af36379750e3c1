"""Steering a solve with observations: imputation (inpainting) and SDEdit, for every solver.

**Imputation by replacement** (Song et al. 2021, App. I.2; Lugmayr et al. 2022, "RePaint"). The
values x_obs where ``mask`` is 1 are known. Whenever the solver leaves the state x at a grid time
t_k (it calls ``ctx.report(k, x)``, whose hook is a :class:`Steering`), the observed part is
replaced by a draw from the forward marginal of the known data,

    x ← m ⊙ (α(t_k) x_obs + σ(t_k) z) + (1 − m) ⊙ x,   z ~ N(0, I) from the sampler's generator,

a fresh z at every step; the start x_T is replaced the same way, and the returned samples carry
x_obs exactly (x ← m ⊙ x_obs + (1 − m) ⊙ x after the last step and the optional denoising step).
The unobserved part then follows the solver's dynamics under the model's score of the joint
state. This is an approximation of sampling p(x_unobs | x_obs): the score of p_t(x) at a noised
x_obs is not the conditional score (Chung et al. 2022, §3; Ho et al. 2022, "Video Diffusion
Models", §3.1). Where the observation decides between modes of the hidden part only at low noise,
the hidden part has already chosen by the prior, whatever the solver and NFE; where it decides
early, every solver converges, the deterministic ones a little behind the stochastic ones
(tests/test_steering.py and benchmarks/results/steering.md measure both).

**RePaint resampling** (Lugmayr et al. 2022, Alg. 1), ``resample=K``: after each step to t_k
(k ≥ 1; not after the final step, as in the paper), K − 1 times: jump back to t_{k+1} with the
forward transition q(x_{k+1} | x_k) = N(a x_k, v I) (``sde.transition``), come down again with
one ancestral step — the DDPM posterior q(x_k | x_{k+1}, x̂_0) (Ho et al. 2020, eq. 6–7), one
model evaluation — and replace again. The solver's own step is taken once; the resampling steps
are ancestral whatever the solver (for ``ancestral`` this is RePaint exactly).

**SDEdit** (Meng et al. 2022, Alg. 1), ``init=x0, strength=s``: the solve starts at
t_start = s·T from the forward marginal x_{t_start} = α(t_start) x0 + σ(t_start) z, on an N-step
grid built on [t_min, t_start] (the paper's Δt = t0/N; ``steps`` keeps its meaning, the number of
steps, and strength 1 gives the ordinary grid).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from .._checks import check_int
from ..sde import SDE
from .common import Context

__all__ = ["Steering", "check_steering"]


@dataclass(frozen=True)
class Steering:
    """The checked observations of one :func:`scoresde.sample` call (each (1 or n, *sample_shape)).

    Attributes:
        known: x_obs (0 where unobserved), or None.
        mask: bool, True where x_obs is observed, or None.
        init: the SDEdit start x0, or None.
        strength: t_start / T for SDEdit, or None.
        resample: RePaint's number of passes per step (1: none).
        rows: the number of samples (n); tensors with that many rows are sliced per chunk.
        jumps: per grid index k, RePaint's coefficients (see :meth:`on_grid`); set by it.
    """

    known: Tensor | None
    mask: Tensor | None
    init: Tensor | None
    strength: float | None
    resample: int
    rows: int
    jumps: tuple[tuple[float, float, float, float, float], ...] = ()

    @property
    def imputes(self) -> bool:
        return self.mask is not None

    def chunk(self, start: int, stop: int) -> Steering:
        """The observations of samples start … stop − 1 (per-sample tensors sliced, shared ones kept)."""

        def rows(v: Tensor | None) -> Tensor | None:
            return v[start:stop] if v is not None and v.shape[0] == self.rows and self.rows > 1 else v

        return replace(self, known=rows(self.known), mask=rows(self.mask), init=rows(self.init))

    def on_grid(self, sde: SDE, times: Tensor) -> Steering:
        """With the coefficients of RePaint's jumps on this grid (float64, once per call): per index k,
        (a, √v) of q(x_{k+1} | x_k) = N(a x_k, v I) and (c_x, c_x̂0, std) of q(x_k | x_{k+1}, x̂_0)."""
        if self.resample == 1:
            return self
        chain = sde.discretize(times.numel() - 1, grid=times)  # step i (t_{i−1} → t_i) at position i − 1
        A, S = sde.marginal(times)
        a, v = chain.alphas.sqrt(), chain.betas
        # Ho et al. eq. 7: μ̃ = (A_k v / S²_{k+1}) x̂_0 + (a S²_k / S²_{k+1}) x_{k+1}, variance v S²_k / S²_{k+1}
        c_x = a * S[:-1] ** 2 / S[1:] ** 2
        c_x0 = A[:-1] * v / S[1:] ** 2
        std = chain.posterior_variances.sqrt()
        columns = (a, v.sqrt(), c_x, c_x0, std)
        return replace(self, jumps=tuple(zip(*(c.tolist() for c in columns), strict=True)))

    # ---- the three moments of a solve ------------------------------------------------------
    def initial(self, ctx: Context, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        """x at the top of the grid: the prior draw, or SDEdit's forward marginal of init; then replaced."""
        N = ctx.steps
        if self.init is None:
            x = ctx.sde.prior_sample(shape, ctx.generator, dtype=dtype, device=device)
        else:  # Meng et al. 2022, Alg. 1 line 2: x(t0) ~ N(α(t0) x0, σ(t0)² I)
            z = torch.randn(shape, generator=ctx.generator, dtype=dtype, device=device)
            x = z.mul_(ctx.den.sigmas[N]).add_(self.init, alpha=ctx.den.alphas[N])
        return self.replace(ctx, N, x) if self.imputes else x

    def replace(self, ctx: Context, k: int, x: Tensor) -> Tensor:
        """x with its observed part drawn from q(x_{t_k} | x_obs) (Song et al. 2021, App. I.2)."""
        alpha, sigma = ctx.den.alphas[k], ctx.den.sigmas[k]
        observed = self.known * alpha
        if sigma > 0:
            observed = observed + ctx.noise(x) * sigma
        return torch.where(self.mask, observed, x)

    def __call__(self, ctx: Context, k: int, x: Tensor) -> Tensor:
        """The state the solver continues from after its step to t_k (the hook of ``ctx.report``)."""
        x = self.replace(ctx, k, x)
        if self.resample > 1 and k >= 1:
            c_up, std_up, c_x, c_x0, std_down = self.jumps[k]
            for _ in range(self.resample - 1):
                # RePaint Alg. 1 line 9: x_{k+1} ~ q(x_{k+1} | x_k) = N(a x_k, v I)
                x = x.mul(c_up).add_(ctx.noise(x), alpha=std_up)
                # back down with the DDPM posterior q(x_k | x_{k+1}, x̂_0) (Ho et al. 2020, eq. 7)
                x0 = ctx.den.x0(x, k + 1)
                x = x.mul(c_x).add_(x0, alpha=c_x0).add_(ctx.noise(x), alpha=std_down)
                x = self.replace(ctx, k, x)
        return x

    def final(self, x: Tensor) -> Tensor:
        """The returned samples carry the observations exactly."""
        return torch.where(self.mask, self.known, x) if self.imputes else x


def check_steering(
    shape: tuple[int, ...],
    *,
    known: Tensor | None,
    mask: Tensor | None,
    init: Tensor | None,
    strength: float | None,
    resample: int | None,
    dtype: torch.dtype,
    device: torch.device,
) -> Steering | None:
    """Validate ``sample``'s observation arguments before any work (errors name the argument)."""
    if known is None and mask is None and init is None and strength is None and resample is None:
        return None
    if (known is None) != (mask is None):
        given, missing = ("known", "mask") if mask is None else ("mask", "known")
        raise ValueError(
            f"{given}= needs {missing}= as well: imputation takes the observed values (known) and where they "
            "are observed (mask, 1 = observed)"
        )
    resample = 1 if resample is None else check_int(resample, "resample")
    if resample > 1 and mask is None:
        raise ValueError(f"resample={resample} resamples an imputation; give known= and mask= as well")
    if init is None and strength is not None:
        raise ValueError(f"strength={strength!r} sets where SDEdit starts from init; give init= as well")
    if strength is not None:
        strength = float(strength)
        if not (math.isfinite(strength) and 0 < strength <= 1):
            raise ValueError(f"strength must lie in (0, 1] (the start time t_start = strength·T), got {strength}")
    n = shape[0]
    if mask is not None:
        m = _rows(mask, "mask", shape, None, device)
        if m.dtype != torch.bool:
            if not ((m == 0) | (m == 1)).all():
                raise ValueError("mask must hold 1 where the value is observed and 0 where it is sampled (or bools)")
            m = m != 0
        if bool(m.all()):
            raise ValueError("a mask that observes every value leaves nothing to sample; set 0 where to sample")
        if not bool(m.any()):
            raise ValueError("a mask that observes nothing imposes nothing; set 1 where known holds observations")
        known = torch.where(m, _rows(known, "known", shape, dtype, device), 0)  # unobserved entries ignored (NaN ok)
        if not bool(torch.isfinite(known).all()):
            raise ValueError("known must be finite where the mask observes it")
        mask = m
    if init is not None:
        init = _rows(init, "init", shape, dtype, device)
        if not bool(torch.isfinite(init).all()):
            raise ValueError("init must be finite")
    return Steering(known, mask, init, strength, resample, n)


def _rows(value, name: str, shape: tuple[int, ...], dtype: torch.dtype | None, device: torch.device) -> Tensor:
    """``value`` as a tensor of rank len(shape), (1 or n, …), that broadcasts to ``shape``: one sample's shape
    (the same for every sample), the batch's, or anything that broadcasts to them (aligned on the right)."""
    v = value if isinstance(value, Tensor) else torch.as_tensor(value)
    v = v.detach().to(device=device, dtype=dtype if dtype is not None and v.dtype != torch.bool else v.dtype)
    received = tuple(v.shape)
    if v.ndim < len(shape):
        v = v.reshape((1,) * (len(shape) - v.ndim) + received)
    if v.ndim != len(shape) or not all(a in (1, b) for a, b in zip(v.shape, shape, strict=True)):
        raise ValueError(
            f"{name} has shape {received}, but the samples have shape {tuple(shape)}: give {name} of one "
            f"sample's shape {tuple(shape[1:])} (the same for all) or of shape {tuple(shape)} (one per sample)"
        )
    return v
