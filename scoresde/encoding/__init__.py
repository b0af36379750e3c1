"""Encode and decode: the probability-flow ODE from data to x_T and back (Song et al. 2021, eq. 13).

The probability-flow ODE dx/dt = f(t) x − ½ g(t)² ∇log p_t(x) (docs/conventions.md §1) is a
deterministic, invertible map between the data at t_min and the latent x_T at T:

* :func:`decode` integrates it down from a given x_T with a deterministic sampler. It *is*
  :func:`scoresde.sample` started from that x_T: the same grid, the same solver function and the
  same final noise-free step x ← x̂_0(x, t_min), so ``decode(model, sde, sde.prior_sample(shape, g),
  solver, steps)`` equals ``sample(model, sde, shape, solver, steps, generator=g)`` bitwise.
* :func:`encode` is decode's inverse: it walks the same grid up from x_0 to x_T, undoing decode's
  steps (:mod:`scoresde.encoding.inverses`, :data:`ENCODERS`): ``ode`` by ``solve_ivp`` on the
  same right-hand side upwards (exact up to ``rtol``/``atol``); ``ddim`` (η = 0) and ``heun`` by
  solving each decoder step for its start (``inversion="fixed-point"``, exact up to ``tol``) or by
  the same update walked with increasing t (``inversion="explicit"``: the classic "DDIM
  inversion", Song, Meng & Ermon 2021, §4.3; only as exact as the solver's order).
* Decode's final denoising step (``denoise``; the default whenever t_min > 0, as in ``sample``)
  is inverted too: x_{t_min} solves x̂_0(x, t_min) = x_0, i.e. x = α x_0 + σ ε̂(x, t_min) (Tweedie's
  formula read backwards). That is well posed for data with a density (for a Gaussian of std s,
  x ↦ σ ε̂ has Lipschitz constant σ²/(α² s² + σ²) < 1) but not on a data manifold, where x̂_0 forgets
  the normal directions; encode then warns, and ``denoise=False`` (in both calls) avoids it.

Stochastic solvers (``ancestral``, the SDE solvers, ``ddim`` with η > 0) have no inverse and are
refused; the multistep solvers ``dpm-solver++`` and ``unipc`` decode but do not encode.
:func:`round_trip` reports |decode(encode(x_0)) − x_0|; :func:`interpolate` decodes the spherical
interpolation of two latents (Song, Meng & Ermon 2021, §5). benchmarks/encoding.py measures the
round trip per solver and steps (benchmarks/results/encoding.md).

>>> import scoresde as sd, torch
>>> data, sde = sd.analytic.gmm(), sd.VPSDE()
>>> model = data.model(sde, "eps")
>>> x0 = data.sample(100, torch.Generator().manual_seed(0), dtype=torch.float64)
>>> xT = sd.encode(model, sde, x0, "ode", rtol=1e-7, atol=1e-7)
>>> x = sd.decode(model, sde, xT, "ode", rtol=1e-7, atol=1e-7)
>>> bool((x - x0).abs().max() < 1e-4)
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .._checks import check_int, check_name
from ..guidance import guided
from ..param import resolve_prediction
from ..samplers import SOLVERS, SampleInfo, solver_times
from ..samplers.common import Context, Denoiser
from ..sde import SDE
from .inverses import ENCODERS, INVERSIONS, Encoder, FixedPoint

__all__ = ["ENCODERS", "EncodeInfo", "Encoder", "RoundTrip", "decode", "encode", "interpolate", "round_trip"]


@dataclass
class EncodeInfo:
    """What a call to :func:`encode` did.

    Attributes:
        solver: the solver whose decoder was inverted.
        inversion: ``fixed-point`` or ``explicit`` (``ode``: ``explicit``, solve_ivp run upwards).
        nfe: model evaluations, the fixed-point iterations included.
        times: the float64 grid t_0 < … < t_N walked up (the one :func:`decode` walks down).
        denoised: whether the final denoising step x̂_0(·, t_0) was inverted (as ``denoise`` in decode).
        residual: the largest max-abs residual |Φ(x) − target| over the fixed-point solves (None if none ran).
        iterations: fixed-point iterations, all solves together.
        unconverged: (step, sample) solves left above the tolerance (encode warns then).
        options: the solver options as used, and ``y``/``guidance`` for a conditional model.
    """

    solver: str
    inversion: str
    nfe: int
    times: Tensor
    denoised: bool
    residual: float | None = None
    iterations: int = 0
    unconverged: int = 0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class RoundTrip:
    """decode(encode(x_0)) against x_0 (:func:`round_trip`).

    Attributes:
        latent: x_T = encode(x_0).
        reconstruction: decode(x_T).
        error: (batch,) float64, the largest |reconstruction − x_0| over each sample's coordinates.
        mean_error: (batch,) float64, the mean |reconstruction − x_0| over each sample's coordinates.
        encode_info, decode_info: the two calls' reports.
    """

    latent: Tensor
    reconstruction: Tensor
    error: Tensor
    mean_error: Tensor
    encode_info: EncodeInfo
    decode_info: SampleInfo

    @property
    def max_abs(self) -> float:
        """The largest coordinate error over the batch."""
        return float(self.error.max())

    @property
    def mean_abs(self) -> float:
        """The mean coordinate error over the batch."""
        return float(self.mean_error.mean())


# ---- the public calls -----------------------------------------------------------------------
def decode(
    model: Callable[..., Tensor],
    sde: SDE,
    xT: Tensor,
    solver: str = "ode",
    steps: int = 100,
    prediction: str | None = None,
    *,
    grid: str | Tensor = "auto",
    t_min: float | None = None,
    denoise: bool | None = None,
    return_info: bool = False,
    y: int | Tensor | None = None,
    guidance: float | None = None,
    **options: Any,
) -> Tensor | tuple[Tensor, SampleInfo]:
    """Integrate the probability-flow ODE down from the latents ``xT`` with a deterministic ``solver``.

    The same solve as :func:`scoresde.sample` (same arguments and result; only the defaults of
    ``solver`` and ``steps`` differ) with x_T given instead of drawn: ``decode(model, sde,
    sde.prior_sample(shape, g, dtype=d), solver, steps)`` equals ``sample(model, sde, shape, solver,
    steps, generator=g, dtype=d)`` bitwise. The computation runs in ``xT``'s dtype and on its device.

    Args:
        model, sde, prediction, grid, t_min, y, guidance, **options: as in :func:`scoresde.sample`.
        xT: latents of shape (batch, ...) (finite, floating point), e.g. from :func:`encode`.
        solver: a deterministic solver (``SOLVERS[name].stochastic`` is False; ``ddim`` with η = 0).
        steps: grid steps N (``ode``: adaptive, the grid only fixes t_min and T).
        denoise: the final noise-free step x ← x̂_0(x, t_min); default: when t_min > 0.
        return_info: also return a :class:`scoresde.samplers.SampleInfo`.

    Raises:
        ValueError: a stochastic or unknown solver, bad xT, steps < 1, an unknown option, a model
            output of the wrong shape or not finite.
        TypeError: xT not a floating-point tensor; y for an unconditional model.
    """
    xT = _check_x(xT, "xT")
    spec, opts, ctx, denoise, conditioning = _prepare(
        model, sde, xT, solver, steps, prediction, grid, t_min, denoise, y, guidance, options, "decode"
    )
    with torch.inference_mode():
        x = spec.fn(ctx, xT, **opts)
        if denoise:
            x = ctx.den.x0(x, 0)
        ctx.den.raise_if_nonfinite()
    if not return_info:
        return x
    return x, SampleInfo(spec.name, ctx.den.nfe, ctx.times, None, denoise, {**opts, **conditioning})


def encode(
    model: Callable[..., Tensor],
    sde: SDE,
    x0: Tensor,
    solver: str = "ode",
    steps: int = 100,
    prediction: str | None = None,
    *,
    grid: str | Tensor = "auto",
    t_min: float | None = None,
    denoise: bool | None = None,
    inversion: str | None = None,
    tol: float | None = None,
    max_iter: int = 50,
    return_info: bool = False,
    y: int | Tensor | None = None,
    guidance: float | None = None,
    **options: Any,
) -> Tensor | tuple[Tensor, EncodeInfo]:
    """Map data ``x0`` to latents x_T: the inverse of :func:`decode` with the same arguments.

    Walks the grid :func:`decode` walks (same ``solver``, ``steps``, ``grid``, ``t_min``,
    ``denoise``, options), upwards; see the module docstring for how each solver is inverted.
    For the ``ode`` solver the adaptive steps are shared by the batch, so a sample's latent depends
    on its batch within the tolerances.

    Args:
        model, sde, prediction, grid, t_min, y, guidance, **options: as in :func:`decode` (and
            :func:`scoresde.sample`); ``ode`` takes ``method``, ``rtol``, ``atol``; ``ddim`` only η = 0.
        x0: data of shape (batch, ...) in the model's scaling, finite, floating point (the
            computation runs in its dtype and on its device).
        solver: one of :data:`ENCODERS` (``ode``, ``ddim``, ``heun``).
        steps: grid steps N.
        denoise: invert decode's final step x ← x̂_0(x, t_min) (default: when t_min > 0, as decode).
        inversion: ``fixed-point`` (``ddim``/``heun`` default: each decoder step solved for its
            start, :class:`~scoresde.encoding.inverses.FixedPoint`) or ``explicit`` (the update walked
            with increasing t: the classic DDIM inversion; the only one for ``ode``).
        tol: the fixed-point tolerance on max |Φ(x) − target| per sample (default 256 ε_dtype ·
            (1 + max |target|)); also used for the inverse of the denoising step.
        max_iter: fixed-point iterations per step at most (then encode warns and keeps the best x).
        return_info: also return an :class:`EncodeInfo`.

    Returns:
        x_T shaped like ``x0`` (and the :class:`EncodeInfo` if ``return_info``).

    Raises:
        ValueError: a solver without an encoder (stochastic ones: no inverse), bad x0, steps < 1,
            an unknown option or inversion, tol ≤ 0, max_iter < 1.
        TypeError: x0 not a floating-point tensor; y for an unconditional model.
    """
    x0 = _check_x(x0, "x0")
    if solver not in SOLVERS:
        ENCODERS.get(solver)  # raises, listing the encoders
    if solver not in ENCODERS and not SOLVERS[solver].stochastic:
        raise ValueError(
            f"solver {solver!r} decodes but has no encoder (a multistep solver's step cannot be inverted one at "
            f"a time); encode with one of: {', '.join(ENCODERS)}"
        )
    spec, opts, ctx, denoise, conditioning = _prepare(
        model, sde, x0, solver, steps, prediction, grid, t_min, denoise, y, guidance, options, "encode"
    )
    enc = ENCODERS[spec.name]
    inversion = enc.inversions[0] if inversion is None else inversion
    if inversion not in enc.inversions:
        check_name(inversion, "inversion", INVERSIONS)
        raise ValueError(
            f"solver {solver!r} takes inversion {' or '.join(map(repr, enc.inversions))}, not {inversion!r}"
        )
    fp = FixedPoint(tol, max_iter)
    with torch.inference_mode():
        x = x0
        if denoise:  # invert x ← x̂_0(x, t_0): x = α x0 + σ ε̂(x, t_0) (Tweedie backwards)
            alpha = ctx.den.alphas[0]
            x = fp.solve(lambda z: ctx.den.x0(z, 0), x0, x0 * alpha, 1 / alpha, ctx.den.t_list[0])
        x = enc.fn(ctx, x, fp, inversion, **opts)
        ctx.den.raise_if_nonfinite()
    fp.warn()
    if not return_info:
        return x
    info = EncodeInfo(
        spec.name, inversion, ctx.den.nfe, ctx.times, denoise, fp.residual, fp.iterations, fp.unconverged,
        {**opts, **conditioning},
    )  # fmt: skip
    return x, info


def round_trip(
    model: Callable[..., Tensor],
    sde: SDE,
    x0: Tensor,
    solver: str = "ode",
    steps: int = 100,
    prediction: str | None = None,
    *,
    inversion: str | None = None,
    tol: float | None = None,
    max_iter: int = 50,
    **kwargs: Any,
) -> RoundTrip:
    """Encode ``x0``, decode the latents, and report the error |decode(encode(x0)) − x0| per sample.

    ``kwargs`` (grid, t_min, denoise, y, guidance, solver options) go to both calls; ``inversion``,
    ``tol``, ``max_iter`` to :func:`encode`.
    """
    xT, enc = encode(
        model, sde, x0, solver, steps, prediction, inversion=inversion, tol=tol, max_iter=max_iter,
        return_info=True, **kwargs,
    )  # fmt: skip
    x, dec = decode(model, sde, xT, solver, steps, prediction, return_info=True, **kwargs)
    diff = (x.to(torch.float64) - x0.to(torch.float64)).abs().reshape(x0.shape[0], -1)
    return RoundTrip(xT, x, diff.amax(1), diff.mean(1), enc, dec)


def interpolate(
    model: Callable[..., Tensor],
    sde: SDE,
    x_a: Tensor,
    x_b: Tensor,
    n: int = 8,
    solver: str = "ode",
    steps: int = 100,
    prediction: str | None = None,
    *,
    y: int | Tensor | None = None,
    inversion: str | None = None,
    tol: float | None = None,
    max_iter: int = 50,
    **kwargs: Any,
) -> Tensor:
    """Decode ``n`` points of the spherical interpolation between the latents of ``x_a`` and ``x_b``.

    x_a, x_b: (batch, ...) pairs, row r of each an endpoint. With z_a, z_b = encode(x_a), encode(x_b)
    per row and θ the angle between them, the latents z(λ) = sin((1 − λ)θ)/sin θ z_a + sin(λθ)/sin θ
    z_b (slerp, Shoemake 1985; used on diffusion latents by Song, Meng & Ermon 2021, §5) at
    λ = 0, 1/(n − 1), …, 1 keep the norm a Gaussian latent has, which a straight line would shrink.
    θ = 0 (equal latents) falls back to the straight line. Returns (n, batch, ...): the decoded path,
    whose ends are the round trips of x_a and x_b. ``y`` (an int, or one label per row) and the other
    keyword arguments go to :func:`encode` and :func:`decode`.
    """
    x_a, x_b = _check_x(x_a, "x_a"), _check_x(x_b, "x_b")
    if x_a.shape != x_b.shape:
        raise ValueError(f"x_a and x_b must have the same shape, got {tuple(x_a.shape)} and {tuple(x_b.shape)}")
    if x_a.dtype != x_b.dtype or x_a.device != x_b.device:
        raise ValueError(
            f"x_a and x_b must share dtype and device, got {x_a.dtype}/{x_a.device} and {x_b.dtype}/{x_b.device}"
        )
    n = check_int(n, "n", minimum=2, detail=" (the path's points, ends included)")
    b = x_a.shape[0]
    y_enc, y_dec = y, y
    if isinstance(y, Tensor):
        if y.ndim != 1 or y.shape[0] != b:
            raise ValueError(f"y must be one label per row of x_a, shape ({b},), got {tuple(y.shape)}")
        y_enc, y_dec = y.repeat(2), y.repeat(n)
    z = encode(
        model, sde, torch.cat([x_a, x_b]), solver, steps, prediction, y=y_enc, inversion=inversion, tol=tol,
        max_iter=max_iter, **kwargs,
    )  # fmt: skip
    z_a, z_b = z[:b].to(torch.float64).flatten(1), z[b:].to(torch.float64).flatten(1)
    cos = (z_a * z_b).sum(1) / (z_a.norm(dim=1) * z_b.norm(dim=1)).clamp_min(1e-300)
    theta = torch.arccos(cos.clamp(-1.0, 1.0))[None, :, None]  # (1, b, 1)
    lam = torch.linspace(0.0, 1.0, n, dtype=torch.float64, device=z.device)[:, None, None]  # (n, 1, 1)
    sin = torch.sin(theta)
    straight = sin < 1e-8
    w_a = torch.where(straight, 1 - lam, torch.sin((1 - lam) * theta) / torch.where(straight, 1.0, sin))
    w_b = torch.where(straight, lam, torch.sin(lam * theta) / torch.where(straight, 1.0, sin))
    path = (w_a * z_a + w_b * z_b).to(z.dtype).reshape(n * b, *x_a.shape[1:])
    x = decode(model, sde, path, solver, steps, prediction, y=y_dec, **kwargs)
    return x.reshape(n, *x_a.shape)


# ---- checks shared by the public calls -------------------------------------------------------
def _check_x(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (batch, ...), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim < 1 or x.shape[0] == 0 or x.numel() == 0:
        raise ValueError(
            f"{name} must have shape (batch, ...) with batch >= 1 and no empty dimension, got {tuple(x.shape)}"
        )
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _prepare(model, sde, x, solver, steps, prediction, grid, t_min, denoise, y, guidance, options, call):
    """The solver, its options, the run context and the denoise flag, as :func:`scoresde.sample` sets them."""
    spec = SOLVERS.get(solver)
    opts = spec.check_options(options)
    if spec.stochastic or (spec.name == "ddim" and opts["eta"] != 0):
        what = "is stochastic" if spec.stochastic else f"with eta={opts['eta']!r} is stochastic"
        if call == "encode":
            valid = ", ".join(f"{n} (eta=0)" if n == "ddim" else n for n in ENCODERS)
        else:
            valid = ", ".join(f"{n} (eta=0)" if n == "ddim" else n for n, s in SOLVERS.items() if not s.stochastic)
        raise ValueError(
            f"solver {spec.name!r} {what} (it adds noise in every step), so it has no deterministic inverse; "
            f"{call} with one of: {valid}"
        )
    if y is None and guidance is not None:
        raise ValueError(f"guidance={guidance!r} needs class labels y (the class to guide towards); pass y= as well")
    if isinstance(grid, str) and grid == "auto":
        grid = spec.grid
    times = solver_times(spec, sde, steps, grid, t_min)
    prediction = resolve_prediction(model, prediction)
    conditioning: dict[str, Any] = {}
    if y is not None:
        w = 1.0 if guidance is None else guidance
        model = guided(model, y, w)
        if model.rows is not None and model.rows != x.shape[0]:
            raise ValueError(f"y holds {model.rows} labels but x has {x.shape[0]} rows; give one label per row")
        conditioning = {"y": model.y if isinstance(model.y, int) else model.y.tolist(), "guidance": float(w)}
    denoise = bool(times[0] > 0) if denoise is None else bool(denoise) and bool(times[0] > 0)
    den = Denoiser(model, sde, prediction, times, dtype=x.dtype, device=x.device)
    ctx = Context(den, sde, times, None)
    return spec, opts, ctx, denoise, conditioning
