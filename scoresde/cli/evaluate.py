"""``scoresde likelihood``, ``scoresde evaluate`` and ``scoresde compare-losses``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer

from .app import app, fail, output_file, output_folder, set_threads, write_failed
from .sources import load_source

# the model and reference-data options that likelihood and evaluate share
RunOption = Annotated[Path | None, typer.Option("--run", help="run folder (default: the newest under ./runs)")]
DiffusersOption = Annotated[
    Path | None, typer.Option("--diffusers", help="diffusers folder (UNet2DModel + scheduler); needs --data")
]
DataOption = Annotated[
    str | None, typer.Option(help="reference data, a dataset name or path (default: the run's held-out split)")
]


def _split(text: str, what: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        fail(f"--{what} needs at least one name")
    return items


def _write_json(path: Path | None, record: dict) -> None:
    if path is not None:
        from ..imageio import atomic_write_bytes

        try:
            atomic_write_bytes(path, json.dumps(record, indent=2).encode())
        except OSError as err:
            write_failed(path, err, "--json")
        typer.echo(f"wrote {path}")


@app.command()
def likelihood(
    run: RunOption = None,
    diffusers: DiffusersOption = None,
    data: DataOption = None,
    method: Annotated[str, typer.Option(help="ode (probability-flow ODE) or vlb (discrete variational bound)")] = "ode",
    num: Annotated[int, typer.Option(help="held-out samples to evaluate")] = 200,
    steps: Annotated[int, typer.Option(help="VLB chain length N (0: the run's N; a diffusers model's N)")] = 0,
    grid: Annotated[
        str, typer.Option(help="VLB time grid: uniform (DDPM) or any time grid, e.g. log-snr (see scoresde info)")
    ] = "uniform",
    divergence: Annotated[str, typer.Option(help="ODE divergence: auto, exact or hutchinson")] = "auto",
    probes: Annotated[int, typer.Option(help="Hutchinson probes per solve")] = 1,
    rtol: Annotated[float, typer.Option(help="ODE relative tolerance")] = 1e-5,
    atol: Annotated[float, typer.Option(help="ODE absolute tolerance")] = 1e-5,
    seed: Annotated[int, typer.Option(help="seed of the dequantization, probe and VLB noise")] = 0,
    class_: Annotated[
        str | None,
        typer.Option(
            "--class",
            help="class-conditional runs: log p(x | y) at class K (an id or name) or at each sample's own label "
            "(data); default: log p(x)",
        ),
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the result as JSON here")] = None,
    threads: Annotated[int, typer.Option(help="CPU threads for torch (default 1; 0 = torch's default, all cores)")] = 1,
) -> None:
    """Negative log-likelihood of held-out data or --data (bits/dim for quantized images, nats/dim otherwise)."""
    import torch

    from ..compare import data_levels
    from ..grids import TIME_GRIDS
    from ..likelihood import METHODS, log_likelihood

    if method not in METHODS:
        fail(f"unknown likelihood method {method!r}; choose one of: {', '.join(METHODS)}")
    set_threads(threads)
    if grid not in TIME_GRIDS:
        fail(f"unknown time grid {grid!r}; choose one of: {', '.join(TIME_GRIDS)}")
    if num < 1:
        fail(f"--num must be a positive integer, got {num}")
    if rtol <= 0 or atol <= 0:
        fail(f"--rtol and --atol must be positive, got {rtol} and {atol}")
    if json_out is not None:
        output_file(json_out, "--json", "a JSON file path")
    r = load_source(run=run, diffusers=diffusers, data=data)
    if r.reference is None:
        if diffusers is not None:
            fail("a diffusers model has no held-out data: give the images to score with --data NAME|PATH")
        fail(f"{r.description} has no held-out reference data (reference.safetensors); pass --data")
    conditioning = {}
    if class_ is not None and class_.strip() == "data":
        if r.num_classes is None:
            r.labels_of(class_)  # the one line for an unconditional model
        if r.reference_labels is None:
            fail(f"--class data needs the labels of the reference data, but {r.dataset} has none")
        y = r.reference_labels[:num]
        if int(y.max()) >= r.num_classes:
            fail(f"the labels of {r.dataset} go up to {int(y.max())}, but the model has {r.num_classes} classes")
        conditioning = {"y": y}
    elif class_ is not None:
        target = r.labels_of(class_)
        if target == "all":
            fail("--class all draws a grid in `scoresde sample`; for a likelihood give a class K or data")
        conditioning = {"y": target}
    levels = data_levels(r.dataset, r.kind)
    dim = math.prod(r.data_shape)
    options = {"steps": steps or r.N, "grid": grid} if method == "vlb" else {}
    if method == "ode":
        options.update(divergence=divergence, probes=probes, rtol=rtol, atol=atol)
    try:
        nll, info = log_likelihood(
            r.model,
            r.sde,
            r.reference[:num].float(),
            method,
            levels=levels,
            generator=torch.Generator().manual_seed(seed),
            return_info=True,
            **conditioning,
            **options,
        )
    except ValueError as err:
        fail(str(err))
    per_dim = nll / dim
    mean, se = per_dim.mean().item(), per_dim.std().item() / math.sqrt(len(per_dim)) if len(per_dim) > 1 else 0.0
    given = "" if not conditioning else " given their labels" if class_.strip() == "data" else f" given class {class_}"
    typer.echo(f"{r.description}, {len(nll)} samples of {r.dataset}{given}, method {method}, {info.nfe} NFE")
    typer.echo(f"NLL: {mean:.4f} ± {se:.4f} nats/dim ({nll.mean().item():.3f} nats per sample)")
    record = {"method": method, "nats_per_dim": mean, "nats_per_dim_se": se, "nfe": info.nfe, "n": len(nll)}
    if conditioning:
        record["class"] = class_.strip()
    if levels is not None:
        typer.echo(f"      {mean / math.log(2):.4f} ± {se / math.log(2):.4f} bits/dim ({levels} levels)")
        record.update(bits_per_dim=mean / math.log(2), bits_per_dim_se=se / math.log(2), levels=levels)
    terms = {k: v.mean().item() / dim for k, v in info.terms.items()}
    typer.echo("terms (nats/dim): " + ", ".join(f"{k} {v:.4f}" for k, v in terms.items()))
    record["terms_nats_per_dim"] = terms
    _write_json(json_out, record)


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
    from ..compare import evaluate_run
    from ..likelihood import METHODS
    from ..samplers import SOLVERS

    solvers = _split(solver, "solver")
    for s in solvers:
        if s not in SOLVERS:
            fail(f"unknown solver {s!r}; choose one of: {', '.join(SOLVERS)}")
    methods = _split(method, "method") if nll_num > 0 else []
    for m in methods:
        if m not in METHODS:
            fail(f"unknown likelihood method {m!r}; choose one of: {', '.join(METHODS)}")
    if steps < 1 or num < 2:
        fail("--steps must be >= 1 and --num >= 2")
    if nll_num < 0:
        fail(f"--nll-num must be >= 0 (0 skips the likelihoods), got {nll_num}")
    scales = []
    for text in _split(guidance, "guidance") if guidance is not None else []:
        try:
            scales.append(float(text))
        except ValueError:
            fail(f"--guidance takes comma-separated numbers like 0,1,2,4, got {guidance!r}")
        if not math.isfinite(scales[-1]):
            fail(f"--guidance scales must be finite numbers, got {text}")
    set_threads(threads)
    if json_out is not None:
        output_file(json_out, "--json", "a JSON file path")
    r = load_source(run=run, diffusers=diffusers, data=data)
    if r.reference is None and diffusers is not None:
        fail("a diffusers model has no held-out data: give reference images with --data NAME|PATH")
    if scales and r.num_classes is None:
        fail(f"--guidance needs a class-conditional model, but {r.description} is unconditional")
    if json_out is None and r.run_dir is not None:
        json_out = output_file(r.run_dir / f"eval_{'+'.join(solvers)}_{steps}.json", "--json", "a JSON file")
    typer.echo(f"evaluating {r.description} against {r.dataset}")
    try:
        result = evaluate_run(
            r.as_run(),
            solvers=solvers,
            sample_steps=steps,
            num_samples=num,
            nll_num=max(nll_num, 1),
            methods=methods,
            inception=inception,
            seed=seed,
            log=typer.echo,
            guidance=scales,
        )
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    if r.run_dir is None:
        result["run"] = r.description
    _write_json(json_out, result)
    if scales:
        from ..compare import guidance_plot, guidance_table

        typer.echo(guidance_table(result))
        if json_out is not None:
            plot = guidance_plot(result, json_out.with_suffix(".guidance.png"))
            typer.echo(f"wrote {plot}" if plot else "FD-vs-accuracy plot skipped (needs images and matplotlib)")


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

    from ..compare import compare_losses
    from ..config import OptimConfig, TrainConfig
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
        result = compare_losses(
            data,
            weightings=_split(weightings, "weightings"),
            times=_split(time, "time"),
            budget=budget,
            out=out,
            seed=seed,
            batch_size=batch_size,
            solvers=_split(solver, "solver"),
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
