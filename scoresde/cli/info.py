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
    from ..data import DATASETS, labelled_datasets
    from ..data_defaults import summary
    from ..losses import WEIGHTINGS
    from ..nets import NETWORKS
    from ..samplers import SOLVERS

    typer.echo(f"solvers:    {', '.join(SOLVERS)}")
    typer.echo(f"weightings: {', '.join(WEIGHTINGS)}")
    typer.echo(f"networks:   {', '.join(NETWORKS)}")
    typer.echo(f"datasets:   {', '.join(DATASETS)}")
    typer.echo(f"defaults:   {summary()} (a new run's settings; scoresde train --help)")
    typer.echo(f"labelled:   {', '.join(labelled_datasets())} (class labels for train --conditional)")
    typer.echo("")
    typer.echo(solver_table(SOLVERS[name] for name in SOLVERS))


def solver_table(solvers) -> str:
    """One line per solver: name, order of accuracy, whether it draws noise, and its summary."""
    rows = [("solver", "order", "stochastic", "summary")]
    rows += [(s.name, f"{s.order:g}", "yes" if s.stochastic else "no", s.summary) for s in solvers]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3] for r in rows)
