"""``scoresde sample``: draw samples from an analytic model (no training), a trained run or a diffusers model.

Solvers, grids and analytic models are read from their registries. The output is a PNG (an
image grid for images; for vectors a scatter plot over reference points (d = 2), a histogram
(d = 1) or a pair grid (d ≥ 3)) or an ``.npz`` holding the raw samples. The output path is
checked before any sampling: missing parent folders are created; an existing folder, a file in
the way or an unwritable folder ends in one error line.

A class-conditional model (a ``--conditional`` run; an analytic mixture, whose components are
its classes) samples one class with ``--class K`` (an id or a class name) at classifier-free
guidance ``--guidance W`` (default: the run's ``--class-guidance``, else 1; :mod:`scoresde.guidance`),
every class with ``--class all`` (``--num`` samples per class, the picture one row per class), classes
drawn from the data's class frequencies with ``--class data`` — a conditional run's default — or the
null label (unconditional) with ``--class null``, the default of an analytic mixture and of steered
sampling. The work is :func:`scoresde.generation.generate`.

Steered by observations: ``--inpaint IMG --mask MASK`` completes the pixels the mask leaves open
(replacement, every solver; ``--resample K`` for RePaint's resampling), and ``--measure NAME
--observe IMG`` samples the posterior given a simulated measurement y = A(IMG) + n
(:mod:`scoresde.measurements`, :func:`scoresde.observations.measurement_guided`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

from ..analytic import MODELS
from ..grids import TIME_GRIDS
from ..measurements import MEASUREMENTS
from ..observations import MASKS
from ..samplers import SOLVERS
from .app import DiffusersOption, RunOption, app, check_device, fail, open_source, samples_file, set_threads, writing


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


def _option(kind, *decls: str, help: str):
    return Annotated[kind, typer.Option(*decls, help=help)]


ModelOption = _option(str | None, "--model", help=f"analytic model, no training: {', '.join(MODELS)}")
SolverOption = _option(
    str,
    help=f"auto (unipc for an exact --model score, sde-dpm-solver++ for a network) or one of: {', '.join(SOLVERS)}",
)
StepsOption = _option(int, help="number of steps of the time grid (+1 NFE for the denoising step)")
NumOption = _option(
    int | None, help="number of samples (default: 64 images, a grid; 2000 points; one per --inpaint image)"
)
ClassOption = _option(
    str | None,
    "--class",
    help="class-conditional models: a class id or name, all (one row per class), data (classes drawn from the "
    "data's frequencies: a conditional run's default) or null (unconditional)",
)
GuidanceOption = _option(
    float | None, help="classifier-free guidance scale w with classes (default: the run's --class-guidance, else 1)"
)
AutoguidanceOption = _option(
    float | None,
    help="autoguidance scale w by the run's guide (its early EMA weights, guide.safetensors); default: the "
    "run's --guide-scale (1 = the model alone)",
)
SeedOption = _option(int, help="seed of the generator (all randomness)")
GridOption = _option(str, help=f"time grid: auto (the solver's measured best) or one of: {', '.join(TIME_GRIDS)}")
TMinOption = _option(float | None, "--t-min", help="end time ε (default: the solver's)")
SolverOptions = _option(list[str] | None, "--option", "-o", help="solver option key=value (e.g. eta=1, order=3)")
BatchOption = _option(
    int | None, "--batch-size", help="solve in chunks of this size (default: ~49k values a chunk on CPU)"
)
OutOption = _option(Path, help="output: .png (scatter plot or image grid) or .npz (raw samples)")
DeviceOption = _option(str, help="cpu or cuda")
ThreadsOption = _option(int, help="CPU threads for torch (default 1; 0 = torch's default)")
InpaintOption = _option(
    str | None, "--inpaint", help="images to complete (.png/.npy/.npz, one or a batch; held-out:N) with --mask"
)
MaskOption = _option(
    str | None, help=f"with --inpaint or --measure mask: 1/white kept, 0/black filled (a file), or {', '.join(MASKS)}"
)
ResampleOption = _option(int | None, help="with --inpaint: RePaint resampling, K passes per step (default 1)")
MeasureOption = _option(
    str | None, help=f"sample the posterior of a measurement of --observe: {', '.join(MEASUREMENTS)}"
)
ObserveOption = _option(
    str | None, help="with --measure: the image(s) (a file or held-out:N) whose measurement y = A(x) + n is simulated"
)
NoiseOption = _option(float, "--noise-std", help="with --measure: the measurement noise σ_y")
ClassifierScale = _option(
    float | None, "--classifier-scale", help="classifier guidance towards --class with scale w (train-classifier first)"
)
ClassifierOption = _option(str | None, "--classifier", help="the noisy classifier's folder (default: the run's)")


def _classifier_guided(dm, class_, scale: float, path, num, guidance):
    """(the model guided by the run's noisy classifier towards --class, the number of samples)."""
    from ..noisy_classifier import guided_by_classifier

    if class_ is None or guidance is not None:
        fail("--classifier-scale needs --class (the class to guide towards) and no --guidance (which is CFG's)")
    if not math.isfinite(scale):
        fail(f"--classifier-scale must be a finite number, got {scale}")
    try:
        return guided_by_classifier(dm, class_, scale, path, num)
    except ValueError as err:
        fail(str(err))


@app.command()
def sample(
    model: ModelOption = None,
    run: RunOption = None,
    diffusers: DiffusersOption = None,
    solver: SolverOption = "auto",
    steps: StepsOption = 20,
    num: NumOption = None,
    class_: ClassOption = None,
    guidance: GuidanceOption = None,
    autoguidance: AutoguidanceOption = None,
    seed: SeedOption = 0,
    grid: GridOption = "auto",
    t_min: TMinOption = None,
    option: SolverOptions = None,
    batch_size: BatchOption = None,
    inpaint: InpaintOption = None,
    mask: MaskOption = None,
    resample: ResampleOption = None,
    measure: MeasureOption = None,
    observe: ObserveOption = None,
    noise_std: NoiseOption = 0.05,
    classifier_scale: ClassifierScale = None,
    classifier: ClassifierOption = None,
    out: OutOption = Path("samples.png"),
    device: DeviceOption = "cpu",
    threads: ThreadsOption = 1,
) -> None:
    """Sample an analytic model (--model gmm), a run or a diffusers model with any solver; write a PNG or .npz."""
    from ..generation import generate
    from ..observations import steering

    if solver != "auto" and solver not in SOLVERS:
        fail(f"unknown solver {solver!r}; choose one of: auto, {', '.join(SOLVERS)}")
    if grid != "auto" and grid not in TIME_GRIDS:
        fail(f"unknown time grid {grid!r}; choose one of: auto, {', '.join(TIME_GRIDS)}")
    for name, value in (("--steps", steps), ("--num", num), ("--batch-size", batch_size)):
        if value is not None and value < 1:
            fail(f"{name} must be a positive integer, got {value}")
    samples_file(out)
    set_threads(threads)
    check_device(device)
    for name, value in (("--guidance", guidance), ("--autoguidance", autoguidance)):
        if value is not None and not math.isfinite(value):
            fail(f"{name} must be a finite number, got {value}")
    options = _parse_options(option or [])
    dm = open_source(model=model, run=run, diffusers=diffusers, device=device)
    try:
        dm, observations, count = steering(
            dm, inpaint=inpaint, mask=mask, resample=resample, measure=measure, observe=observe,
            noise_std=noise_std, seed=seed,
        )  # fmt: skip
    except ValueError as err:
        fail(str(err))
    num = count if num is None and count is not None and count > 1 else num
    if classifier_scale is not None:  # classifier guidance replaces the class conditioning below
        dm, num = _classifier_guided(dm, class_, classifier_scale, classifier, num, guidance)
        class_ = None
    if guidance is not None and dm.num_classes is None:
        fail(f"--guidance needs a class-conditional model and --class, but {dm.description} is unconditional")
    try:
        classes = dm.class_id(class_, words=("all", "data", "null")) if class_ is not None else None
        with writing(out):
            done = generate(
                dm, num, solver=solver, steps=steps, seed=seed, grid=grid, t_min=t_min, classes=classes,
                guidance=guidance, autoguidance=autoguidance, batch_size=batch_size, out=out, device=device,
                progress=True, **observations, **options,
            )  # fmt: skip
    except ValueError as err:
        fail(str(err))
    guided_by = f" (classifier guidance, scale {classifier_scale:g})" if classifier_scale is not None else ""
    typer.echo(sample_report(dm, done, out, classes) + guided_by)


def sample_report(dm, done, out: Path, classes: int | str | None) -> str:
    """What was written and, for an analytic model, how close the samples are to the truth."""
    what = ""
    if done.labels is not None:
        names = dm.class_names or tuple(str(i) for i in range(dm.num_classes))
        if done.per_class:
            which = f"{done.per_class} per class"
        elif isinstance(classes, int):
            which = f"class {names[classes]}"
        else:
            which = "classes drawn from the data"
        what = f" ({which}, guidance {done.guidance:g})"
    if done.autoguidance is not None and done.autoguidance != 1.0:
        what += f" (autoguidance {done.autoguidance:g})"
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
