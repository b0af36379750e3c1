"""Where a command's model comes from: an analytic model, a trained run or a diffusers folder.

``sample``, ``likelihood`` and ``evaluate`` call :func:`load_source` once and share everything after
it. ``--model NAME`` (analytic, no training), ``--run DIR`` (a scoresde run; default: the newest
under ./runs) and ``--diffusers PATH`` (a ``save_pretrained`` folder of a UNet2DModel and its
scheduler, read by :func:`scoresde.interop.from_diffusers`) are mutually exclusive. ``--data``
gives the reference images: required for a diffusers model (it has no held-out set), optional for
a run (it replaces the run's held-out split).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import typer

from .app import fail


@dataclass
class Source:
    """A model ready for the commands, with what describes it.

    Attributes:
        model, sde, prediction: ``model(x, t)``, its SDE and what it returns.
        data_shape, kind: one sample's shape; ``points`` or ``images``.
        description: one line naming the source (for the command's report).
        reference: reference data (held-out run data, ``--data``, or draws of the analytic model) or ``None``.
        dataset: the reference data's name or path (decides the quantization levels and the classifier).
        N: the default VLB chain length (the run's training N; the scheduler's num_train_timesteps).
        sample_options: ``solver -> dict`` of ``sd.sample`` keywords the source implies (x̂_0 clipping
            for images; the scheduler's clip_sample and variance_type for diffusers).
        run_dir: the run folder (evaluate writes its JSON there), ``None`` for other sources.
        step: the training step of a run's checkpoint.
        analytic: the analytic data distribution for ``--model``.
        num_classes: K of a class-conditional model (a ``--conditional`` run; an analytic mixture,
            whose components are its classes), else None.
        class_names: the name of each class id, or None.
        reference_labels: the class labels of ``reference`` (labelled data), or None.
    """

    model: Any
    sde: Any
    prediction: str
    data_shape: tuple[int, ...]
    kind: str
    description: str
    reference: Any = None
    dataset: str | None = None
    N: int = 1000
    sample_options: Callable[[str], dict[str, Any]] = field(default=lambda solver: {})
    run_dir: Path | None = None
    step: int | None = None
    analytic: Any = None
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    reference_labels: Any = None

    def labels_of(self, text: str | None, option: str = "--class") -> int | str | None:
        """``--class K|NAME|all`` checked against the model: a class id, ``"all"``, or None when not given.

        Fails with one line for a class out of range, an unknown name, or any class on an
        unconditional model.
        """
        if text is None:
            return None
        if self.num_classes is None:
            fail(
                f"{option} needs a class-conditional model, but {self.description} is unconditional "
                "(train one with `scoresde train --conditional`)"
            )
        text = text.strip()
        if text == "all":
            return "all"
        names = self.class_names or tuple(str(i) for i in range(self.num_classes))
        if text in names:
            return names.index(text)
        try:
            k = int(text)
        except ValueError:
            fail(f"{option} {text!r} is not a class of {self.description}; give an id 0 … {self.num_classes - 1}, "
                 f"a class name ({', '.join(names)}) or all")  # fmt: skip
        if not 0 <= k < self.num_classes:
            fail(f"{option} {k} is out of range: {self.description} has {self.num_classes} classes, ids 0 … "
                 f"{self.num_classes - 1}")  # fmt: skip
        return k

    def as_run(self) -> Any:
        """The attributes of a loaded run that :func:`scoresde.compare.evaluate_run` reads."""
        config = SimpleNamespace(data=SimpleNamespace(name=self.dataset, path=None), loss=SimpleNamespace(N=self.N))
        return SimpleNamespace(
            model=self.model,
            sde=self.sde,
            prediction=self.prediction,
            data_shape=self.data_shape,
            kind=self.kind,
            reference=self.reference,
            run_dir=self.run_dir,
            step=self.step,
            config=config,
            num_classes=self.num_classes,
        )


def load_source(
    *,
    model: str | None = None,
    run: Path | None = None,
    diffusers: Path | None = None,
    data: str | None = None,
    device: str = "cpu",
) -> Source:
    """The model named by ``--model``, ``--run`` or ``--diffusers`` (at most one), with ``--data`` applied."""
    given = [name for name, value in (("--model", model), ("--run", run), ("--diffusers", diffusers)) if value]
    if len(given) > 1:
        fail(f"give either --model, --run or --diffusers, not {' and '.join(given)}")
    if model is not None:
        source = _analytic(model)
    elif diffusers is not None:
        source = _diffusers(diffusers, device)
    else:
        source = _run(run, device)
    if data is not None:
        source.reference, source.dataset, source.reference_labels = _reference(data, source)
    return source


def _analytic(name: str) -> Source:
    import torch

    from ..analytic import MODELS
    from ..sde import VPSDE

    if name not in MODELS:
        fail(f"unknown analytic model {name!r}; choose one of: {', '.join(MODELS)}")
    from ..guidance import num_classes_of

    data, sde = MODELS[name](), VPSDE()
    model = data.model(sde, "eps")
    reference = data.sample(4000, torch.Generator().manual_seed(12345))
    k = num_classes_of(model)  # a mixture's components are its classes
    names = None if k is None else tuple(str(i) for i in range(k))
    return Source(
        model, sde, "eps", data.data_shape, "points", f"analytic {name}", reference, analytic=data,
        num_classes=k, class_names=names,
    )  # fmt: skip


def _run(run: Path | None, device: str) -> Source:
    from ..train import latest_run, load_run

    if run is None:
        run = latest_run("runs")
        if run is None:
            fail(
                "no trained run under ./runs: run `scoresde train` first, pass --run DIR, --diffusers DIR, "
                "or --model gmm (sample only; no training needed)"
            )
    try:
        r = load_run(run, device=device)
    except ValueError as err:
        fail(str(err))
    images = r.kind == "images"
    return Source(
        r.model,
        r.sde,
        r.prediction,
        tuple(r.data_shape),
        r.kind,
        f"run {r.run_dir} (step {r.step})",
        r.reference,
        r.config.data.path or r.config.data.name,
        r.config.loss.N,
        (lambda solver: {"clip_x0": 1.0}) if images else (lambda solver: {}),
        r.run_dir,
        r.step,
        num_classes=r.num_classes,
        class_names=r.class_names,
        reference_labels=r.reference_labels if r.reference_labels is not None else _heldout_labels(r),
    )


def _heldout_labels(r) -> Any:
    """The held-out labels of a conditional run whose reference file predates saved labels: the
    run's data split again (the split is a pure function of the config)."""
    if r.num_classes is None or r.reference is None:
        return None
    from ..data import load_dataset
    from ..train import REFERENCE_MAX

    c = r.config.data
    try:
        ds = load_dataset(c.name, path=c.path, n=c.n, resize=c.resize, heldout=c.heldout, seed=r.config.seed)
    except (ValueError, ImportError):
        return None
    y = ds.heldout_labels
    return y[:REFERENCE_MAX] if y is not None and len(y[:REFERENCE_MAX]) == len(r.reference) else None


def _diffusers(path: Path, device: str) -> Source:
    from ..interop import from_diffusers

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the notes are printed below, one line each
            pre = from_diffusers(path, device=device)
    except (ValueError, TypeError) as err:
        fail(str(err))
    for note in pre.notes:
        typer.echo(f"note: {note}", err=True)
    if pre.num_classes is not None:
        fail(
            f"{path} holds a class-conditional UNet ({pre.num_classes} classes); the command line runs "
            "unconditional models: in Python call pre.model(x, t, y=labels)"
        )
    return Source(
        pre.model,
        pre.sde,
        pre.prediction,
        pre.data_shape,
        "images",
        f"diffusers {path} ({type(pre.scheduler).__name__}, {pre.prediction}-prediction, N={pre.N})",
        N=pre.N,
        sample_options=pre.sample_options,
    )


def _reference(data: str, source: Source) -> tuple[Any, str, Any]:
    from ..data import load_dataset

    try:
        ds = load_dataset(data, heldout=0.0)  # a foreign model's training set is unknown: use all of it
    except (ValueError, ImportError) as err:
        fail(str(err))
    x = ds.train
    if tuple(x.shape[1:]) != tuple(source.data_shape):
        fail(f"--data {data} has samples of shape {tuple(x.shape[1:])}, but the model takes {tuple(source.data_shape)}")
    return x, ds.name, ds.train_labels
