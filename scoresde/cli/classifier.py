"""``scoresde train-classifier``: train the time-dependent classifier p(y | x_t, t) of a run, for classifier
guidance (:func:`scoresde.noisy_classifier.train_classifier`; Dhariwal & Nichol 2021)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from .app import RunOption, app, check_device, fail, output_folder, set_threads, writing


@app.command("train-classifier")
def train_classifier(
    run: RunOption = None,
    steps: Annotated[int, typer.Option(help="optimizer steps")] = 2000,
    batch_size: Annotated[int, typer.Option(help="batch size")] = 128,
    lr: Annotated[float, typer.Option(help="peak learning rate (AdamW, one-cycle schedule)")] = 2e-3,
    seed: Annotated[int, typer.Option(help="seed of the weights, batches, times and noise")] = 0,
    out: Annotated[
        Path | None, typer.Option("--out", help="folder to write noisy_classifier.* into (default: the run folder)")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N")] = "cpu",
    threads: Annotated[int, typer.Option(help="CPU threads for torch (default 1; 0 = torch's default)")] = 1,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bar")] = False,
) -> None:
    """Train a classifier of noisy samples x_t of a run's data and SDE, for classifier guidance; it is saved
    in the run folder as noisy_classifier.safetensors + .json and its held-out accuracy printed per noise level."""
    from ..noisy_classifier import FILES
    from ..noisy_classifier import train_classifier as train
    from ..run_folder import latest_run, load_run

    for flag, value in (("--steps", steps), ("--batch-size", batch_size)):
        if value < 1:
            fail(f"{flag} must be a positive integer, got {value}")
    if not (math.isfinite(lr) and lr > 0):
        fail(f"--lr must be a positive number, got {lr}")
    set_threads(threads)
    check_device(device)
    if run is None:
        run = latest_run("runs")
        if run is None:
            fail("no trained run under ./runs: run `scoresde train` first or pass --run DIR")
    elif not run.is_dir():
        fail(f"run folder {run} {'is a file, not a folder' if run.exists() else 'does not exist'}")
    try:
        dm = load_run(run)
    except ValueError as err:
        fail(str(err))
    where, option = (output_folder(out), "--out") if out is not None else (run, "--run")
    try:
        with writing(where / FILES[1], option):
            result = train(
                dm, steps=steps, batch_size=batch_size, lr=lr, seed=seed, out=where, progress=not quiet, device=device
            )
    except (ValueError, TypeError, ImportError) as err:
        fail(str(err))
    info = result.info
    k = info["network"]["num_classes"]
    if info["accuracy"]:
        levels = ", ".join(f"t={t} {100 * a:.1f}%" for t, a in info["accuracy"].items())
        typer.echo(f"held-out accuracy ({info['heldout']} samples, {k} classes, chance {100 / k:.1f}%): {levels}")
    else:
        typer.echo("no held-out data (the run was trained with --heldout 0): accuracy not measured")
    typer.echo(f"trained {steps} steps in {info['seconds']:.1f} s; wrote {result.path}")
