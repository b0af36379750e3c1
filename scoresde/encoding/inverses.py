"""How :func:`scoresde.encoding.encode` inverts each deterministic solver (:data:`ENCODERS`).

An encoder ``fn(ctx, x, fp, inversion, **solver_options) -> x_T`` walks the sampler's grid
``ctx.times`` *up* from x at t_0, undoing the decoder's steps in reverse order:

* ``ode`` — ``solve_ivp`` on the sampler's right-hand side (:func:`scoresde.samplers.ode.solve_flow`)
  from t_0 up to T.
* ``ddim`` (η = 0) and ``heun`` — the decoder's step x_{i−1} = Φ_i(x_i) = c_i x_i + (terms in ε̂)
  is inverted exactly with ``inversion="fixed-point"``: x_i solves Φ_i(x_i) = x_{i−1}, found by
  :class:`FixedPoint` from the explicit step below (the exact inversion of Pan et al. 2023, AIDI,
  there for DDIM). With ``inversion="explicit"`` the explicit step is all: the same update walked
  with increasing t, ε̂ taken at the lower time — for ``ddim`` the usual "DDIM inversion" (Song,
  Meng & Ermon 2021, §4.3: DDIM is Euler's method for the ODE dx̄ = ε̂ dσ̂ of their eq. 14 in
  x̄ = x/α, σ̂ = σ/α, which runs either way), for ``heun`` Heun's method upwards. That costs one
  step's NFE, but its round trip is only as exact as the solver (order 1 / 2 in the step).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import Tensor

from .._checks import append_dims, check_int
from ..registry import Registry
from ..samplers.common import Context
from ..samplers.ode import solve_flow

__all__ = ["ENCODERS", "INVERSIONS", "Encoder", "FixedPoint"]

INVERSIONS = ("fixed-point", "explicit")


@dataclass(frozen=True)
class Encoder:
    """How :func:`~scoresde.encoding.encode` inverts one solver.

    Attributes:
        name: the solver's name (``scoresde.SOLVERS``).
        fn: ``fn(ctx, x, fp, inversion, **solver_options) -> x_T``, walking ``ctx.times`` up from x at t_0.
        inversions: the ``inversion`` values it takes; the first is the default.
    """

    name: str
    fn: Callable[..., Tensor]
    inversions: tuple[str, ...]


ENCODERS: Registry[Encoder] = Registry("encoder")
"""The solvers :func:`~scoresde.encoding.encode` can invert, keyed by solver name."""


def _encoder(name: str, inversions: tuple[str, ...]) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    def add(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        ENCODERS.register(name)(Encoder(name, fn, inversions))
        return fn

    return add


@_encoder("ode", inversions=("explicit",))
def ode(
    ctx: Context, x: Tensor, fp: FixedPoint, inversion: str, *, method: str = "RK45", rtol: float = 1e-5,
    atol: float = 1e-5,
) -> Tensor:  # fmt: skip
    """solve_ivp from t_0 up to T on the right-hand side the ``ode`` sampler integrates down."""
    times = ctx.times.tolist()
    sol = solve_flow(ctx, x, times[0], times[-1], method=method, rtol=rtol, atol=atol)
    return torch.from_numpy(sol.y[:, -1].copy()).to(device=x.device, dtype=x.dtype).reshape(x.shape)


def _euler_table(ctx: Context) -> tuple[list[float], list[float]]:
    """(c_x, c_eps) of x_{i−1} = c_x x_i + c_eps ε̂(x_i, t_i), the DDIM (η = 0) step, as ``ddim`` builds it.

    In x̄ = x/α and σ̂ = σ/α it is Euler's step x̄_{i−1} = x̄_i + (σ̂_{i−1} − σ̂_i) ε̂ (DDIM eq. 14),
    which is also Heun's predictor (``heun``'s c_eps = A_{i−1}(σ̂_{i−1} − σ̂_i) is the same number).
    """
    A, S = ctx.sde.marginal(ctx.times)
    ratio = A[:-1] / A[1:]
    return ratio.tolist(), (S[:-1] - ratio * S[1:]).tolist()


@_encoder("ddim", inversions=INVERSIONS)
def ddim(ctx: Context, x: Tensor, fp: FixedPoint, inversion: str, *, eta: float = 0.0) -> Tensor:
    """DDIM (η = 0) walked up: x_i from x_{i−1} = c_x x_i + c_eps ε̂(x_i, t_i)."""
    if eta != 0:
        raise ValueError(
            f"ddim with eta={eta!r} is stochastic (it adds noise in every step), so it has no inverse; encode and "
            "decode with eta=0"
        )
    c_x, c_eps = _euler_table(ctx)
    den = ctx.den
    for i in range(1, ctx.steps + 1):
        target = x
        # DDIM inversion (Song et al. 2021, §4.3): the update with ε̂ taken at the lower time t_{i−1}
        x = (target - c_eps[i - 1] * den.eps(target, i - 1)) / c_x[i - 1]
        if inversion == "fixed-point":  # solve x_{i−1} = c_x x + c_eps ε̂(x, t_i) for x

            def step(z: Tensor, i: int = i) -> Tensor:
                return z * c_x[i - 1] + c_eps[i - 1] * den.eps(z, i)

            x = fp.solve(step, target, x, c_x[i - 1], den.t_list[i])
    return x


@_encoder("heun", inversions=INVERSIONS)
def heun(ctx: Context, x: Tensor, fp: FixedPoint, inversion: str) -> Tensor:
    """Heun (Karras et al. 2022, Alg. 1) walked up; fixed-point: the inverse of each decoder step."""
    c_x, c_eps = _euler_table(ctx)
    den = ctx.den
    last_is_data = den.sigmas[0] == 0

    def step(z: Tensor, i: int) -> Tensor:  # the decoder's step t_i → t_{i−1} (``heun`` in samplers/ode.py)
        d = den.eps(z, i)
        z_euler = z * c_x[i - 1] + c_eps[i - 1] * d
        if i == 1 and last_is_data:  # Alg. 1 line 6: no correction when stepping to σ = 0
            return z_euler
        return z * c_x[i - 1] + (0.5 * c_eps[i - 1]) * (d + den.eps(z_euler, i - 1))

    for i in range(1, ctx.steps + 1):
        target = x
        # Heun with increasing t: Euler predictor from t_{i−1}, trapezoidal corrector at t_i
        d = den.eps(target, i - 1)
        x_euler = (target - c_eps[i - 1] * d) / c_x[i - 1]
        x = (target - (0.5 * c_eps[i - 1]) * (d + den.eps(x_euler, i))) / c_x[i - 1]
        if inversion == "fixed-point":
            x = fp.solve(lambda z, i=i: step(z, i), target, x, c_x[i - 1], den.t_list[i])
    return x


class FixedPoint:
    """Solves Φ(x) = target for x, sample by sample, where Φ(x) = c x + r(x) with r(x)/c small.

    The fixed point of G(x) = x − (Φ(x) − target)/c by Anderson acceleration (Anderson 1965;
    Walker & Ni 2011, Alg. AA with memory m = ``MEMORY``): with f_k = G(x_k) − x_k and the
    differences ΔF, ΔX of the last m iterates, γ = argmin ‖f_k − ΔF γ‖ (a tiny ridge keeps the
    m × m normal equations solvable) and x_{k+1} = x_k + f_k − (ΔX + ΔF) γ. Plain iteration
    (m = 0) converges only where r/c is a contraction: on the exact mixture (benchmarks/results/
    encoding.md) it needs ~200 ddim steps where Anderson's converges from 20, in about half the NFE.

    Each sample keeps its evaluated iterate of smallest residual max |Φ(x) − target| and stops at
    the tolerance, after ``PATIENCE`` iterations without improving, or at ``max_iter``; it then
    sits at its best iterate while the others go on. Records the largest final residual and the
    (step, sample) solves left above the tolerance, for :meth:`warn`.
    """

    MEMORY = 3
    PATIENCE = 5

    def __init__(self, tol: float | None, max_iter: int) -> None:
        if tol is not None and not (
            isinstance(tol, numbers.Real) and not isinstance(tol, bool) and math.isfinite(tol) and tol > 0
        ):
            raise ValueError(f"tol must be a positive finite number or None (automatic), got {tol!r}")
        self.tol = tol
        self.max_iter = check_int(max_iter, "max_iter")
        self.residual: float | None = None  # the largest final residual over all solves
        self.iterations = 0
        self.unconverged = 0
        self.worst: tuple[float, float] | None = None  # (residual, t) of the worst unconverged solve

    def solve(self, phi: Callable[[Tensor], Tensor], target: Tensor, x: Tensor, c: float, t: float) -> Tensor:
        """x with phi(x) ≈ target, starting from x; c: phi's linear coefficient; t: the time, for reports."""
        n = target.shape[0]

        def per_sample(v: Tensor) -> Tensor:
            return v.abs().reshape(n, -1).amax(1).to(torch.float64)

        eps = torch.finfo(target.dtype).eps
        if self.tol is None:  # a few hundred ulps of the target's magnitude: above the rounding of phi
            tol = 256 * eps * (1 + per_sample(target))
        else:
            tol = torch.full((n,), float(self.tol), dtype=torch.float64, device=target.device)
        best, best_res = x, torch.full_like(tol, math.inf)
        stall = torch.zeros(n, dtype=torch.long, device=target.device)
        xs: list[Tensor] = []
        fs: list[Tensor] = []
        for _ in range(self.max_iter):
            r = phi(x) - target
            self.iterations += 1
            res = per_sample(r).nan_to_num(nan=math.inf)
            improved = res < best_res
            best = torch.where(append_dims(improved, x.ndim), x, best)
            best_res = torch.where(improved, res, best_res)
            stall = torch.where(improved, 0, stall + 1)
            active = (best_res > tol) & (stall < self.PATIENCE)
            if not bool(active.any()):
                break
            keep = max(0, len(xs) - self.MEMORY)  # the last m iterates (none for m = 0: plain iteration)
            xs, fs = [*xs[keep:], x.reshape(n, -1)], [*fs[keep:], (r / -c).reshape(n, -1)]
            x_next = xs[-1] + fs[-1]  # the plain step G(x)
            if len(fs) > 1:  # Anderson's mixing of the last m steps
                dF = torch.stack([b - a for a, b in pairwise(fs)], -1)  # (n, D, m)
                dX = torch.stack([b - a for a, b in pairwise(xs)], -1)
                gram = dF.transpose(1, 2) @ dF
                ridge = max(1e-12, 100 * eps) * gram.diagonal(dim1=1, dim2=2).sum(-1) + torch.finfo(gram.dtype).tiny
                eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
                gamma = torch.linalg.solve(gram + ridge[:, None, None] * eye, dF.transpose(1, 2) @ fs[-1][..., None])
                x_next = x_next - ((dX + dF) @ gamma)[..., 0]
            go = active & torch.isfinite(x_next).all(1)
            x = torch.where(append_dims(go, x.ndim), x_next.reshape(x.shape), best)
        left = best_res > tol
        self.residual = max(self.residual or 0.0, float(best_res.max()))
        if bool(left.any()):
            self.unconverged += int(left.sum())
            worst = float(best_res.max())
            if self.worst is None or worst > self.worst[0]:
                self.worst = (worst, t)
        return best

    def warn(self) -> None:
        """Warn once if some solve stopped above its tolerance."""
        if self.worst is None:
            return
        res, t = self.worst
        warnings.warn(
            f"encode: the fixed-point inversion stopped above its tolerance for {self.unconverged} (step, sample) "
            f"pair(s), the worst at t={t:.4g} with residual {res:.3g}: the decoder's step is hard to invert there "
            "(too few steps for a steep ε̂, or data on a manifold at the denoising step), so decode(encode(x)) "
            "misses x there; use more steps, the 'ode' solver, denoise=False, or a larger max_iter/tol",
            RuntimeWarning,
            stacklevel=3,
        )
