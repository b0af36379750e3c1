"""``scoresde evaluate``: sample quality and likelihoods of a model (:func:`scoresde.evaluation.evaluate`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from .app import (
    DataOption,
    DiffusersOption,
    RunOption,
    app,
    fail,
    open_source,
    output_file,
    set_threads,
    split_names,
    writing,
)
from .likelihood import write_json


def _scales(text: str | None) -> list[float]:
    """``--guidance 0,1,2,4`` as finite numbers."""
    scales = []
    for item in split_names(text, "guidance") if text is not None else []:
        try:
            scales.append(float(item))
        except ValueError:
            fail(f"--guidance takes comma-separated numbers like 0,1,2,4, got {text!r}")
        if not math.isfinite(scales[-1]):
            fail(f"--guidance scales must be finite numbers, got {item}")
    return scales


@app.command()
def evaluate(
    run: RunOption = None,
    diffusers: DiffusersOption = None,
    data: DataOption = None,
    solver: Annotated[str, typer.Option(help="sampler name(s), comma-separated (see scoresde info)")] = "ancestral",
    steps: Annotated[int, typer.Option(help="sampling steps")] = 100,
    num: Annotated[int, typer.Option(help="samples to draw per solver")] = 500,
    nll_num: Annotated[int, typer.Option("--nll-num", help="held-out samples for the likelihoods (0: skip NLL)")] = 200,
    method: Annotated[str, typer.Option(help="likelihood method(s): ode, vlb")] = "ode,vlb",
    inception: Annotated[Path | None, typer.Option(help="FID Inception TorchScript file (adds Inception FID)")] = None,
    seed: Annotated[int, typer.Option(help="seed of sampling and likelihood noise")] = 0,
    guidance: Annotated[
        str | None,
        typer.Option(
            help="class-conditional runs: guidance scales, comma-separated (e.g. 0,1,2,4): FD/KID and the class "
            "accuracy of the samples per scale, and an FD-vs-accuracy plot"
        ),
    ] = None,
    autoguidance: Annotated[
        float | None,
        typer.Option(help="autoguidance scale of the samples (default: the run's --guide-scale, as scoresde sample)"),
    ] = None,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="JSON output (default: RUN/eval_SOLVER_STEPS.json; diffusers: only if given)"),
    ] = None,
    threads: Annotated[int, typer.Option(help="CPU threads for torch (default 1; 0 = torch's default, all cores)")] = 1,
) -> None:
    """Sample quality (FD/KID in classifier features for images, SW2/MMD for points) and NLL of a model.

    The reference is the run's held-out split or --data; a diffusers model needs --data (its NLL is
    measured on those images, and samples are compared with them).
    """
    from ..evaluation import evaluate as evaluate_model
    from ..evaluation import guidance_table
    from ..plots import guidance_plot

    if steps < 1 or num < 2:
        fail("--steps must be >= 1 and --num >= 2")
    if nll_num < 0:
        fail(f"--nll-num must be >= 0 (0 skips the likelihoods), got {nll_num}")
    solvers, methods, scales = (
        split_names(solver, "solver"),
        split_names(method, "method") if nll_num > 0 else [],
        _scales(guidance),
    )
    set_threads(threads)
    if json_out is not None:
        output_file(json_out, "--json", "a JSON file path")
    dm = open_source(run=run, diffusers=diffusers, data=data)
    if scales and dm.num_classes is None:
        fail(f"--guidance needs a class-conditional model, but {dm.description} is unconditional")
    run_dir = dm.provenance.run_dir
    if json_out is None and run_dir is not None:
        json_out = output_file(run_dir / f"eval_{'+'.join(solvers)}_{steps}.json", "--json", "a JSON file")
    if autoguidance is not None and not math.isfinite(autoguidance):
        fail(f"--autoguidance must be a finite number, got {autoguidance}")
    typer.echo(f"evaluating {dm.description} against {dm.dataset}")
    try:
        result = evaluate_model(
            dm, solvers=solvers, sample_steps=steps, num_samples=num, nll_num=max(nll_num, 1), methods=methods,
            inception=inception, seed=seed, log=typer.echo, guidance=scales, autoguidance=autoguidance,
        )  # fmt: skip
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    if run_dir is None:
        result["run"] = dm.description
    write_json(json_out, result)
    if scales:
        typer.echo(guidance_table(result))
        if json_out is not None:
            with writing(json_out.with_suffix(".guidance.png"), "--json"):
                plot = guidance_plot(result, json_out.with_suffix(".guidance.png"))
            typer.echo(f"wrote {plot}" if plot else "FD-vs-accuracy plot skipped (needs images and matplotlib)")
