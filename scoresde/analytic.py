"""Data distributions whose score is known exactly at every t, under any of our SDEs.

For a linear-Gaussian SDE, x_t = α(t) x_0 + σ(t) ε (docs/conventions.md §1), a Gaussian mixture with
per-component diagonal covariances stays one at every time:

    p_t(x) = Σ_k w_k N(x; α μ_k, diag(α² s_k² + σ²)).

So its exact score, ε* = −σ ∇log p_t, x̂_0 = E[x_0 | x_t] and log p_t are available in closed
form. :meth:`GaussianMixture.model` turns them into a model ``model(x, t)`` of any prediction
kind, which is ground truth for sampler tests, benchmarks and ``scoresde sample --model gmm``;
it is also class-conditional, ``model(x, t, y=k)``, with the components as classes.
All arithmetic is float64; outputs take the input's dtype.

>>> import scoresde as sd
>>> data = sd.analytic.gmm()                       # the default 2-D mixture
>>> model = data.model(sd.VPSDE(), "eps")          # exact ε*(x, t)
>>> x = sd.sample(model, sd.VPSDE(), (1000, 2), solver="dpm-solver++", steps=20)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ._checks import append_dims, check_name
from .labels import check_labels
from .param import PREDICTIONS, from_eps
from .sde import SDE

if TYPE_CHECKING:
    from .diffusion_model import DiffusionModel

__all__ = ["MODELS", "AnalyticModel", "Gaussian", "GaussianMixture", "gaussian", "gmm", "gmm_hard"]


class GaussianMixture:
    """Σ_k w_k N(μ_k, diag s_k²) on data of any shape (each component's μ_k, s_k have that shape).

    Args:
        weights: (K,) positive mixture weights (normalized here).
        means: (K, *data_shape) component means.
        stds: (K, *data_shape) per-coordinate standard deviations (anything broadcastable to ``means``).
    """

    def __init__(self, weights: Tensor | Sequence[float], means: Tensor | Sequence, stds: Tensor | Sequence | float):
        w = torch.as_tensor(weights, dtype=torch.float64).flatten()
        mu = torch.as_tensor(means, dtype=torch.float64)
        if mu.ndim < 2 or mu.shape[0] != w.numel():
            raise ValueError(
                f"means must have shape (K, *data_shape) with K = len(weights) = {w.numel()}, got {tuple(mu.shape)}"
            )
        try:
            s = torch.as_tensor(stds, dtype=torch.float64).expand_as(mu).clone()
        except RuntimeError:
            raise ValueError(
                f"stds must broadcast to the means' shape {tuple(mu.shape)}, got {tuple(torch.as_tensor(stds).shape)}"
            ) from None
        for name, v in (("weights", w), ("means", mu), ("stds", s)):
            if not torch.isfinite(v).all():
                raise ValueError(f"{name} must be finite")
        if (w <= 0).any():
            raise ValueError("weights must be positive")
        if (s <= 0).any():
            raise ValueError("stds must be positive")
        self.weights = w / w.sum()
        self.means = mu
        self.stds = s
        self.data_shape = tuple(mu.shape[1:])
        self._mu = mu.flatten(1)  # (K, D)
        self._var = s.flatten(1) ** 2

    @property
    def K(self) -> int:
        return self.weights.numel()

    @property
    def dim(self) -> int:
        return self._mu.shape[1]

    # ---- data ------------------------------------------------------------------------------
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """n draws from p_0, shape (n, *data_shape); randomness only from ``generator``."""
        gen_device = generator.device if generator is not None else torch.device("cpu")
        k = torch.multinomial(self.weights.to(gen_device), n, replacement=True, generator=generator)
        z = torch.randn((n, self.dim), generator=generator, dtype=torch.float64, device=gen_device)
        x = self._mu.to(gen_device)[k] + self._var.to(gen_device)[k].sqrt() * z
        return x.reshape(n, *self.data_shape).to(dtype=dtype, device=device or gen_device)

    def mean(self) -> Tensor:
        """E[x_0], shape data_shape."""
        return (self.weights[:, None] * self._mu).sum(0).reshape(self.data_shape)

    def variance(self) -> Tensor:
        """Per-coordinate Var[x_0], shape data_shape (law of total variance)."""
        m = (self.weights[:, None] * self._mu).sum(0)
        second = (self.weights[:, None] * (self._var + self._mu**2)).sum(0)
        return (second - m**2).reshape(self.data_shape)

    # ---- p_t in closed form ----------------------------------------------------------------
    def _prepare(
        self, x: Tensor, sde: SDE | None, t: Tensor | float | None, coefs: tuple[Tensor, Tensor] | None = None
    ):
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(f"x must have shape (batch, *{self.data_shape}), got {tuple(x.shape)}")
        x64 = x.to(torch.float64).flatten(1)  # (B, D); differentiable for autograd checks
        B = x64.shape[0]
        if coefs is not None:
            alpha, sigma = coefs
        elif t is None:
            alpha, sigma = torch.ones(B, dtype=torch.float64), torch.zeros(B, dtype=torch.float64)
        else:
            if sde is None:
                raise ValueError("give the SDE whose marginal p_t is meant (sde=...) together with t")
            alpha, sigma = sde.marginal(torch.as_tensor(t, dtype=torch.float64, device=x.device))
        alpha, sigma = alpha.to(x.device).expand(B), sigma.to(x.device).expand(B)
        mu, var = self._mu.to(x.device), self._var.to(x.device)
        mean_t = alpha[:, None, None] * mu  # (B, K, D)
        var_t = alpha[:, None, None] ** 2 * var + sigma[:, None, None] ** 2
        diff = x64[:, None, :] - mean_t
        # log N(x; α μ_k, diag v_k) per component, (B, K)
        log_n = -0.5 * ((diff**2 / var_t).sum(-1) + torch.log(2 * math.pi * var_t).sum(-1))
        log_joint = torch.log(self.weights.to(x.device)) + log_n
        return x64, alpha, sigma, diff, var_t, log_joint

    def log_prob(self, x: Tensor, sde: SDE | None = None, t: Tensor | float | None = None) -> Tensor:
        """Exact log p_t(x), shape (batch,): of the data (t None) or of the SDE's marginal at t."""
        *_, log_joint = self._prepare(x, sde, t)
        return torch.logsumexp(log_joint, dim=1)

    def responsibilities(self, x: Tensor, sde: SDE | None = None, t: Tensor | float | None = None) -> Tensor:
        """P(component k | x_t = x), shape (batch, K)."""
        *_, log_joint = self._prepare(x, sde, t)
        return torch.softmax(log_joint, dim=1)

    def score(self, x: Tensor, sde: SDE | None = None, t: Tensor | float | None = None) -> Tensor:
        """∇_x log p_t(x) = −Σ_k r_k (x − α μ_k)/v_k, shaped like x."""
        _, _, _, diff, var_t, log_joint = self._prepare(x, sde, t)
        r = torch.softmax(log_joint, dim=1)
        s = -(r[..., None] * diff / var_t).sum(1)
        return s.reshape(x.shape).to(x.dtype)

    def eps(self, x: Tensor, sde: SDE, t: Tensor | float) -> Tensor:
        """The exact noise prediction ε*(x, t) = −σ(t) ∇log p_t(x) = Σ_k r_k σ (x − α μ_k)/v_k."""
        return self._eps(x, sde, t)

    def _eps(
        self,
        x: Tensor,
        sde: SDE | None,
        t,
        coefs: tuple[Tensor, Tensor] | None = None,
        component: Tensor | None = None,
    ) -> Tensor:
        _, _, sigma, diff, var_t, log_joint = self._prepare(x, sde, t, coefs)
        if component is not None:
            # given component k the data are N(μ_k, diag s_k²): the responsibilities become one-hot
            # at k (rows with the null id K keep the full mixture)
            k = component.to(x.device)
            mine = torch.arange(self.K, device=x.device)[None] == k[:, None]
            log_joint = torch.where(mine | (k[:, None] == self.K), log_joint, -math.inf)
        r = torch.softmax(log_joint, dim=1)
        e = sigma[:, None] * (r[..., None] * diff / var_t).sum(1)
        return e.reshape(x.shape).to(x.dtype)

    def classifier(self, sde: SDE):
        """The exact time-dependent classifier of the components: ``classifier(x, t) -> (batch, K)``
        logits, log P(component k | x_t = x) (ground truth for classifier guidance)."""

        def logits(x: Tensor, t: Tensor) -> Tensor:
            *_, log_joint = self._prepare(x, sde, t)
            return torch.log_softmax(log_joint, dim=1).to(x.dtype)

        return logits

    def posterior(self, mask: Tensor, y: Tensor, noise_std: float) -> GaussianMixture:
        """The law of x_0 given y = m ⊙ x_0 + n, n ~ N(0, noise_std² I) on the observed coordinates
        (``mask`` m of 0/1, shaped like one sample; ``y`` one observation): again a mixture with
        diagonal covariances. Component k: on observed coordinates the Gaussian update
        μ ← μ + s² (y − μ)/(s² + σ_y²), s² ← s² σ_y²/(s² + σ_y²); weight ∝ w_k N(y; μ_k, s_k² + σ_y²)."""
        m = torch.as_tensor(mask, dtype=torch.float64).expand(self.data_shape).flatten().bool()
        y = torch.as_tensor(y, dtype=torch.float64).expand(self.data_shape).flatten()
        if not (math.isfinite(noise_std) and noise_std > 0):
            raise ValueError(f"noise_std must be positive (exact observation: take it small), got {noise_std}")
        if not m.any():
            raise ValueError("the mask observes nothing: the posterior is the prior")
        v_y = float(noise_std) ** 2
        mu, var = self._mu.clone(), self._var.clone()
        gain = var[:, m] / (var[:, m] + v_y)
        log_evidence = -0.5 * (
            ((y[m] - mu[:, m]) ** 2 / (var[:, m] + v_y)) + torch.log(2 * math.pi * (var[:, m] + v_y))
        )
        mu[:, m] = mu[:, m] + gain * (y[m] - mu[:, m])
        var[:, m] = var[:, m] * v_y / (var[:, m] + v_y)
        weights = torch.softmax(torch.log(self.weights) + log_evidence.sum(1), dim=0)
        shape = (self.K, *self.data_shape)
        return GaussianMixture(weights, mu.reshape(shape), var.sqrt().reshape(shape))

    def model(self, sde: SDE, prediction: str = "eps") -> AnalyticModel:
        """``model(x, t, y=None) -> prediction`` (eps, score, x0 or v), exact for ``sde``.

        The model is also class-conditional, with the K components as classes: ``y`` (batch,)
        holds component ids, and id K (or ``y=None``) is the null label, the full mixture.
        """
        return AnalyticModel(self, sde, prediction)

    def diffusion_model(
        self, sde: SDE | None = None, prediction: str = "eps", *, name: str | None = None, reference: int = 4000
    ) -> DiffusionModel:
        """The exact :meth:`model` under ``sde`` (default ``VPSDE()``) as a model ready to use, with
        ``reference`` draws of the data (seeded) as its reference and the components as its classes.
        ``name`` names it in reports (``analytic gmm``)."""
        from .diffusion_model import DiffusionModel, Provenance
        from .sde import VPSDE

        sde = VPSDE() if sde is None else sde
        label = f"analytic {name}" if name else f"analytic {self!r}"
        return DiffusionModel(
            self.model(sde, prediction),
            sde,
            self.data_shape,
            "points",
            Provenance("analytic", label, origin=self),
            num_classes=self.K,
            class_names=tuple(str(k) for k in range(self.K)),
            reference=self.sample(reference, torch.Generator().manual_seed(12345)),
            dataset=name,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(K={self.K}, data_shape={self.data_shape})"


class Gaussian(GaussianMixture):
    """N(mean, diag std²) on data of any shape: the one-component mixture."""

    def __init__(self, mean: Tensor | Sequence, std: Tensor | Sequence | float) -> None:
        mean = torch.as_tensor(mean, dtype=torch.float64)
        super().__init__([1.0], mean[None], torch.as_tensor(std, dtype=torch.float64)[None])

    def marginal_moments(self, sde: SDE, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """(mean, variance) of p_t: α μ and α² s² + σ² (scalar t)."""
        alpha, sigma = sde.marginal(torch.as_tensor(t, dtype=torch.float64))
        return alpha * self.means[0], alpha**2 * self.stds[0] ** 2 + sigma**2


class AnalyticModel:
    """The exact model of a :class:`GaussianMixture` under ``sde``, called as ``model(x, t, y=None)``.

    It is a class-conditional model whose classes are the mixture's components
    (``num_classes = K``): given y = k the data are the single Gaussian N(μ_k, diag s_k²), so

        ε*(x, t | k) = σ (x − α μ_k) / (α² s_k² + σ²),

    while y = K (the null label) or ``y=None`` gives the full mixture's ε*(x, t). This makes
    class-conditional sampling and classifier-free guidance testable against a closed form.
    """

    def __init__(self, data: GaussianMixture, sde: SDE, prediction: str = "eps") -> None:
        check_name(prediction, "prediction", PREDICTIONS)
        self.data, self.sde, self.prediction = data, sde, prediction
        self.num_classes = data.K

    def __call__(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if y is not None:
            y = check_labels(y, x.shape[0], self.num_classes, name="y", check_range=True)
        alpha, sigma = self.sde.marginal(t)  # checked once, float64
        eps = self.data._eps(x, None, None, coefs=(alpha, sigma), component=y)
        if self.prediction == "eps":
            return eps
        alpha, sigma = (append_dims(v.to(x.dtype), x.ndim) for v in (alpha, sigma))
        return from_eps(self.prediction, eps, x, alpha, sigma)


def gmm() -> GaussianMixture:
    """The default 2-D mixture: six tight, unequal, anisotropic modes in [−2, 2]² (weights 0.3 … 0.05)."""
    weights = [0.30, 0.22, 0.18, 0.13, 0.12, 0.05]
    means = [[-1.2, -0.8], [1.0, 1.0], [1.4, -1.0], [-1.0, 1.2], [0.0, 0.1], [0.3, -1.7]]
    stds = [[0.08, 0.15], [0.10, 0.06], [0.05, 0.05], [0.12, 0.08], [0.06, 0.10], [0.05, 0.04]]
    return GaussianMixture(weights, means, stds)


def gmm_hard() -> GaussianMixture:
    """A harder 2-D mixture: nine very tight, unequal modes on a jittered 3×3 lattice (weights 0.26 … 0.02).

    Modes of std 0.015–0.05 (a third of :func:`gmm`'s), 1.1 apart: a few-step sampler that takes its
    last x̂_0 at too high a noise level blurs or misweights them, so mode error separates samplers.
    """
    weights = [0.26, 0.18, 0.14, 0.11, 0.09, 0.08, 0.06, 0.06, 0.02]
    means = [
        [-1.1, -1.1], [0.0, -1.05], [1.15, -1.1],
        [-1.05, 0.0], [0.05, 0.05], [1.1, -0.05],
        [-1.1, 1.1], [0.0, 1.15], [1.05, 1.05],
    ]  # fmt: skip
    stds = [
        [0.02, 0.04], [0.05, 0.02], [0.03, 0.03],
        [0.015, 0.03], [0.04, 0.04], [0.03, 0.015],
        [0.02, 0.02], [0.05, 0.03], [0.025, 0.05],
    ]  # fmt: skip
    return GaussianMixture(weights, means, stds)


def gaussian() -> Gaussian:
    """The default 2-D Gaussian N((0.5, −1), diag(0.3², 1.5²))."""
    return Gaussian([0.5, -1.0], [0.3, 1.5])


MODELS = {"gmm": gmm, "gmm-hard": gmm_hard, "gaussian": gaussian}
"""Analytic data sets by CLI name (``scoresde sample --model NAME``)."""
