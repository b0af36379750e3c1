"""``scoresde compare-losses``: the seed's study of loss weightings × time sampling
(:func:`scoresde.loss_study.compare_losses`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import app, fail, output_folder, set_threads, split_names, writing


@app.command("compare-losses")
def compare_losses_command(
    data: Annotated[str, typer.Option(help="dataset name (see scoresde info) or path")] = "digits",
    weightings: Annotated[str, typer.Option(help="comma-separated weighting names")] = "simple,elbo,likelihood",
    time: Annotated[str, typer.Option("--time", help="comma-separated: discrete, continuous")] = "discrete,continuous",
    budget: Annotated[int, typer.Option(help="training steps per model (equal for all)")] = 2000,
    out: Annotated[Path, typer.Option(help="output folder (tables, plots; no run folders)")] = Path("compare"),
    seed: Annotated[int, typer.Option(help="seed shared by every setting")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="training batch size")] = 128,
    net: Annotated[str, typer.Option(help="network: auto (mlp for points, unet for images), mlp, unet")] = "auto",
    width: Annotated[int, typer.Option(help="MLP width")] = 256,
    precondition: Annotated[
        str,
        typer.Option(
            help="none (ε-networks, the seed's question; unlike `scoresde train`'s default) or edm (the train default)"
        ),
    ] = "none",
    lr: Annotated[float, typer.Option(help="learning rate")] = 1e-3,
    solver: Annotated[str, typer.Option(help="sampler(s) for the quality metrics")] = "ancestral,ode",
    sample_steps: Annotated[int, typer.Option("--sample-steps", help="sampling steps per solver")] = 100,
    num: Annotated[int, typer.Option(help="samples per solver")] = 500,
    nll_num: Annotated[int, typer.Option("--nll-num", help="held-out samples for the likelihoods")] = 200,
    vlb_steps: Annotated[int, typer.Option("--vlb-steps", help="VLB chain length (0: the training N)")] = 0,
    importance: Annotated[
        bool, typer.Option(help="importance-sample training times ∝ w(t) in every setting (no-op for simple)")
    ] = False,
    progress: Annotated[bool, typer.Option(help="show training progress bars")] = False,
    threads: Annotated[int, typer.Option(help="CPU threads for torch (default 1; 0 = torch's default, all cores)")] = 1,
) -> None:
    """Train one model per (weighting, time) on equal budgets and compare likelihood and sample quality."""
    import dataclasses

    from ..config import OptimConfig, TrainConfig
    from ..loss_study import compare_losses
    from ..param import PRECONDITIONS

    if precondition not in PRECONDITIONS:
        fail(f"unknown precondition {precondition!r}; choose one of: {', '.join(PRECONDITIONS)}")
    base = TrainConfig()
    base = dataclasses.replace(
        base,
        model=dataclasses.replace(base.model, net=net, width=width, precondition=precondition),
        optim=dataclasses.replace(OptimConfig(), lr=lr),
        threads=threads,
    )
    set_threads(threads)
    output_folder(out)
    try:
        with writing(out):
            result = compare_losses(
                data,
                weightings=split_names(weightings, "weightings"),
                times=split_names(time, "time"),
                budget=budget,
                out=out,
                seed=seed,
                batch_size=batch_size,
                solvers=split_names(solver, "solver"),
                sample_steps=sample_steps,
                num_samples=num,
                nll_num=nll_num,
                vlb_steps=vlb_steps or None,
                importance=importance,
                config=base,
                progress=progress,
                log=typer.echo,
            )
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    typer.echo("")
    typer.echo(result.markdown)
    typer.echo(f"wrote {out / 'results.md'}, {out / 'results.json'}" + "".join(f", {p}" for p in result.plots))
