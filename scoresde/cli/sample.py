"""``scoresde sample``: draw samples from an analytic model (no training), a trained run or a diffusers model.

Solvers, grids and analytic models are read from their registries. The output is a PNG (an
image grid for images; for vectors a scatter plot over reference points (d = 2), a histogram
(d = 1) or a pair grid (d ≥ 3)) or an ``.npz`` holding the raw samples. The output path is
checked before any sampling: missing parent folders are created; an existing folder, a file in
the way or an unwritable folder ends in one error line.

A class-conditional model (a ``--conditional`` run; an analytic mixture, whose components are
its classes) samples one class with ``--class K`` (an id or a class name) at classifier-free
guidance ``--guidance W`` (default 1, :mod:`scoresde.guidance`), or every class with
``--class all``: ``--num`` samples per class, the picture one row per class. Without ``--class``
it samples unconditionally (the null label). The work is :func:`scoresde.generation.generate`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

from ..analytic import MODELS
from ..grids import TIME_GRIDS
from ..samplers import SOLVERS
from .app import DiffusersOption, RunOption, app, check_device, fail, open_source, output_file, set_threads, writing


def _parse_options(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values become int, float or bool when they read as one."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            fail(f"--option takes key=value (e.g. --option eta=1.0), got {item!r}")
        text = text.strip()
        value: Any = text
        if text.lower() in ("true", "false"):
            value = text.lower() == "true"
        else:
            for cast in (int, float):
                try:
                    value = cast(text)
                    break
                except ValueError:
                    pass
        options[key] = value
    return options


@app.command()
def sample(
    model: Annotated[
        str | None, typer.Option("--model", help=f"analytic model, no training: {', '.join(MODELS)}")
    ] = None,
    run: RunOption = None,
    diffusers: DiffusersOption = None,
    solver: Annotated[
        str,
        typer.Option(
            help=f"auto (unipc for an exact --model score, sde-dpm-solver++ for a trained network) or one of: "
            f"{', '.join(SOLVERS)}"
        ),
    ] = "auto",
    steps: Annotated[int, typer.Option(help="number of steps of the time grid (+1 NFE for the denoising step)")] = 20,
    num: Annotated[
        int | None,
        typer.Option(help="number of samples (default: 64 images, a grid; 2000 points); per class with --class all"),
    ] = None,
    class_: Annotated[
        str | None,
        typer.Option(
            "--class",
            help="class-conditional models: a class id or name, or all (one row per class); default: unconditional",
        ),
    ] = None,
    guidance: Annotated[
        float | None,
        typer.Option(help="classifier-free guidance scale w with --class (0 unconditional, 1 conditional; default 1)"),
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the generator (all randomness)")] = 0,
    grid: Annotated[
        str, typer.Option(help=f"time grid: auto (the solver's measured best) or one of: {', '.join(TIME_GRIDS)}")
    ] = "auto",
    t_min: Annotated[float | None, typer.Option("--t-min", help="end time ε (default: the solver's)")] = None,
    option: Annotated[
        list[str] | None, typer.Option("--option", "-o", help="solver option key=value (e.g. eta=1, order=3)")
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", help="solve in chunks of this size (default: ~49k values a chunk on CPU)"),
    ] = None,
    out: Annotated[Path, typer.Option(help="output: .png (scatter plot or image grid) or .npz (raw samples)")] = Path(
        "samples.png"
    ),
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    threads: Annotated[int, typer.Option(help="CPU threads for torch (default 1; 0 = torch's default)")] = 1,
) -> None:
    """Sample an analytic model (--model gmm), a run or a diffusers model with any solver; write a PNG or .npz."""
    from ..generation import generate

    if solver != "auto" and solver not in SOLVERS:
        fail(f"unknown solver {solver!r}; choose one of: auto, {', '.join(SOLVERS)}")
    if grid != "auto" and grid not in TIME_GRIDS:
        fail(f"unknown time grid {grid!r}; choose one of: auto, {', '.join(TIME_GRIDS)}")
    for name, value in (("--steps", steps), ("--num", num), ("--batch-size", batch_size)):
        if value is not None and value < 1:
            fail(f"{name} must be a positive integer, got {value}")
    if out.suffix.lower() not in (".png", ".npz"):
        fail(f"--out must end in .png or .npz, got {out}")
    output_file(out, "--out", "a file ending in .png or .npz")
    set_threads(threads)
    check_device(device)
    if guidance is not None and not math.isfinite(guidance):
        fail(f"--guidance must be a finite number, got {guidance}")
    options = _parse_options(option or [])
    dm = open_source(model=model, run=run, diffusers=diffusers, device=device)
    if guidance is not None and class_ is None:
        if dm.num_classes is None:
            fail(f"--guidance needs a class-conditional model and --class, but {dm.description} is unconditional")
        fail("--guidance needs --class (the class to guide towards): give --class K, a class name or all")
    try:
        classes = dm.class_id(class_) if class_ is not None else None
        with writing(out):
            done = generate(
                dm, num, solver=solver, steps=steps, seed=seed, grid=grid, t_min=t_min, classes=classes,
                guidance=guidance, batch_size=batch_size, out=out, device=device, progress=True, **options,
            )  # fmt: skip
    except ValueError as err:
        fail(str(err))
    typer.echo(_report(dm, done, out, classes))


def _report(dm, done, out: Path, classes: int | str | None) -> str:
    """What was written and, for an analytic model, how close the samples are to the truth."""
    what = ""
    if done.labels is not None:
        names = dm.class_names or tuple(str(i) for i in range(dm.num_classes))
        which = f"{done.per_class} per class" if done.per_class else f"class {names[classes]}"
        what = f" ({which}, guidance {done.guidance:g})"
    lines = [
        f"wrote {out}: {done.num} samples{what} from {dm.description}, solver {done.solver}, {done.steps} steps, "
        f"NFE {done.nfe}, {done.seconds:.2f} s"
    ]
    stats = done.stats
    if "class_hit_rate" in stats:
        lines.append(f"samples in their class's component: {stats['class_hit_rate']:.1%}")
    elif stats:
        lines.append(
            f"mean log p_data(samples) = {stats['mean_log_prob']:.3f} (data itself: {stats['data_log_prob']:.3f})"
        )
        lines.append(f"mode-weight error (total variation) = {stats['mode_error']:.3f}")
    return "\n".join(lines)
