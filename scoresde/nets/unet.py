"""The DDPM UNet (Ho et al. 2020, App. B; a PixelCNN++ backbone), sized from tiny to CIFAR-10.

Residual blocks with GroupNorm and the time (and class) embedding, single-head self-attention at
chosen resolutions, dropout, and ``num_res_blocks`` blocks per level on the way down,
``num_res_blocks + 1`` (with skip connections) on the way up. ``UNet((3, 32, 32), embedding="add")``
is the paper's 35.7M-parameter CIFAR-10 model: channels 128, multipliers (1, 2, 2, 2), 2 blocks per
level, attention at 16×16, dropout 0.1.

How a block takes the embedding (:data:`EMBEDDINGS`):

* ``"scale-shift"`` (the default; ADM's ``use_scale_shift_norm``, Dhariwal & Nichol 2021): a linear
  map of the embedding gives a per-channel scale and shift applied *after* the second GroupNorm,
  ``norm(h)·(1 + scale) + shift``. The map starts at zero (DiT's adaLN-Zero, Peebles & Xie 2023), so
  a new net starts as one that ignores t and learns how much to use it: on 8×8 digits at 3
  CPU-minutes that scored a better FD than ADM's random start on every seed, though still about 0.1
  worse than the blind ``"add"`` net (benchmarks/results/recipe_embedding.md).
* ``"add"`` (Ho et al.): the embedding is added to h *before* that GroupNorm. The norm subtracts each
  group's mean, so only the within-group differences of the shift survive — at one channel per group
  (16 or 32 channels) nothing does: the net sees neither t nor the class. Runs trained before the
  option existed used it and load with it (``scoresde.config.SAVED_BEFORE``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .embeddings import ClassEmbedding, TimeEmbedding, refuse_labels


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups (Ho et al.) or, for narrow tiny models, the largest divisor of 32 that fits."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


def _zero(module: nn.Module) -> nn.Module:
    """Zero-initialise the last layer of a residual branch (Ho et al.'s ``init_scale=0.``)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


EMBEDDINGS = ("scale-shift", "add")
"""How a residual block takes the time/class embedding (see the module docstring)."""


def check_embedding(embedding: str) -> str:
    if embedding not in EMBEDDINGS:
        raise ValueError(f"embedding must be one of {', '.join(EMBEDDINGS)}, got {embedding!r}")
    return embedding


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, dropout: float, embedding: str = "scale-shift") -> None:
        super().__init__()
        self.scale_shift = check_embedding(embedding) == "scale-shift"
        self.norm1, self.conv1 = _norm(in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb = nn.Linear(temb_dim, 2 * out_ch if self.scale_shift else out_ch)
        if self.scale_shift:  # scale and shift start at 0 (adaLN-Zero): the block starts blind to t
            _zero(self.temb)
        self.norm2, self.drop = _norm(out_ch), nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        emb = rearrange(self.temb(F.silu(temb)), "b c -> b c 1 1")
        if self.scale_shift:
            scale, shift = emb.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + emb)
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Single-head self-attention over the pixels of a feature map (Ho et al.'s ``attn_block``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        height = x.shape[2]
        q, k, v = rearrange(self.qkv(self.norm(x)), "b (three c) h w -> three b (h w) c", three=3)
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(rearrange(out, "b (h w) c -> b c h w", h=height))


class Stage(nn.Module):
    """A residual block, followed by self-attention at the chosen resolutions."""

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, dropout: float, attention: bool, embedding: str) -> None:
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, temb_dim, dropout, embedding)
        self.attn = Attention(out_ch) if attention else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        return self.attn(self.res(x, temb))


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """``net(x, label, y=None)`` for images x of shape (batch, C, H, W); returns the same shape.

    With ``num_classes``, a learned embedding of the class y is added to the time embedding
    (as ADM's ``label_emb``, Dhariwal & Nichol 2021); y None or ``num_classes`` is the null label.

    Args:
        data_shape: (C, H, W) of one image; H and W must be divisible by 2^(levels − 1).
        channels: base width (128 in the paper).
        channel_mult: width multiplier per resolution level ((1, 2, 2, 2) for 32×32).
        num_res_blocks: residual blocks per level on the way down (2).
        attention_resolutions: feature-map sizes that get self-attention ((16,)).
        dropout: dropout inside residual blocks (0.1 on CIFAR-10).
        num_classes: number of classes for a class-conditional net; None (default) for an
            unconditional one.
        embedding: how residual blocks take the time/class embedding, ``"scale-shift"`` (default)
            or ``"add"`` (Ho et al.; blind at one channel per group), see :data:`EMBEDDINGS`.
    """

    def __init__(
        self,
        data_shape: tuple[int, int, int],
        channels: int = 128,
        channel_mult: tuple[int, ...] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: tuple[int, ...] = (16,),
        dropout: float = 0.1,
        num_classes: int | None = None,
        embedding: str = "scale-shift",
    ) -> None:
        super().__init__()
        if len(data_shape) != 3:
            raise ValueError(f"the UNet needs images of shape (C, H, W), got data shape {tuple(data_shape)}")
        in_ch, height, width = data_shape
        factor = 2 ** (len(channel_mult) - 1)
        if height % factor or width % factor:
            raise ValueError(
                f"image size {height}x{width} is not divisible by 2^{len(channel_mult) - 1} = {factor} "
                f"(channel_mult has {len(channel_mult)} levels); resize the images or use fewer levels"
            )
        self.data_shape = tuple(data_shape)
        temb_dim = 4 * channels
        self.time = TimeEmbedding(channels, temb_dim)
        self.conv_in = nn.Conv2d(in_ch, channels, 3, padding=1)

        self.down = nn.ModuleList()
        skips, ch, res = [channels], channels, height
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.down.append(Stage(ch, channels * mult, temb_dim, dropout, res in attention_resolutions, embedding))
                ch = channels * mult
                skips.append(ch)
            if level != len(channel_mult) - 1:
                self.down.append(Downsample(ch))
                skips.append(ch)
                res //= 2

        self.mid = nn.ModuleList([Stage(ch, ch, temb_dim, dropout, attn, embedding) for attn in (True, False)])

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(
                    Stage(ch + skips.pop(), channels * mult, temb_dim, dropout, res in attention_resolutions, embedding)
                )
                ch = channels * mult
            if level != 0:
                self.up.append(Upsample(ch))
                res *= 2
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), _zero(nn.Conv2d(ch, in_ch, 3, padding=1)))
        self.num_classes = num_classes
        if num_classes is not None:  # created last: the other layers draw the same initial weights
            self.classes = ClassEmbedding(num_classes, temb_dim)

    def forward(self, x: Tensor, label: Tensor, y: Tensor | None = None) -> Tensor:
        temb = self.time(label)
        if self.num_classes is not None:
            temb = temb + self.classes(y, x.shape[0], x.device)
        elif y is not None:
            refuse_labels(self)
        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, temb) if isinstance(layer, Stage) else layer(h)
            hs.append(h)
        for stage in self.mid:
            h = stage(h, temb)
        for layer in self.up:
            h = layer(torch.cat([h, hs.pop()], dim=1), temb) if isinstance(layer, Stage) else layer(h)
        return self.out(h)
