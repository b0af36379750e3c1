"""Solvers of the probability-flow ODE dx/dt = f(t) x − ½ g(t)² s(x, t) (Song et al. 2021, eq. 13).

* ``ode`` — scipy's adaptive ``solve_ivp`` in t, as in Song et al. (2021, App. D.1: RK45,
  rtol = atol = 1e-5); NFE is whatever the solver used. With an imputation hook (``ctx.steer``)
  it integrates each grid interval on its own, so that the observations are imposed at every t_k.
* ``heun`` — fixed-step second order (Karras et al. 2022, Alg. 1). Written in the variables
  y = x/α and σ̂ = σ/α (Karras et al. eq. 4 with s(t) = α(t), σ(t) = σ̂), in which the ODE of any
  linear-Gaussian SDE reads dy/dσ̂ = ε̂(x, t): an Euler step there is exactly DDIM (η = 0), and
  Heun's trapezoidal correction makes it second order.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._checks import check_name
from .common import Context, register


@register("ode", order=5, stochastic=False, needs_positive_t_min=True)
def ode(ctx: Context, x: Tensor, *, method: str = "RK45", rtol: float = 1e-5, atol: float = 1e-5) -> Tensor:
    """Probability-flow ODE with scipy.integrate.solve_ivp (adaptive; Song et al. 2021, App. D.1)."""
    shape, dtype, device = x.shape, x.dtype, x.device
    times = ctx.times.tolist()
    if ctx.steer is not None:  # imputation: integrate grid interval by interval, steering at each t_k
        for k in range(ctx.steps - 1, -1, -1):
            sol = solve_flow(ctx, x, times[k + 1], times[k], method=method, rtol=rtol, atol=atol)
            x = torch.from_numpy(sol.y[:, -1].copy()).to(device=device, dtype=dtype).reshape(shape)
            x = ctx.report(k, x)
        return x
    t_eval = times[::-1] if ctx.record else None
    sol = solve_flow(ctx, x, times[-1], times[0], method=method, rtol=rtol, atol=atol, t_eval=t_eval)
    if ctx.record:  # the states at the grid times, from t_N down to t_0
        ctx.trajectory[:] = [torch.from_numpy(y).to(device=device, dtype=dtype).reshape(shape) for y in sol.y.T]
    return torch.from_numpy(sol.y[:, -1].copy()).to(device=device, dtype=dtype).reshape(shape)


def solve_flow(
    ctx: Context,
    x: Tensor,
    t_start: float,
    t_end: float,
    *,
    method: str = "RK45",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_eval: list[float] | None = None,
) -> Any:
    """``solve_ivp`` of the probability-flow ODE from x at ``t_start`` to ``t_end`` (either direction).

    The ``ode`` sampler integrates down from T; :func:`scoresde.encoding.encode` integrates up from
    t_min with the same right-hand side. Returns scipy's solution (states flattened, float64).
    """
    from scipy.integrate import solve_ivp

    methods = ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA")
    check_name(method, "ODE method", methods)
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not (isinstance(value, int | float) and np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    den = ctx.den
    flow = ctx.sde.reverse(None, probability_flow=True)  # the score comes from ε̂ below
    shape, dtype, device = x.shape, x.dtype, x.device

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        xt = torch.from_numpy(y).to(device=device, dtype=dtype).reshape(shape)
        eps, _, _, sigma = den.at(xt, float(t))
        t64 = torch.tensor(t, dtype=torch.float64)
        f, half_g2 = (v.item() for v in flow.drift_coefs(t64, check=False))
        # dx/dt = f x − ½ g² s = f x + ½ g² ε̂/σ
        dx = xt * f + eps * (half_g2 / sigma)
        ctx.report(0, xt, t=float(t))
        return dx.to(torch.float64).flatten().cpu().numpy()

    y0 = x.to(torch.float64).flatten().cpu().numpy()
    sol = solve_ivp(rhs, (t_start, t_end), y0, method=method, rtol=rtol, atol=atol, t_eval=t_eval)
    if not sol.success:
        raise RuntimeError(f"solve_ivp ({method}) failed: {sol.message}")
    return sol


@register("heun", order=2, stochastic=False)
def heun(ctx: Context, x: Tensor) -> Tensor:
    """Heun's 2nd-order probability-flow solver (Karras et al. 2022, Alg. 1) in y = x/α, σ̂ = σ/α."""
    A, S = ctx.sde.marginal(ctx.times)
    s_hat = S / A
    # Euler in (y, σ̂): y_{i−1} = y_i + (σ̂_{i−1} − σ̂_i) ε̂, i.e. x_{i−1} = (A_{i−1}/A_i) x_i + A_{i−1}(σ̂_{i−1} − σ̂_i) ε̂
    c_x = (A[:-1] / A[1:]).tolist()
    c_eps = (A[:-1] * (s_hat[:-1] - s_hat[1:])).tolist()
    last_is_data = bool(S[0] == 0)
    for i in range(ctx.steps, 0, -1):
        d = ctx.den.eps(x, i)
        x_euler = x.mul(c_x[i - 1]).add_(d, alpha=c_eps[i - 1])  # Alg. 1 line 5
        if i == 1 and last_is_data:  # Alg. 1 line 6: no correction when stepping to σ = 0
            x = x_euler
        else:
            d_prime = ctx.den.eps(x_euler, i - 1)  # lines 7–8: trapezoidal rule
            x = x.mul(c_x[i - 1]).add_(d.add(d_prime), alpha=0.5 * c_eps[i - 1])
        x = ctx.report(i - 1, x)
    return x
