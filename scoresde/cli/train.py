"""``scoresde train``: train a score model; every flag is a field of :class:`~scoresde.config.TrainConfig`.

The flags are generated from the config's field metadata (:func:`scoresde.config.fields`: flag
name, help text, choices), so a new config field is a new flag with nothing else to write.
Precedence: built-in defaults < the data's defaults (:mod:`scoresde.data_defaults`, listed in the
command's help) < ``--config run.toml`` < flags. With ``--resume`` the run's own config is used and
only the fields marked resumable (the run-length and logging settings) may change.
"""

from __future__ import annotations

import inspect
import os
import types
import typing
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import config as cfg
from ..data_defaults import summary
from .app import app, fail


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        fail(f"{flag} must be comma-separated integers like 1,2,2, got {text!r}")
    if not values:
        fail(f"{flag} needs at least one integer, got {text!r}")
    return values


def _param_name(info: cfg.FieldInfo) -> str:
    return info.path.replace(".", "__")


def _tuple_item(hint: Any) -> type | None:
    """``int`` for ``tuple[int, ...]`` (maybe ``| None``), ``str`` for ``tuple[str, ...]``, else ``None``."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return next((typing.get_args(o)[0] for o in options if typing.get_origin(o) is tuple), None)


def _is_tuple(hint: Any) -> bool:
    return _tuple_item(hint) is not None


def _names(values: list[str]) -> list[str]:
    """A repeatable flag's values, each possibly a comma list: ["a,b", "c"] -> ["a", "b", "c"]."""
    return [v for text in values for v in text.replace(" ", "").split(",") if v]


def _cli_type(hint: Any) -> type:
    """The type typer parses a field's flag as: integer tuples come as "1,2,2" text, name tuples as a
    repeatable flag (each may be a comma list), the rest as themselves."""
    if _tuple_item(hint) is str:
        return list[str]
    if _is_tuple(hint):
        return str
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return next(o for o in options if o is not type(None))


def _keyword(name: str, default: Any, kind: Any, *decls: str, help: str) -> inspect.Parameter:
    option = typer.Option(*decls, help=help, show_default=False)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[kind, option])


def _field_parameter(info: cfg.FieldInfo) -> inspect.Parameter:
    kind = _cli_type(info.type)
    decl = f"{info.flag}/--no-{info.flag[2:]}" if kind is bool else info.flag
    return _keyword(_param_name(info), None, kind | None, decl, help=info.help)


_FIXED = [
    _keyword("out", None, Path | None, "--out", help="Run folder (default: runs/<data>-<date>-<time>)."),
    _keyword(
        "config_file", None, Path | None, "--config", help="TOML file with the config (sections as in config.json)."
    ),
    _keyword("resume", False, bool, "--resume", help="Continue the run in --out from its newest checkpoint."),
]
_QUIET = _keyword("quiet", False, bool, "--quiet", help="No progress bar.")


def train(out: Path | None, config_file: Path | None, resume: bool, quiet: bool, **flags: Any) -> None:
    """Train a score model: `scoresde train` alone trains a small UNet on 8x8 digits for 3 minutes."""
    from ..budget import STOPPED, budget_text
    from ..trainer import TrainingDiverged, train_in_folder

    def echo_err(message: str) -> None:
        typer.echo(message, err=True)

    try:
        overrides = cfg.load_toml(config_file) if config_file is not None else {}
        for info in cfg.fields():
            value = flags.get(_param_name(info))
            if value is not None:
                item = _tuple_item(info.type)
                value = _ints(value, info.flag) if item is int else _names(value) if item is str else value
                cfg.replace_path(overrides, info.path, value)
        result = train_in_folder(
            out, overrides, resume=resume, progress=not quiet, log=echo_err, announce=None if quiet else typer.echo
        )
    except KeyboardInterrupt:
        fail("aborted by a second Ctrl-C; the newest complete checkpoint is kept", code=130)
    except (TrainingDiverged, ValueError, TypeError) as err:
        fail(str(err))
    except OSError as err:  # writing the run folder failed (the data's readers raise ValueError)
        fail(f"cannot write --out {out or 'runs/'}: {err.strerror or err}")
    run = result.provenance
    if run.interrupted:
        echo_err(
            f"interrupted at step {run.step}; checkpoint saved: {run.checkpoint}\n"
            f"continue with: scoresde train --out {run.run_dir} --resume"
        )
        raise typer.Exit(130)
    if int(os.environ.get("RANK", "0")) == 0:
        loss = f", final loss {run.loss:.4f}" if run.loss is not None else ""
        end = f" ({budget_text(run.config)})" if run.metrics and run.metrics[-1].get("stopped") == STOPPED else ""
        typer.echo(f"done: step {run.step}{end}{loss}; run folder {run.run_dir}")


# the command's signature: the fixed options, one option per config field, then --quiet
train.__signature__ = inspect.Signature([*_FIXED, *(_field_parameter(f) for f in cfg.fields()), _QUIET])
EPILOG = (
    "Data defaults (a new run on a named data set starts from them; --config and flags override them, "
    "and setting --steps or --minutes replaces the data's run length whole): " + summary() + "."
)
app.command(epilog=EPILOG)(train)
