"""``scoresde info``: version, registered variants, torch device."""

from __future__ import annotations

import typer

from .. import __version__
from ..schedules import SCHEDULES, TIME_GRIDS
from ..sde import SDES
from .app import app


@app.command()
def info() -> None:
    """Print the version, the registered variants and the torch device."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    typer.echo(f"scoresde {__version__} (torch {torch.__version__}, device: {device})")
    typer.echo(f"SDEs:       {', '.join(SDES)}")
    typer.echo(f"schedules:  {', '.join(SCHEDULES)}")
    typer.echo(f"time grids: {', '.join(TIME_GRIDS)}")
