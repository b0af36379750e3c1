"""Parametrizations of the denoiser and a wrapper turning any network into a model.

Given x_t = α x_0 + σ ε (docs/conventions.md §1) the four common outputs are interchangeable:

* ``eps``   ε̂                      (Ho et al. 2020)
* ``score`` s = −ε/σ               (Song et al. 2021; the mission's S_θ = −ε_θ/√(1 − ᾱ))
* ``x0``    x̂_0 = (x − σ ε)/α
* ``v``     v = α ε − σ x_0        (Salimans & Ho 2022, §4)

The v relations are solved in general, without assuming α² + σ² = 1, so they hold for
sub-VP and VE too: ε = (α v + σ x)/(α² + σ²), x_0 = (α x − σ v)/(α² + σ²).

``alpha`` and ``sigma`` are floats or tensors broadcastable against ``x`` (use ``append_dims``).

**The model protocol.** A model is ``model(x, t, **cond) -> prediction`` with an attribute
``prediction`` naming what it returns. :func:`as_model` wraps a network or a plain function once;
:func:`resolve_prediction` reads the kind back, and :func:`eps_and_x0` / :func:`score` are the one
place that turns any output into ε̂, x̂_0 and the score (used by the samplers, the likelihoods, the
losses and the diagnostics). Conventions: docs/conventions.md.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ._checks import append_dims, check_name
from .registry import Registry

__all__ = [
    "PRECONDITIONS",
    "PREDICTIONS",
    "TIME_LABELS",
    "EDMPrecond",
    "FunctionModel",
    "Model",
    "as_model",
    "convert",
    "eps_and_x0",
    "from_eps",
    "resolve_prediction",
    "score",
    "to_eps",
]

PREDICTIONS = ("eps", "score", "x0", "v")


def _check_kind(kind: str) -> None:
    check_name(kind, "prediction", PREDICTIONS)


def to_eps(kind: str, pred: Tensor, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """ε implied by a prediction of kind ``kind`` at x_t = x (from :func:`eps_and_x0`)."""
    return eps_and_x0(kind, pred, x, alpha, sigma)[0]


def from_eps(kind: str, eps: Tensor, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """The prediction of kind ``kind`` implied by ε at x_t = x."""
    _check_kind(kind)
    if kind == "eps":
        return eps
    if kind == "score":
        return -eps / sigma
    x0 = (x - sigma * eps) / alpha
    if kind == "x0":
        return x0
    return alpha * eps - sigma * x0


def convert(pred: Tensor, source: str, target: str, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """Convert a prediction between kinds, e.g. ``convert(v, "v", "x0", x, alpha, sigma)``."""
    if source == target:
        _check_kind(source)
        return pred
    eps, x0 = eps_and_x0(source, pred, x, alpha, sigma)  # per kind: no division by a vanishing α
    if target == "x0":
        return x0
    return from_eps(target, eps, x, alpha, sigma)


# --------------------------------------------------------------------------- time labels

TimeLabel = Callable[[Tensor], Tensor]
TIME_LABELS: Registry[Callable[..., TimeLabel]] = Registry("time label")
"""How continuous t is shown to a network: factories ``make(T=1.0, N=1000) -> label(t)``."""


@TIME_LABELS.register("continuous")
def _continuous(T: float = 1.0, N: int = 1000) -> TimeLabel:
    """The network sees t itself."""
    return lambda t: t


@TIME_LABELS.register("scaled")
def _scaled(T: float = 1.0, N: int = 1000) -> TimeLabel:
    """label = (N − 1)·t/T, i.e. 999·t (score_sde_pytorch and EDM's VP convention)."""
    return lambda t: t * ((N - 1) / T)


@TIME_LABELS.register("index")
def _index(T: float = 1.0, N: int = 1000) -> TimeLabel:
    """The DDPM step index i − 1 ∈ {0..N−1} of t = t_i = iT/N (Ho et al.'s network input)."""
    return lambda t: (torch.round(t * (N / T)) - 1).clamp(0, N - 1)


class Model(nn.Module):
    """``model(x, t, **cond) -> prediction``: a network with an explicit time-label mapping.

    Args:
        net: any module called as ``net(x, label, **cond)`` with label of shape (batch,)
            (``cond`` is passed only when non-empty, so ``net(x, label)`` networks work).
        prediction: what ``net`` returns (``eps``, ``score``, ``x0`` or ``v``).
        time_label: ``continuous``, ``scaled`` (999·t) or ``index`` (DDPM's i − 1), or a callable.
        T, N: the SDE's end time and, for ``scaled``/``index``, the number of discrete steps.
    """

    def __init__(
        self,
        net: nn.Module,
        prediction: str = "eps",
        time_label: str | TimeLabel = "continuous",
        *,
        T: float = 1.0,
        N: int = 1000,
    ) -> None:
        super().__init__()
        _check_kind(prediction)
        self.net = net
        self.prediction = prediction
        self.time_label = time_label if callable(time_label) else TIME_LABELS.get(time_label)(T=T, N=N)

    def forward(self, x: Tensor, t: Tensor, **cond) -> Tensor:
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        label = self.time_label(t).to(x.dtype)
        return self.net(x, label, **cond) if cond else self.net(x, label)


PRECONDITIONS = ("none", "edm")


class EDMPrecond(nn.Module):
    """EDM's preconditioning (Karras et al. 2022, Table 1) written for any linear SDE: an ``x0`` model.

    With σ̃ = σ(t)/α(t) and x̃ = x/α(t) — the variance-exploding view of x_t = α x_0 + σ ε, in which
    x̃ = x_0 + σ̃ ε — the network output F gives the denoiser

        D(x̃) = c_skip x̃ + c_out F(c_in x̃, c_noise),
        c_in = 1/√(σ̃² + σ_d²),  c_skip = σ_d²/(σ̃² + σ_d²),  c_out = σ̃ σ_d/√(σ̃² + σ_d²),  c_noise = ¼ ln σ̃,

    an estimate of x_0, so the model carries ``prediction = "x0"`` and the samplers, losses and
    likelihoods use it unchanged. The network sees c_noise in place of a time label (EDM's choice:
    the sinusoidal embedding of ¼ ln σ̃). c_in makes its input unit-variance when x_0 has standard
    deviation σ_d; c_skip and c_out make its regression target (x_0 − c_skip x̃)/c_out unit-variance.
    Train it with the ``edm`` weighting (unit weight on that target) and ``lognormal`` times.

    Args:
        net: called as ``net(x, c_noise, **cond)`` with c_noise of shape (batch,).
        sde: the forward SDE giving α(t), σ(t).
        sigma_data: σ_d, the standard deviation of the data (0.5 for images in [−1, 1], EDM's value).
    """

    prediction = "x0"

    def __init__(self, net: nn.Module, sde, sigma_data: float = 0.5) -> None:
        super().__init__()
        if not (isinstance(sigma_data, (int, float)) and sigma_data > 0):
            raise ValueError(f"sigma_data must be a positive number, got {sigma_data!r}")
        self.net, self.sde, self.sigma_data = net, sde, float(sigma_data)

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(α, c_in, c_skip, c_out, c_noise) at times ``t`` (float64, shape of ``t``)."""
        alpha, sigma = self.sde.marginal(t.to(torch.float64), check=False)
        s, d2 = sigma / alpha, self.sigma_data**2
        norm = s * s + d2
        return alpha, norm.rsqrt(), d2 / norm, s * self.sigma_data * norm.rsqrt(), 0.25 * torch.log(s)

    def forward(self, x: Tensor, t: Tensor, **cond) -> Tensor:
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        alpha, c_in, c_skip, c_out, c_noise = (
            v.to(x.dtype) if i == 4 else append_dims(v, x.ndim).to(x.dtype) for i, v in enumerate(self.coefficients(t))
        )
        x_tilde = x / alpha
        out = self.net(c_in * x_tilde, c_noise, **cond) if cond else self.net(c_in * x_tilde, c_noise)
        return c_skip * x_tilde + c_out * out.to(x.dtype)


class FunctionModel:
    """A plain function ``fn(x, t, **cond)`` seen as a model: it carries ``prediction`` and gets t as is."""

    def __init__(self, fn: Callable[..., Tensor], prediction: str = "eps") -> None:
        _check_kind(prediction)
        self.fn, self.prediction = fn, prediction

    def __call__(self, x: Tensor, t: Tensor, **cond) -> Tensor:
        return self.fn(x, t, **cond) if cond else self.fn(x, t)

    def __repr__(self) -> str:
        return f"FunctionModel({getattr(self.fn, '__name__', self.fn)!r}, prediction={self.prediction!r})"


def as_model(
    net: nn.Module | Callable[..., Tensor],
    prediction: str | None = None,
    time_label: str | TimeLabel = "continuous",
    **kwargs,
) -> Model | FunctionModel:
    """Wrap ``net`` once as a model carrying its ``prediction`` (default ``eps``).

    A module becomes a :class:`Model` (see there for ``time_label``, ``T``, ``N``); a plain callable
    ``fn(x, t)`` becomes a :class:`FunctionModel` that gets t directly. Something that already has
    a ``prediction`` attribute is returned unchanged when no different ``prediction`` is asked for.
    """
    own = getattr(net, "prediction", None)
    if own is not None:
        if prediction is None or prediction == own:
            return net
        raise ValueError(
            f"the model already predicts {own!r}; as_model(..., prediction={prediction!r}) cannot relabel it "
            "(wrap its underlying network instead)"
        )
    prediction = "eps" if prediction is None else prediction
    if isinstance(net, nn.Module):
        return Model(net, prediction, time_label, **kwargs)
    if not callable(net):
        raise TypeError(f"as_model needs a module or a callable fn(x, t), got {type(net).__name__}")
    if kwargs or time_label != "continuous":
        raise ValueError("time_label, T and N apply to modules; a plain function gets t directly")
    return FunctionModel(net, prediction)


def resolve_prediction(model: Callable[..., Tensor], prediction: str | None = None) -> str:
    """The kind of output ``model`` returns: its ``prediction`` attribute, else ``prediction``, else ``eps``.

    A ``prediction`` argument that contradicts the model's own attribute is an error.
    """
    if prediction is not None:
        _check_kind(prediction)
    own = getattr(model, "prediction", None)
    if own is not None:
        _check_kind(own)
        if prediction is not None and prediction != own:
            raise ValueError(
                f"prediction={prediction!r} was given, but the model says it predicts {own!r}; "
                "drop the prediction argument (it is for plain functions without a .prediction attribute)"
            )
        return own
    kind = "eps" if prediction is None else prediction
    _check_kind(kind)
    return kind


# --------------------------------------------------------------------------- the one conversion


def eps_and_x0(kind: str, pred: Tensor, x: Tensor, alpha, sigma) -> tuple[Tensor, Tensor]:
    """(ε̂, x̂_0) at x_t = x implied by an output ``pred`` of kind ``kind``.

    ``alpha`` and ``sigma`` are floats or tensors broadcastable against ``x``. Written per kind so
    that no conversion divides by a coefficient that may vanish: ``x0`` at σ = 0 gives ε̂ = 0 (for
    a float σ), ``v`` never divides by α or σ.
    """
    if kind == "eps":
        eps = pred
        x0 = (x - sigma * eps) / alpha
    elif kind == "x0":
        x0 = pred
        if isinstance(sigma, Tensor):
            eps = (x - alpha * x0) / sigma
        else:
            eps = (x - alpha * x0) / sigma if sigma > 0 else torch.zeros_like(x)
    elif kind == "score":
        eps = -sigma * pred
        x0 = (x + sigma * sigma * pred) / alpha
    elif kind == "v":  # v = α ε − σ x_0 (Salimans & Ho 2022); general α² + σ² (sub-VP, VE)
        norm = alpha * alpha + sigma * sigma
        x0 = (alpha * x - sigma * pred) / norm
        eps = (alpha * pred + sigma * x) / norm
    else:
        _check_kind(kind)
    return eps, x0


def score(kind: str, pred: Tensor, x: Tensor, alpha, sigma) -> Tensor:
    """The score ∇ log p_t(x) = −ε̂/σ implied by an output of kind ``kind`` (``score``: as is)."""
    if kind == "score":
        return pred
    return -eps_and_x0(kind, pred, x, alpha, sigma)[0] / sigma
