"""DPM-Solver++ multistep (Lu et al. 2022, "DPM-Solver++", Alg. 2; 3M from the authors' code).

The probability-flow ODE of any linear-Gaussian SDE, written with the data prediction x̂_0 and
the half log-SNR λ = log(α/σ), has the exact solution (Lu et al. 2022b, eq. 9)

    x_t = (σ_t/σ_s) x_s + σ_t ∫_{λ_s}^{λ_t} e^{λ} x̂_0(x_λ, λ) dλ.

The k-th order multistep method approximates x̂_0 by the polynomial through the last k model
outputs in λ, so every step is a fixed linear combination

    x_{i−1} = c_x x_i + w_0 x̂_0(t_i) + w_1 x̂_0(t_{i+1}) + w_2 x̂_0(t_{i+2})

whose weights depend only on the grid; they are tabulated once in float64 here. Order 1 is
DDIM (η = 0). Steps to t = 0 (λ = +∞) fall back to first order, which returns x̂_0 there.

``sde-dpm-solver++`` solves the reverse-time SDE the same way (Lu et al. 2022b, "DPM-Solver++",
§4 / App. B, the SDE variant; k-diffusion's ``dpmpp_2m_sde``): with x̂_0 frozen over a step, the
variation-of-constants solution of the reverse SDE in λ is exactly Gaussian,

    x_t = (σ_t/σ_s) e^{−h} x_s + α_t (1 − e^{−2h}) x̂_0 + σ_t √(1 − e^{−2h}) z,   h = λ_t − λ_s,

which is DDPM's posterior q(x_t | x_s, x̂_0) — order 1 *is* ancestral sampling with the small
variance (DDIM η = 1) on the same grid. 2M replaces x̂_0 by the midpoint extrapolation
x̂_0(t_i) + (x̂_0(t_i) − x̂_0(t_{i+1}))/(2r), r = h_{i+1}/h_i (the authors' default ``midpoint``).
"""

from __future__ import annotations

import math

from torch import Tensor

from .common import Context, register


def multistep_table(lam: list[float], alpha: list[float], sigma: list[float], order: int, lower_order_final: bool):
    """Per-step (c_x, w_0, w_1, w_2) for stepping from index i to i−1, i = N..1 (returned in that order)."""
    N = len(lam) - 1
    table: list[tuple[float, float, float, float]] = []
    for n, i in enumerate(range(N, 0, -1)):  # n = number of completed steps = previous outputs available
        k = min(order, n + 1)
        if lower_order_final:
            # the last step first order, the one before at most second. Lu et al. (2022b, App. B) do this for
            # N < 15 only; we always do: on grids whose last step is a large jump in λ (uniform in t, where
            # h_N ≈ ½ log(t_1/t_min) whatever N) the extrapolation from r = h_{i+1}/h_i ≪ 1 overshoots.
            k = min(k, i)
        h = lam[i - 1] - lam[i]
        alpha_t = alpha[i - 1]
        if math.isinf(h):  # target t = 0: x_t = x̂_0
            table.append((0.0, alpha_t, 0.0, 0.0))
            continue
        c_x = sigma[i - 1] / sigma[i]
        phi_1 = math.expm1(-h)
        if k == 1:  # DPM-Solver++(1) = DDIM: x_t = (σ_t/σ_s) x_s − α_t (e^{−h} − 1) x̂_0
            table.append((c_x, -alpha_t * phi_1, 0.0, 0.0))
        elif k == 2:  # Alg. 2 (2M): D = (1 + 1/(2r)) x̂_0(t_i) − 1/(2r) x̂_0(t_{i+1}), r = h_{i+1}/h_i
            r0 = (lam[i] - lam[i + 1]) / h
            table.append((c_x, -alpha_t * phi_1 * (1 + 0.5 / r0), alpha_t * phi_1 * 0.5 / r0, 0.0))
        else:  # 3M (DPM-Solver code, multistep_dpm_solver_third_update), expanded in the three outputs
            r0 = (lam[i] - lam[i + 1]) / h
            r1 = (lam[i + 1] - lam[i + 2]) / h
            phi_2 = phi_1 / h + 1
            phi_3 = phi_2 / h - 0.5
            u, v, p, q = 1 / r0, 1 / r1, r0 / (r0 + r1), 1 / (r0 + r1)
            # D1 = (1+p)u m0 − ((1+p)u + p v) m1 + p v m2;  D2 = q (u m0 − (u+v) m1 + v m2)
            # x_t = c_x x − α φ1 m0 + α φ2 D1 − α φ3 D2
            w0 = alpha_t * (-phi_1 + phi_2 * (1 + p) * u - phi_3 * q * u)
            w1 = alpha_t * (-phi_2 * ((1 + p) * u + p * v) + phi_3 * q * (u + v))
            w2 = alpha_t * (phi_2 * p * v - phi_3 * q * v)
            table.append((c_x, w0, w1, w2))
    return table


