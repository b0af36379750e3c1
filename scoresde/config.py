"""Training configurations as data: listed, checked, converted to and from JSON and TOML.

The fields themselves (one frozen dataclass per concern, nested in :class:`TrainConfig`, each
field with its :func:`option` metadata) are declared in :mod:`scoresde.config_schema` and
importable from here. :func:`fields` lists the leaf fields with their metadata (the CLI builds
its flags from them), :func:`check` checks a config against it, and :func:`to_dict` /
:func:`from_dict` round-trip a config through JSON (saved next to every checkpoint);
:func:`load_toml` reads the same layout from a ``run.toml`` file::

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

import copy
import dataclasses
import functools
import inspect
import math
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config_schema import DataConfig, LossConfig, ModelConfig, OptimConfig, SDEConfig, TrainConfig, option

__all__ = [
    "DataConfig",
    "FieldInfo",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "SDEConfig",
    "TrainConfig",
    "check",
    "fields",
    "from_dict",
    "get_path",
    "load_toml",
    "merge",
    "option",
    "registry_options",
    "replace_path",
    "resumable",
    "to_dict",
]


# --------------------------------------------------------------------------- the fields as data


@dataclass(frozen=True)
class FieldInfo:
    """One leaf field of :class:`TrainConfig` with its :func:`option` metadata.

    Attributes:
        path: the dotted name (``loss.weighting``), as in TOML files and ``config.json``.
        type: the type hint (``str``, ``int | None``, ``tuple[int, ...] | None``, ...).
        default: the default value.
        flag: the CLI flag (``--weighting``).
        resumable: may change when resuming.
    """

    path: str
    type: Any
    default: Any
    flag: str
    resumable: bool
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    def choices(self) -> Any:
        """The registry or tuple of allowed names (a registry is imported when asked), or ``None``."""
        choices = self.meta["choices"]
        if isinstance(choices, str):
            import importlib

            module, name = choices.rsplit(".", 1)
            return getattr(importlib.import_module(f"scoresde.{module}"), name)
        return choices

    @property
    def help(self) -> str:
        """The help text, ``{choices}`` filled from the registry."""
        text = self.meta["help"]
        if "{choices}" in text:
            text = text.replace("{choices}", "one of: " + ", ".join(self.choices()))
        return text


@functools.cache
def fields(cls: type = TrainConfig, prefix: str = "") -> tuple[FieldInfo, ...]:
    """Every leaf field of ``cls`` (nested sections flattened to dotted paths), in declaration order."""
    hints = typing.get_type_hints(cls)
    out: list[FieldInfo] = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            out += fields(hint, f"{prefix}{f.name}.")
            continue
        meta = dict(f.metadata) or option("")
        flag = meta["flag"] or "--" + f.name.replace("_", "-")
        out.append(FieldInfo(f"{prefix}{f.name}", hint, f.default, flag, meta["resumable"], meta))
    return tuple(out)


def resumable() -> frozenset[str]:
    """The dotted paths of the fields that may change when a run is resumed."""
    return frozenset(f.path for f in fields() if f.resumable)


def get_path(config: Any, dotted: str) -> Any:
    """``config.a.b`` for ``dotted = "a.b"``."""
    for name in dotted.split("."):
        config = getattr(config, name)
    return config


def check(config: TrainConfig) -> None:
    """Check every field against its metadata (choices and bounds) and that the run has a length
    (``steps``, ``minutes`` or both); ValueError names the field."""
    if config.steps is None and config.minutes is None:
        raise ValueError("the run has no length: set --steps N or --minutes M (or both: whichever comes first)")
    for info in fields():
        value = get_path(config, info.path)
        if value is None:
            continue
        choices = info.choices() if info.meta["check"] else None
        for item in value if isinstance(value, tuple) and choices is not None else (value,):
            if choices is not None and item not in choices and item not in info.meta["also"]:
                if hasattr(choices, "get"):
                    choices.get(item)  # a registry's own message: "unknown weighting 'x'; choose one of: ..."
                raise ValueError(f"unknown {info.name} {item!r}; choose one of: {', '.join(choices)}")
        bounds = info.meta["bounds"]
        if bounds and not all(_within(v, bounds) for v in (value if isinstance(value, tuple) else (value,))):
            raise ValueError(f"{info.path} must be {_bounds_text(info.type, bounds)}, got {value!r}")


def _within(value: Any, bounds: dict[str, float]) -> bool:
    if not math.isfinite(value):
        return False
    return all({"ge": value >= b, "gt": value > b, "lt": value < b}[kind] for kind, b in bounds.items())


def _bounds_text(hint: Any, bounds: dict[str, float]) -> str:
    if set(bounds) == {"ge"} and bounds["ge"] == 1 and hint in (int, int | None):
        return "a positive integer"
    if set(bounds) == {"gt"} and bounds["gt"] == 0:
        return "a positive number"
    if set(bounds) == {"ge"}:
        return f">= {bounds['ge']:g}"
    low = f"[{bounds['ge']:g}" if "ge" in bounds else f"({bounds.get('gt', -math.inf):g}"
    high = f"{bounds['lt']:g})" if "lt" in bounds else "∞)"
    return f"in {low}, {high}"


def registry_options(factory: Callable[..., Any], section: Any, entry: str) -> dict[str, Any]:
    """The keyword arguments of a registry entry's ``factory`` read from a config ``section``.

    Parameter ``p`` of the entry called ``entry`` takes field ``<entry>_<p>`` (dashes as
    underscores: ``min_snr_gamma`` for min-snr's ``gamma``) if the section has it, else field ``p``
    (``N``, ``t_min``, ``importance``); parameters without a field keep their defaults.
    """
    prefix = entry.replace("-", "_") + "_"
    out = {}
    for p in inspect.signature(factory).parameters:
        for name in (prefix + p, p):
            if hasattr(section, name):
                out[p] = getattr(section, name)
                break
    return out


def to_dict(config: TrainConfig) -> dict[str, Any]:
    """A JSON-ready dict (tuples become lists)."""
    return dataclasses.asdict(config)


SAVED_BEFORE: dict[str, Any] = {"model.embedding": "add"}
"""Fields added after runs were first saved whose default changed the model, with the value those
older runs used: :func:`complete_saved` puts it into a saved config that lacks the field."""


def complete_saved(data: dict[str, Any]) -> dict[str, Any]:
    """A saved run's config (``config.json``, a checkpoint's) with the :data:`SAVED_BEFORE` value of
    every field it predates, so an old run builds the network it was trained with."""
    out = copy.deepcopy(data)
    for path, value in SAVED_BEFORE.items():
        *sections, leaf = path.split(".")
        table = out
        for name in sections:
            table = table.setdefault(name, {})
        table.setdefault(leaf, value)
    return out


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
    for typ in options:
        if typ is type(None):
            continue
        origin = typing.get_origin(typ)
        if origin is tuple and isinstance(value, (list, tuple)):
            item = typing.get_args(typ)[0]
            if item is int and all(_is_int(v) for v in value):
                return tuple(int(v) for v in value)
            if item is str and all(isinstance(v, str) for v in value):
                return tuple(value)
        if typ is bool and isinstance(value, bool):
            return value
        if typ is int and _is_int(value):
            return int(value)
        if typ is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if typ is str and isinstance(value, str):
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
