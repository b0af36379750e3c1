"""The toy 2-D sets: seeded point clouds for quick runs and closed-form checks.

Each generator ``fn(n, generator)`` returns n float64 points, roughly centred with unit-order
spread, drawn with ``generator`` only; a labelled one returns ``(points, component ids)``.
:data:`TOY_SETS` lists them by dataset name, in the order :data:`scoresde.data.DATASETS`
registers them (the data loader wraps each: float32, seeded by ``seed``, labels as
:class:`scoresde.data.Labels`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["TOY_SETS", "checkerboard", "eight_gaussians", "gaussian", "moons", "rings", "swiss_roll"]

TOY_SETS: dict[str, tuple[Callable[[int, torch.Generator], Tensor | tuple[Tensor, Tensor]], int | None]] = {}
"""Dataset name -> (generator function, number of classes of its labels or None when unlabelled)."""


def _toy(name: str, classes: int | None = None):
    """List a toy set under ``name``; with ``classes`` its function returns (points, component ids)."""

    def add(fn: Callable) -> Callable:
        TOY_SETS[name] = (fn, classes)
        return fn

    return add


@_toy("swiss-roll")
def swiss_roll(n: int, g: torch.Generator) -> Tensor:
    """The 2-D swiss roll (t cos t, t sin t), t ∈ [1.5π, 4.5π], scaled by 1/5, with noise 0.05."""
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g, dtype=torch.float64))
    x = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) / 5
    return x + 0.05 * torch.randn(n, 2, generator=g, dtype=torch.float64)


@_toy("moons")
def moons(n: int, g: torch.Generator) -> Tensor:
    """Two interleaving half circles (as scikit-learn's make_moons), centred, noise 0.05."""
    upper = torch.rand(n, generator=g) < 0.5
    theta = math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    x = torch.stack([torch.cos(theta), torch.sin(theta)], 1)
    x[~upper] = torch.stack([1 - torch.cos(theta[~upper]), 0.5 - torch.sin(theta[~upper])], 1)
    x = x - torch.tensor([0.5, 0.25], dtype=torch.float64)
    return x + 0.05 * torch.randn(n, 2, generator=g, dtype=torch.float64)


@_toy("8gaussians", classes=8)
def eight_gaussians(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Eight Gaussians (std 0.1) evenly spaced on a circle of radius 2 (Grathwohl et al. 2019, FFJORD).

    Labelled by component: class k is the Gaussian at angle k·45°.
    """
    k = torch.randint(0, 8, (n,), generator=g)
    angle = k.to(torch.float64) * math.pi / 4
    centres = 2 * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    return centres + 0.1 * torch.randn(n, 2, generator=g, dtype=torch.float64), k


@_toy("checkerboard")
def checkerboard(n: int, g: torch.Generator) -> Tensor:
    """Uniform on the black squares of a 4×4 checkerboard on [−2, 2]² (FFJORD's toy)."""
    x1 = 4 * torch.rand(n, generator=g, dtype=torch.float64) - 2
    x2 = torch.rand(n, generator=g, dtype=torch.float64) - torch.randint(0, 2, (n,), generator=g) * 2.0
    x2 = x2 + (torch.floor(x1) % 2)
    return torch.stack([x1, x2], 1)


@_toy("rings")
def rings(n: int, g: torch.Generator) -> Tensor:
    """Four concentric circles of radii 0.5, 1, 1.5, 2 (FFJORD's toy), noise 0.04."""
    r = 0.5 * torch.randint(1, 5, (n,), generator=g).to(torch.float64)
    theta = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    x = r[:, None] * torch.stack([torch.cos(theta), torch.sin(theta)], 1)
    return x + 0.04 * torch.randn(n, 2, generator=g, dtype=torch.float64)


@_toy("gaussian")
def gaussian(n: int, g: torch.Generator) -> Tensor:
    """An anisotropic 2-D Gaussian, mean (1, −0.5), covariance [[1, 0.6], [0.6, 0.5]] (closed-form checks)."""
    chol = torch.linalg.cholesky(torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=torch.float64))
    return torch.tensor([1.0, -0.5], dtype=torch.float64) + torch.randn(n, 2, generator=g, dtype=torch.float64) @ chol.T
