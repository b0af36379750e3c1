"""Networks for ``model(x, t)``: a residual MLP for vectors and the DDPM UNet for images.

Networks know nothing of the SDE: they are called as ``net(x, label)`` with the time label
that :class:`scoresde.param.Model` computes from t, or ``net(x, label, y)`` with class labels y
when built with ``num_classes`` (id ``num_classes`` is the unconditional null label).
:data:`NETWORKS` maps the CLI name to a factory ``make(data_shape, **options) -> nn.Module``;
:data:`UNET_SIZES` holds named UNet sizes. :class:`NoisyClassifier` is the time-dependent classifier
``net(x, label) -> logits`` of classifier guidance (:mod:`scoresde.noisy_classifier` trains it).
"""

from __future__ import annotations

from ..registry import Registry
from .embeddings import ClassEmbedding, TimeEmbedding, sinusoidal_embedding
from .mlp import MLP
from .noisy_classifier import NoisyClassifier
from .unet import EMBEDDINGS, UNet

__all__ = [
    "EMBEDDINGS",
    "MLP",
    "NETWORKS",
    "UNET_SIZES",
    "ClassEmbedding",
    "NoisyClassifier",
    "TimeEmbedding",
    "UNet",
    "make_network",
    "sinusoidal_embedding",
]

NETWORKS: Registry = Registry("network")
NETWORKS.register("mlp")(MLP)
NETWORKS.register("unet")(UNet)

UNET_SIZES: Registry[dict] = Registry("UNet size")
"""Named UNet sizes: ``tiny`` for CPU tests and 8×8 digits, ``small`` for 28×28 MNIST, ``cifar10``
for the paper's 35.7M-parameter 32×32 model (Ho et al. 2020, App. B)."""
UNET_SIZES.register("tiny")(
    dict(channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(4,), dropout=0.0)
)
UNET_SIZES.register("small")(
    dict(channels=64, channel_mult=(1, 2, 2), num_res_blocks=2, attention_resolutions=(7,), dropout=0.1)
)
UNET_SIZES.register("cifar10")(
    dict(channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=2, attention_resolutions=(16,), dropout=0.1)
)


def make_network(name: str, data_shape: tuple[int, ...], **options):
    """Build network ``name`` for samples of ``data_shape`` (UNet options may start from ``size=``)."""
    factory = NETWORKS.get(name)
    if name == "unet" and "size" in options:
        options = {**UNET_SIZES.get(options.pop("size")), **options}
    return factory(tuple(data_shape), **options)
