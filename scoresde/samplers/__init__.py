"""Sampling: one entry point, :func:`sample`, for discrete ancestral steps and every SDE/ODE solver.

Solvers live one family per module and register themselves in :data:`SOLVERS` under their
CLI names:

==================  ==========================================================  =====  ==========
name                method                                                      order  stochastic
==================  ==========================================================  =====  ==========
ancestral           DDPM Alg. 2 on the chain of the grid (Ho et al. 2020)        —      yes
euler-maruyama      reverse-time SDE, Euler–Maruyama (Anderson 1982)             ½      yes
reverse-diffusion   reverse-diffusion predictor (Song et al. 2021, eq. 47)       ½      yes
pc                  predictor–corrector, Langevin corrector (Song et al. Alg. 5)  ½      yes
ode                 probability-flow ODE, scipy ``solve_ivp`` (adaptive)        5      no
heun                probability-flow ODE, Heun (Karras et al. 2022, Alg. 1)      2      no
ddim                DDIM, η ≥ 0 (Song, Meng & Ermon 2021)                        1      η > 0
dpm-solver++        DPM-Solver++ 2M / 3M in log-SNR (Lu et al. 2022)             2 (*)  no
unipc               UniPC (bh2) predictor–corrector in log-SNR (Zhao et al. 2023) 3 (†)  no
torchsde            reverse-time SDE with ``torchsde.sdeint`` in s = T − t       ½–1½   yes
==================  ==========================================================  =====  ==========

(*) 3M is third order per step, but its first-order start keeps the global order at 2 (measured).
(†) UniP-p with the UniC corrector is order p + 1 (Zhao et al. 2023); measured 3.0 for the default p = 2.
The order of ``ancestral`` and the SDE solvers is the strong order; ``ddim`` with η > 0 is stochastic.
``grid="auto"`` (the default) takes each solver's registered grid, chosen by measurement
(benchmarks/results/samplers_defaults.md): ``quadratic`` for ddim, dpm-solver++, unipc and the SDE
solvers; ``uniform`` for ancestral (so that 1000 steps are exactly DDPM), heun, ode and torchsde.

Every solver can be steered by observations (:mod:`scoresde.samplers.steering`): imputation /
inpainting by replacement (``known=``, ``mask=``; Song et al. 2021, App. I.2) with optional RePaint
resampling (``resample=``; Lugmayr et al. 2022), applied through ``ctx.report`` after each step (``ode``
and ``torchsde`` then integrate grid interval by interval), and SDEdit (``init=``, ``strength=``; Meng
et al. 2022) on an N-step grid ending at t_start = strength·T. Without these arguments every solver
runs exactly as before, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .._checks import check_int
from ..grids import time_grid
from ..guidance import for_rows, guided
from ..param import resolve_prediction
from ..reporting import progress_bar
from ..sde import SDE
from . import ancestral, dpm_solver, ode, sde_solvers, torchsde_solver, unipc  # noqa: F401  (register solvers)
from .common import SOLVERS, Context, Denoiser, Solver
from .steering import Steering, check_steering

__all__ = ["SOLVERS", "SampleInfo", "Solver", "sample", "solver_times"]

_LOG_SNR_GRIDS = ("log-snr", "karras")


@dataclass
class SampleInfo:
    """What a call to :func:`sample` did.

    Attributes:
        solver: the solver's name.
        nfe: number of model evaluations of one sample's solve, including the denoising step (solved
            in chunks: the mean over the chunks, rounded; the same for every chunk of a fixed grid).
        times: the float64 time grid t_0 < … < t_N that was walked (from t_N down).
        trajectory: when asked (``trajectory=True``), the states at t_N, …, t_0 stacked as
            (N+1, batch, ...) — for ``ode``/``torchsde`` the states at the grid times.
        denoised: whether a final noise-free denoising step x̂_0(x, t_0) was applied.
        options: the solver's options as used, and for a conditional solve ``y`` (the class, or the
            list of per-sample labels) and ``guidance`` (the scale w); with observations ``resample``
            (imputation) and ``strength`` (SDEdit: t_start / T).
    """

    solver: str
    nfe: int
    times: Tensor
    trajectory: Tensor | None = None
    denoised: bool = False
    options: dict[str, Any] = field(default_factory=dict)


def sample(
    model: Callable[[Tensor, Tensor], Tensor],
    sde: SDE,
    shape: tuple[int, ...] | torch.Size,
    solver: str = "ancestral",
    steps: int = 1000,
    prediction: str | None = None,
    generator: torch.Generator | None = None,
    *,
    grid: str | Tensor = "auto",
    t_min: float | None = None,
    denoise: bool | None = None,
    clip_x0: float | None = None,
    batch_size: int | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = False,
    return_info: bool = False,
    trajectory: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    y: int | Tensor | None = None,
    guidance: float | None = None,
    known: Tensor | None = None,
    mask: Tensor | None = None,
    resample: int | None = None,
    init: Tensor | None = None,
    strength: float | None = None,
    **options: Any,
) -> Tensor | tuple[Tensor, SampleInfo]:
    """Draw samples by integrating ``sde``'s reverse process from its prior with ``solver``.

    Args:
        model: ``model(x, t)`` with x of shape (batch, ...) and t of shape (batch,) in continuous
            time; returns a tensor shaped like x holding its ``model.prediction`` (see
            :func:`scoresde.as_model`).
        sde: the forward SDE the model was trained on (VP, sub-VP, VE, or any :class:`SDE`).
        shape: the shape of the output, (n, ...) — (n, 2) for points, (n, C, H, W) for images.
        solver: a name from :data:`SOLVERS` (the CLI's ``--solver``).
        steps: number of steps N of the time grid (``ode``: the grid is only used for the trajectory).
        prediction: for a plain function without a ``prediction`` attribute, what it returns:
            ``eps`` (default), ``score``, ``x0`` or ``v``. Contradicting ``model.prediction`` is an error.
        generator: the source of all randomness (x_T and every noise draw); on the sampling device.
        grid: ``"auto"`` (the solver's registered grid, ``SOLVERS[name].grid``, chosen by
            ``benchmarks/samplers.py --defaults``), a time-grid name from ``TIME_GRIDS`` (uniform,
            quadratic, log-snr, karras) or an explicit increasing float tensor of times (then
            ``steps`` is its length − 1).
        t_min: end time ε of the grid; default per solver (0 for ``ancestral``/``ddim``, so that
            the full uniform N-step chain is exactly DDPM; 1e-3 for the SDE/ODE solvers).
        denoise: apply a final noise-free step x ← x̂_0(x, t_min) (one more NFE). Default: when t_min > 0.
        clip_x0: clip x̂_0 to [−c, c] at every evaluation (images in [−1, 1]: c = 1).
        batch_size: solve in chunks of at most this many samples (each chunk draws from
            ``generator`` in turn, so results depend on the chunking but stay reproducible).
        callback: called after every step with a dict (t, x, nfe so far in this chunk, progress in
            [0, 1], chunk, chunks).
        progress: show a progress bar (rich) while sampling (:func:`scoresde.reporting.progress_bar`).
        return_info: also return a :class:`SampleInfo`.
        trajectory: record the states along the grid in ``SampleInfo.trajectory``.
        dtype, device: of the samples (and of x, t given to the model). Default device: the
            generator's, else CPU.
        y: for a class-conditional model (:mod:`scoresde.guidance`), the class of every sample (an
            int) or one class per sample (an integer tensor of shape (n,); the value K, the null
            label, samples that row unconditionally). None: the model is called as it is (a
            conditional network then samples its unconditional branch).
        guidance: the classifier-free guidance scale w with ``y`` (default 1, the conditional
            model; 0 unconditional, > 1 sharper classes); both branches run in one batched forward,
            so the NFE is that of the unguided solve.
        known, mask: imputation / inpainting (:mod:`scoresde.samplers.steering`): ``known`` holds
            observed values and ``mask`` is 1 (or True) where they are observed, 0 where the sample
            is drawn; each of one sample's shape (the same for all samples), the batch's, or
            broadcastable to it (entries of ``known`` where the mask is 0 are ignored, NaN allowed).
            Every solver: after each step to a grid time t_k the observed part is set to a fresh draw
            α(t_k) x_obs + σ(t_k) z from the forward marginal (Song et al. 2021, App. I.2, the
            "replacement" method; Lugmayr et al. 2022), the start x_T too, and the returned samples
            carry x_obs exactly. ``ode`` and ``torchsde`` then integrate each grid interval on its own
            (so ``steps`` says how often the observations are imposed). Replacement approximates
            p(x_unobs | x_obs); it is closest for stochastic solvers (measured in
            benchmarks/results/steering.md).
        resample: with ``known``/``mask``, RePaint's resampling (Lugmayr et al. 2022, Alg. 1): after
            each step but the last, ``resample − 1`` times jump back one grid step with the forward
            transition and come down again with one ancestral (DDPM posterior) step, replacing
            each time; each pass costs one NFE. Default 1 (none).
        init, strength: SDEdit (Meng et al. 2022, Alg. 1): start the solve at t_start = strength·T,
            strength in (0, 1], from x = α(t_start) init + σ(t_start) z instead of the prior; the
            ``steps``-step grid is built on [t_min, t_start] (the paper's Δt = t_start/N: ``steps``
            stays the number of steps, and strength 1 is the ordinary grid; with an explicit ``grid``
            tensor the solve starts at its last time, and ``strength``, if given, must agree).
            ``init`` of one sample's shape or the batch's. Combines with imputation.
        **options: solver options, e.g. ``variance="large"`` (ancestral), ``eta=1`` (ddim),
            ``order=3, lower_order_final=True`` (dpm-solver++), ``snr=0.16, corrector_steps=1`` (pc),
            ``method="srk"`` (torchsde), ``method="RK45", rtol=1e-5, atol=1e-5`` (ode).

    Returns:
        The samples (shape ``shape``), and the :class:`SampleInfo` if ``return_info``.

    Raises:
        ValueError: unknown solver, steps < 1, an option the solver does not take, a model output
            of the wrong shape or not finite (the message names the time), bad grid or t_min,
            ``guidance`` without ``y``, labels y that are not one per sample; ``known``, ``mask`` or
            ``init`` that does not broadcast to the samples (the message names both shapes), a mask
            that observes everything or nothing or holds other values than 0 and 1, ``known`` without
            ``mask`` or the reverse, ``strength`` outside (0, 1], ``strength`` without ``init`` or
            ``init`` without it (on a named grid), a start time t_start ≤ t_min, ``resample`` without
            a mask.
        TypeError: ``y`` for an unconditional model.
    """
    spec = SOLVERS.get(solver)
    if y is None and guidance is not None:
        raise ValueError(f"guidance={guidance!r} needs class labels y (the class to guide towards); pass y= as well")
    if isinstance(grid, str) and grid == "auto":
        grid = spec.grid  # the solver's measured best grid (benchmarks/results/samplers_defaults.md)
    prediction = resolve_prediction(model, prediction)
    opts = spec.check_options(options)
    shape = _check_shape(shape)
    n = shape[0]
    if y is not None:
        w = 1.0 if guidance is None else guidance
        model = guided(model, y, w)
        if model.rows is not None and model.rows != n:
            raise ValueError(f"y holds {model.rows} labels but {n} samples are asked (shape[0]); give one per sample")
        conditioning = {"y": model.y if isinstance(model.y, int) else model.y.tolist(), "guidance": float(w)}
    else:
        conditioning = {}
    batch_size = n if batch_size is None else check_int(batch_size, "batch_size")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    if clip_x0 is not None and not (math.isfinite(float(clip_x0)) and clip_x0 > 0):
        raise ValueError(f"clip_x0 must be a positive finite number or None, got {clip_x0!r}")
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    device = torch.device(device)
    if generator is not None and generator.device.type != device.type:
        raise ValueError(f"the generator is on {generator.device} but sampling runs on {device}; create it there")
    steering = check_steering(
        shape, known=known, mask=mask, init=init, strength=strength, resample=resample, dtype=dtype, device=device
    )
    times = solver_times(spec, sde, steps, grid, t_min, steering)
    if steering is not None:
        steering = steering.on_grid(sde, times)
    denoise = bool(times[0] > 0) if denoise is None else bool(denoise)
    if denoise and times[0] <= 0:
        denoise = False  # x at t = 0 is already noise-free

    den = Denoiser(model, sde, prediction, times, dtype=dtype, device=device, clip_x0=clip_x0)
    chunks = list(range(0, n, int(batch_size)))
    outputs, paths, evaluations = [], [], []
    with torch.inference_mode(), progress_bar(progress, callback) as callback:
        for c, start in enumerate(chunks):
            size = min(int(batch_size), n - start)
            den.model = for_rows(model, start, start + size)  # per-sample labels: this chunk's rows
            den.nfe = 0
            ctx = Context(den, sde, times, generator, callback, record=trajectory, chunk=(c, len(chunks)))
            if steering is None:
                x = sde.prior_sample((size, *shape[1:]), generator, dtype=dtype, device=device)
            else:  # this chunk's observations; the replacement hook where there is a mask
                steer = steering.chunk(start, start + size)
                ctx.steer = steer if steer.imputes else None
                x = steer.initial(ctx, (size, *shape[1:]), dtype, device)
            if trajectory:
                ctx.trajectory.append(x)
            x = spec.fn(ctx, x, **opts)
            if denoise:
                x = den.x0(x, 0)
            if steering is not None:
                x = steer.final(x)
            den.raise_if_nonfinite()
            outputs.append(x)
            evaluations.append(den.nfe)
            if trajectory:
                paths.append(torch.stack(ctx.trajectory))
    x = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
    if not return_info:
        return x
    path = None if not trajectory else paths[0] if len(paths) == 1 else torch.cat(paths, dim=1)
    return x, SampleInfo(
        spec.name,
        round(sum(evaluations) / len(evaluations)),
        times,
        path,
        denoise,
        {**opts, **conditioning, **_steered(steering, times, sde)},
    )


def solver_times(
    spec: Solver, sde: SDE, steps: int, grid: str | Tensor, t_min: float | None, steering: Steering | None = None
) -> Tensor:
    """The float64 grid a solve walks: explicit, or ``steps`` steps of a named grid from t_min (the
    solver's default; 1e-3 for log-SNR grids, which cannot start at t = 0) to T (SDEdit: to
    t_start = strength·T, Meng et al. 2022, Alg. 1). :mod:`scoresde.encoding` walks the same grid."""
    sdedit = steering is not None and steering.init is not None
    if isinstance(grid, Tensor):
        times = time_grid(sde, 1, grid)
        if sdedit and steering.strength is not None and abs(times[-1].item() - steering.strength * sde.T) > 1e-9:
            raise ValueError(
                f"strength={steering.strength} starts SDEdit at t={steering.strength * sde.T:.6g}, but the explicit "
                f"grid ends at t={times[-1].item():.6g}; end the grid at the start time (or leave strength out)"
            )
    else:
        steps = check_int(steps, "steps")
        if t_min is None:  # the solver's default; grids in log-SNR cannot start at t = 0 (λ = ∞)
            t_min = spec.t_min if spec.t_min > 0 or grid not in _LOG_SNR_GRIDS else 1e-3
        t_max = None
        if sdedit:
            if steering.strength is None:
                raise ValueError("init= needs strength= in (0, 1]: SDEdit starts at t_start = strength·T")
            t_max = steering.strength * sde.T
            if t_max <= t_min:
                raise ValueError(
                    f"strength={steering.strength} starts SDEdit at t={t_max:.6g}, not above the grid's end "
                    f"t_min={t_min}; raise strength or lower t_min"
                )
        times = time_grid(sde, steps, grid, t_min=float(t_min), t_max=t_max)
    if spec.needs_positive_t_min and times[0] <= 0:
        raise ValueError(
            f"solver {spec.name!r} evaluates the model at t_min, where σ = 0; give t_min > 0 (default {spec.t_min})"
        )
    return times


def _steered(steering: Steering | None, times: Tensor, sde: SDE) -> dict[str, Any]:
    """SampleInfo's record of the observations: SDEdit's strength (t_start/T), imputation's resampling."""
    if steering is None:
        return {}
    record: dict[str, Any] = {}
    if steering.init is not None:
        record["strength"] = times[-1].item() / sde.T
    if steering.imputes:
        record["resample"] = steering.resample
    return record


def _check_shape(shape: tuple[int, ...] | torch.Size) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in shape)
        ok = len(dims) >= 1 and all(d >= 1 for d in dims) and all(int(d) == d for d in shape)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"shape must be a tuple of positive integers (batch, ...), got {shape!r}")
    return dims
