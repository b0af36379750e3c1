"""The likelihood by the probability-flow ODE: an exact change of variables, :func:`ode_nll`.

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
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor

from .._checks import append_dims, check_int, check_name, positive_finite
from ..param import resolve_prediction
from ..param import score as score_of
from ..sde import SDE
from .common import LikelihoodInfo, check_data, conditional
from .quantized import dequantize, level_spacing

__all__ = ["DIVERGENCES", "EXACT_DIVERGENCE_MAX_DIM", "PROBE_NOISES", "ode_nll"]

DIVERGENCES = ("auto", "exact", "hutchinson")
PROBE_NOISES = ("rademacher", "gaussian")
EXACT_DIVERGENCE_MAX_DIM = 16  # "auto" uses the exact divergence up to this many dimensions


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
    check_data(x, levels, data_range)
    model = conditional(model, y, guidance, x.shape[0])
    nll, info = _ode_nll(
        model, sde, x, prediction, levels, data_range, t_min, rtol, atol, ode_method, divergence, probes,
        probe_noise, generator,
    )  # fmt: skip
    return (nll, info) if return_info else nll


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
