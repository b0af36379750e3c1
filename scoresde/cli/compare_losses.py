"""``scoresde compare-losses``: the seed's study of loss weightings × time sampling, over seeds
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
    seed: Annotated[int, typer.Option(help="first seed (initial weights, data order, split, evaluation draws)")] = 0,
    seeds: Annotated[int, typer.Option(help="repeat every setting for seeds seed … seed+N−1; report mean ± sd")] = 1,
    importance: Annotated[
        str,
        typer.Option(
            help="importance-sample training times ∝ w(t): off, on (every setting) or both "
            "(each weighting with non-constant w(t) with and without; a no-op for simple)"
        ),
    ] = "off",
    recipe: Annotated[
        str,
        typer.Option(
            help="seed (ε-network, MLP width 256 for points, batch 128, lr 1e-3: the seed's study) or train "
            "(`scoresde train --data DATA`'s network, EMA, optimiser, warm-up and batch; precondition edm); "
            "the flags below override it"
        ),
    ] = "seed",
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="training batch size (default: the recipe's)")
    ] = None,
    net: Annotated[
        str | None, typer.Option(help="network: auto (mlp for points, unet for images), mlp, unet (default: auto)")
    ] = None,
    width: Annotated[int | None, typer.Option(help="MLP width (default: the recipe's)")] = None,
    precondition: Annotated[
        str | None,
        typer.Option(help="none (ε-networks, the seed's question) or edm (the train default) (default: the recipe's)"),
    ] = None,
    lr: Annotated[float | None, typer.Option(help="learning rate (default: the recipe's)")] = None,
    solver: Annotated[str, typer.Option(help="sampler(s) for the quality metrics")] = "ancestral,ode",
    sample_steps: Annotated[int, typer.Option("--sample-steps", help="sampling steps per solver")] = 100,
    num: Annotated[int, typer.Option(help="samples per solver")] = 500,
    nll_num: Annotated[int, typer.Option("--nll-num", help="held-out samples for the likelihoods")] = 200,
    vlb_steps: Annotated[int, typer.Option("--vlb-steps", help="VLB chain length (0: the training N)")] = 0,
    ode_tol: Annotated[
        float, typer.Option("--ode-tol", help="rtol = atol of the ODE likelihood (0: the estimator's 1e-5)")
    ] = 0.0,
    progress: Annotated[bool, typer.Option(help="show training progress bars")] = False,
    threads: Annotated[int, typer.Option(help="CPU threads for torch (default 1; 0 = torch's default, all cores)")] = 1,
    merge: Annotated[
        str | None,
        typer.Option(
            help="comma-separated output folders of studies run apart (seeds or settings on separate cores) "
            "to join into --out; nothing is trained and the study options are not used"
        ),
    ] = None,
) -> None:
    """Train one model per (weighting, time, importance) and seed on equal budgets; compare likelihood and
    sample quality as mean ± sd over seeds, with a computed reading per metric."""
    import dataclasses

    from ..loss_study import IMPORTANCE, compare_losses, merge_studies, recipe_config
    from ..param import PRECONDITIONS

    if merge is not None:
        output_folder(out)
        try:
            with writing(out):
                result = merge_studies([Path(p) for p in split_names(merge, "merge")], out, log=typer.echo)
        except (ValueError, FileNotFoundError) as err:
            fail(str(err))
        return _report(result)
    if precondition is not None and precondition not in PRECONDITIONS:
        fail(f"unknown precondition {precondition!r}; choose one of: {', '.join(PRECONDITIONS)}")
    if importance not in IMPORTANCE:
        fail(f"--importance must be one of: {', '.join(IMPORTANCE)}; got {importance!r}")
    if seeds < 1:
        fail(f"--seeds must be a positive number of seeds, got {seeds}")
    if ode_tol < 0 or ode_tol >= 1:
        fail(f"--ode-tol must lie in [0, 1) (0: the estimator's default), got {ode_tol}")
    try:
        base = recipe_config(
            recipe, data=data, net=net, width=width, precondition=precondition, lr=lr, batch_size=batch_size
        )
    except ValueError as err:
        fail(str(err))
    base = dataclasses.replace(base, threads=threads)
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
                seeds=seeds,
                batch_size=base.batch_size,
                solvers=split_names(solver, "solver"),
                sample_steps=sample_steps,
                num_samples=num,
                nll_num=nll_num,
                vlb_steps=vlb_steps or None,
                ode_tol=ode_tol or None,
                importance=importance,
                config=base,
                progress=progress,
                log=typer.echo,
            )
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    typer.echo("")
    _report(result)


def _report(result) -> None:
    """The study's table and the files written (a run or a merge)."""
    typer.echo(result.markdown)
    files = [result.out / "results.md", result.out / "results.json", *result.plots]
    typer.echo("wrote " + ", ".join(map(str, files)))
