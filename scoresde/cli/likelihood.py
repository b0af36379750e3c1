"""``scoresde likelihood``: the negative log-likelihood of held-out data or ``--data``
(:func:`scoresde.evaluation.likelihood`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer

from .app import DataOption, DiffusersOption, RunOption, app, fail, open_source, output_file, set_threads, writing


def write_json(path: Path | None, record: dict) -> None:
    """Write ``record`` as JSON at ``path`` (``--json``) atomically, if given."""
    if path is not None:
        from ..imageio import atomic_write_bytes

        with writing(path, "--json"):
            atomic_write_bytes(path, json.dumps(record, indent=2).encode())
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
    from ..evaluation import likelihood as nll_of
    from ..grids import TIME_GRIDS
    from ..likelihood import METHODS

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
    dm = open_source(run=run, diffusers=diffusers, data=data)
    if method == "vlb":
        options = {"grid": grid, **({"steps": steps} if steps else {})}
    else:
        options = {"divergence": divergence, "probes": probes, "rtol": rtol, "atol": atol}
    classes = class_.strip() if class_ is not None else None
    try:
        record = nll_of(dm, method, num, classes=classes, seed=seed, **options)
    except ValueError as err:
        fail(str(err))
    mean, se, dim = record["nats_per_dim"], record["nats_per_dim_se"], math.prod(dm.data_shape)
    given = "" if classes is None else " given their labels" if classes == "data" else f" given class {class_}"
    typer.echo(f"{dm.description}, {record['n']} samples of {dm.dataset}{given}, method {method}, {record['nfe']} NFE")
    typer.echo(f"NLL: {mean:.4f} ± {se:.4f} nats/dim ({mean * dim:.3f} nats per sample)")
    if classes is not None:
        record["class"] = classes
    if "bits_per_dim" in record:
        typer.echo(f"      {record['bits_per_dim']:.4f} ± {record['bits_per_dim_se']:.4f} bits/dim "
                   f"({record['levels']} levels)")  # fmt: skip
    terms = record["terms_nats_per_dim"]
    typer.echo("terms (nats/dim): " + ", ".join(f"{k} {v:.4f}" for k, v in terms.items()))
    write_json(json_out, record)
