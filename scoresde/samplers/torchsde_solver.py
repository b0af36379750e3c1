"""The reverse-time SDE solved by torchsde (Li et al. 2020; Kidger et al. 2021).

torchsde integrates forward in time, so we integrate y(s) = x(T − s) for s ∈ [0, T − t_min]:

    dy = [−f(t) y − g(t)² ε̂(y, t)/σ(t)] ds + g(t) dW_s,   t = T − s

(the reverse SDE of Anderson 1982 with s = −ε̂/σ). Its noise is additive (g depends on t only),
so the Itô and Stratonovich forms coincide and every torchsde method for diagonal noise
applies. The Brownian motion is a ``BrownianInterval`` whose entropy is drawn from the caller's
generator, so a seeded generator reproduces the samples. With an imputation hook (``ctx.steer``)
each grid interval is one ``sdeint`` call on the same Brownian path, steered at every t_k.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_name
from .common import Context, register

_ITO = ("euler", "milstein", "srk")
_STRATONOVICH = ("midpoint", "heun", "euler_heun", "reversible_heun", "log_ode")
METHODS = _ITO + _STRATONOVICH


class _ReverseInS:
    """The reverse SDE in s = T − t, flattened to torchsde's (batch, state) layout."""

    noise_type = "diagonal"

    def __init__(self, ctx: Context, shape: torch.Size, sde_type: str) -> None:
        self.ctx, self.shape, self.sde_type = ctx, shape, sde_type
        self.T = ctx.den.t_list[-1]
        self.reverse = ctx.sde.reverse(None)  # the score comes from ε̂ in f

    def _s_to_t(self, s: Tensor) -> Tensor:
        return torch.as_tensor(self.T - float(s), dtype=torch.float64).clamp(0, self.T)

    memo = False  # reuse the drift at an unchanged (s, y): sdeint's checks evaluate it before the first step
    _last: tuple[float, Tensor, Tensor] | None = None

    def f(self, s: Tensor, y: Tensor) -> Tensor:
        if self.memo and self._last is not None and self._last[0] == float(s) and torch.equal(self._last[1], y):
            return self._last[2]
        drift = self._f(s, y)
        if self.memo:
            self._last = (float(s), y.clone(), drift)
        return drift

    def _f(self, s: Tensor, y: Tensor) -> Tensor:
        t = self._s_to_t(s)
        f, g2 = (v.item() for v in self.reverse.drift_coefs(t, check=False))
        t = t.item()
        x = y.reshape(self.shape)
        eps, _, _, sigma = self.ctx.den.at(x, t)
        self.ctx.report(0, x, t=t)
        return (x * -f - eps * (g2 / sigma)).flatten(1)

    def g(self, s: Tensor, y: Tensor) -> Tensor:
        g2 = self.reverse.diffusion_squared(self._s_to_t(s), check=False).item()
        return torch.full_like(y, g2**0.5)


@register("torchsde", order=0.5, stochastic=True, needs_positive_t_min=True)
def torchsde_solver(ctx: Context, x: Tensor, *, method: str = "euler") -> Tensor:
    """The reverse-time SDE solved by torchsde.sdeint in s = T − t (method: euler, milstein, srk, heun, ...)."""
    import torchsde

    check_name(method, "torchsde method", METHODS)
    times = ctx.times
    steps = ctx.steps
    uniform = torch.linspace(times[0].item(), times[-1].item(), steps + 1, dtype=torch.float64)
    if not torch.allclose(times, uniform, rtol=0, atol=1e-12):
        raise ValueError("the torchsde solver takes fixed uniform steps; use grid='uniform'")
    T, t_min = times[-1].item(), times[0].item()
    dt = (T - t_min) / steps
    sde = _ReverseInS(ctx, x.shape, "ito" if method in _ITO else "stratonovich")
    y0 = x.flatten(1)
    # explicit entropy from the caller's generator: no global RNG, reproducible from the seed
    entropy = int(torch.randint(0, 2**62, (1,), generator=ctx.generator, device=x.device).item())
    levy = {"srk": "space-time", "log_ode": "foster"}.get(method, "none")
    # output times in s, in the state's dtype; the Brownian interval spans exactly [s_0, s_end]
    steered = ctx.steer is not None  # imputation: one sdeint per grid interval, steering at each t_k
    s_grid = (T - times.flip(0)) if ctx.record or steered else torch.tensor([0.0, T - t_min], dtype=torch.float64)
    s_grid = s_grid.to(x.dtype)
    s_grid[0] = 0.0
    bm = torchsde.BrownianInterval(
        t0=0.0,
        t1=s_grid[-1].item(),
        size=y0.shape,
        dtype=x.dtype,
        device=x.device,
        entropy=entropy,
        dt=dt,
        levy_area_approximation=levy,
    )
    if steered:
        sde.memo = True  # sdeint's shape checks evaluate f at the start: reuse that evaluation
        s_grid = s_grid.to(x.device)
        for j in range(steps):  # s_j → s_{j+1} is t_{N−j} → t_{N−j−1}; one step of at most 2dt ends there
            y = torchsde.sdeint(sde, x.flatten(1), s_grid[j : j + 2], bm=bm, method=method, dt=2 * dt)[-1]
            x = ctx.report(steps - 1 - j, y.reshape(x.shape))
        return x
    ys = torchsde.sdeint(sde, y0, s_grid.to(x.device), bm=bm, method=method, dt=dt)
    if ctx.record:
        ctx.trajectory[:] = [y.reshape(x.shape) for y in ys]
    return ys[-1].reshape(x.shape)
