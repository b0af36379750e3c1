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


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr (one line) and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
