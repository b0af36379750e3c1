"""A residual MLP for vector data (2-D toy sets, flattened arrays), conditioned on time."""

from __future__ import annotations

from einops import rearrange
from torch import Tensor, nn

from .embeddings import TimeEmbedding


class _Block(nn.Module):
    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.act = nn.SiLU()
        self.drop = nn.Dropout(dropout)

    def forward(self, h: Tensor, temb: Tensor) -> Tensor:
        z = self.fc1(self.act(self.norm(h))) + temb
        return h + self.fc2(self.drop(self.act(z)))


class MLP(nn.Module):
    """``net(x, label)``: x of shape (batch, ...) is flattened, mapped through ``depth`` residual
    blocks of ``width`` units (pre-LayerNorm, SiLU, time added inside each block) and reshaped back.

    Args:
        data_shape: the shape of one sample, e.g. (2,) for points.
        width, depth: hidden units and number of residual blocks.
        dropout: dropout probability inside each block.
        time_dim: size of the sinusoidal time code.
    """

    def __init__(
        self, data_shape: tuple[int, ...], width: int = 128, depth: int = 3, dropout: float = 0.0, time_dim: int = 64
    ) -> None:
        super().__init__()
        self.data_shape = tuple(data_shape)
        dim = 1
        for n in self.data_shape:
            dim *= n
        self.inp = nn.Linear(dim, width)
        self.time = TimeEmbedding(time_dim, width)
        self.blocks = nn.ModuleList(_Block(width, dropout) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, dim))

    def forward(self, x: Tensor, label: Tensor) -> Tensor:
        h = self.inp(rearrange(x, "b ... -> b (...)"))
        temb = self.time(label)
        for block in self.blocks:
            h = block(h, temb)
        return self.out(h).reshape(x.shape)