def sde_table(lam: list[float], alpha: list[float], sigma: list[float], order: int, lower_order_final: bool):
    """Per-step ((c_x, w_0, w_1), c_z) of SDE-DPM-Solver++ for stepping from index i to i−1, i = N..1:
    the weights of the x̂_0 history, as :func:`multistep_table`'s, and the noise's std."""
    N = len(lam) - 1
    table: list[tuple[float, float, float]] = []
    noise_std: list[float] = []
    for n, i in enumerate(range(N, 0, -1)):
        k = min(order, n + 1, i) if lower_order_final else min(order, n + 1)
        h = lam[i - 1] - lam[i]
        alpha_t = alpha[i - 1]
        if math.isinf(h):  # target t = 0: the posterior collapses onto x̂_0, no noise
            table.append((0.0, alpha_t, 0.0))
            noise_std.append(0.0)
            continue
        c_x = sigma[i - 1] / sigma[i] * math.exp(-h)
        phi = -math.expm1(-2 * h)  # 1 − e^{−2h}
        noise_std.append(sigma[i - 1] * math.sqrt(phi))
        if k == 1:
            table.append((c_x, alpha_t * phi, 0.0))
        else:  # midpoint 2M: D = x̂_0(t_i) + (x̂_0(t_i) − x̂_0(t_{i+1}))/(2r)
            r0 = (lam[i] - lam[i + 1]) / h
            table.append((c_x, alpha_t * phi * (1 + 0.5 / r0), -alpha_t * phi * 0.5 / r0))
    return table, noise_std


def _check_order(order, allowed: tuple[int, ...]) -> int:
    if order not in allowed or isinstance(order, bool):
        raise ValueError(f"order must be {' or '.join(map(str, allowed))}, got {order!r}")
    return int(order)


@register("dpm-solver++", order=2, stochastic=False, grid="quadratic")
def dpm_solver_pp(ctx: Context, x: Tensor, *, order: int = 2, lower_order_final: bool = True) -> Tensor:
    """DPM-Solver++ multistep in log-SNR (Lu et al. 2022, Alg. 2): order 2 (2M) or 3 (3M)."""
    order = _check_order(order, (1, 2, 3))
    lam = (0.5 * ctx.sde.log_snr(ctx.times)).tolist()  # λ = log(α/σ), half the log-SNR
    table = multistep_table(lam, ctx.den.alphas, ctx.den.sigmas, order, bool(lower_order_final))
    return _walk(ctx, x, table)


@register("sde-dpm-solver++", order=1, stochastic=True, grid="quadratic")
def sde_dpm_solver_pp(ctx: Context, x: Tensor, *, order: int = 2, lower_order_final: bool = True) -> Tensor:
    """SDE-DPM-Solver++ in log-SNR (Lu et al. 2022b): order 1 (= ancestral, small variance) or 2M (midpoint)."""
    order = _check_order(order, (1, 2))
    lam = (0.5 * ctx.sde.log_snr(ctx.times)).tolist()
    table, noise_std = sde_table(lam, ctx.den.alphas, ctx.den.sigmas, order, bool(lower_order_final))
    return _walk(ctx, x, table, noise_std)


def _walk(ctx: Context, x: Tensor, table: list[tuple[float, ...]], noise_std: list[float] | None = None) -> Tensor:
    """x_{i−1} = c_x x_i + Σ_j w_j x̂_0(t_{i+j}) (+ c_z z): the loop both tables drive, one x̂_0 per step."""
    depth = len(table[0]) - 1  # x̂_0 at t_i, t_{i+1}, …
    history: list[Tensor] = []
    for n, i in enumerate(range(ctx.steps, 0, -1)):
        history.insert(0, ctx.den.x0(x, i))
        del history[depth:]
        c_x, *w = table[n]
        x_next = x.mul(c_x)
        for weight, m in zip(w, history, strict=False):
            if weight != 0.0:
                x_next.add_(m, alpha=weight)
        if noise_std is not None and noise_std[n] > 0.0:
            x_next.add_(ctx.noise(x), alpha=noise_std[n])
        x = x_next
        x = ctx.report(i - 1, x)
    return x
