"""``scoresde edit``, ``scoresde encode`` and ``scoresde decode``: start from given images.

* ``edit --from IMG --strength S`` is SDEdit (Meng et al. 2022): noise the images to t = S·T with
  the chain's exact marginal and solve back with any solver (:func:`scoresde.generation.generate`
  with ``init``/``strength``);
* ``encode --from IMG --out z.npz`` maps images to latents x_T along the probability-flow ODE and
  reports the round-trip error; ``decode --from z.npz --out x.png`` maps latents back
  (:mod:`scoresde.encoding`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from .app import DiffusersOption, RunOption, app, check_device, fail, open_source, samples_file, set_threads, writing
from .sample import DeviceOption, ModelOption, SeedOption, SolverOption, ThreadsOption, sample_report

FromOption = Annotated[
    str, typer.Option("--from", help="images (.png/.npy/.npz, one or a batch; held-out:N); latents for decode")
]
StrengthOption = Annotated[float, typer.Option(help="how far to noise the images: t_start = S·T, S in (0, 1]")]
EncodeSolver = Annotated[str, typer.Option(help="a deterministic solver with an inverse: ode, ddim or heun")]
EncodeSteps = Annotated[int, typer.Option(help="grid steps (ode: only its grid; it adapts its own steps)")]
TolOption = Annotated[float, typer.Option(help="ode: rtol = atol of solve_ivp (the round trip's error scales with it)")]


def _ode(solver: str, tol: float) -> dict:
    if not (math.isfinite(tol) and tol > 0):
        fail(f"--tol must be a positive number, got {tol}")
    return {"rtol": tol, "atol": tol} if solver == "ode" else {}


@app.command()
def edit(
    from_: FromOption,
    strength: StrengthOption = 0.5,
    model: ModelOption = None,
    run: RunOption = None,
    diffusers: DiffusersOption = None,
    solver: SolverOption = "auto",
    steps: Annotated[int, typer.Option(help="steps from t_start down (the grid is laid out on [t_min, S·T])")] = 20,
    num: Annotated[int | None, typer.Option(help="edits per image of a single image (default: one per image)")] = None,
    seed: SeedOption = 0,
    out: Annotated[Path, typer.Option(help="output: .png or .npz")] = Path("edited.png"),
    device: DeviceOption = "cpu",
    threads: ThreadsOption = 1,
) -> None:
    """SDEdit: noise the given images to t = S·T and solve back (small S: close to them; 1: new samples)."""
    from ..generation import generate
    from ..observations import load_images

    if not (math.isfinite(strength) and 0 < strength <= 1):
        fail(f"--strength must lie in (0, 1], got {strength}")
    samples_file(out)
    set_threads(threads)
    check_device(device)
    dm = open_source(model=model, run=run, diffusers=diffusers, device=device)
    try:
        init = load_images(from_, dm.data_shape, "--from", reference=dm.reference)
        if num is not None and len(init) > 1:
            fail(f"--num applies to a single image; {from_} holds {len(init)} (one edit each)")
        count = num if len(init) == 1 else len(init)
        with writing(out):
            done = generate(
                dm, count or 64, solver=solver, steps=steps, seed=seed, init=init if len(init) > 1 else init[0],
                strength=strength, out=out, device=device, progress=True,
            )  # fmt: skip
    except ValueError as err:
        fail(str(err))
    typer.echo(sample_report(dm, done, out, None) + f" (strength {strength:g})")


def _read(dm, from_: str, out: Path):
    """The images or latents at ``from_``, after checking ``out``."""
    from ..observations import load_images

    samples_file(out)
    try:
        return load_images(from_, dm.data_shape, "--from", reference=dm.reference)
    except ValueError as err:
        fail(str(err))


def _write(out: Path, x, dm, **arrays) -> None:
    """``x`` as a picture (.png) or an .npz with ``arrays`` beside it, atomically."""
    from ..generation import NpzWriter, picture
    from ..imageio import save_png

    with writing(out):
        if out.suffix.lower() == ".png":
            save_png(out, picture(x[:64], dm.kind, dm.reference))
            return
        sink = NpzWriter(out, tuple(x.shape))
        try:
            sink.write(x.float().cpu())
            sink.close(**arrays)
        finally:
            sink.discard()


@app.command()
def encode(
    from_: FromOption,
    model: ModelOption = None,
    run: RunOption = None,
    diffusers: DiffusersOption = None,
    solver: EncodeSolver = "ode",
    steps: EncodeSteps = 100,
    tol: TolOption = 1e-7,
    out: Annotated[Path, typer.Option(help="output: .npz (the latents as `samples`) or .png (a picture)")] = Path(
        "latents.npz"
    ),
    threads: ThreadsOption = 1,
) -> None:
    """Map images to latents x_T along the probability-flow ODE; report decode(encode(x)) − x."""
    from ..encoding import round_trip

    set_threads(threads)
    dm = open_source(model=model, run=run, diffusers=diffusers)
    x0 = _read(dm, from_, out)
    try:
        trip = round_trip(dm.model, dm.sde, x0, solver, steps, **_ode(solver, tol))
    except ValueError as err:
        fail(str(err))
    _write(out, trip.latent, dm, solver=solver, steps=steps, nfe=trip.encode_info.nfe)
    typer.echo(
        f"wrote {out}: {len(x0)} latents of {dm.description}, solver {solver}, {steps} steps, "
        f"NFE {trip.encode_info.nfe}; round trip max |error| {trip.error.max().item():.3g}, "
        f"mean {trip.mean_error.mean().item():.3g}"
    )


@app.command()
def decode(
    from_: FromOption,
    model: ModelOption = None,
    run: RunOption = None,
    diffusers: DiffusersOption = None,
    solver: EncodeSolver = "ode",
    steps: EncodeSteps = 100,
    tol: TolOption = 1e-7,
    out: Annotated[Path, typer.Option(help="output: .png or .npz")] = Path("decoded.png"),
    threads: ThreadsOption = 1,
) -> None:
    """Map latents x_T (from `scoresde encode`) back to data along the probability-flow ODE."""
    from ..encoding import decode as decode_latents

    set_threads(threads)
    dm = open_source(model=model, run=run, diffusers=diffusers)
    z = _read(dm, from_, out)
    try:
        options = _ode(solver, tol)  # no x̂_0 clipping: it would not be invertible
        x, info = decode_latents(dm.model, dm.sde, z, solver, steps, return_info=True, **options)
    except ValueError as err:
        fail(str(err))
    _write(out, x, dm, solver=solver, steps=steps, nfe=info.nfe)
    typer.echo(f"wrote {out}: {len(z)} samples decoded by {dm.description}, solver {solver}, NFE {info.nfe}")
