"""The typer application object shared by every command module, the error helper and output-path checks."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import NoReturn

import typer

app = typer.Typer(
    name="scoresde",
    help="Score-based diffusion: the VP SDE, its reverse, its probability-flow ODE and DDPM as one object.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(ctx: typer.Context) -> None:
    """Score-based diffusion: one SDE, many samplers, from the command line."""
    # a Python warning (e.g. a skipped corrupt checkpoint) is one line on stderr, not a source-line dump
    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    ctx.call_on_close(lambda: setattr(warnings, "showwarning", previous))


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    typer.echo(f"warning: {' '.join(str(message).split())}", err=True)


def set_threads(threads: int) -> None:
    """Apply ``--threads``: N > 0 sets torch's CPU threads (1 is often fastest on a busy machine), 0 keeps torch's."""
    import torch

    if threads < 0:
        fail(f"--threads must be >= 0, got {threads}")
    if threads > 0:
        torch.set_num_threads(threads)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr (one line) and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def output_file(path: Path, option: str = "--out", expected: str = "a file") -> Path:
    """Check an output file path before any work: not an existing folder, its folder creatable
    (missing parents are created) and writable. Fails with one line naming the path otherwise."""
    if path.is_dir():
        fail(f"{option} {path} is an existing folder; expected {expected}")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), folder)
        fail(f"cannot write {option} {path}: {blocker} is a file, not a folder")
    except OSError as err:
        fail(f"cannot write {option} {path}: cannot create the folder {folder} ({err.strerror or err})")
    if not os.access(folder, os.W_OK | os.X_OK):
        fail(f"cannot write {option} {path}: the folder {folder} is not writable")
    return path


def output_folder(path: Path, option: str = "--out") -> Path:
    """Check (and create) an output folder before any work: not an existing file, creatable, writable."""
    if path.exists() and not path.is_dir():
        fail(f"{option} {path} is an existing file; expected a folder (created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), path)
        fail(f"cannot create {option} {path}: {blocker} is a file, not a folder")
    except OSError as err:
        fail(f"cannot create {option} {path}: {err.strerror or err}")
    if not os.access(path, os.W_OK | os.X_OK):
        fail(f"cannot write into {option} {path}: the folder is not writable")
    return path


def write_failed(path: Path, err: OSError, option: str = "--out") -> NoReturn:
    """One line for an output write that failed after the checks (disk full, a race)."""
    fail(f"cannot write {option} {path}: {err.strerror or err}")
