"""The typer application object shared by every command module, and the error helper."""

from __future__ import annotations

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
def _root() -> None:
    """Score-based diffusion: one SDE, many samplers, from the command line."""


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
