"""The ``scoresde`` command line. Choices are read from the registries, never hand-kept."""

from __future__ import annotations

import typer

from . import __version__
from .schedules import SCHEDULES, TIME_GRIDS
from .sde import SDES

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


@app.command()
def info() -> None:
    """Print the version, the registered variants and the torch device."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    typer.echo(f"scoresde {__version__} (torch {torch.__version__}, device: {device})")
    typer.echo(f"SDEs:       {', '.join(SDES)}")
    typer.echo(f"schedules:  {', '.join(SCHEDULES)}")
    typer.echo(f"time grids: {', '.join(TIME_GRIDS)}")


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
