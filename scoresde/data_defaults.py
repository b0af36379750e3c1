"""Per-dataset defaults: the settings a new run on a named data set starts from.

:data:`DATA_DEFAULTS` maps a dataset name (:data:`scoresde.data.DATASETS`) to a nested config dict
(the layout of ``config.json`` and ``run.toml``). Each entry was chosen by evidence in
``benchmarks/results/`` (cited beside it); edit the table to change one. A folder or an array
file has no entry and starts from the field defaults.

:func:`resolve` turns the overrides of a new run (a TOML file's tables and the flags, as
``scoresde train`` collects them) into its :class:`~scoresde.config.TrainConfig`. Precedence::

    field defaults < the data's defaults < --config run.toml < flags

with two rules, so that the user's settings mean what they say:

* **The run length is one setting.** If the user sets ``steps`` or ``minutes``, the data's
  ``steps`` and ``minutes`` are both dropped and the one the user left out means no limit
  (:func:`run_length`): ``--steps 500`` trains exactly 500 steps, ``--minutes 1`` one minute
  whatever the step count. This rule also holds on ``--resume``.
* **A named UNet size is whole.** If the user sets ``model.size`` (``--unet-size``), the data's
  UNet shape (channels, multipliers, blocks, attention, dropout) is dropped: ``--unet-size small``
  gets the small UNet, not a hybrid.

A resumed run uses its own saved config (data defaults are not applied again); a
:class:`~scoresde.config.TrainConfig` built in Python is used as is.
"""

from __future__ import annotations

import copy
from typing import Any

from . import config as cfg
from .registry import Registry
from .toy_data import TOY_SETS

__all__ = [
    "DATA_DEFAULTS",
    "RUN_LENGTH",
    "UNET_SHAPE",
    "describe",
    "resolve",
    "run_length",
    "summary",
    "with_data_defaults",
]

RUN_LENGTH = ("steps", "minutes")
"""The fields that make up the run length (set together, see :func:`run_length`)."""

UNET_SHAPE = ("channels", "channel_mult", "num_res_blocks", "attention_resolutions", "dropout")
"""The ``model`` fields a named UNet size fills (:data:`scoresde.nets.UNET_SIZES`)."""

DATA_DEFAULTS: Registry[dict] = Registry("data defaults")
"""Dataset name -> the nested config dict a new run on it starts from (see the module docstring).

Evidence (``benchmarks/results/``):

* ``digits``: recipe_budget.md: at equal CPU time (180 s, 3 seeds) a 16-channel tiny UNet scored
  FD 0.55 ± 0.09 against 0.91 ± 0.10 for the 32-channel default; it needs the time, not 1,200 steps
  (at 1,200 steps it loses, recipe_width_1200.md), hence a 3-minute budget. recipe_tdist.md: EDM's
  log-normal training times centred on less noise than EDM's P_mean -1.2 for 32×32 (ln σ/α ~
  N(-0.6, 1.2²)) scored 0.66 ± 0.23 against 0.80 ± 0.20 at 180 CPU-s, better on every seed (paired
  gain 0.14 ± 0.06); -1.8 was worse (1.17, 2 seeds).
* ``mnist``: recipe_mnist.md: at 900 CPU-seconds (3 seeds) the narrow 3-level UNet (28 → 14 → 7,
  attention at 7×7) at 16 channels scored FD 1.35 ± 0.03 against 3.13 ± 0.24 at 32 channels
  (peers.md); lr 2e-3 and longer EMAs were within noise, hence 16 channels for 15 minutes.
  recipe_tdist_mnist.md: training times at P_mean -0.6 (as on digits) scored 0.86 ± 0.09 against
  1.25 ± 0.13 for EDM's -1.2 rerun beside them, better on every seed. autoguidance_mnist.md:
  sampled with autoguidance by the run's EMA at 40% of training (``guide_at``, every run's default)
  at w = 2, FD and the share of recognisable digits improved on every run (the numbers are there);
  on digits it made FD worse (autoguidance_digits.md), so runs there are sampled alone (w = 1).
  recipe_mult_mnist.md: a wider 7×7 level (channel_mult 1,2,4) lowered the guided FD on two of three
  seeds but lowered the digit share on all three, so (1, 2, 2) stays.
* The digits and MNIST evidence above was gathered on UNets whose blocks added the time embedding
  before a GroupNorm of one channel per group, which erased it (``model.embedding = "add"``,
  conditional_mnist.md). The scale-shift embedding (the default since 2026-12-06) makes labels
  usable: ``mnist`` is class-conditional (label dropout 0.1) and sampled with classes drawn from the
  data at classifier-free guidance 1.25, not autoguided (conditional_mnist.md, 3 runs of 900 CPU-s
  each): FD 0.16 ± 0.01 and digit share 0.95 ± 0.02, against 0.40 ± 0.18 and 0.78 for the previous
  default (unconditional, autoguided at w = 2); guidance 1 gives FD 0.065 (500 held-out images score
  0.09) and share 0.89, guidance 1.5 FD 0.38 and share 0.97; autoguidance on top of
  either made FD worse. The unconditional MNIST net scored no better with the new embedding (FD
  0.60 ± 0.09 autoguided) and digits at 180 CPU-s not better either (recipe_embedding.md); the other
  choices were not re-made on the new net.
* the 2-D sets: budget_2d.md: one CPU-minute (about 20,000 steps) against 1,200 steps, 3 seeds:
  checkerboard SW₂ 0.050 ± 0.005 against 0.087 ± 0.006 (better on every seed); moons 0.031 ± 0.015
  against 0.039 ± 0.007, both at the metric's floor. Measured on those two, applied to all six.
"""
DATA_DEFAULTS.register("digits")(
    {"model": {"channels": 16}, "loss": {"lognormal_p_mean": -0.6}, "minutes": 3, "steps": None}
)
DATA_DEFAULTS.register("mnist")(
    {
        "model": {
            "channels": 16,
            "channel_mult": (1, 2, 2),
            "attention_resolutions": (7,),
            "dropout": 0.0,
            "conditional": True,
        },
        "loss": {"lognormal_p_mean": -0.6},
        "minutes": 15,
        "steps": None,
        "class_guidance": 1.25,
    }
)
for _name in TOY_SETS:
    DATA_DEFAULTS.register(_name)({"minutes": 1, "steps": None})


