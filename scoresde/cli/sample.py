"""``scoresde sample``: draw samples from an analytic model (no training), a trained run or a diffusers model.

Solvers, grids and analytic models are read from their registries. The output is a PNG (a
scatter plot over reference points for 2-D data, an image grid for images) or an ``.npz``
holding the raw samples.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import samplers
from ..analytic import MODELS
from ..samplers import SOLVERS
from ..schedules import TIME_GRIDS
from .app import app, fail, set_threads
from .sources import load_source


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
    run: Annotated[Path | None, typer.Option("--run", help="trained run folder (default: newest in ./runs)")] = None,
    diffusers: Annotated[
        Path | None, typer.Option("--diffusers", help="diffusers folder (UNet2DModel + scheduler, save_pretrained)")
    ] = None,
    solver: Annotated[str, typer.Option(help=f"one of: {', '.join(SOLVERS)}")] = "unipc",
    steps: Annotated[int, typer.Option(help="number of steps of the time grid (+1 NFE for the denoising step)")] = 20,
    num: Annotated[int | None, typer.Option(help="number of samples (default: 64 images, a grid; 2000 points)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the generator (all randomness)")] = 0,
    grid: Annotated[
        str, typer.Option(help=f"time grid: auto (the solver's measured best) or one of: {', '.join(TIME_GRIDS)}")
    ] = "auto",
    t_min: Annotated[float | None, typer.Option("--t-min", help="end time ε (default: the solver's)")] = None,
    option: Annotated[
        list[str] | None, typer.Option("--option", "-o", help="solver option key=value (e.g. eta=1, order=3)")
    ] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="solve in chunks of this size")] = None,
    out: Annotated[Path, typer.Option(help="output: .png (scatter plot or image grid) or .npz (raw samples)")] = Path(
        "samples.png"
    ),
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    threads: Annotated[int, typer.Option(help="CPU threads for torch (default 1; 0 = torch's default)")] = 1,
) -> None:
    """Sample an analytic model (--model gmm), a run or a diffusers model with any solver; write a PNG or .npz."""
    import numpy as np
    import torch

    if solver not in SOLVERS:
        fail(f"unknown solver {solver!r}; choose one of: {', '.join(SOLVERS)}")
    if grid != "auto" and grid not in TIME_GRIDS:
        fail(f"unknown time grid {grid!r}; choose one of: auto, {', '.join(TIME_GRIDS)}")
    if steps < 1:
        fail(f"--steps must be a positive integer, got {steps}")
    if num is not None and num < 1:
        fail(f"--num must be a positive integer, got {num}")
    if out.suffix.lower() not in (".png", ".npz"):
        fail(f"--out must end in .png or .npz, got {out}")
    set_threads(threads)
    if device.startswith("cuda") and not torch.cuda.is_available():
        fail("--device cuda was asked for but torch sees no CUDA device")
    options = _parse_options(option or [])
    src = load_source(model=model, run=run, diffusers=diffusers, device=device)
    net, sde, prediction, data_shape, kind = src.model, src.sde, src.prediction, src.data_shape, src.kind
    reference, desc, data = src.reference, src.description, src.analytic
    if num is None:
        num = 64 if kind == "images" else 2000
    generator = torch.Generator(device).manual_seed(seed)
    defaults = {k: v for k, v in src.sample_options(solver).items() if k not in options}  # -o overrides them

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    start = time.perf_counter()
    progress = Progress(
        TextColumn(f"{solver} ({steps} steps)"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
        transient=True,
        disable=num * steps < 200_000,  # a bar only for long work
    )
    with progress:
        task = progress.add_task("sample", total=1.0)
        try:
            x, info = samplers.sample(
                net,
                sde,
                (num, *data_shape),
                solver=solver,
                steps=steps,
                prediction=prediction,
                generator=generator,
                grid=grid,
                t_min=t_min,
                batch_size=batch_size,
                callback=lambda s: progress.update(task, completed=s["progress"]),
                return_info=True,
                device=device,
                **defaults,
                **options,
            )
        except ValueError as err:
            fail(str(err))
    seconds = time.perf_counter() - start
    x = x.detach().cpu().float()

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".npz":
        import io

        from ..imageio import atomic_write_bytes

        buffer = io.BytesIO()
        np.savez(buffer, samples=x.numpy(), solver=solver, steps=steps, nfe=info.nfe, seed=seed)
        atomic_write_bytes(out, buffer.getvalue())
    else:
        from ..imageio import image_grid, save_png, scatter_image

        if kind == "images":
            zoom = max(1, math.ceil(32 / x.shape[-1]))  # small images (8×8 digits) enlarged, as the trainer's previews
            pixels = image_grid(x[:64].clamp(-1, 1).repeat_interleave(zoom, -1).repeat_interleave(zoom, -2))
        elif math.prod(data_shape) == 2:
            pixels = scatter_image(x.reshape(-1, 2), None if reference is None else reference.reshape(-1, 2))
        else:
            fail(f"a PNG needs 2-D points or images; these samples have shape {data_shape}: use --out x.npz")
        save_png(out, pixels)
    typer.echo(
        f"wrote {out}: {num} samples from {desc}, solver {solver}, {steps} steps, NFE {info.nfe}, {seconds:.2f} s"
    )
    if data is not None:  # ground truth known: say how good the samples are
        finite = torch.isfinite(x.flatten(1)).all(1)
        logp = data.log_prob(x[finite]).mean().item()
        logp_data = data.log_prob(reference).mean().item()
        counts = data.responsibilities(x[finite]).argmax(1).bincount(minlength=data.K).double()
        mode_error = 0.5 * (counts / counts.sum() - data.weights).abs().sum().item()
        typer.echo(f"mean log p_data(samples) = {logp:.3f} (data itself: {logp_data:.3f})")
        typer.echo(f"mode-weight error (total variation) = {mode_error:.3f}")
