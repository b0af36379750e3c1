"""Everything a :class:`~scoresde.config.TrainConfig` describes, built: the SDE, the model, the
loss's weighting and time sampler, and the training data (the optimizer: :mod:`scoresde.optim`).

:func:`validate` checks a config before any work (the trainer calls it first); the builders
assume a valid config. Loading and writing run folders is :mod:`scoresde.run_folder`'s job; the
loop is :mod:`scoresde.trainer`'s.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .config import TrainConfig, check, registry_options
from .data import Dataset
from .losses import TIME_SAMPLERS, WEIGHTINGS, TimeSampler, Weighting
from .nets import make_network
from .param import EDMPrecond, Model
from .sde import SDE, make_sde

__all__ = [
    "build_dataset",
    "build_model",
    "build_sde",
    "check_conditional",
    "loss_parts",
    "model_prediction",
    "validate",
]


def build_sde(config: TrainConfig) -> SDE:
    return make_sde(config.sde.name, config.sde.schedule)


def build_model(
    config: TrainConfig, data_shape: tuple[int, ...], kind: str, sde: SDE, num_classes: int | None = None
) -> Model | EDMPrecond:
    """The network from the config wrapped as ``model(x, t, y=None)`` (scoresde.param.Model).

    ``num_classes`` K makes the network class-conditional (labels 0 … K − 1, K the null label);
    ``None`` builds an unconditional one.
    """
    m = config.model
    net_name = m.net if m.net != "auto" else ("unet" if kind == "images" else "mlp")
    if net_name == "unet":
        options: dict[str, Any] = {"size": m.size, "embedding": m.embedding}
        for key in ("channels", "channel_mult", "num_res_blocks", "attention_resolutions", "dropout"):
            if getattr(m, key) is not None:
                options[key] = getattr(m, key)
    elif net_name == "mlp":
        options = {"width": m.width, "depth": m.depth, "dropout": m.dropout or 0.0}
    else:
        options = {}
    if num_classes is not None:
        options["num_classes"] = int(num_classes)
    net = make_network(net_name, data_shape, **options)
    if m.precondition == "edm":
        return EDMPrecond(net, sde, m.sigma_data)
    return Model(net, m.prediction, m.time_label, T=sde.T, N=config.loss.N)


def model_prediction(config: TrainConfig) -> str:
    """What the built model returns: ``x0`` under the ``edm`` preconditioning, else ``model.prediction``."""
    return "x0" if config.model.precondition == "edm" else config.model.prediction


def loss_parts(config: TrainConfig) -> tuple[Weighting, TimeSampler]:
    """The weighting and time sampler the config names, built from their registry entries
    (each factory's parameters read from the loss config, :func:`scoresde.config.registry_options`)."""
    c = config.loss
    time = c.time_sampler
    make_w, make_t = WEIGHTINGS.get(c.weighting), TIME_SAMPLERS.get(time)
    w_options = registry_options(make_w, c, c.weighting)
    if "sigma_data" in inspect.signature(make_w).parameters:  # one σ_data for the model and the weighting
        w_options["sigma_data"] = config.model.sigma_data
    return make_w(**w_options), make_t(**registry_options(make_t, c, time))


def validate(config: TrainConfig) -> tuple[Weighting, TimeSampler]:
    """Check the settings that are cheap to check before any work; ValueError names the field.

    Choices and bounds come from the fields' metadata (:func:`scoresde.config.check`); the loss's
    options are checked by building it. Returns the loss's parts, built.
    """
    check(config)
    parts = loss_parts(config)
    if config.model.precondition == "edm" and config.model.prediction not in ("eps", "x0"):
        raise ValueError(
            f"--precondition edm makes the model predict x0; --prediction {config.model.prediction} contradicts it "
            "(leave --prediction at its default)"
        )
    if config.loss.weighting == "elbo" and config.loss.time_sampler != "discrete":
        raise ValueError("the 'elbo' weighting needs --time discrete; use 'likelihood' for continuous time")
    if config.device not in ("auto", "cpu") and not config.device.startswith(("cuda", "mps")):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {config.device!r}")
    return parts


def build_dataset(config: TrainConfig, log: Callable[[str], None] | None = None) -> Dataset:
    """The training data ``config.data`` names, in memory or streamed
    (:func:`scoresde.streaming.load_training_data`)."""
    from .streaming import load_training_data

    c = config.data
    return load_training_data(
        c.name,
        path=c.path,
        n=c.n,
        resize=c.resize,
        heldout=c.heldout,
        seed=config.seed,
        stream=c.stream,
        log=log,
        strict=c.strict,
    )


def check_conditional(config: TrainConfig, dataset: Dataset) -> int | None:
    """The number of classes to condition on: the data's K for a ``--conditional`` run, else None.

    ValueError when a conditional run is asked on data without labels.
    """
    if not config.model.conditional:
        return None
    if not dataset.labelled:
        from .data import labelled_datasets

        raise ValueError(
            f"--conditional needs class labels, but the data {dataset.name!r} has none; labelled data: "
            f"{', '.join(labelled_datasets())}, a folder with one sub-folder per class, or an .npz with labels 'y'"
        )
    return dataset.num_classes