def run_length(overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` with the run length whole: if it sets one of ``steps`` / ``minutes``, the other
    is set to ``None`` (no limit) unless it is set too; else unchanged."""
    given = [k for k in RUN_LENGTH if k in overrides]
    if not given:
        return overrides
    return {**{k: None for k in RUN_LENGTH}, **overrides}


def with_data_defaults(overrides: dict[str, Any]) -> dict[str, Any]:
    """The nested dict of a new run: the defaults of the data ``overrides`` names (``digits`` when it
    names none) < ``overrides``, under the rules of the module docstring. A data set without an entry
    (a folder, an array file) adds nothing."""
    data = overrides.get("data", {})
    name = data.get("name", cfg.DataConfig.name) if isinstance(data, dict) else None
    defaults = copy.deepcopy(DATA_DEFAULTS[name]) if isinstance(name, str) and name in DATA_DEFAULTS else {}
    model = overrides.get("model")
    if isinstance(model, dict) and "size" in model and isinstance(defaults.get("model"), dict):
        defaults["model"] = {k: v for k, v in defaults["model"].items() if k not in UNET_SHAPE}
    return cfg.merge(defaults, run_length(overrides))


def resolve(overrides: dict[str, Any]) -> cfg.TrainConfig:
    """The :class:`~scoresde.config.TrainConfig` of a new run from ``overrides`` (:func:`with_data_defaults`)."""
    return cfg.from_dict(with_data_defaults(overrides))


def _value(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def describe(name: str) -> str:
    """One line of the data's defaults: ``minutes 3, model.channels 16`` (``steps`` when it is a number)."""
    out = []

    def walk(d: dict[str, Any], prefix: str) -> None:
        for key, value in d.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            elif value is not None:
                out.append(f"{prefix}{key} {_value(value)}")

    walk(DATA_DEFAULTS[name], "")
    return ", ".join(out) or "the field defaults"


def summary() -> str:
    """Every entry in one line, data sets with equal defaults together:
    ``digits: model.channels 16, minutes 3; moons, rings: minutes 1``."""
    groups: dict[str, list[str]] = {}
    for name in DATA_DEFAULTS:
        groups.setdefault(describe(name), []).append(name)
    return "; ".join(f"{', '.join(names)}: {text}" for text, names in groups.items())
