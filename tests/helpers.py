"""Helpers shared by several test modules (imported as ``from helpers import ...``: tests/ is on sys.path)."""

from __future__ import annotations

import torch


class Counting:
    """A conditional model that records the batch size and labels of every call."""

    def __init__(self, model):
        self.model, self.prediction, self.num_classes = model, model.prediction, model.num_classes
        self.calls: list[tuple[int, torch.Tensor | None]] = []

    def __call__(self, x, t, y=None):
        self.calls.append((x.shape[0], None if y is None else y.clone()))
        return self.model(x, t, y=y)
