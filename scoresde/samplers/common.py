"""Machinery shared by every solver: the registry, the checked denoiser and the run context.

A solver is a stateless function ``solver(ctx, x, **options) -> x`` that walks the float64
time grid ``ctx.times`` (t_0 = t_min < … < t_N = T) from x at t_N down to t_0. Everything a
solver may need is in the :class:`Context`:

* ``ctx.den`` — the model behind one interface (:class:`Denoiser`): ε̂ or x̂_0 at grid index k
  (or at any t for adaptive solvers), whatever the model predicts, with the shape and finite
  checks and the optional x̂_0 clipping done once, here;
* ``ctx.sde`` and ``ctx.times`` — the schedule, from which each solver builds its coefficient
  table in float64 once, before its loop (no per-step recomputation of the schedule);
* ``ctx.noise(x)`` — standard normal noise drawn from the caller's generator (never the
  global RNG);
* ``x = ctx.report(k, x)`` — after every step that leaves x at grid index k: the observation hook
  (imputation, :mod:`scoresde.samplers.steering`; without it x is returned as it is), then the
  progress callback and trajectory recording. Solvers continue from the state it returns.

The options a solver accepts are the keyword-only parameters of its function; ``sample``
refuses any other option with a sentence naming it and listing the accepted ones.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..param import eps_and_x0, resolve_prediction
from ..registry import Registry
from ..sde import SDE

__all__ = ["SOLVERS", "Context", "Denoiser", "Solver", "register"]

ModelFn = Callable[[Tensor, Tensor], Tensor]
SolverFn = Callable[..., Tensor]


@dataclass(frozen=True)
class Solver:
    """A registered solver and what it declares about itself.

    Attributes:
        name: the registry / CLI name.
        fn: ``fn(ctx, x, **options) -> x``.
        options: accepted options and their defaults (the keyword-only parameters of ``fn``).
        order: order of accuracy in the step size (strong order for SDE solvers, as usually quoted).
        stochastic: whether it injects noise (draws from the generator after x_T).
        t_min: the default end time ε of the grid.
        needs_positive_t_min: whether the model is evaluated at t_0 (so t_min = 0 would divide by σ = 0).
        summary: one line for ``--help`` and reports.
        grid: the time grid ``grid="auto"`` picks for it (chosen by benchmarks/samplers.py --defaults).
    """

    name: str
    fn: SolverFn
    options: dict[str, Any]
    order: float
    stochastic: bool
    t_min: float
    needs_positive_t_min: bool
    summary: str
    grid: str = "uniform"

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Reject options this solver does not take; return the full option dict with defaults."""
        for key in options:
            if key not in self.options:
                accepted = ", ".join(self.options) or "none"
                raise ValueError(f"solver {self.name!r} does not take option {key!r}; it accepts: {accepted}")
        return {**self.options, **options}


SOLVERS: Registry[Solver] = Registry("solver")
"""Every sampler, keyed by its CLI name (``scoresde sample --solver NAME``)."""


