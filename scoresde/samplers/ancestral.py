"""Discrete-chain samplers: DDPM ancestral sampling and DDIM.

Both walk the chain the SDE defines on the time grid (``sde.discretize(grid=ctx.times)``,
docs/conventions.md §1): step i goes from t_i to t_{i−1} and uses the chain's fields

    a_i = √α_i (mean factor of q(x_i | x_{i−1})),  b_i = β_i (its variance),
    S_i = σ(t_i),  A_i = α(t_i) (marginal),  β̃_i = S²_{i−1} b_i / S²_i (posterior variance).

For the VP SDE these are DDPM's α_i, β_i, √(1 − ᾱ_i), √ᾱ_i; for sub-VP and VE the same
formulas are the exact Gaussian posterior q(x_{i−1} | x_i, x_0) (Ho et al. 2020, eq. 6–7
derived for any x_i = a_i x_{i−1} + √b_i z), so no solver branches on the SDE's type.
A coarser grid is "respacing" (Nichol & Dhariwal 2021, §4): the β_i follow from ᾱ at the kept
times. Following Algorithm 2 of Ho et al., no noise is added in the final step (z = 0 for i = 1).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_name
from .common import Context, check_probability, register


@register("ancestral", order=0.5, stochastic=True, t_min=0.0)
def ancestral(ctx: Context, x: Tensor, *, variance: str = "small") -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Alg. 2) on the grid's chain; variance 'large' β_i or 'small' β̃_i."""
    check_name(variance, "variance", ("large", "small"))
    chain = ctx.sde.discretize(ctx.steps, grid=ctx.times)
    a = chain.alphas.sqrt()
    var = chain.betas if variance == "large" else chain.posterior_variances
    # Ho et al. eq. 11 / Alg. 2 line 4: x_{i−1} = (1/√α_i)(x_i − β_i/√(1−ᾱ_i) ε̂) + σ_i z, here in the
    # chain's fields (b_i / S_i replaces β_i/√(1−ᾱ_i)); one float64 table, read as Python floats.
    c_x = (1 / a).tolist()
    c_eps = (-chain.betas / (a * chain.sigmas[1:])).tolist()
    std = var.sqrt().tolist()
    for i in range(ctx.steps, 0, -1):
        eps = ctx.den.eps(x, i)
        x_next = x.mul(c_x[i - 1]).add_(eps, alpha=c_eps[i - 1])
        if i > 1:  # Alg. 2 line 3: z = 0 in the last step
            x_next.add_(ctx.noise(x), alpha=std[i - 1])
        x = x_next
        x = ctx.report(i - 1, x)
    return x


@register("ddim", order=1, stochastic=False, t_min=0.0, grid="quadratic")
def ddim(ctx: Context, x: Tensor, *, eta: float = 0.0) -> Tensor:
    """DDIM (Song, Meng & Ermon 2021, eq. 12): eta=0 deterministic (1st order), eta=1 is ancestral 'small'."""
    eta = check_probability(eta, "eta")
    chain = ctx.sde.discretize(ctx.steps, grid=ctx.times)
    A, S = ctx.sde.marginal(ctx.times)
    # eq. 16: σ_i(η) = η √β̃_i; eq. 12: x_{i−1} = A_{i−1} x̂_0 + √(S²_{i−1} − σ_i²) ε̂ + σ_i z with
    # x̂_0 = (x_i − S_i ε̂)/A_i, folded into one table of (x, ε̂) coefficients in float64.
    c = eta * chain.posterior_variances.sqrt()
    ratio = A[:-1] / A[1:]
    c_x = ratio.tolist()
    c_eps = (torch.sqrt((S[:-1] ** 2 - c**2).clamp_min(0)) - ratio * S[1:]).tolist()
    std = c.tolist()
    for i in range(ctx.steps, 0, -1):
        eps = ctx.den.eps(x, i)
        x_next = x.mul(c_x[i - 1]).add_(eps, alpha=c_eps[i - 1])
        if i > 1 and std[i - 1] > 0:  # as in ancestral: no noise in the last step
            x_next.add_(ctx.noise(x), alpha=std[i - 1])
        x = x_next
        x = ctx.report(i - 1, x)
    return x
