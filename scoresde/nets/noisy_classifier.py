"""A time-dependent classifier ``net(x, label) -> (batch, K)`` logits, for classifier guidance.

The network of Dhariwal & Nichol 2021 (§4, "Classifier Guidance": the downsampling half of the
UNet, with the timestep embedding, followed by a pooled linear head), scaled down: for images
(C, H, W) a small CNN of the UNet's residual blocks (:class:`~scoresde.nets.unet.ResBlock`, the time
embedding added after the first convolution), two strided downsamplings, global average pooling
and a linear head; for vectors an MLP whose residual blocks add the time embedding. Like the other
networks it knows nothing of the SDE: it sees x and a time label (:mod:`scoresde.noisy_classifier`
computes the label from t and trains it on noisy x_t).
"""

from __future__ import annotations

import math

from einops import rearrange
from torch import Tensor, nn

from .embeddings import TimeEmbedding
from .unet import Downsample, ResBlock, check_embedding

__all__ = ["NoisyClassifier"]


class _VectorBlock(nn.Module):
    """h + W₂ SiLU(W₁ SiLU(LayerNorm(h)) + temb): a pre-norm residual block with the time added inside."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1, self.fc2 = nn.Linear(width, width), nn.Linear(width, width)
        self.act = nn.SiLU()

    def forward(self, h: Tensor, temb: Tensor) -> Tensor:
        return h + self.fc2(self.act(self.fc1(self.act(self.norm(h))) + temb))


class NoisyClassifier(nn.Module):
    """``net(x, label) -> (batch, num_classes)`` logits of the class of x, at the noise level ``label``.

    Images (``data_shape`` (C, H, W)): conv → ResBlock(w) → down → ResBlock(2w) → down → ResBlock(2w)
    → GroupNorm, SiLU, global average pool → linear head; the time embedding (sinusoidal code of
    ``label`` and a two-layer MLP to 4w, :class:`~scoresde.nets.embeddings.TimeEmbedding`) enters every
    block. Vectors (any other shape, flattened): linear → ``depth`` residual blocks of width w, each
    adding the time embedding → LayerNorm, SiLU → linear head.

    Args:
        data_shape: the shape of one sample.
        num_classes: K, the size of the head.
        width: w, the channels of the first image block (doubled after the first downsampling), or the
            hidden units of the vector MLP.
        depth: residual blocks of the vector MLP (images: always three blocks, one per resolution).
        time_dim: size of the sinusoidal time code (labels on the scale of step indices, e.g. 999·t).
        embedding: how the image blocks take the time embedding (:data:`~scoresde.nets.unet.EMBEDDINGS`):
            ``"scale-shift"`` (default) or ``"add"``, which the norm erases at one channel per group
            (classifiers saved before the option existed).
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        num_classes: int,
        width: int = 64,
        depth: int = 3,
        time_dim: int = 64,
        embedding: str = "scale-shift",
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(
                f"num_classes must be an integer >= 2 (a classifier needs two classes), got {num_classes!r}"
            )
        for name, value in (("width", width), ("depth", depth), ("time_dim", time_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.data_shape, self.num_classes = tuple(int(n) for n in data_shape), num_classes
        self.embedding = check_embedding(embedding)
        self.images = len(self.data_shape) == 3
        if self.images:
            c, w = self.data_shape[0], width
            temb_dim = 4 * w
            self.time = TimeEmbedding(time_dim, temb_dim)
            self.conv_in = nn.Conv2d(c, w, 3, padding=1)
            self.blocks = nn.ModuleList(
                ResBlock(i, o, temb_dim, 0.0, embedding) for i, o in ((w, w), (w, 2 * w), (2 * w, 2 * w))
            )
            self.down = nn.ModuleList([Downsample(w), Downsample(2 * w)])
            self.out = nn.Sequential(nn.GroupNorm(math.gcd(32, 2 * w), 2 * w), nn.SiLU())
            self.head = nn.Linear(2 * w, num_classes)
        else:
            self.time = TimeEmbedding(time_dim, width)
            self.inp = nn.Linear(math.prod(self.data_shape), width)
            self.blocks = nn.ModuleList(_VectorBlock(width) for _ in range(depth))
            self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU())
            self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor, label: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(
                f"the classifier takes samples of shape {self.data_shape}, got a batch of shape {tuple(x.shape)}"
            )
        temb = self.time(label)
        if self.images:
            h = self.conv_in(x)
            for i, block in enumerate(self.blocks):
                h = block(h if i == 0 else self.down[i - 1](h), temb)
            h = rearrange(self.out(h), "b c h w -> b c (h w)").mean(-1)  # global average pool
        else:
            h = self.inp(rearrange(x, "b ... -> b (...)"))
            for block in self.blocks:
                h = block(h, temb)
            h = self.out(h)
        return self.head(h)
