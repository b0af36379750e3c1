"""Parametrizations of the denoiser and a wrapper turning any network into a model.

Given x_t = α x_0 + σ ε (DESIGN.md §1) the four common outputs are interchangeable:

* ``eps``   ε̂                      (Ho et al. 2020)
* ``score`` s = −ε/σ               (Song et al. 2021; the mission's S_θ = −ε_θ/√(1 − ᾱ))
* ``x0``    x̂_0 = (x − σ ε)/α
* ``v``     v = α ε − σ x_0        (Salimans & Ho 2022, §4)

The v relations are solved in general, without assuming α² + σ² = 1, so they hold for
sub-VP and VE too: ε = (α v + σ x)/(α² + σ²), x_0 = (α x − σ v)/(α² + σ²).

``alpha`` and ``sigma`` are broadcastable against ``x`` (use ``append_dims``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ._checks import append_dims
from .registry import Registry

__all__ = ["PREDICTIONS", "TIME_LABELS", "Model", "as_model", "convert", "from_eps", "to_eps"]

PREDICTIONS = ("eps", "score", "x0", "v")


def _check_kind(kind: str) -> None:
    if kind not in PREDICTIONS:
        raise ValueError(f"unknown prediction {kind!r}; choose one of: {', '.join(PREDICTIONS)}")


def to_eps(kind: str, pred: Tensor, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """ε implied by a prediction of kind ``kind`` at x_t = x."""
    _check_kind(kind)
    if kind == "eps":
        return pred
    if kind == "score":
        return -sigma * pred
    if kind == "x0":
        return (x - alpha * pred) / sigma
    return (alpha * pred + sigma * x) / (alpha**2 + sigma**2)


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
    if source == "v" and target == "x0":  # avoid dividing by α where α → 0
        return (alpha * x - sigma * pred) / (alpha**2 + sigma**2)
    return from_eps(target, to_eps(source, pred, x, alpha, sigma), x, alpha, sigma)


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
    """``model(x, t) -> prediction``: a network with an explicit time-label mapping.

    Args:
        net: any module called as ``net(x, label)`` with label of shape (batch,).
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

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        return self.net(x, self.time_label(t).to(x.dtype))


def as_model(net: nn.Module, prediction: str = "eps", time_label: str | TimeLabel = "continuous", **kwargs) -> Model:
    """Wrap ``net`` as a :class:`Model` (see there)."""
    return Model(net, prediction, time_label, **kwargs)


def broadcast_coefs(alpha: Tensor, sigma: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """(alpha, sigma) of shape (batch,) reshaped to broadcast against x."""
    return append_dims(alpha, x.ndim), append_dims(sigma, x.ndim)
