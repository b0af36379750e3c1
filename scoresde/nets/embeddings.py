"""Time embeddings shared by the networks (no SDE knowledge: they see a label per sample)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


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
