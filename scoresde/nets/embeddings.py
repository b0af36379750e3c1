"""Time and class embeddings shared by the networks (no SDE knowledge: they see a label per sample)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..labels import check_labels


def sinusoidal_embedding(label: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """The Transformer's sinusoidal position code of ``label`` (batch,) -> (batch, dim).

    Vaswani et al. 2017, §3.5, as used for the timestep by Ho et al. 2020 (``get_timestep_embedding``):
    [sin(label·ω_k), cos(label·ω_k)] with ω_k = max_period^(−k/(dim/2)). Labels are expected on the
    scale of step indices (e.g. 999·t, the ``scaled`` time label); odd ``dim`` is zero-padded.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=label.device, dtype=torch.float32) / half)
    args = label.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        emb = nn.functional.pad(emb, (0, 1))
    return emb


class TimeEmbedding(nn.Module):
    """Sinusoidal code followed by a two-layer MLP (Ho et al. 2020's ``temb`` branch)."""

    def __init__(self, base_dim: int, out_dim: int) -> None:
        super().__init__()
        self.base_dim = base_dim
        self.mlp = nn.Sequential(nn.Linear(base_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, label: Tensor) -> Tensor:
        return self.mlp(sinusoidal_embedding(label, self.base_dim))


class ClassEmbedding(nn.Module):
    """A learned vector per class, plus one "null" class for the unconditional model.

    ``nn.Embedding(num_classes + 1, dim)``: ids 0 … num_classes − 1 are the classes and the id
    ``num_classes`` is the null label ∅ that classifier-free guidance trains by label dropout and
    samples with (Ho & Salimans 2022, §3.2). The networks add it to their time embedding, as the
    class-conditional DDPM/ADM models do (Dhariwal & Nichol 2021, ``label_emb``).
    """

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(
                f"num_classes must be an integer >= 1 (or None for an unconditional net), got {num_classes!r}"
            )
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)

    @property
    def null_label(self) -> int:
        return self.num_classes

    def forward(self, y: Tensor | None, batch: int, device: torch.device) -> Tensor:
        """(batch, dim) embeddings of labels y (batch,) in 0 … num_classes; None means ∅ for every sample."""
        if y is None:
            y = torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        else:
            y = check_labels(y, batch, self.num_classes, name="y")
        return self.table(y)


def refuse_labels(net: nn.Module) -> None:
    """The error for class labels given to an unconditional net."""
    raise TypeError(
        f"this {type(net).__name__} is unconditional (num_classes=None) and takes no class labels y; "
        "build it with num_classes=K (train with --conditional) to condition on a class"
    )
