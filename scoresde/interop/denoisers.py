"""EDM / k-diffusion denoisers as scoresde models and back.

:func:`from_denoiser` / :func:`to_denoiser` — the denoiser D(x̃, σ̃) ≈ E[x_0 | x_0 + σ̃ n = x̃] of
Karras et al. (2022, "Elucidating the Design Space…", §2 and eq. 2–3) and k-diffusion, as an
x0-prediction model for *any* of our SDEs and back.


The change of variables. Every SDE here has the marginal x_t = α(t) x_0 + σ(t) ε (docs/conventions.md §1).
Dividing by α(t),

    x̃ := x_t / α(t) = x_0 + σ̃ ε,    σ̃(t) := σ(t) / α(t) = exp(−λ(t)/2),

which is EDM's variance-exploding form at noise level σ̃ (λ = log α²/σ² the log-SNR). Since
x ↦ x/α is invertible, conditioning on x_t is conditioning on x̃, so

    x̂_0(x_t, t) = E[x_0 | x_t] = E[x_0 | x_0 + σ̃ ε = x̃] = D(x_t/α(t), σ(t)/α(t))          (1)

exactly, for VP, sub-VP and VE alike (VE: α = 1, σ̃ = σ). Conversely, given σ̃ the time is
t = λ⁻¹(−2 log σ̃) (``sde.t_from_log_snr``) and

    D(x̃, σ̃) = x̂_0(α(t) x̃, t).                                                            (2)

(Karras et al. 2022, Table 1 and App. C.2 write VP in this form: x = s(t) x̃ with s = α, σ_EDM = σ̃.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import append_dims
from ..diffusion_model import DiffusionModel, Provenance
from ..param import PREDICTIONS, convert
from ..sde import SDE, VPSDE

__all__ = ["DenoiserModel", "ModelDenoiser", "from_denoiser", "to_denoiser"]


DenoiserFn = Callable[..., Tensor]


def _check_output(out: Any, x: Tensor, who: str, where: str) -> Tensor:
    if not isinstance(out, Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"{who} returned shape {got} at {where}; it must have the shape of its input, {tuple(x.shape)}"
        )
    if not math.isfinite(out.sum().item()) and not bool(torch.isfinite(out).all()):
        raise ValueError(f"{who} returned non-finite values (NaN or inf) at {where}")
    return out


class DenoiserModel(nn.Module):
    """An EDM / k-diffusion denoiser as an x0-prediction model of ``sde``, by eq. (1) of the module:

        x̂_0(x, t) = D(x/α(t), σ(t)/α(t)).

    ``D(x̃, sigma, **cond)`` gets σ̃ as a tensor of shape (batch,) in x's dtype (as k-diffusion's
    wrappers and EDM's networks take it). Its output is checked: the shape of x and finite.
    """

    prediction = "x0"

    def __init__(self, denoiser: DenoiserFn, sde: SDE) -> None:
        super().__init__()
        if not callable(denoiser):
            raise TypeError(f"the denoiser must be callable as D(x, sigma), got {type(denoiser).__name__}")
        if not isinstance(sde, SDE):
            raise TypeError(f"sde must be a scoresde SDE (sd.VPSDE(), ...), got {type(sde).__name__}")
        self.denoiser, self.sde = denoiser, sde

    def forward(self, x: Tensor, t: Tensor, **cond: Any) -> Tensor:
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        alpha, sigma = self.sde.marginal(t.to(torch.float64))  # float64, checked in [0, T]
        x_tilde = x / append_dims(alpha.to(x.dtype), x.ndim)  # (1): x̃ = x/α
        sigma_tilde = (sigma / alpha).to(x.dtype)  # σ̃ = σ/α = exp(−λ/2)
        out = self.denoiser(x_tilde, sigma_tilde, **cond)
        where = f"sigma={sigma_tilde.max().item():.6g} (t={t.max().item():.6g})"
        return _check_output(out, x, "the denoiser", where)


class ModelDenoiser(nn.Module):
    """A scoresde model as an EDM / k-diffusion denoiser D(x̃, σ̃), by eq. (2) of the module:

        t = λ⁻¹(−2 log σ̃),   D(x̃, σ̃) = x̂_0(α(t) x̃, t).

    ``sigma`` is a scalar or a tensor of shape (batch,). Attributes ``sigma_min`` / ``sigma_max``
    are σ̃ at t = 1e-5 and at T (k-diffusion's ``DiscreteSchedule`` exposes the same); σ̃ above
    ``sigma_max`` is refused (it lies beyond the SDE's end time T).
    """

    def __init__(self, model: Callable[..., Tensor], sde: SDE, prediction: str) -> None:
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; choose one of: {', '.join(PREDICTIONS)}")
        self.model, self.sde, self.prediction = model, sde, prediction
        ends = torch.tensor([1e-5, sde.T], dtype=torch.float64)
        self.sigma_min, self.sigma_max = torch.exp(-0.5 * sde.log_snr(ends)).tolist()

    def forward(self, x: Tensor, sigma: Tensor | float, **cond: Any) -> Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        if sigma.shape != (x.shape[0],):
            raise ValueError(
                f"sigma must be a scalar or have shape (batch,) = ({x.shape[0]},), got {tuple(sigma.shape)}"
            )
        if not bool(torch.isfinite(sigma).all()) or bool((sigma < 0).any()):
            raise ValueError(f"sigma must be finite and >= 0, got values in [{sigma.min():.6g}, {sigma.max():.6g}]")
        if sigma.max().item() > self.sigma_max * (1 + 1e-6):
            raise ValueError(
                f"sigma={sigma.max().item():.6g} exceeds the SDE's largest noise level σ(T)/α(T) = {self.sigma_max:.6g}"
            )
        t = self.sde.t_from_log_snr(-2 * torch.log(sigma)).clamp(0, self.sde.T)  # λ = −2 log σ̃
        alpha, sig = self.sde.marginal(t)
        a, s = append_dims(alpha.to(x.dtype), x.ndim), append_dims(sig.to(x.dtype), x.ndim)
        x_t = a * x  # (2): x_t = α(t) x̃
        pred = self.model(x_t, t.to(x.dtype), **cond)
        _check_output(pred, x, "the model", f"t={t.max().item():.6g}")
        return convert(pred, self.prediction, "x0", x_t, a, s)


def from_denoiser(
    denoiser: DenoiserFn, sde: SDE | None = None, *, data_shape: tuple[int, ...] | None = None
) -> DiffusionModel:
    """Wrap an EDM / k-diffusion denoiser D(x̃, σ̃) ≈ E[x_0 | x_0 + σ̃ n = x̃] as a model of ``sde``.

    The result's ``.model`` is ``model(x, t, **cond) -> x̂_0`` (``prediction == "x0"``), through
    x̂_0(x, t) = D(x/α(t), σ(t)/α(t)) (the module's eq. 1; exact for every SDE with Gaussian
    marginals x_t = α x_0 + σ ε). Any of our solvers and likelihoods then run it:
    ``sd.sample(dm.model, dm.sde, shape, "dpm-solver++", 20)``. The SDE only sets which σ̃ each t
    visits (default: ``VPSDE()``); D's own training range of σ̃ should cover
    [σ(t_min)/α(t_min), σ(T)/α(T)] (≈ [0.03, 157] for the default VP SDE and t_min = 1e-3).
    ``data_shape`` (one sample's shape) is needed only by :func:`scoresde.generation.generate`.
    """
    sde = VPSDE() if sde is None else sde
    model = DenoiserModel(denoiser, sde)
    kind = "images" if data_shape is not None and len(data_shape) == 3 else "points"
    name = getattr(denoiser, "__name__", type(denoiser).__name__)
    provenance = Provenance("denoiser", f"denoiser {name} on {type(sde).__name__}", origin=denoiser)
    return DiffusionModel(model, sde, tuple(data_shape) if data_shape is not None else None, kind, provenance)


def to_denoiser(model: Callable[..., Tensor], sde: SDE, prediction: str | None = None) -> ModelDenoiser:
    """A scoresde model as an EDM / k-diffusion denoiser ``D(x̃, sigma, **cond) -> x̂_0``.

    D(x̃, σ̃) = x̂_0(α(t) x̃, t) with t = λ⁻¹(−2 log σ̃) (the module's eq. 2), so k-diffusion-style
    samplers (Karras et al. 2022, Alg. 1–2, which integrate dx̃/dσ̃ = (x̃ − D)/σ̃) run a scoresde
    model. ``prediction`` defaults to ``model.prediction``.
    """
    if prediction is None:
        prediction = getattr(model, "prediction", None)
        if prediction is None:
            raise ValueError("to_denoiser needs prediction=... (the model has no .prediction attribute)")
    return ModelDenoiser(model, sde, prediction)
