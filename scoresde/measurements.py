"""Measurement operators A for inverse problems y = A(x) + n: the built-ins of ``--measure``.

An operator is any differentiable function of a batch, ``A(x) -> y`` (batch first); diffusion
posterior sampling (:func:`scoresde.gradient_guidance.dps`) differentiates ‖y − A(x̂_0)‖² through
it. The registry :data:`MEASUREMENTS` holds the built-ins by CLI name, each ``factory(**options) -> A``:

* ``mask`` — observe the pixels where ``mask`` is 1: A(x) = m ⊙ x (inpainting as an inverse problem);
* ``blur`` — a Gaussian blur, depthwise, ``kernel`` × ``kernel`` with standard deviation ``width``
  pixels, reflected at the border (deblurring);
* ``downsample`` — the mean over ``factor`` × ``factor`` blocks (super-resolution);
* ``greyscale`` — the mean over the colour channels, kept as one channel (colourization).

All are linear, so with Gaussian noise the exact posterior of a Gaussian-mixture prior is again a
Gaussian mixture (:meth:`scoresde.analytic.GaussianMixture.posterior` for ``mask``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_int
from .registry import Registry

__all__ = ["MEASUREMENTS", "blur", "downsample", "greyscale", "make_measurement", "mask"]

Operator = Callable[[Tensor], Tensor]

MEASUREMENTS: Registry[Callable[..., Operator]] = Registry("measurement")
"""Built-in measurement operators by CLI name; each entry is ``factory(**options) -> A``."""


def _images(x: Tensor, who: str) -> Tensor:
    if x.ndim != 4:
        raise ValueError(f"the {who} measurement takes images (batch, C, H, W), got shape {tuple(x.shape)}")
    return x


@MEASUREMENTS.register("mask")
def mask(mask: Tensor) -> Operator:
    """A(x) = m ⊙ x: the values where ``mask`` is 1 (a 0/1 tensor broadcastable to x)."""
    m = torch.as_tensor(mask)
    if not bool(((m == 0) | (m == 1)).all()):
        raise ValueError("mask must hold only 0 (hidden) and 1 (observed)")

    def observe(x: Tensor) -> Tensor:
        return x * m.to(device=x.device, dtype=x.dtype)

    return observe


@MEASUREMENTS.register("blur")
def blur(kernel: int = 5, width: float = 1.0) -> Operator:
    """A Gaussian blur: ``kernel`` × ``kernel`` (odd), standard deviation ``width`` pixels, per channel."""
    kernel = check_int(kernel, "kernel")
    if kernel % 2 == 0:
        raise ValueError(f"kernel must be odd (a centred window), got {kernel}")
    if not (math.isfinite(width) and width > 0):
        raise ValueError(f"width must be a positive number of pixels, got {width}")
    r = torch.arange(kernel, dtype=torch.float64) - kernel // 2
    g = torch.exp(-0.5 * (r / width) ** 2)
    w2 = torch.outer(g, g) / g.sum() ** 2

    def observe(x: Tensor) -> Tensor:
        x = _images(x, "blur")
        c = x.shape[1]
        weight = w2.to(device=x.device, dtype=x.dtype).expand(c, 1, kernel, kernel)
        pad = kernel // 2
        return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="reflect"), weight, groups=c)

    return observe


@MEASUREMENTS.register("downsample")
def downsample(factor: int = 2) -> Operator:
    """The mean over ``factor`` × ``factor`` blocks (the image's sides must divide by ``factor``)."""
    factor = check_int(factor, "factor")

    def observe(x: Tensor) -> Tensor:
        x = _images(x, "downsample")
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"downsample factor {factor} must divide the image size {tuple(x.shape[-2:])}")
        return F.avg_pool2d(x, factor)

    return observe


@MEASUREMENTS.register("greyscale")
def greyscale() -> Operator:
    """The mean over the colour channels, as one channel."""

    def observe(x: Tensor) -> Tensor:
        return _images(x, "greyscale").mean(1, keepdim=True)

    return observe


def make_measurement(name: str, **options) -> Operator:
    """The built-in operator ``name`` with its options (ValueError listing the names for an unknown one)."""
    return MEASUREMENTS.get(name)(**options)
