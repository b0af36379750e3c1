"""``scoresde info``: version, registered variants, torch device."""

from __future__ import annotations

import typer

from .. import __version__
from ..grids import TIME_GRIDS
from ..schedules import SCHEDULES
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
    # registries of the later layers are imported here, not at module load, to keep start-up cheap
    from ..data import DATASETS
    from ..losses import WEIGHTINGS
    from ..nets import NETWORKS
    from ..samplers import SOLVERS

    typer.echo(f"solvers:    {', '.join(SOLVERS)}")
    typer.echo(f"weightings: {', '.join(WEIGHTINGS)}")
    typer.echo(f"networks:   {', '.join(NETWORKS)}")
    typer.echo(f"datasets:   {', '.join(DATASETS)}")
