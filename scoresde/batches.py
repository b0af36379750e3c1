"""The training batches as pure functions of (seed, step): which samples, and which are flipped.

Epochs are seeded permutations of the training set laid end to end and batch ``step`` is the
next ``batch_size`` positions of that sequence (:func:`batch_indices`); ``--hflip`` mirrors the
rows :func:`hflip_mask` draws from (seed, step). Nothing depends on what ran before, so a resumed
run sees the same batches as an uninterrupted one, every rank takes its own slice of the same
global batch, and the in-memory (:class:`MemoryBatches`) and streaming paths
(:class:`scoresde.streaming.StreamingBatches`) agree bitwise.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

__all__ = ["MemoryBatches", "batch_indices", "epoch_permutation", "hflip", "hflip_mask"]


@functools.lru_cache(maxsize=4)
def epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """The order of the ``n`` training samples in ``epoch``: a permutation seeded by (seed, epoch).

    Cached (a batch usually lies inside one epoch); callers index it and must not modify it.
    """
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> Tensor:
    """Indices of global batch ``step`` into ``n`` samples: a pure function of (step, n, batch_size, seed).

    Epochs are seeded permutations laid end to end and batch ``step`` is positions
    ``step·batch_size … (step+1)·batch_size − 1`` of that sequence, so a resumed run sees the same
    batches as an uninterrupted one, and each rank can take its own slice of the same global batch.
    """
    first, last = step * batch_size, (step + 1) * batch_size - 1
    if first // n == last // n:  # the usual case: the batch lies inside one epoch
        start = first % n
        return epoch_permutation(n, seed, first // n)[start : start + batch_size]
    k = torch.arange(first, last + 1)
    epochs, pos = k // n, k % n
    out = torch.empty(batch_size, dtype=torch.long)
    for e in range(first // n, last // n + 1):
        mask = epochs == e
        out[mask] = epoch_permutation(n, seed, e)[pos[mask]]
    return out


def hflip_mask(step: int, batch_size: int, seed: int) -> Tensor:
    """Which rows of global batch ``step`` are flipped left-right (``--hflip``): bool (batch_size,), a pure
    function of (seed, step) drawn from a generator seeded by both, so that resume and every rank agree."""
    bits = np.random.default_rng([seed, step, 0x68666C6970]).integers(0, 2, batch_size)  # tag: "hflip"
    return torch.as_tensor(bits, dtype=torch.bool)


def hflip(x: Tensor, mask: Tensor) -> Tensor:
    """``x`` (B, C, H, W) with the rows where ``mask`` holds mirrored along the width."""
    return torch.where(mask.to(x.device).view(-1, *[1] * (x.ndim - 1)), x.flip(-1), x)


class MemoryBatches:
    """``batches(step)`` → this rank's slice of global batch ``step`` of a training set held in memory
    (on ``device``), flipped by ``flip`` (:func:`hflip_mask`); ``batches.labels(step)`` its labels.

    The in-memory twin of :class:`scoresde.streaming.StreamingBatches` (same batches, bitwise).
    """

    def __init__(
        self,
        x: Tensor,
        labels: Tensor | None,
        batch_size: int,
        seed: int,
        *,
        rank: int = 0,
        world: int = 1,
        flip: bool = False,
        device: torch.device | str = "cpu",
    ) -> None:
        self.x = x.to(device)
        self.y = labels.to(device) if labels is not None else None
        self.batch_size, self.seed, self.flip, self.device = batch_size, seed, flip, torch.device(device)
        per_rank = batch_size // world
        self.ranks = slice(rank * per_rank, (rank + 1) * per_rank)

    def rows(self, step: int) -> Tensor:
        """The indices into the training set of this rank's slice of batch ``step``."""
        return batch_indices(step, len(self.x), self.batch_size, self.seed)[self.ranks].to(self.device)

    def __call__(self, step: int) -> Tensor:
        x = self.x[self.rows(step)]
        return hflip(x, hflip_mask(step, self.batch_size, self.seed)[self.ranks]) if self.flip else x

    def labels(self, step: int) -> Tensor | None:
        return None if self.y is None else self.y[self.rows(step)]

    def close(self) -> None:
        pass
