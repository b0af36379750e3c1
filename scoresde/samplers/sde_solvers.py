"""Solvers of the reverse-time SDE dx = [f(t) x − g(t)² s(x, t)] dt + g(t) dW̄ (Anderson 1982).

With s = −ε̂/σ (docs/conventions.md §1) every step is a fixed linear combination of x, ε̂ and fresh noise
whose coefficients depend only on the grid: each solver builds them in float64 before its loop.
Noise is added in every step (these discretize an SDE); the final noise-free denoising step is
``sample(..., denoise=True)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import check_int
from .common import Context, register


@register("euler-maruyama", order=0.5, stochastic=True, grid="quadratic")
def euler_maruyama(ctx: Context, x: Tensor) -> Tensor:
    """Euler–Maruyama on the reverse-time SDE (Anderson 1982; Song et al. 2021, eq. 6)."""
    t = ctx.times
    reverse = ctx.sde.reverse(None)  # the score comes from ε̂ below
    f, g2 = reverse.drift_coefs(t)  # (f, c·g²) with c = 1
    _, S = ctx.sde.marginal(t)
    h = t[:-1] - t[1:]  # step from t_i to t_{i−1}: h_i < 0, evaluated at t_i
    # x ← x + [f x + g² ε̂/σ] h + g √(−h) z   (−g² s = g² ε̂/σ)
    c_x = (1 + f[1:] * h).tolist()
    c_eps = (g2[1:] * h / S[1:]).tolist()
    std = torch.sqrt(reverse.diffusion_squared(t)[1:] * -h).tolist()
    for i in range(ctx.steps, 0, -1):
        eps = ctx.den.eps(x, i)
        x = x.mul(c_x[i - 1]).add_(eps, alpha=c_eps[i - 1]).add_(ctx.noise(x), alpha=std[i - 1])
        x = ctx.report(i - 1, x)
    return x


def _reverse_diffusion_table(ctx: Context) -> tuple[list[float], list[float], list[float]]:
    # Song et al. 2021, eq. 46–47 (App. E): discretize the forward SDE as the chain
    # x_i = x_{i−1} + f_i(x_{i−1}) + G_i z with f_i = (a_i − 1)x, G_i² = b_i (exact on our grid),
    # reverse it: x_{i−1} = x_i − f_i(x_i) + G_i² s + G_i z = (2 − a_i) x_i − (b_i/S_i) ε̂ + √b_i z.
    chain = ctx.sde.discretize(ctx.steps, grid=ctx.times)
    a = chain.alphas.sqrt()
    return (2 - a).tolist(), (-chain.betas / chain.sigmas[1:]).tolist(), chain.betas.sqrt().tolist()


@register("reverse-diffusion", order=0.5, stochastic=True, grid="quadratic")
def reverse_diffusion(ctx: Context, x: Tensor) -> Tensor:
    """Reverse-diffusion predictor (Song et al. 2021, App. E, eq. 47)."""
    c_x, c_eps, std = _reverse_diffusion_table(ctx)
    for i in range(ctx.steps, 0, -1):
        eps = ctx.den.eps(x, i)
        x = x.mul(c_x[i - 1]).add_(eps, alpha=c_eps[i - 1]).add_(ctx.noise(x), alpha=std[i - 1])
        x = ctx.report(i - 1, x)
    return x


@register("pc", order=0.5, stochastic=True, grid="quadratic")
def predictor_corrector(ctx: Context, x: Tensor, *, snr: float = 0.16, corrector_steps: int = 1) -> Tensor:
    """Predictor–corrector (Song et al. 2021, Alg. 5): Langevin corrector, then reverse-diffusion predictor."""
    snr = float(snr)
    if not math.isfinite(snr) or snr <= 0:
        raise ValueError(f"snr must be a positive finite number, got {snr}")
    corrector_steps = check_int(corrector_steps, "corrector_steps", minimum=0)
    c_x, c_eps, std = _reverse_diffusion_table(ctx)
    chain_alphas = ctx.sde.discretize(ctx.steps, grid=ctx.times).alphas.tolist()
    sigmas = ctx.den.sigmas
    for i in range(ctx.steps, 0, -1):
        for _ in range(int(corrector_steps)):
            # Alg. 5 lines 4–7 (as in score_sde_pytorch: norms averaged over the batch):
            # ε_step = 2 α_i (r ‖z‖ / ‖s‖)², x ← x + ε_step s + √(2 ε_step) z
            score = ctx.den.eps(x, i) * (-1 / sigmas[i])
            z = ctx.noise(x)
            grad_norm = score.flatten(1).norm(dim=1).mean()
            noise_norm = z.flatten(1).norm(dim=1).mean()
            step = 2 * chain_alphas[i - 1] * (snr * noise_norm / grad_norm) ** 2
            x = x + step * score + torch.sqrt(2 * step) * z
        eps = ctx.den.eps(x, i)
        x = x.mul(c_x[i - 1]).add_(eps, alpha=c_eps[i - 1]).add_(ctx.noise(x), alpha=std[i - 1])
        x = ctx.report(i - 1, x)
    return x