def register(
    name: str,
    *,
    order: float,
    stochastic: bool,
    t_min: float = 1e-3,
    needs_positive_t_min: bool = False,
    grid: str = "uniform",
) -> Callable[[SolverFn], SolverFn]:
    """Decorator registering a solver function under ``name`` (options read from its signature)."""

    def add(fn: SolverFn) -> SolverFn:
        params = inspect.signature(fn).parameters.values()
        options = {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
        summary = (fn.__doc__ or name).strip().splitlines()[0]
        SOLVERS.register(name)(
            Solver(name, fn, options, order, stochastic, float(t_min), needs_positive_t_min, summary, grid)
        )
        return fn

    return add


class Denoiser:
    """The model seen through one interface: ε̂ and x̂_0 at the grid times, checked.

    Converts the model's output (its ``prediction`` ∈ eps, score, x0, v) with
    :func:`scoresde.param.eps_and_x0`, the one conversion of the package (docs/conventions.md §1),
    written per kind so that no conversion divides by a coefficient that may vanish. The model is
    called as ``model(x, t, **cond)`` with the ``cond`` given here (none by default). Coefficients
    α_k, σ_k at the grid times are computed once in float64 and kept as Python floats (exact
    scalars for every tensor dtype). Counts NFE.

    Every model output is checked: its shape must equal x's and it must be finite; errors name
    the time. On CUDA the finite check is recorded without a host sync and raised by
    :meth:`raise_if_nonfinite` at the end of the solve.
    """

    def __init__(
        self,
        model: ModelFn,
        sde: SDE,
        prediction: str | None,
        times: Tensor,
        *,
        dtype: torch.dtype,
        device: torch.device,
        clip_x0: float | None = None,
        cond: dict[str, Any] | None = None,
    ) -> None:
        self.model, self.sde = model, sde
        self.prediction = resolve_prediction(model, prediction)
        self.cond: dict[str, Any] = dict(cond or {})
        self.times = times
        alpha, sigma = sde.marginal(times)  # float64
        self.alphas: list[float] = alpha.tolist()
        self.sigmas: list[float] = sigma.tolist()
        self.t_list: list[float] = times.tolist()
        self._t = times.to(device=device, dtype=dtype)  # model time labels, cast once
        self.dtype, self.device = dtype, device
        self.clip_x0 = clip_x0
        self.nfe = 0
        self._deferred = device.type != "cpu"
        self._finite: list[tuple[Tensor, float]] = []

    # ---- grid-indexed evaluations (the hot path) -------------------------------------------
    def eps(self, x: Tensor, k: int) -> Tensor:
        """ε̂(x, t_k)."""
        return self._eval(x, self._t[k].expand(x.shape[0]), self.t_list[k], self.alphas[k], self.sigmas[k])[0]

    def x0(self, x: Tensor, k: int) -> Tensor:
        """x̂_0(x, t_k)."""
        return self._eval(x, self._t[k].expand(x.shape[0]), self.t_list[k], self.alphas[k], self.sigmas[k])[1]

    # ---- evaluations at any time (adaptive solvers) ---------------------------------------
    def at(self, x: Tensor, t: float) -> tuple[Tensor, Tensor, float, float]:
        """(ε̂, x̂_0, α(t), σ(t)) at an arbitrary time t."""
        alpha, sigma = (v.item() for v in self.sde.marginal(torch.tensor(t, dtype=torch.float64)))
        t_vec = torch.full((x.shape[0],), t, dtype=self.dtype, device=self.device)
        eps, x0 = self._eval(x, t_vec, t, alpha, sigma)
        return eps, x0, alpha, sigma

    def _eval(self, x: Tensor, t_vec: Tensor, t: float, alpha: float, sigma: float) -> tuple[Tensor, Tensor]:
        pred = self.model(x, t_vec, **self.cond) if self.cond else self.model(x, t_vec)
        self.nfe += getattr(self.model, "forwards", 1)  # an autoguided model runs two networks
        if not isinstance(pred, Tensor) or pred.shape != x.shape:
            got = tuple(pred.shape) if isinstance(pred, Tensor) else type(pred).__name__
            raise ValueError(
                f"the model returned shape {got} at t={t:.6g}, but its prediction must have the shape of x, "
                f"{tuple(x.shape)}"
            )
        self._check_finite(pred, t)
        eps, x0 = eps_and_x0(self.prediction, pred, x, alpha, sigma)
        if self.clip_x0 is not None:
            x0 = x0.clamp(-self.clip_x0, self.clip_x0)
            if sigma > 0:
                eps = (x - alpha * x0) / sigma  # keep ε consistent with the clipped x̂_0
        return eps, x0

    def _check_finite(self, pred: Tensor, t: float) -> None:
        if self._deferred:
            self._finite.append((torch.isfinite(pred).all(), t))
        # on the CPU a sum is ~15x cheaper than isfinite().all(): NaN/inf propagate into it, and a
        # non-finite sum (possibly an overflow of finite values) is confirmed element-wise
        elif not math.isfinite(pred.sum().item()) and not bool(torch.isfinite(pred).all()):
            raise ValueError(f"the model output is not finite (NaN or inf) at t={t:.6g}")

    def raise_if_nonfinite(self) -> None:
        """Raise for the first non-finite model output recorded without a sync (CUDA)."""
        if not self._finite:
            return
        flags, times = zip(*self._finite, strict=True)
        self._finite.clear()
        ok = torch.stack(flags).cpu()
        if not bool(ok.all()):
            first = int((~ok).nonzero()[0])
            raise ValueError(f"the model output is not finite (NaN or inf) at t={times[first]:.6g}")


@dataclass
class Context:
    """What one solve needs; built by :func:`scoresde.samplers.sample`, one per batch chunk."""

    den: Denoiser
    sde: SDE
    times: Tensor  # float64 (N+1,), increasing
    generator: torch.Generator | None
    callback: Callable[[dict[str, Any]], None] | None = None
    record: bool = False
    trajectory: list[Tensor] = field(default_factory=list)
    chunk: tuple[int, int] = (0, 1)
    steer: Callable[[Context, int, Tensor], Tensor] | None = None  # the imputation hook (steering.Steering)

    @property
    def steps(self) -> int:
        return self.times.numel() - 1

    def noise(self, x: Tensor) -> Tensor:
        """z ~ N(0, I) shaped like x, from the caller's generator."""
        return torch.randn(x.shape, generator=self.generator, dtype=x.dtype, device=x.device)

    def report(self, k: int, x: Tensor, t: float | None = None) -> Tensor:
        """Record that the state x now sits at grid index k, and return the state to continue from:
        x itself, or with a ``steer`` hook its steered version (imputation). At a time t off the grid
        (inside an adaptive solver's step) x is only reported, never changed."""
        if self.steer is not None and t is None:
            x = self.steer(self, k, x)
        if self.record and t is None:
            self.trajectory.append(x)
        if self.callback is not None:
            t = self.den.t_list[k] if t is None else t
            T, t_min = self.den.t_list[-1], self.den.t_list[0]
            progress = (T - t) / (T - t_min) if T > t_min else 1.0
            self.callback(
                {
                    "t": t,
                    "x": x,
                    "nfe": self.den.nfe,
                    "progress": (self.chunk[0] + progress) / self.chunk[1],
                    "chunk": self.chunk[0],
                    "chunks": self.chunk[1],
                }
            )
        return x


def check_probability(value: float, name: str, *, upper: float = math.inf) -> float:
    """A finite float in [0, upper]."""
    value = float(value)
    if not math.isfinite(value) or value < 0 or value > upper:
        bound = "" if math.isinf(upper) else f" and <= {upper}"
        raise ValueError(f"{name} must be a finite number >= 0{bound}, got {value}")
    return value
