"""``scoresde plot RUN``: the loss curves (overall and per t-bin) and the latest preview in one PNG."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from .app import app, fail

INSTALL_PLOT = 'pip install -c constraints.txt -e ".[log]"'


def read_metrics(run: Path) -> list[dict[str, Any]]:
    """The records of ``run/metrics.jsonl`` (a torn last line, from a killed run, is skipped)."""
    file = run / "metrics.jsonl"
    if not file.is_file():
        raise ValueError(f"{run} has no metrics.jsonl (is it a run folder? train with: scoresde train --out {run})")
    records = []
    for line in file.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    if not records:
        raise ValueError(f"{file} holds no records yet")
    return records


def plot_run(run: Path, out: Path) -> Path:
    """Write ``out``: left, the mean loss against the step (log scale) with one curve per t-bin
    (coloured from small t to large t); right, the newest ``samples/step_*.png``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError(f"scoresde plot needs matplotlib; install it with: {INSTALL_PLOT}") from None
    records = read_metrics(run)
    previews = sorted((run / "samples").glob("step_*.png")) if (run / "samples").is_dir() else []
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [1.3, 1]})
    steps = [r["step"] for r in records]
    edges = records[-1].get("t_bins") or []
    bins = len(records[-1].get("loss_by_t") or [])
    colours = plt.cm.viridis([k / max(1, bins - 1) for k in range(bins)])
    for k in range(bins):
        values = [r["loss_by_t"][k] if r.get("loss_by_t") and k < len(r["loss_by_t"]) else None for r in records]
        points = [(s, v) for s, v in zip(steps, values, strict=True) if v is not None and v > 0]
        if points:
            label = f"t ∈ [{edges[k]:.2g}, {edges[k + 1]:.2g})" if k + 1 < len(edges) else f"bin {k}"
            left.plot(*zip(*points, strict=True), color=colours[k], lw=1, alpha=0.8, label=label)
    overall = [
        (s, r["loss"]) for s, r in zip(steps, records, strict=True) if r["loss"] > 0 and math.isfinite(r["loss"])
    ]
    if overall:
        left.plot(*zip(*overall, strict=True), color="black", lw=2.2, label="loss (all t)")
    left.set(xlabel="step", ylabel="loss", yscale="log", title=f"{run.name}: loss by training step")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7, ncol=2)
    if previews:
        image = plt.imread(previews[-1])
        right.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
        right.set_title(f"samples at step {int(previews[-1].stem.split('_')[-1])}")
    else:
        right.text(0.5, 0.5, "no sample pictures yet\n(--sample-every)", ha="center", va="center")
    right.axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


@app.command()
def plot(
    run: Annotated[Path, typer.Argument(help="run folder (holds metrics.jsonl and samples/)")],
    out: Annotated[Path | None, typer.Option("--out", help="PNG to write (default: RUN/plot.png)")] = None,
) -> None:
    """Plot a run: the loss curves (overall and per t-bin) and the latest sample picture, as one PNG."""
    if not run.is_dir():
        fail(f"run folder {run} does not exist")
    try:
        written = plot_run(run, out or run / "plot.png")
    except (ValueError, OSError) as err:
        fail(str(err))
    typer.echo(f"wrote {written}")
