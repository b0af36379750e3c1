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
it samples unconditionally (the null label).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import samplers
from ..analytic import MODELS
from ..grids import TIME_GRIDS
from ..labels import class_rows
from ..samplers import SOLVERS
from .app import app, fail, output_file, set_threads, write_failed
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


class _NpzWriter:
    """Write ``samples`` (float32, ``shape``) into an .npz chunk by chunk, as np.savez lays it out
    (an uncompressed zip of .npy files), in a temporary file renamed over ``path`` on :meth:`close`."""

    def __init__(self, path: Path, shape: tuple[int, ...]) -> None:
        import os
        import tempfile
        import zipfile

        import numpy as np

        self.path, self.shape, self.written = path, shape, 0
        fd, self.tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        self.zip = zipfile.ZipFile(self.tmp, "w", zipfile.ZIP_STORED, allowZip64=True)
        self.member = self.zip.open("samples.npy", "w", force_zip64=True)
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_2_0(self.member, header)

    def write(self, x) -> None:
        import numpy as np

        self.member.write(np.ascontiguousarray(x.numpy(), dtype="<f4").tobytes())
        self.written += len(x)

    def close(self, **scalars) -> None:
        import os

        import numpy as np

        if self.written != self.shape[0]:
            raise RuntimeError(f"wrote {self.written} of {self.shape[0]} samples")  # a bug, not a user error
        self.member.close()
        for key, value in scalars.items():
            with self.zip.open(f"{key}.npy", "w") as f:
                np.lib.format.write_array(f, np.asarray(value), allow_pickle=False)
        self.zip.close()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        """Remove the temporary file if :meth:`close` did not rename it (an error, Ctrl-C)."""
        Path(self.tmp).unlink(missing_ok=True)


GRID_PER_CLASS = 16
"""At most this many samples of each class in the picture of ``--class all``."""


def _write_png(out: Path, x, kind: str, reference, per_row: int | None = None) -> None:
    """An image grid of the first 64 images (``per_row``: all of them, that many per row), or a
    plot of the vectors over the reference."""
    from ..imageio import image_grid, save_png, scatter_image

    if kind == "images":
        zoom = max(1, math.ceil(32 / x.shape[-1]))  # small images (8×8 digits) enlarged, as the trainer's previews
        x = x if per_row else x[:64]
        pixels = image_grid(x.clamp(-1, 1).repeat_interleave(zoom, -1).repeat_interleave(zoom, -2), nrow=per_row)
    else:  # vectors of any dimension: a scatter plot (d = 2), a histogram (d = 1) or a pair grid (d >= 3)
        pixels = scatter_image(x.flatten(1), None if reference is None else reference.flatten(1).cpu())
    save_png(out, pixels)


AUTO_SOLVER = {"exact": "unipc", "trained": "sde-dpm-solver++"}
"""``--solver auto``: with an exact score (``--model``) the accurate ODE solve is best (unipc wins the mixtures at
NFE 5–20); a trained network's own probability flow carries its errors, and at 20 steps the stochastic
sde-dpm-solver++ is ahead of unipc on young models and ties on a well-trained one."""


