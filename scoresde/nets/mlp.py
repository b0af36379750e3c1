"""A residual MLP for vector data (2-D toy sets, flattened arrays), conditioned on time."""

from __future__ import annotations

from einops import rearrange
from torch import Tensor, nn

from .embeddings import ClassEmbedding, TimeEmbedding, refuse_labels


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
    """``net(x, label, y=None)``: x of shape (batch, ...) is flattened, mapped through ``depth``
    residual blocks of ``width`` units (pre-LayerNorm, SiLU, time added inside each block) and
    reshaped back. With ``num_classes``, a learned class embedding of y is added to the time
    embedding (y None or ``num_classes``: the unconditional null label).

    Args:
        data_shape: the shape of one sample, e.g. (2,) for points.
        width, depth: hidden units and number of residual blocks.
        dropout: dropout probability inside each block.
        time_dim: size of the sinusoidal time code.
        num_classes: number of classes for a class-conditional net; None (default) for an
            unconditional one, whose parameters are exactly those of earlier versions.
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        width: int = 128,
        depth: int = 3,
        dropout: float = 0.0,
        time_dim: int = 64,
        num_classes: int | None = None,
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
        self.num_classes = num_classes
        if num_classes is not None:  # created last: the other layers draw the same initial weights
            self.classes = ClassEmbedding(num_classes, width)

    def forward(self, x: Tensor, label: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.inp(rearrange(x, "b ... -> b (...)"))
        temb = self.time(label)
        if self.num_classes is not None:
            temb = temb + self.classes(y, x.shape[0], x.device)
        elif y is not None:
            refuse_labels(self)
        for block in self.blocks:
            h = block(h, temb)
        return self.out(h).reshape(x.shape)
