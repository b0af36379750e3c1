"""Guidance: classifier-free guidance of a class-conditional model, and autoguidance of any model
by a weaker version of itself.

A conditional model is called ``model(x, t, y=labels)`` with labels in 0 … K − 1 and the null
label ∅ = K for "no class" (:mod:`scoresde.labels`). Classifier-free guidance with scale w
(Ho & Salimans 2022, eq. 6, written so that w = 1 is the conditional model) mixes the two:

    ε̃(x, t, y) = ε̂(x, t, ∅) + w · (ε̂(x, t, y) − ε̂(x, t, ∅)).

w = 0 is the unconditional model, w = 1 the conditional one, w > 1 sharpens towards the class.

**Guiding the raw prediction is exact for every prediction kind.** At fixed (x, t) each kind
is an affine function of ε with coefficients that do not depend on the label (docs/conventions.md §1,
:mod:`scoresde.param`):

    eps:   P = ε
    score: P = −ε/σ
    x0:    P = (x − σ ε)/α
    v:     P = α ε − σ x̂_0 = ((α² + σ²)/α) ε − (σ/α) x,

i.e. P = a(x, t) + b(x, t) ε. Hence

    P_∅ + w (P_y − P_∅) = a + b (ε_∅ + w (ε_y − ε_∅)) = a + b ε̃,

so guiding the prediction the model returns and converting afterwards equals converting first
and guiding ε̂: the wrapper keeps the model's ``.prediction`` and every solver's conversions stay
exact. Both branches run in **one** batched forward: x and t are stacked twice and the labels are
[∅ … ∅, y_1 … y_n]; w = 1 needs only the conditional branch and w = 0 only the unconditional one
(one forward of the plain batch each). A solver therefore counts the same number of function
evaluations with guidance as without.

>>> import scoresde as sd
>>> data = sd.analytic.gmm()                                   # 6 components = 6 classes
>>> model = data.model(sd.VPSDE(), "eps")
>>> guided = sd.guidance.guided(model, 3, guidance=2.0)       # class 3, w = 2
>>> x = sd.sample(guided, sd.VPSDE(), (100, 2), "dpm-solver++", steps=20)  # guided.prediction is "eps"

**Autoguidance** (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself",
eq. 2) steers a model D_1 away from a weaker model D_0 of the same kind — for a trained run, its
EMA weights from early in training (:mod:`scoresde.trainer` keeps them as ``guide.safetensors``):

    D_w(x, t) = D_0(x, t) + w · (D_1(x, t) − D_0(x, t)).

Where the two agree the result is the good model; where the weak one errs more (mostly away from the
data, in shapes it has not learned yet) the difference points further away from that error. It
needs no labels and, unlike classifier-free guidance, does not narrow the distribution to the
modes of a class. By the argument above it is exact for every prediction kind when both models
return the same kind; the two networks differ, so each evaluation is **two** forwards, and a solver
counts both (``forwards = 2``: an autoguided 20-step solve is NFE 42).
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable

import torch
from torch import Tensor

from .labels import check_labels

__all__ = ["AutoGuided", "Guided", "for_rows", "guided", "num_classes_of"]


def _check_scale(scale: float, message: str) -> None:
    """ValueError (``message``, then the value) unless ``scale`` is a finite real number (not a bool)."""
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale):
        raise ValueError(f"{message}, got {scale!r}")


def num_classes_of(model: Callable) -> int | None:
    """The number of classes K of a conditional model, or None if it is unconditional.

    Read from ``model.num_classes``, else from the wrapped network's (``model.net.num_classes``,
    as in :class:`scoresde.param.Model`).
    """
    for owner in (model, getattr(model, "net", None)):
        k = getattr(owner, "num_classes", None)
        if k is not None:
            return int(k)
    return None


class Guided:
    """``guided(x, t) -> prediction``: a class-conditional model at labels y with guidance scale w.

    Args:
        model: a conditional model ``model(x, t, y=labels)`` with a ``.prediction`` attribute and
            ``num_classes`` (on itself or on ``model.net``), or give ``num_classes``.
        y: the class of every sample (an int) or one class per sample (an integer tensor of
            shape (n,), values in 0 … K; K, the null label, samples that row unconditionally).
        guidance: the scale w (finite; 0 unconditional, 1 conditional, > 1 sharper classes).
        null_label: the label given to the model in the unconditional branch (default: K, the
            null id of :mod:`scoresde.labels`).
        num_classes: K, when the model does not carry it.

    Per-sample labels belong to rows: the wrapper must be called with batches of n rows, or
    sliced with :meth:`select` for a chunk of rows (what ``sample(batch_size=...)`` does).

    Raises:
        TypeError: the model has no conditioning support, or y is not an integer label or tensor.
        ValueError: y out of range or of the wrong shape, a non-finite guidance scale.
    """

    def __init__(
        self,
        model: Callable[..., Tensor],
        y: int | Tensor,
        guidance: float = 1.0,
        *,
        null_label: int | None = None,
        num_classes: int | None = None,
    ) -> None:
        k = num_classes if num_classes is not None else num_classes_of(model)
        if k is None:
            raise TypeError(
                f"the model ({type(model).__name__}) is unconditional: it has no num_classes, so it cannot be "
                "sampled at a class y or guided; use a model trained with class labels (--conditional)"
            )
        _check_scale(guidance, "guidance must be a finite number (0 unconditional, 1 conditional)")
        self.model = model
        self.prediction = getattr(model, "prediction", None)
        self.forwards = getattr(model, "forwards", 1)  # both branches in one forward (of each network)
        self.num_classes = int(k)
        self.null_label = self.num_classes if null_label is None else int(null_label)
        self.guidance = float(guidance)
        if isinstance(y, bool):
            raise TypeError(f"y must be a class id (int) or an integer tensor of shape (n,), got {y!r}")
        if isinstance(y, numbers.Integral):
            if not 0 <= int(y) <= self.num_classes:
                raise ValueError(
                    f"class y must lie in 0 … {self.num_classes - 1} (or {self.num_classes} = unconditional), got {y}"
                )
            self.y: int | Tensor = int(y)
        elif isinstance(y, Tensor):
            self.y = check_labels(y, None, self.num_classes, name="y", check_range=True)
        else:
            raise TypeError(f"y must be a class id (int) or an integer tensor of shape (n,), got {type(y).__name__}")

    @property
    def rows(self) -> int | None:
        """The number of samples the labels are for (None when one class is given for all)."""
        return None if isinstance(self.y, int) else self.y.shape[0]

    def select(self, start: int, stop: int) -> Guided:
        """The same guided model for the rows start … stop − 1 of the batch (a chunk of ``sample``)."""
        if isinstance(self.y, int):
            return self
        if not 0 <= start < stop <= self.y.shape[0]:
            raise ValueError(f"rows {start}:{stop} are outside the {self.y.shape[0]} labels")
        chunk = copy.copy(self)
        chunk.y = self.y[start:stop]
        return chunk

    def tile(self, k: int) -> Guided:
        """The same guided model for a batch of k stacked copies of the rows, ``x.expand(k, *x.shape)``
        flattened to (k·n, ...) (e.g. many times per sample in one forward, as the VLB does)."""
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        if isinstance(self.y, int):
            return self
        tiled = copy.copy(self)
        tiled.y = self.y.repeat(int(k))
        return tiled

    def labels(self, batch: int, device: torch.device | str) -> Tensor:
        """The conditional labels (batch,) for a batch of ``batch`` rows."""
        if isinstance(self.y, int):
            return torch.full((batch,), self.y, dtype=torch.long, device=device)
        if self.y.shape[0] != batch:
            raise ValueError(
                f"the guided model holds labels for {self.y.shape[0]} samples but was called with a batch of "
                f"{batch}; slice it with .select(start, stop) for a chunk of rows"
            )
        if self.y.device != torch.device(device):
            self.y = self.y.to(device)  # once: later calls on this device reuse it
        return self.y

    def __call__(self, x: Tensor, t: Tensor, **cond) -> Tensor:
        if "y" in cond:
            raise TypeError("this guided model already holds its labels y; call it as guided(x, t)")
        n = x.shape[0]
        y = self.labels(n, x.device)
        w = self.guidance
        if w == 1.0:
            return self.model(x, t, y=y, **cond)
        null = torch.full_like(y, self.null_label)
        if w == 0.0:
            return self.model(x, t, y=null, **cond)
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(n)
        both = {key: _twice(v, n) for key, v in cond.items()}
        out = self.model(torch.cat([x, x]), torch.cat([t, t]), y=torch.cat([null, y]), **both)
        uncond, c = out[:n], out[n:]
        return uncond + w * (c - uncond)  # Ho & Salimans 2022, eq. 6 (w here is their 1 + w)

    def __repr__(self) -> str:
        y = self.y if isinstance(self.y, int) else f"<{self.y.shape[0]} labels>"
        return f"Guided({type(self.model).__name__}, y={y}, guidance={self.guidance}, prediction={self.prediction!r})"


def _twice(v, n: int):
    """Stack a per-row conditioning tensor twice (for the two branches); pass anything else through."""
    if isinstance(v, Tensor) and v.ndim >= 1 and v.shape[0] == n:
        return torch.cat([v, v])
    return v


def guided(
    model: Callable[..., Tensor],
    y: int | Tensor,
    guidance: float = 1.0,
    *,
    null_label: int | None = None,
    num_classes: int | None = None,
) -> Guided:
    """A :class:`Guided` model: ``model`` at classes y with classifier-free guidance scale w (see there)."""
    return Guided(model, y, guidance, null_label=null_label, num_classes=num_classes)


class AutoGuided:
    """``model(x, t, **cond) -> prediction``: ``model`` guided away from the weaker ``guide`` with
    scale w (autoguidance; see the module docstring). w = 1 is ``model`` alone (one forward).

    Both take the same conditioning (a conditional pair takes ``y``, so classifier-free guidance
    can wrap this) and must return the same prediction kind.

    Raises:
        ValueError: a non-finite scale, or models returning different prediction kinds.
    """

    def __init__(self, model: Callable[..., Tensor], guide: Callable[..., Tensor], guidance: float) -> None:
        _check_scale(guidance, "autoguidance must be a finite number (1 = the model alone)")
        prediction = getattr(model, "prediction", None)
        if getattr(guide, "prediction", None) != prediction:
            raise ValueError(
                f"the guide returns {getattr(guide, 'prediction', None)!r} but the model {prediction!r}: "
                "autoguidance mixes predictions of one kind"
            )
        self.model, self.guide, self.guidance = model, guide, float(guidance)
        self.prediction = prediction
        self.num_classes = num_classes_of(model)
        self.forwards = 1 if self.guidance == 1.0 else 2  # network forwards per evaluation (the solver's NFE)

    def __call__(self, x: Tensor, t: Tensor, **cond) -> Tensor:
        good = self.model(x, t, **cond)
        if self.guidance == 1.0:
            return good
        weak = self.guide(x, t, **cond)
        return weak + self.guidance * (good - weak)

    def __repr__(self) -> str:
        return f"AutoGuided({type(self.model).__name__}, guidance={self.guidance}, prediction={self.prediction!r})"


def for_rows(model: Callable[..., Tensor], start: int, stop: int) -> Callable[..., Tensor]:
    """The model for rows start … stop − 1 of a batch: ``model.select`` where it has per-row labels
    (a :class:`Guided` model), else the model itself. Samplers call it once per chunk."""
    select = getattr(model, "select", None)
    return select(start, stop) if callable(select) else model
