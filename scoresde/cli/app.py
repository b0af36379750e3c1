"""The typer application object shared by every command module, the error helper, output-path checks
and the options that name a model (``--model``, ``--run``, ``--diffusers``, ``--data``)."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from ..diffusion_model import DiffusionModel

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


def samples_file(path: Path) -> Path:
    """An output of samples (``--out``): a .png picture or an .npz array, checked by :func:`output_file`."""
    if path.suffix.lower() not in (".png", ".npz"):
        fail(f"--out must end in .png or .npz, got {path}")
    return output_file(path, "--out", "a file ending in .png or .npz")


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


def split_names(text: str, what: str) -> list[str]:
    """A comma-separated option (``--solver a,b``) as its names; at least one."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        fail(f"--{what} needs at least one name")
    return items


@contextlib.contextmanager
def writing(path: Path, option: str = "--out") -> Iterator[None]:
    """Inside, an OSError (no permission, no such folder, a special file system, a full disk) is one
    line naming ``option`` and ``path``, and exit code 2."""
    try:
        yield
    except OSError as err:
        fail(f"cannot write {option} {path}: {err.strerror or err}")


def check_device(device: str) -> None:
    """``--device``: cpu, cuda or cuda:N, and a CUDA device torch can see."""
    import torch

    try:
        torch.device(device)
    except RuntimeError:
        fail(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        fail("--device cuda was asked for but torch sees no CUDA device")


# the options that name a model and its reference data, shared by sample, likelihood and evaluate
RunOption = Annotated[Path | None, typer.Option("--run", help="trained run folder (default: the newest under ./runs)")]
DiffusersOption = Annotated[
    Path | None, typer.Option("--diffusers", help="diffusers folder (UNet2DModel + scheduler, save_pretrained)")
]
DataOption = Annotated[
    str | None, typer.Option(help="reference data, a dataset name or path (default: the run's held-out split)")
]


def open_source(
    *, model: str | None = None, run: Path | None = None, diffusers: Path | None = None, data: str | None = None,
    device: str = "cpu",
) -> DiffusionModel:  # fmt: skip
    """:func:`scoresde.sources.open_model`, its notes printed one per line, its errors one line each.
    The command line runs unconditional diffusers models only."""
    from ..sources import open_model

    try:
        dm = open_model(model=model, run=run, diffusers=diffusers, data=data, device=device)
    except (ValueError, TypeError, ImportError) as err:
        fail(str(err))
    for note in dm.provenance.notes:
        typer.echo(f"note: {note}", err=True)
    if dm.provenance.source == "diffusers" and dm.num_classes is not None:
        fail(
            f"{diffusers} holds a class-conditional UNet ({dm.num_classes} classes); the command line runs "
            "unconditional models: in Python call dm.model(x, t, y=labels)"
        )
    return dm
