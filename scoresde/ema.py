"""An exponential moving average of a network's weights (the weights one samples from).

    θ_ema ← d θ_ema + (1 − d) θ,   d = min(decay, (1 + n)/(10 + n)) with warm-up (n updates so far)

The warm-up is TensorFlow's ``ExponentialMovingAverage(num_updates=n)``, as in Ho et al. 2020
and Song et al. 2021: early averages forget the random initialization quickly. Buffers (e.g.
normalization statistics) are copied, not averaged.

The power-function EMA of Karras et al. 2024 (eq. 3), ``gamma=γ > 0``, replaces the decay:

    d_n = (1 − 1/(n + 1))^(γ + 1)

so θ_ema after n updates is the average of the weights along the run with weights ∝ step^γ: its
length grows with the run instead of being fixed. Its standard deviation relative to the run's
length is
σ_rel = ((γ + 1) / ((γ + 2)² (γ + 3)))^½ (:func:`sigma_rel`): γ 16.97 ↔ σ_rel 0.05, γ 6.94 ↔ 0.10.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA", "gamma_for_sigma_rel", "sigma_rel"]


def sigma_rel(gamma: float) -> float:
    """The relative standard deviation of the power-function EMA profile t^γ (Karras et al. 2024, eq. 2)."""
    return ((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3))) ** 0.5


def gamma_for_sigma_rel(target: float) -> float:
    """γ with :func:`sigma_rel` (γ) = ``target`` (σ_rel decreases in γ > −1; bisection on a log scale)."""
    if not 0 < target < sigma_rel(0.0):
        raise ValueError(f"σ_rel must lie in (0, {sigma_rel(0.0):.3f}) for γ ≥ 0, got {target}")
    lo, hi = 0.0, 1e6
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if sigma_rel(mid) > target else (lo, mid)
    return (lo + hi) / 2


class EMA:
    """A frozen copy of ``module`` (``.module``, eval mode) updated in place by :meth:`update`."""

    def __init__(self, module: nn.Module, decay: float, warmup: bool = True, gamma: float = 0.0) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        if not gamma >= 0:
            raise ValueError(f"power EMA γ must be ≥ 0 (0 = off), got {gamma}")
        self.decay, self.warmup, self.gamma = decay, warmup, gamma
        self.module = copy.deepcopy(module).requires_grad_(False).eval()
        # listed once: walking the module tree every step costs more than the update itself
        self._pairs = (list(self.module.parameters()), list(module.parameters()))
        self._buffers = list(zip(self.module.buffers(), module.buffers(), strict=True))

    def decay_at(self, num_updates: int) -> float:
        """The decay d used for update number ``num_updates`` (counting from 0)."""
        if self.gamma > 0:
            return (1 - 1 / (num_updates + 1)) ** (self.gamma + 1)
        return min(self.decay, (1 + num_updates) / (10 + num_updates)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, num_updates: int) -> None:
        """θ_ema ← lerp(θ_ema, θ, 1 − d) over all parameters at once; buffers copied."""
        torch._foreach_lerp_(*self._pairs, 1 - self.decay_at(num_updates))
        for b_ema, b in self._buffers:
            b_ema.copy_(b)
