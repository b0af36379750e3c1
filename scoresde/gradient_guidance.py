"""Gradient guidance: steer any solver with ∇_x log p(y | x_t), one mechanism for every source of y.

By Bayes, the score of the conditional law is the model's score plus the likelihood's gradient,

    ∇ log p_t(x | y) = ∇ log p_t(x) + ∇ log p_t(y | x),     i.e.     ε̃ = ε̂ − w σ(t) ∇_x log p_t(y | x)

(Song et al. 2021, eq. 48; Dhariwal & Nichol 2021, eq. 14, with scale w; w = 1 is the exact
posterior when ∇ log p_t(y | x) is exact). :class:`GradientGuided` wraps a model this way and
returns ε̃, so every solver — ancestral, the SDE solvers, DDIM, DPM-Solver++, UniPC, the ODE —
samples the guided law with no change. Two sources of log p_t(y | x):

* :func:`classifier_guided` — a time-dependent classifier's log-probability of class y at (x_t, t)
  (classifier guidance; Dhariwal & Nichol 2021). ``scoresde.analytic`` gives the exact one of a
  Gaussian mixture (its components as classes): guidance at w = 1 then *is* the conditional model.
* :func:`dps` — posterior sampling for a measurement y = A(x_0) + n, n ~ N(0, σ_y² I) (Chung et al.
  2023, "Diffusion Posterior Sampling for General Noisy Inverse Problems"; Song et al. 2023, ΠGDM):
  log p_t(y | x) ≈ −‖y − A(x̂_0(x, t))‖² / (2(σ_y² + r_t²)), differentiated through the model's x̂_0
  and any differentiable A (:mod:`scoresde.measurements`). An approximation (p(x_0 | x_t) replaced
  by a Gaussian of variance r_t² around its mean); ``benchmarks/results/posterior.md`` measures its
  error against the exact posterior of a Gaussian mixture.

Sampling runs under ``torch.inference_mode``; the wrapper leaves it for its own gradient (a clone
of x outside inference mode), so the unguided path keeps its speed and guided samples cost one
forward and one backward pass per model evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ._checks import append_dims
from .param import eps_and_x0, resolve_prediction
from .sde import SDE

__all__ = ["X0_VARIANCES", "GradientGuided", "classifier_guided", "dps"]


class GradientGuided:
    """``model(x, t) -> ε̃ = ε̂ − w σ(t) ∇_x log p_t(y | x)``: an ε-prediction model.

    Args:
        model: the model being guided (any prediction kind, ``model.prediction``).
        sde: its SDE (σ(t) and α(t) for the conversions).
        log_likelihood: ``log_likelihood(x, t, x0_hat, rows) -> (batch,)`` log p_t(y | x) for the
            rows ``rows`` (a slice of the batch the observations belong to); differentiable in x.
        scale: the guidance scale w (1: Bayes' rule).
        rows: the number of samples per-sample observations are for (None: shared by every row).
    """

    prediction = "eps"

    def __init__(
        self, model, sde: SDE, log_likelihood, scale: float = 1.0, rows: int | None = None, start: int = 0
    ) -> None:
        if not (isinstance(scale, (int, float)) and math.isfinite(scale)):
            raise ValueError(f"scale must be a finite number, got {scale!r}")
        self.model, self.sde, self.log_likelihood, self.scale = model, sde, log_likelihood, float(scale)
        self.base_prediction = resolve_prediction(model)
        self.rows, self.start = rows, start
        self.num_classes = getattr(model, "num_classes", None)

    def select(self, start: int, stop: int) -> GradientGuided:
        """The same guidance for the rows start … stop − 1 (a chunk of ``sample(batch_size=...)``)."""
        if self.rows is None:
            return self
        if not 0 <= start < stop <= self.rows:
            raise ValueError(f"rows {start}:{stop} are outside the {self.rows} observations")
        return GradientGuided(self.model, self.sde, self.log_likelihood, self.scale, stop - start, self.start + start)

    def __call__(self, x: Tensor, t: Tensor, **cond) -> Tensor:
        if self.rows is not None and x.shape[0] != self.rows:
            raise ValueError(
                f"the observations are for {self.rows} samples but the batch has {x.shape[0]}; "
                "slice the guided model with .select(start, stop) for a chunk of rows"
            )
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        alpha, sigma = self.sde.marginal(t.to(torch.float64))
        a, s = append_dims(alpha.to(x.dtype), x.ndim), append_dims(sigma.to(x.dtype), x.ndim)
        rows = slice(self.start, self.start + x.shape[0])
        with torch.inference_mode(False), torch.enable_grad():
            xg = x.clone().requires_grad_(True)  # a normal tensor: autograd works inside a sampler
            pred = self.model(xg, t.clone(), **cond)
            eps, x0 = eps_and_x0(self.base_prediction, pred, xg, a.clone(), s.clone())
            if self.scale == 0:
                return eps.detach().clone()
            logp = self.log_likelihood(xg, t.clone(), x0, rows)
            (grad,) = torch.autograd.grad(logp.sum(), xg)
        return (eps.detach() - self.scale * s * grad).clone()


def classifier_guided(
    model, sde: SDE, classifier: Callable[[Tensor, Tensor], Tensor], y: int | Tensor, scale: float = 1.0
) -> GradientGuided:
    """Classifier guidance towards class(es) ``y`` (an int, or one per sample) with scale w.

    ``classifier(x, t) -> (batch, K)`` logits of p_t(class | x_t = x) (time-dependent: trained on
    noisy x_t). ε̃ = ε̂ − w σ ∇ log softmax(classifier(x, t))[y] (Dhariwal & Nichol 2021, eq. 14).
    """
    labels = torch.as_tensor(y)
    if labels.dtype.is_floating_point or labels.ndim > 1:
        raise TypeError(f"y must be a class id (int) or an integer tensor of shape (n,), got {y!r}")

    def log_likelihood(x: Tensor, t: Tensor, x0: Tensor, rows: slice) -> Tensor:
        logits = classifier(x, t)
        if logits.ndim != 2 or logits.shape[0] != x.shape[0]:
            raise ValueError(f"the classifier must return logits of shape (batch, K), got {tuple(logits.shape)}")
        k = labels.to(logits.device)
        k = k[rows] if k.ndim == 1 else k.expand(x.shape[0])
        if int(k.min()) < 0 or int(k.max()) >= logits.shape[1]:
            raise ValueError(f"class y must lie in 0 … {logits.shape[1] - 1}, got {k.tolist()}")
        return torch.log_softmax(logits, dim=1).gather(1, k[:, None]).squeeze(1)

    return GradientGuided(model, sde, log_likelihood, scale, rows=len(labels) if labels.ndim == 1 else None)


X0_VARIANCES = ("pigdm", "dps")
"""How :func:`dps` treats the uncertainty of x̂_0: ``dps`` a point mass (Chung et al. 2023),
``pigdm`` the variance of x_0 given x_t under a Gaussian prior (Song et al. 2023)."""


def dps(
    model,
    sde: SDE,
    operator: Callable[[Tensor], Tensor],
    y: Tensor,
    noise_std: float,
    scale: float = 1.0,
    *,
    x0_variance: str = "pigdm",
    sigma_data: float = 1.0,
) -> GradientGuided:
    """Posterior sampling for a measurement y = A(x_0) + n, n ~ N(0, ``noise_std``² I), through x̂_0.

    ``operator`` is A (any differentiable function of a batch, e.g. from :mod:`scoresde.measurements`);
    ``y`` is a batch of observations, one per sample (n, ...), or one shared by every sample (1, ...).
    The likelihood of x_t is that of y given x̂_0(x_t, t), differentiated through the model and A:

        log p_t(y | x) ≈ −‖y − A(x̂_0(x, t))‖² / (2 (σ_y² + r_t²)),

    * ``x0_variance="dps"``: r_t = 0, x_0 | x_t a point mass at its mean (Chung et al. 2023, eq. 11 /
      Alg. 1; ``scale`` w is their step size ζ_i = w / (2σ_y²) in these units);
    * ``x0_variance="pigdm"`` (default): r_t² = σ_d² σ²/(α² σ_d² + σ²), the variance of x_0 | x_t when
      x_0 ~ N(0, σ_d²) (Song et al. 2023, "Pseudoinverse-Guided Diffusion Models", eq. 7; ``sigma_data``
      σ_d), taking A Aᵀ ≈ I (exact for masks). It weakens the guidance at high noise, where x̂_0 is
      uncertain: on the exact mixture it brings every solver, the ODE solvers too, to the Monte Carlo
      floor, where the point mass leaves the ODE solvers 20× off (``benchmarks/results/posterior.md``).
    """
    if not (isinstance(noise_std, (int, float)) and math.isfinite(noise_std) and noise_std > 0):
        raise ValueError(f"noise_std must be a positive number (the measurement noise σ_y), got {noise_std!r}")
    if x0_variance not in X0_VARIANCES:
        raise ValueError(f"unknown x0_variance {x0_variance!r}; choose one of: {', '.join(X0_VARIANCES)}")
    if not (math.isfinite(sigma_data) and sigma_data > 0):
        raise ValueError(f"sigma_data must be a positive number, got {sigma_data!r}")
    y = torch.as_tensor(y)
    if y.ndim < 1 or y.shape[0] < 1:
        raise ValueError(f"y must be a batch of observations (n, ...) or (1, ...), got shape {tuple(y.shape)}")
    v_y, v_d = float(noise_std) ** 2, float(sigma_data) ** 2

    def log_likelihood(x: Tensor, t: Tensor, x0: Tensor, rows: slice) -> Tensor:
        measured = operator(x0)
        if not isinstance(measured, Tensor) or y.shape[1:] != measured.shape[1:]:
            got = tuple(measured.shape[1:]) if isinstance(measured, Tensor) else type(measured).__name__
            raise ValueError(f"y holds observations of shape {tuple(y.shape[1:])}, but A(x) has shape {got}")
        target = (y[rows] if y.shape[0] > 1 else y).to(device=x.device, dtype=x.dtype)
        variance = torch.full_like(t, v_y, dtype=torch.float64)
        if x0_variance == "pigdm":
            alpha, sigma = sde.marginal(t.to(torch.float64))
            variance = variance + v_d * sigma**2 / (alpha**2 * v_d + sigma**2)
        residual = (target - measured).pow(2).flatten(1).sum(1)
        return -residual / (2 * variance.to(x.dtype))

    return GradientGuided(model, sde, log_likelihood, scale, rows=y.shape[0] if y.shape[0] > 1 else None)
