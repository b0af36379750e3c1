"""Likelihoods of a trained model: the probability-flow ODE, the discrete VLB, bits per dimension.

Two estimators of the same quantity, the negative log-likelihood ``−log p(x)`` in **nats per
sample** (docs/conventions.md §3), returned by :func:`ode_nll` and :func:`vlb_nll` (or
:func:`log_likelihood` with ``method=``):

``method="ode"`` — the probability-flow ODE dx/dt = f̃(x, t) = f(x, t) − ½ g(t)² s(x, t) (Song et
al. 2021, eq. 13) is a continuous normalizing flow, so by the instantaneous change of variables
(Chen et al. 2018, Thm. 1; Song et al. 2021, eq. 39)

    log p_ε(x) = log π(x_T) + ∫_ε^T ∇·f̃(x_t, t) dt,        x_ε = x,

solved forward from t = ε to T by scipy's ``solve_ivp`` (RK45 by default; the number of network
evaluations is reported). ∇·f̃ is exact by autograd (one backward pass per dimension) for small
dimension, otherwise Hutchinson's estimator E_z[zᵀ(∂f̃/∂x)z] (Hutchinson 1989; Grathwohl et al.
2019) with Rademacher or Gaussian z drawn once per solve and held fixed during it, averaged over
``probes`` probes. *What is and is not included*: the result is the density at time ε of the
model that pushes the prior π = N(0, prior_std² I) through the ODE, evaluated at x. It does not
include a decoder from x_ε to x_0 (ε = 1e-5 gives σ(ε) ≈ 1e-3 for the default VP SDE, far below
an 8-bit bin), and it uses π, not the true p_T, as the start (the "prior mismatch", tiny for VP).
With an exact score the result equals the true −log p_ε(x), which is what the tests check.

``method="vlb"`` — the variational bound of the discrete chain that the SDE defines on an
N-step grid (Ho et al. 2020, eq. 5; Sohl-Dickstein et al. 2015):

    L = L_T + Σ_{i=2}^{N} L_{i−1} + L_0,
    L_T     = KL(q(x_N | x_0) ‖ π),
    L_{i−1} = E_q KL(q(x_{i−1} | x_i, x_0) ‖ p_θ(x_{i−1} | x_i)),
    L_0     = −E_q log p_θ(x_0 | x_1).

Each L_{i−1} is estimated with one draw of x_i ~ q(x_i | x_0) (unbiased); every term is reported.
The decoder p_θ(x_0 | x_1) is the discretized Gaussian of Ho et al. (2020, eq. 13) when the data
are quantized (``levels`` given), giving an upper bound on the *discrete* NLL; otherwise a
continuous Gaussian N(x_0; x̂_0(x_1), s_1² I), s_1 = σ(t_1) (= √β_1 for VP), bounding the
continuous NLL. With the exact ε the bound closes as N → ∞ on a grid that becomes fine in
log-SNR everywhere (``grid="log-snr"``); on DDPM's uniform grid σ(t)² ∝ t near t = 0, the first
steps always have SNR ratios i/(i − 1), and for *continuous* data an O(D) gap remains (about
0.3 nats/dim for the default VP SDE; tested). For quantized data this region lies below one bin.

**Bits per dimension with uniform dequantization.** Data with ``levels`` equally spaced values
in ``data_range`` = [lo, hi] (8-bit images: 256 levels; scaled to [−1, 1] by x/127.5 − 1) sit on
a grid of spacing Δ = (hi − lo)/(levels − 1). Each level y_k owns the bin [y_k − Δ/2, y_k + Δ/2)
and, for a continuous density p (Theis et al. 2016; Ho et al. 2019, eq. 3),

    −log P(y_k) ≤ E_{u~U[0,1)^D} [−log p(y_k + Δ(u − ½))] − D log Δ,

so with ``levels`` given, ``method="ode"`` dequantizes x and returns the right-hand side (a
discrete NLL bound in nats), and ``bits/dim = NLL / (D ln 2)`` (:func:`bits_per_dim`) is
independent of the bit depth and of the scaling of the data. For 8-bit data in [−1, 1] the
−D log Δ term adds log₂(127.5) ≈ 6.99 bits/dim to the density's nats/(D ln 2); a density
uniform over all 256 bins gives exactly 8 bits/dim.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor

from ._checks import append_dims, check_int, check_name, positive_finite
from .grids import TIME_GRIDS, time_grid
from .guidance import guided
from .param import eps_and_x0, resolve_prediction
from .param import score as score_of
from .sde import SDE

__all__ = [
    "DIVERGENCES",
    "METHODS",
    "LikelihoodInfo",
    "bits_per_dim",
    "dequantize",
    "discretized_gaussian_log_likelihood",
    "level_spacing",
    "log_likelihood",
    "ode_nll",
    "vlb_nll",
]

METHODS = ("ode", "vlb")
DIVERGENCES = ("auto", "exact", "hutchinson")
PROBE_NOISES = ("rademacher", "gaussian")
EXACT_DIVERGENCE_MAX_DIM = 16  # "auto" uses the exact divergence up to this many dimensions


@dataclass
class LikelihoodInfo:
    """What :func:`log_likelihood` did, returned with ``return_info=True``.

    Attributes:
        method: ``ode`` or ``vlb``.
        nfe: network evaluations per sample (ODE: the solver's function evaluations; VLB: N).
        terms: per-sample contributions in nats, each of shape (batch,), summing to the NLL.
            ODE: ``prior`` (−log π(x_T)), ``divergence`` (−∫∇·f̃ dt) and, with ``levels``,
            ``dequantization`` (−D log Δ). VLB: ``prior`` (L_T), ``diffusion`` (Σ L_{i−1}),
            ``decoder`` (L_0).
        per_step: VLB only — (N,) batch means of L_0, L_1, …, L_{N−1} (index i − 1 ↔ L_{i−1}).
        times: VLB only — (N+1,) the grid t_0..t_N.
        details: the settings used (t_min, tolerances, divergence estimator, decoder, …).
    """

    method: str
    nfe: int
    terms: dict[str, Tensor]
    per_step: Tensor | None = None
    times: Tensor | None = None
    details: dict[str, object] = field(default_factory=dict)


# ----------------------------------------------------------------------------- public API


def log_likelihood(
    model, sde: SDE, x: Tensor, method: str = "ode", prediction: str | None = None, **options
) -> Tensor | tuple[Tensor, LikelihoodInfo]:
    """Negative log-likelihood of ``x`` under ``model`` in nats per sample: :func:`ode_nll` or :func:`vlb_nll`.

    ``method`` picks the estimator (``ode`` or ``vlb``); ``options`` are that function's keyword
    arguments, under the same names. Both take ``levels``, ``data_range``, ``t_min``, ``generator``,
    ``return_info``, ``y`` and ``guidance`` (class labels: −log p(x | y)). ODE only: ``rtol``,
    ``atol``, ``ode_method``, ``divergence``, ``probes``, ``probe_noise``. VLB only: ``steps``,
    ``variance``, ``grid``. Any other name, an option of the other method included, is a
    ``TypeError``.
    """
    check_name(method, "likelihood method", METHODS)
    estimators = {"ode": ode_nll, "vlb": vlb_nll}
    own = _keyword_options(estimators[method])
    unknown = sorted(set(options) - own)
    if unknown:
        other = "vlb" if method == "ode" else "ode"
        foreign = [k for k in unknown if k in _keyword_options(estimators[other])]
        where = f" ({', '.join(foreign)}: method={other!r} only)" if foreign else ""
        raise TypeError(
            f"log_likelihood(method={method!r}) got unknown option(s) {', '.join(unknown)}{where}; "
            f"accepted: {', '.join(sorted(own))}"
        )
    return estimators[method](model, sde, x, prediction, **options)


def _keyword_options(fn) -> set[str]:
    """The keyword-only arguments of ``fn``: the options :func:`log_likelihood` forwards to it."""
    return {n for n, p in inspect.signature(fn).parameters.items() if p.kind is p.KEYWORD_ONLY}


def ode_nll(
    model,
    sde: SDE,
    x: Tensor,
    prediction: str | None = None,
    *,
    levels: int | None = None,
    data_range: tuple[float, float] = (-1.0, 1.0),
    t_min: float = 1e-5,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    ode_method: str = "RK45",
    divergence: str = "auto",
    probes: int = 1,
    probe_noise: str = "rademacher",
    generator: torch.Generator | None = None,
    return_info: bool = False,
    y: int | Tensor | None = None,
    guidance: float | None = None,
) -> Tensor | tuple[Tensor, LikelihoodInfo]:
    """−log p_ε(x) by the probability-flow ODE (exact change of variables), nats per sample, float64.

    Args:
        model: ``model(x, t)`` carrying its ``prediction`` (docs/conventions.md §3).
        sde: the forward SDE the model was trained with.
        x: data of shape (batch, ...), in the model's scaling.
        prediction: for a plain function without a ``prediction`` attribute, what it returns
            (default ``eps``).
        levels, data_range: with ``levels`` given (256 for 8-bit data) the data are quantized to
            that many levels over ``data_range``; ``x`` is then dequantized and the result bounds
            the *discrete* NLL. ``None``: continuous data.
        t_min: the ODE's start time ε > 0 (the score is singular at t = 0).
        rtol, atol, ode_method: passed to ``scipy.integrate.solve_ivp`` (``RK45``, ``DOP853``, …).
        divergence: ``exact`` (autograd, one backward per dimension), ``hutchinson``, or
            ``auto`` (exact up to 16 dimensions).
        probes, probe_noise: Hutchinson probes averaged per solve and their distribution
            (``rademacher`` or ``gaussian``); drawn once per solve from ``generator``.
        generator: random source for the probes and the dequantization.
        return_info: also return a :class:`LikelihoodInfo` (NFE and the per-term breakdown).
        y: for a class-conditional model, the class of every sample (an int) or one per sample
            (shape (batch,)): the result is −log p(x | y), the model at guidance w = 1
            (:mod:`scoresde.guidance`). None: the model as it is (−log p(x) for a conditional net).
        guidance: only 1 (the default, log p(x | y)) or 0 (log p(x)); a guided model at other w is
            not the score of p(x | y), so it has no likelihood of the labels and is refused.
    """
    prediction = resolve_prediction(model, prediction)
    _check_data(x, levels, data_range)
    model = _conditional(model, y, guidance, x.shape[0])
    nll, info = _ode_nll(
        model, sde, x, prediction, levels, data_range, t_min, rtol, atol, ode_method, divergence, probes,
        probe_noise, generator,
    )  # fmt: skip
    return (nll, info) if return_info else nll


def vlb_nll(
    model,
    sde: SDE,
    x: Tensor,
    prediction: str | None = None,
    *,
    steps: int = 1000,
    variance: str = "small",
    grid: str | Tensor = "uniform",
    t_min: float = 1e-5,
    levels: int | None = None,
    data_range: tuple[float, float] = (-1.0, 1.0),
    generator: torch.Generator | None = None,
    return_info: bool = False,
    y: int | Tensor | None = None,
    guidance: float | None = None,
) -> Tensor | tuple[Tensor, LikelihoodInfo]:
    """The variational bound of the N-step chain (Ho et al. 2020, eq. 5), nats per sample, float64.

    Args:
        model, sde, x, prediction, levels, data_range, generator, return_info: as in :func:`ode_nll`
            (with ``levels`` the decoder is the discretized Gaussian and the bound is on the
            discrete NLL).
        steps: the chain length N.
        variance: the reverse variance σ_i² = β̃_i (``small``) or β_i (``large``).
        grid, t_min: the chain's time grid: ``uniform`` on [0, T] (DDPM), any name in
            ``TIME_GRIDS`` (grids that need t > 0, e.g. ``log-snr``, run from ``t_min`` after a
            first step from 0), or an explicit tensor 0 = t_0 < … < t_N = T.
        y, guidance: class labels for −log p(x | y) of a conditional model, as in :func:`ode_nll`.
    """
    prediction = resolve_prediction(model, prediction)
    _check_data(x, levels, data_range)
    model = _conditional(model, y, guidance, x.shape[0])
    nll, info = _vlb(model, sde, x, prediction, levels, data_range, steps, variance, grid, t_min, generator)
    return (nll, info) if return_info else nll


def _conditional(model, y, guidance, batch: int):
    """The model at labels y and w = 1 (or 0), checked; the model itself without labels."""
    if y is None:
        if guidance is not None:
            raise ValueError(f"guidance={guidance!r} needs class labels y; pass y= for log p(x | y)")
        return model
    w = 1.0 if guidance is None else guidance
    if w not in (0, 1):
        raise ValueError(
            f"guidance must be 1 (log p(x | y)) or 0 (log p(x)) for a likelihood, got {w!r}: a guided model "
            "at another scale is not the score of p(x | y), so it gives no likelihood of the data"
        )
    model = guided(model, y, float(w))
    if model.rows is not None and model.rows != batch:
        raise ValueError(f"y holds {model.rows} labels for {batch} samples x; give one label per sample")
    return model


def _check_data(x: Tensor, levels: int | None, data_range: tuple[float, float]) -> None:
    if not isinstance(x, Tensor) or x.ndim < 2 or x.shape[0] == 0:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor of shape (batch, ...) with batch >= 1, got {shape}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or inf")
    if levels is not None:
        level_spacing(levels, data_range)  # validates


def level_spacing(levels: int, data_range: tuple[float, float] = (-1.0, 1.0)) -> float:
    """Δ = (hi − lo)/(levels − 1), the distance between neighbouring quantization levels."""
    check_int(levels, "levels", minimum=2, detail=" (256 for 8-bit data)")
    lo, hi = (float(v) for v in data_range)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"data_range must be (lo, hi) with finite lo < hi, got {data_range!r}")
    return (hi - lo) / (levels - 1)


def dequantize(
    x: Tensor,
    levels: int,
    data_range: tuple[float, float] = (-1.0, 1.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """y = x + Δ(u − ½), u ~ U[0, 1)^D: spread each level uniformly over its own bin.

    ``x`` must lie on the grid of ``levels`` values over ``data_range`` (checked to Δ/4).
    """
    delta = level_spacing(levels, data_range)
    _check_quantized(x, levels, data_range)
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return x + delta * (u - 0.5)


def bits_per_dim(nll: Tensor | float, dim: int) -> Tensor | float:
    """bits/dim = NLL / (D ln 2) for a *discrete* NLL in nats (see the module docstring).

    Pass the output of :func:`log_likelihood` computed with ``levels`` given: the −D log Δ of
    dequantization is then already included, so the value does not depend on the data scaling.
    """
    check_int(dim, "dim", detail=" (the number of dimensions per sample)")
    return nll / (dim * math.log(2))


def discretized_gaussian_log_likelihood(
    x: Tensor, mean: Tensor, std: Tensor, levels: int = 256, data_range: tuple[float, float] = (-1.0, 1.0)
) -> Tensor:
    """log ∫_bin N(y; mean, std²) dy per element (Ho et al. 2020, eq. 13); x on the level grid.

    Bins are [x − Δ/2, x + Δ/2), with the lowest extended to −∞ and the highest to +∞, so the
    masses of all levels sum to one.
    """
    delta = level_spacing(levels, data_range)
    lo = float(data_range[0])
    k = torch.round((x - lo) / delta)
    lower = torch.where(k <= 0, torch.full_like(x, -math.inf), x - delta / 2)
    upper = torch.where(k >= levels - 1, torch.full_like(x, math.inf), x + delta / 2)
    return _log_normal_mass((lower - mean) / std, (upper - mean) / std)


# ----------------------------------------------------------------------------- ODE


def _ode_nll(
    model, sde, x, prediction, levels, data_range, t_min, rtol, atol, ode_method, divergence, probes, noise, gen
):
    t_min = positive_finite(t_min, "the ODE start time t_min")
    if t_min >= sde.T:
        raise ValueError(f"the ODE start time t_min must be smaller than T = {sde.T}, got {t_min}")
    check_name(divergence, "divergence", DIVERGENCES)
    check_name(noise, "probe noise", PROBE_NOISES)
    check_int(probes, "probes")
    batch, dim = x.shape[0], x[0].numel()
    exact = divergence == "exact" or (divergence == "auto" and dim <= EXACT_DIVERGENCE_MAX_DIM)

    dequant = torch.zeros(batch, dtype=torch.float64, device=x.device)
    if levels is not None:
        x = dequantize(x, levels, data_range, gen)
        dequant = dequant - dim * math.log(level_spacing(levels, data_range))

    z = None
    if not exact:  # Hutchinson probes, drawn once and held fixed during the solve
        z = torch.randn((probes, *x.shape), generator=gen, dtype=x.dtype, device=x.device)
        if noise == "rademacher":
            z = torch.sign(z)
            z[z == 0] = 1.0

    flow = sde.reverse(_score_fn(model, sde, prediction), probability_flow=True)
    nfe = 0

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        nonlocal nfe
        nfe += 1
        xt = torch.as_tensor(y[:-batch], dtype=x.dtype, device=x.device).reshape(x.shape)
        tt = torch.full((batch,), t, dtype=x.dtype, device=x.device)
        with torch.enable_grad():
            xt.requires_grad_(True)
            drift = flow.drift(xt, tt)
            div = _exact_divergence(drift, xt) if exact else _hutchinson_divergence(drift, xt, z)
        if not torch.isfinite(drift).all():
            raise ValueError(f"the probability-flow drift is not finite at t = {t:.6g}; check the model output")
        out = torch.cat([drift.detach().flatten(), div.detach().flatten()])
        return out.to(torch.float64).cpu().numpy()

    y0 = np.concatenate([x.detach().to(torch.float64).flatten().cpu().numpy(), np.zeros(batch)])
    sol = solve_ivp(rhs, (t_min, sde.T), y0, method=ode_method, rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"solve_ivp ({ode_method}) failed: {sol.message}")
    yT = torch.as_tensor(sol.y[:, -1], dtype=torch.float64, device=x.device)
    xT = yT[:-batch].reshape(x.shape)
    prior = -sde.prior_logp(xT)  # −log π(x_T)
    div_term = -yT[-batch:]  # −∫_ε^T ∇·f̃ dt
    nll = prior + div_term + dequant
    terms = {"prior": prior, "divergence": div_term}
    if levels is not None:
        terms["dequantization"] = dequant
    details = {
        "t_min": t_min,
        "rtol": rtol,
        "atol": atol,
        "ode_method": ode_method,
        "divergence": "exact" if exact else f"hutchinson ({noise}, {probes} probe{'s' * (probes > 1)})",
        "levels": levels,
        "data_range": tuple(data_range),
    }
    return nll, LikelihoodInfo("ode", nfe, terms, details=details)


def _score_fn(model, sde, prediction):
    def score(x: Tensor, t: Tensor) -> Tensor:
        alpha, sigma = sde.marginal(t)
        alpha, sigma = append_dims(alpha, x.ndim), append_dims(sigma, x.ndim)
        out = model(x, t)
        if out.shape != x.shape:
            raise ValueError(f"model returned shape {tuple(out.shape)} for input of shape {tuple(x.shape)}")
        if x.requires_grad and not out.requires_grad:
            raise ValueError(
                "the model's output has no autograd graph with respect to x (is x detached, or is the model run "
                "under torch.no_grad/inference_mode?); the ODE likelihood needs the divergence of the drift by "
                "autograd, and a detached output would silently drop the score's contribution"
            )
        return score_of(prediction, out, x, alpha, sigma)

    return score


def _exact_divergence(f: Tensor, x: Tensor) -> Tensor:
    """∇·f = Σ_d ∂f_d/∂x_d by one backward pass per dimension (samples are independent)."""
    flat = f.flatten(1)
    div = torch.zeros(x.shape[0], dtype=f.dtype, device=f.device)
    for d in range(flat.shape[1]):
        (grad,) = torch.autograd.grad(flat[:, d].sum(), x, retain_graph=True)
        div = div + grad.flatten(1)[:, d]
    return div


def _hutchinson_divergence(f: Tensor, x: Tensor, z: Tensor) -> Tensor:
    """(1/K) Σ_k z_kᵀ (∂f/∂x) z_k, one vector–Jacobian product per probe (Hutchinson 1989)."""
    total = torch.zeros(x.shape[0], dtype=f.dtype, device=f.device)
    for k in range(z.shape[0]):
        (vjp,) = torch.autograd.grad(f, x, grad_outputs=z[k], retain_graph=k < z.shape[0] - 1)
        total = total + (vjp * z[k]).flatten(1).sum(1)
    return total / z.shape[0]


# ----------------------------------------------------------------------------- VLB


def _vlb(model, sde, x, prediction, levels, data_range, steps, variance, grid, t_min, gen, rows_per_call: int = 8192):
    check_int(steps, "steps", minimum=2, detail=" for the VLB (the chain length N)")
    check_name(variance, "variance", ("small", "large"))
    if levels is not None:
        _check_quantized(x, levels, data_range)
    chain = sde.discretize(steps, _vlb_grid(sde, steps, grid, t_min))  # float64; t_0 = 0: x_0 is the data
    batch, dim = x.shape[0], x[0].numel()
    dev = x.device
    a = chain.alpha_bars.sqrt().to(dev)  # mean coefficient of q(x_i | x_0)
    s = chain.sigmas.to(dev)  # its standard deviation
    beta, beta_tilde = chain.betas.to(dev), chain.posterior_variances.to(dev)
    model_var = beta_tilde if variance == "small" else beta
    x64 = x.to(torch.float64)

    # L_T = KL(N(a_N x_0, s_N² I) ‖ N(0, p² I)), summed over dimensions (closed form)
    p2 = sde.prior_std**2
    mean_sq = (a[-1] ** 2 * x64.flatten(1).pow(2)).sum(1)
    prior = 0.5 * (mean_sq / p2 + dim * (s[-1] ** 2 / p2 - 1 - torch.log(s[-1] ** 2 / p2)))

    # L_{i−1}, i = 2..N: with posterior mean μ̃ = c_i x_0 + d_i x_i, c_i = a_{i−1} β_i / s_i² (Ho et al.
    # eq. 7) and μ_θ the same with x̂_0, μ̃ − μ_θ = c_i (x_0 − x̂_0) = c_i (s_i/a_i)(ε_θ − ε), hence
    # KL = ½[(c_i s_i/a_i)² ‖ε − ε_θ‖²/σ_i² + D(r − 1 − log r)], r = β̃_i/σ_i² (eq. 12 for VP).
    i = torch.arange(2, steps + 1, device=dev)
    c = a[i - 1] * beta[i - 1] / s[i] ** 2
    weight = (c * s[i] / a[i]) ** 2 / (2 * model_var[i - 1])
    r = beta_tilde[i - 1] / model_var[i - 1]
    var_kl = 0.5 * dim * (r - 1 - torch.log(r))
    per_step = torch.zeros(steps, dtype=torch.float64, device=dev)
    diffusion = torch.zeros(batch, dtype=torch.float64, device=dev)
    block = max(1, rows_per_call // batch)
    for start in range(0, len(i), block):
        idx = slice(start, start + block)
        sq = _eps_errors(model, sde, x, i[idx], chain.times, a, s, prediction, gen)  # (k, batch)
        terms = weight[idx, None] * sq + var_kl[idx, None]
        diffusion += terms.sum(0)
        per_step[i[idx] - 1] = terms.mean(1)

    # L_0 = −log p_θ(x_0 | x_1), p_θ = N(x̂_0(x_1), s_1²) (continuous) or its discretized form (eq. 13).
    # With t_0 = 0 (s_0 = 0) the reverse mean μ_θ(x_1, 1) equals x̂_0(x_1) exactly.
    e = torch.randn(x.shape, generator=gen, dtype=x.dtype, device=dev)
    t1 = chain.times[1].to(x.dtype).expand(batch).to(dev)
    x1 = a[1].to(x.dtype) * x + s[1].to(x.dtype) * e
    eps_hat = _model_eps(model, sde, x1, t1, prediction).to(torch.float64)
    x0_hat = (x1.to(torch.float64) - s[1] * eps_hat) / a[1]
    if levels is None:
        decoder = 0.5 * (
            dim * math.log(2 * math.pi) + dim * torch.log(s[1] ** 2) + ((x64 - x0_hat) / s[1]).pow(2).flatten(1).sum(1)
        )
    else:
        logp = discretized_gaussian_log_likelihood(x64, x0_hat, s[1].expand_as(x0_hat), levels, data_range)
        decoder = -logp.flatten(1).sum(1)
    per_step[0] = decoder.mean()

    nll = prior + diffusion + decoder
    terms = {"prior": prior, "diffusion": diffusion, "decoder": decoder}
    details = {
        "steps": steps,
        "variance": variance,
        "decoder": "gaussian" if levels is None else f"discretized gaussian ({levels} levels over {tuple(data_range)})",
        "decoder_std": float(s[1]),
    }
    return nll, LikelihoodInfo("vlb", steps, terms, per_step=per_step.cpu(), times=chain.times, details=details)


def _vlb_grid(sde, steps, grid, t_min):
    """The chain's times 0 = t_0 < … < t_N = T: a named grid from t = 0 (``uniform``, ``quadratic``),
    or, for grids that need t > 0 (``log-snr``, ``karras``), t_0 = 0 followed by N − 1 steps from t_min."""
    if isinstance(grid, Tensor):
        times = time_grid(sde, steps, grid)
        if times[0] != 0 or times.numel() != steps + 1:
            raise ValueError(f"an explicit VLB grid must start at t = 0 and have steps + 1 = {steps + 1} times")
        return times
    if TIME_GRIDS.get(grid) in (TIME_GRIDS["uniform"], TIME_GRIDS["quadratic"]):
        return time_grid(sde, steps, grid)
    return torch.cat([torch.zeros(1, dtype=torch.float64), time_grid(sde, steps - 1, grid, t_min=t_min)])


@torch.no_grad()
def _model_eps(model, sde, x, t, prediction):
    alpha, sigma = sde.marginal(t)
    alpha, sigma = append_dims(alpha, x.ndim), append_dims(sigma, x.ndim)
    out = model(x, t)
    if out.shape != x.shape:
        raise ValueError(f"model returned shape {tuple(out.shape)} for input of shape {tuple(x.shape)}")
    eps, _ = eps_and_x0(prediction, out, x, alpha, sigma)
    if not torch.isfinite(eps).all():
        raise ValueError(f"model output is not finite at t in [{t.min().item():.6g}, {t.max().item():.6g}]")
    return eps


def _eps_errors(model, sde, x, i, times, a, s, prediction, gen):
    """‖ε − ε_θ(x_i, t_i)‖² for x_i = a_i x_0 + s_i ε, one ε per (step, sample); shape (k, batch)."""
    k, batch = len(i), x.shape[0]
    xr = x.unsqueeze(0).expand(k, *x.shape)
    e = torch.randn(xr.shape, generator=gen, dtype=x.dtype, device=x.device)
    ai = append_dims(a[i].to(x.dtype), xr.ndim)
    si = append_dims(s[i].to(x.dtype), xr.ndim)
    xi = (ai * xr + si * e).reshape(k * batch, *x.shape[1:])
    ti = times[i].to(device=x.device, dtype=x.dtype).repeat_interleave(batch)
    tile = getattr(model, "tile", None)  # per-sample labels follow the k stacked copies of the rows
    eps_hat = _model_eps(tile(k) if callable(tile) else model, sde, xi, ti, prediction).reshape(e.shape)
    return (e - eps_hat).to(torch.float64).flatten(2).pow(2).sum(2)


# ----------------------------------------------------------------------------- helpers


def _check_quantized(x: Tensor, levels: int, data_range: tuple[float, float]) -> None:
    delta = level_spacing(levels, data_range)
    lo = float(data_range[0])
    k = (x.to(torch.float64) - lo) / delta
    off = (k - torch.round(k)).abs().max().item()
    kmin, kmax = torch.round(k).min().item(), torch.round(k).max().item()
    if off > 0.25 or kmin < 0 or kmax > levels - 1:
        raise ValueError(
            f"x is not quantized to {levels} levels over {tuple(data_range)} (spacing {delta:.6g}); "
            "pass the data as loaded (not dequantized), or levels=None for continuous data"
        )


def _log_normal_mass(a: Tensor, b: Tensor) -> Tensor:
    """log(Φ(b) − Φ(a)) for a ≤ b, stable in both tails (the upper tail is mirrored)."""
    flip = a > 0
    a, b = torch.where(flip, -b, a), torch.where(flip, -a, b)
    log_b, log_a = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    return log_b + torch.log(-torch.expm1(torch.clamp(log_a - log_b, max=0.0)))