@app.command()
def sample(
    model: Annotated[
        str | None, typer.Option("--model", help=f"analytic model, no training: {', '.join(MODELS)}")
    ] = None,
    run: Annotated[Path | None, typer.Option("--run", help="trained run folder (default: newest in ./runs)")] = None,
    diffusers: Annotated[
        Path | None, typer.Option("--diffusers", help="diffusers folder (UNet2DModel + scheduler, save_pretrained)")
    ] = None,
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
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="solve in chunks of this size")] = None,
    out: Annotated[Path, typer.Option(help="output: .png (scatter plot or image grid) or .npz (raw samples)")] = Path(
        "samples.png"
    ),
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    threads: Annotated[int, typer.Option(help="CPU threads for torch (default 1; 0 = torch's default)")] = 1,
) -> None:
    """Sample an analytic model (--model gmm), a run or a diffusers model with any solver; write a PNG or .npz."""
    import torch

    if solver != "auto" and solver not in SOLVERS:
        fail(f"unknown solver {solver!r}; choose one of: auto, {', '.join(SOLVERS)}")
    if grid != "auto" and grid not in TIME_GRIDS:
        fail(f"unknown time grid {grid!r}; choose one of: auto, {', '.join(TIME_GRIDS)}")
    if steps < 1:
        fail(f"--steps must be a positive integer, got {steps}")
    if num is not None and num < 1:
        fail(f"--num must be a positive integer, got {num}")
    if batch_size is not None and batch_size < 1:
        fail(f"--batch-size must be a positive integer, got {batch_size}")
    if out.suffix.lower() not in (".png", ".npz"):
        fail(f"--out must end in .png or .npz, got {out}")
    output_file(out, "--out", "a file ending in .png or .npz")
    set_threads(threads)
    try:
        torch.device(device)
    except RuntimeError:
        fail(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        fail("--device cuda was asked for but torch sees no CUDA device")
    if guidance is not None and not math.isfinite(guidance):
        fail(f"--guidance must be a finite number, got {guidance}")
    options = _parse_options(option or [])
    src = load_source(model=model, run=run, diffusers=diffusers, device=device)
    net, sde, data_shape, kind = src.model, src.sde, src.data_shape, src.kind
    reference, desc, data = src.reference, src.description, src.analytic
    if solver == "auto":  # benchmarks/results/sweep_digits.md, sweep_mnist.md, samplers_precise.md
        solver = AUTO_SOLVER["exact" if data is not None else "trained"]
    if guidance is not None and class_ is None:
        if src.num_classes is None:
            fail(f"--guidance needs a class-conditional model and --class, but {desc} is unconditional")
        fail("--guidance needs --class (the class to guide towards): give --class K, a class name or all")
    target = src.labels_of(class_)
    per_class = None
    if target == "all":
        per_class = num if num is not None else (8 if kind == "images" else 500)
        labels = class_rows(src.num_classes, per_class)
        num = len(labels)
    elif target is not None:
        labels = torch.full((num if num is not None else 64 if kind == "images" else 2000,), target, dtype=torch.long)
    if num is None:
        num = 64 if kind == "images" else 2000
    conditioning = {} if target is None else {"guidance": 1.0 if guidance is None else guidance}
    generator = torch.Generator(device).manual_seed(seed)
    defaults = {k: v for k, v in src.sample_options(solver).items() if k not in options}  # -o overrides them

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    chunk = batch_size or num
    starts = range(0, num, chunk)
    start = time.perf_counter()
    progress = Progress(
        TextColumn(f"{solver} ({steps} steps)"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
        transient=True,
        disable=num * steps < 200_000,  # a bar only for long work
    )
    # Chunk by chunk, each drawing from ``generator`` in turn (the same numbers as one call of
    # samplers.sample with batch_size): the .npz is written as the chunks come, and only what the
    # PNG shows (64 images, or the vectors) and the analytic model's running statistics are kept,
    # so memory does not grow with --num.
    sink = _NpzWriter(out, (num, *data_shape)) if out.suffix.lower() == ".npz" else None
    kept, nfe, logp_sum, counts, hits = [], 0, 0.0, None, 0
    try:
        with progress:
            task = progress.add_task("sample", total=1.0)
            for c, first in enumerate(starts):
                try:
                    x, info = samplers.sample(
                        net,
                        sde,
                        (min(chunk, num - first), *data_shape),
                        solver=solver,
                        steps=steps,
                        generator=generator,
                        grid=grid,
                        t_min=t_min,
                        callback=lambda s, c=c: progress.update(task, completed=(c + s["progress"]) / len(starts)),
                        return_info=True,
                        device=device,
                        **({"y": labels[first : first + chunk].to(device)} if conditioning else {}),
                        **conditioning,
                        **defaults,
                        **options,
                    )
                except ValueError as err:
                    fail(str(err))
                x, nfe = x.detach().cpu().float(), nfe + info.nfe
                if sink is not None:
                    sink.write(x)
                elif per_class is not None and kind == "images":  # the first few of every class
                    rows = torch.arange(first, first + len(x))
                    kept.append(x[rows % per_class < GRID_PER_CLASS])
                elif kind != "images" or sum(len(k) for k in kept) < 64:
                    kept.append(x if kind != "images" else x[: 64 - sum(len(k) for k in kept)])
                if data is not None:  # ground truth known: running statistics of the samples
                    finite = x[torch.isfinite(x.flatten(1)).all(1)]
                    logp_sum += data.log_prob(finite).double().sum().item()
                    found = data.responsibilities(finite).argmax(1)
                    if conditioning:  # how many samples land in their class's component
                        chunk_labels = labels[first : first + len(x)][torch.isfinite(x.flatten(1)).all(1)]
                        hits += (found == chunk_labels).sum().item()
                    found = found.bincount(minlength=data.K).double()
                    counts = found if counts is None else counts + found
        seconds = time.perf_counter() - start
        if sink is not None:
            sink.close(
                solver=solver, steps=steps, nfe=nfe, seed=seed, **({"y": labels.numpy()} if conditioning else {})
            )
        else:
            _write_png(out, torch.cat(kept), kind, reference, min(per_class, GRID_PER_CLASS) if per_class else None)
    except OSError as err:
        write_failed(out, err)
    finally:
        if sink is not None:
            sink.discard()
    what = ""
    if conditioning:
        names = src.class_names or tuple(str(i) for i in range(src.num_classes))
        which = f"{per_class} per class" if per_class else f"class {names[target]}"
        what = f" ({which}, guidance {conditioning['guidance']:g})"
    typer.echo(
        f"wrote {out}: {num} samples{what} from {desc}, solver {solver}, {steps} steps, NFE {nfe}, {seconds:.2f} s"
    )
    if data is not None and conditioning:
        typer.echo(f"samples in their class's component: {hits / max(counts.sum().item(), 1):.1%}")
    elif data is not None:
        logp = logp_sum / max(counts.sum().item(), 1)
        logp_data = data.log_prob(reference).mean().item()
        mode_error = 0.5 * (counts / counts.sum() - data.weights).abs().sum().item()
        typer.echo(f"mean log p_data(samples) = {logp:.3f} (data itself: {logp_data:.3f})")
        typer.echo(f"mode-weight error (total variation) = {mode_error:.3f}")
