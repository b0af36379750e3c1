"""Typed, frozen training configuration: the one source of truth the CLI and TOML files mirror.

A :class:`TrainConfig` nests one dataclass per concern. :func:`to_dict` / :func:`from_dict`
round-trip it through JSON (saved next to every checkpoint); :func:`load_toml` reads the same
layout from a ``run.toml`` file::

    steps = 3000
    batch_size = 128
    [loss]
    weighting = "likelihood"
    time = "continuous"
    [model]
    size = "small"

Unknown keys and wrong types raise ``ValueError`` naming the key.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "SDEConfig",
    "TrainConfig",
    "from_dict",
    "load_toml",
    "merge",
    "replace_path",
    "to_dict",
]


@dataclass(frozen=True)
class SDEConfig:
    """The forward SDE: a name from ``SDES`` and, for VP/sub-VP, a schedule from ``SCHEDULES``."""

    name: str = "vp"
    schedule: str | None = None


@dataclass(frozen=True)
class DataConfig:
    """The data: a name from ``DATASETS`` or a path; ``n`` sizes toy sets; ``heldout`` fraction."""

    name: str = "digits"
    path: str | None = None
    n: int = 10_000
    resize: int | None = None
    heldout: float = 0.1


@dataclass(frozen=True)
class ModelConfig:
    """The network and what it predicts.

    ``net = "auto"`` picks ``mlp`` for points and ``unet`` for images. UNet fields left ``None``
    come from the named ``size`` (``UNET_SIZES``); ``width``/``depth`` size the MLP.
    """

    net: str = "auto"
    prediction: str = "eps"
    time_label: str = "scaled"
    size: str = "tiny"
    channels: int | None = None
    channel_mult: tuple[int, ...] | None = None
    num_res_blocks: int | None = None
    attention_resolutions: tuple[int, ...] | None = None
    dropout: float | None = None
    width: int = 128
    depth: int = 3


@dataclass(frozen=True)
class LossConfig:
    """The denoising loss (scoresde.losses): weighting, time sampling and reduction over dimensions."""

    weighting: str = "simple"
    time: str = "discrete"
    N: int = 1000
    eps: float = 1e-5
    importance: bool = False
    elbo_variance: str = "large"
    min_snr_gamma: float = 5.0
    reduce: str = "mean"


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up, gradient clipping and an EMA of the weights.

    The defaults suit the few-minute CPU demo; Ho et al. 2020 (App. B) use lr 2e-4, warm-up 5000,
    clipping at 1 and EMA decay 0.9999 for CIFAR-10.
    """

    lr: float = 1e-3
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    warmup: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    ema_warmup: bool = True


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs; saved as JSON beside each checkpoint.

    The defaults are the ``scoresde train`` demo: a tiny UNet on 8×8 digits for 1,200 steps of
    batch 64, a few minutes on two CPU cores. ``checkpoint_every = 0`` checkpoints only at the end;
    ``sample_every = 0`` never draws sample pictures. ``threads`` sets torch's CPU threads: 1 (the
    default) is the fastest for small CPU models on a shared machine (OpenMP threads that wait for
    a busy core make every step many times slower) and costs nothing on GPU; 0 keeps torch's default.
    """

    sde: SDEConfig = field(default_factory=SDEConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    steps: int = 1200
    batch_size: int = 64
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 500
    keep: int = 3
    sample_every: int = 400
    sample_num: int = 64
    sample_solver: str = "ancestral"
    sample_steps: int = 100
    compile: bool = False
    bf16: bool = True
    device: str = "auto"
    threads: int = 1


def to_dict(config: TrainConfig) -> dict[str, Any]:
    """A JSON-ready dict (tuples become lists)."""
    return dataclasses.asdict(config)


def from_dict(data: dict[str, Any], cls: type = TrainConfig, prefix: str = "") -> Any:
    """Build ``cls`` from a (possibly partial) nested dict, checking keys and types."""
    if not isinstance(data, dict):
        raise ValueError(f"config section {prefix.rstrip('.') or '(top)'} must be a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown config key '{prefix}{unknown[0]}'; valid keys: {', '.join(sorted(names))}")
    values = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            values[key] = from_dict(value, hint, f"{prefix}{key}.")
        else:
            values[key] = _coerce(value, hint, f"{prefix}{key}")
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ValueError(f"config key {key!r} cannot be empty")
    for option in options:
        if option is type(None):
            continue
        origin = typing.get_origin(option)
        if origin is tuple and isinstance(value, (list, tuple)) and all(_is_int(v) for v in value):
            return tuple(int(v) for v in value)
        if option is bool and isinstance(value, bool):
            return value
        if option is int and _is_int(value):
            return int(value)
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is str and isinstance(value, str):
            return value
    expected = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ValueError(f"config key {key!r} must be {expected}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into a nested dict (validated later by :func:`from_dict`)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"config file {path} is not valid TOML: {err}") from None


def replace_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``data["a"]["b"] = value`` for ``dotted = "a.b"`` (creating sections as needed)."""
    *sections, last = dotted.split(".")
    for s in sections:
        data = data.setdefault(s, {})
    data[last] = value


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Nested dict merge: ``override`` wins."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
