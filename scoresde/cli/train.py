"""``scoresde train``: train a score model; every flag is a field of :class:`~scoresde.config.TrainConfig`.

The flags are generated from the config's field metadata (:func:`scoresde.config.fields`: flag
name, help text, choices), so a new config field is a new flag with nothing else to write.
Precedence: built-in defaults < ``--config run.toml`` < flags. With ``--resume`` the run's own
config is used and only the fields marked resumable (the run-length and logging settings) may change.
"""

from __future__ import annotations

import datetime
import inspect
import json
import os
import types
import typing
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import config as cfg
from .app import app, fail

RESUMABLE = cfg.resumable()
"""The dotted config paths that may differ from the saved config when resuming."""


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
    """Train a score model: `scoresde train` alone trains a small UNet on 8x8 digits in a few minutes."""
    from .. import checkpoint as ckpt
    from ..runlock import lock_run
    from ..train import Trainer, TrainingDiverged

    def warn(message: str) -> None:
        typer.echo(f"warning: {message}", err=True)

    lock = None
    try:
        if out is not None and int(os.environ.get("RANK", "0")) == 0:  # under torchrun rank 0 writes
            # held from before the folder is looked at (re-entrant: the trainer takes it again before it writes);
            # a folder that does not exist yet is locked by the trainer when it creates it
            lock = lock_run(out, create=False)
        overrides = cfg.load_toml(config_file) if config_file is not None else {}
        for info in cfg.fields():
            value = flags.get(_param_name(info))
            if value is not None:
                item = _tuple_item(info.type)
                value = _ints(value, info.flag) if item is int else _names(value) if item is str else value
                cfg.replace_path(overrides, info.path, value)
        checkpoint = None
        if resume:
            if out is None:
                fail("--resume needs --out, the run folder to continue")
            if not out.is_dir() or ckpt.latest_checkpoint(out) is None:
                fail(f"nothing to resume: {out} has no checkpoint")
            checkpoint = ckpt.load_latest(out, warn=warn)  # read once; the trainer resumes from it
            refuse_changes(checkpoint.config, overrides)
            config = cfg.from_dict(cfg.merge(checkpoint.config, overrides))
        else:
            config = cfg.from_dict(overrides)
            if out is None:
                stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
                out = Path("runs") / f"{Path(config.data.name).stem}-{stamp}"
            if ckpt.latest_checkpoint(out) is not None:
                fail(
                    f"run folder {out} already holds checkpoints; pass --resume to continue it or choose another --out"
                )
        trainer = Trainer(
            config, out, resume=checkpoint or False, progress=not quiet, log=lambda m: typer.echo(m, err=True)
        )
        if not quiet and trainer.rank == 0:
            typer.echo(f"training {config.steps} steps into {out} on {trainer.device} ({trainer.world} rank(s))")
        try:
            result = trainer.run()
        finally:
            trainer.close()
    except KeyboardInterrupt:
        fail("aborted by a second Ctrl-C; the newest complete checkpoint is kept", code=130)
    except TrainingDiverged as err:
        fail(str(err))
    except (ValueError, TypeError, OSError) as err:
        fail(str(err))
    finally:
        if lock is not None:
            lock.release()
    if result.interrupted:
        typer.echo(
            f"interrupted at step {result.step}; checkpoint saved: {result.checkpoint}\n"
            f"continue with: scoresde train --out {out} --resume",
            err=True,
        )
        raise typer.Exit(130)
    if trainer.rank == 0:
        loss = f", final loss {result.loss:.4f}" if result.loss is not None else ""
        typer.echo(f"done: step {result.step}{loss}; run folder {out}")


def refuse_changes(saved: dict[str, Any], overrides: dict[str, Any], prefix: str = "") -> None:
    """ValueError if ``overrides`` changes a field of the ``saved`` config that is not resumable."""
    for key, value in overrides.items():
        if isinstance(value, dict):
            refuse_changes(saved.get(key, {}), value, f"{prefix}{key}.")
            continue
        old = saved.get(key)
        if isinstance(value, tuple):
            value = list(value)
        if f"{prefix}{key}" in RESUMABLE:
            continue
        if json.dumps(old) != json.dumps(value):
            raise ValueError(
                f"cannot change {prefix}{key} when resuming (the run has {old!r}, got {value!r}); "
                f"only {', '.join(sorted(RESUMABLE))} may change"
            )


# the command's signature: the fixed options, one option per config field, then --quiet
train.__signature__ = inspect.Signature([*_FIXED, *(_field_parameter(f) for f in cfg.fields()), _QUIET])
app.command()(train)
