"""An exponential moving average of a network's weights (the weights one samples from).

    θ_ema ← d θ_ema + (1 − d) θ,   d = min(decay, (1 + n)/(10 + n)) with warm-up (n updates so far)

The warm-up is TensorFlow's ``ExponentialMovingAverage(num_updates=n)``, as in Ho et al. 2020
and Song et al. 2021: early averages forget the random initialization quickly. Buffers (e.g.
normalization statistics) are copied, not averaged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """A frozen copy of ``module`` (``.module``, eval mode) updated in place by :meth:`update`."""

    def __init__(self, module: nn.Module, decay: float, warmup: bool = True) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay, self.warmup = decay, warmup
        self.module = copy.deepcopy(module).requires_grad_(False).eval()
        # listed once: walking the module tree every step costs more than the update itself
        self._pairs = (list(self.module.parameters()), list(module.parameters()))
        self._buffers = list(zip(self.module.buffers(), module.buffers(), strict=True))

    def decay_at(self, num_updates: int) -> float:
        """The decay d used for update number ``num_updates`` (counting from 0)."""
        return min(self.decay, (1 + num_updates) / (10 + num_updates)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, num_updates: int) -> None:
        """θ_ema ← lerp(θ_ema, θ, 1 − d) over all parameters at once; buffers copied."""
        torch._foreach_lerp_(*self._pairs, 1 - self.decay_at(num_updates))
        for b_ema, b in self._buffers:
            b_ema.copy_(b)
