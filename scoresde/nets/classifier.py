"""A small CNN classifier whose penultimate layer is the feature space of the image metrics.

It plays the role Inception-v3 plays for FID (Heusel et al. 2017), but is trained on the
dataset itself, so Fréchet distance and KID work offline on 8×8 digits or 28×28 MNIST.
Training and caching live in :mod:`scoresde.metrics`; this module is only the network.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

__all__ = ["Classifier"]


class Classifier(nn.Module):
    """conv → 2 strided conv blocks → global average pool → ``features`` → linear head.

    Args:
        data_shape: (C, H, W) of the images.
        num_classes: size of the head.
        width: channels of the first block (doubled in the next ones).
        feature_dim: dimension of :meth:`features`.
    """

    def __init__(self, data_shape: tuple[int, ...], num_classes: int, width: int = 32, feature_dim: int = 64) -> None:
        super().__init__()
        if len(data_shape) != 3:
            raise ValueError(f"the classifier takes images of shape (C, H, W), got data shape {tuple(data_shape)}")
        c = data_shape[0]

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU())

        self.data_shape = tuple(data_shape)
        self.num_classes = num_classes
        self.body = nn.Sequential(block(c, width, 1), block(width, 2 * width, 2), block(2 * width, 2 * width, 2))
        self.proj = nn.Sequential(nn.Linear(2 * width, feature_dim), nn.SiLU())
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """(batch, feature_dim) penultimate activations."""
        h = self.body(x)
        h = rearrange(h, "b c h w -> b c (h w)").mean(-1)
        return self.proj(h)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def embed(self, x: Tensor, batch_size: int = 512) -> Tensor:
        """Features of many images in eval mode, in chunks (float64 on the CPU)."""
        self.eval()
        device = next(self.parameters()).device
        out = [self.features(x[i : i + batch_size].to(device)).double().cpu() for i in range(0, len(x), batch_size)]
        return torch.cat(out)
