"""``scoresde plot RUN``: the loss curves (overall and per t-bin) and the latest preview in one PNG
(:func:`scoresde.plots.plot_run`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import app, fail, output_file, writing


@app.command()
def plot(
    run: Annotated[Path, typer.Argument(help="run folder (holds metrics.jsonl and samples/)")],
    out: Annotated[Path | None, typer.Option("--out", help="PNG to write (default: RUN/plot.png)")] = None,
) -> None:
    """Plot a run: the loss curves (overall and per t-bin) and the latest sample picture, as one PNG."""
    from ..plots import plot_run

    if not run.is_dir():
        fail(f"run folder {run} does not exist")
    out = output_file(out or run / "plot.png", "--out", "a PNG file")
    try:
        with writing(out):
            written = plot_run(run, out)
    except (ValueError, ImportError) as err:
        fail(str(err))
    typer.echo(f"wrote {written}")
