"""The run folder: its layout, its one writer, writing it, loading it, the newest run, the resume point.

A run folder holds::

    config.json                 the resolved TrainConfig
    reference.safetensors       up to 2,048 held-out samples ``x`` (and labels ``y``): metrics and plots compare to them
    metrics.jsonl               one JSON line per log interval: loss overall and per t-bin
    samples/step_00001000.png   sample grids (images) or scatter plots (points) from the EMA model
    checkpoints/step_00001000.safetensors + .json   (format and readers: :mod:`scoresde.checkpoint`)
    guide.safetensors           the EMA weights early in the run (``--guide-at``): autoguidance's weak model
    tensorboard/, wandb/        with --logger tensorboard / wandb (:data:`scoresde.reporting.LOGGERS`)
    .lock                       held by the one trainer writing here (:mod:`scoresde.runlock`)

Readers (:func:`load_run`) never take the lock; a trainer takes it once, before it looks at the
folder (:func:`prepare_run`, or :class:`~scoresde.trainer.Trainer` itself).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from . import checkpoint as ckpt
from . import config as cfg
from .build import build_model, build_sde
from .data import Dataset
from .data_defaults import resolve, run_length
from .diffusion_model import DiffusionModel, Provenance
from .imageio import atomic_write_bytes
from .runlock import RunLock, lock_run

__all__ = [
    "GUIDE_FILE",
    "REFERENCE_MAX",
    "PreparedRun",
    "check_fits",
    "latest_run",
    "load_guide",
    "load_run",
    "model_meta",
    "new_run_dir",
    "prepare_run",
    "read_metrics",
    "refuse_changes",
    "resume_point",
    "run_model",
    "save_guide",
    "trained_model",
    "write_run_files",
]

REFERENCE_MAX = 2048
"""At most this many held-out samples are kept in ``reference.safetensors``."""

GUIDE_FILE = "guide.safetensors"
"""The weak model of autoguidance (:class:`scoresde.guidance.AutoGuided`): EMA weights written once,
at ``guide_at`` of the run, with the step in its metadata."""


def new_run_dir(config: cfg.TrainConfig, root: str | os.PathLike = "runs") -> Path:
    """``root/<data>-<date>-<time>``: the folder of a new run when none is given."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{Path(config.data.name).stem}-{stamp}"


def latest_run(root: str | os.PathLike = "runs") -> Path | None:
    """The run folder under ``root`` whose newest checkpoint is the most recent, or ``None``."""
    root = Path(root)
    if not root.is_dir():
        return None
    best, best_time = None, -math.inf
    for run in root.iterdir():
        newest = ckpt.latest_checkpoint(run) if run.is_dir() else None
        if newest is not None and newest.stat().st_mtime > best_time:
            best, best_time = run, newest.stat().st_mtime
    return best


def write_run_files(run_dir: Path, config: cfg.TrainConfig, dataset: Dataset) -> None:
    """``config.json`` and, once, ``reference.safetensors`` (the first 2,048 held-out samples ``x``
    and, for labelled data, their labels ``y``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / "config.json", json.dumps(cfg.to_dict(config), indent=2).encode())
    ref = run_dir / "reference.safetensors"
    if not ref.exists():
        tensors = {"x": dataset.heldout[:REFERENCE_MAX].contiguous().cpu()}
        if dataset.heldout_labels is not None:
            tensors["y"] = dataset.heldout_labels[:REFERENCE_MAX].contiguous().cpu()
        atomic_write_bytes(ref, save_safetensors(tensors, metadata={"kind": dataset.kind}))


def save_guide(run_dir: Path, module: torch.nn.Module, step: int) -> None:
    """Write ``module``'s weights (the EMA at ``step``) as the run's :data:`GUIDE_FILE`, atomically."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    atomic_write_bytes(run_dir / GUIDE_FILE, save_safetensors(tensors, metadata={"step": str(step)}))


def load_guide(run_dir: str | os.PathLike, build: Callable[[], torch.nn.Module]) -> torch.nn.Module | None:
    """The guide network built by ``build`` with the run's :data:`GUIDE_FILE` loaded (eval mode, no
    gradients), or None when the run has none. A file that does not load is a ValueError naming it."""
    path = Path(run_dir) / GUIDE_FILE
    if not path.is_file():
        return None
    try:
        with torch.random.fork_rng(devices=[]):  # its initial weights are overwritten: leave the RNG as it was
            module = build()
        ckpt.load_weights(module, load_safetensors(path.read_bytes()), path)
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        raise ValueError(f"the autoguidance guide {path} does not load ({err}); delete it to sample without") from None
    return module.requires_grad_(False).eval()


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl`` (a torn last line, from a killed run, is skipped)."""
    run_dir = Path(run_dir)
    file = run_dir / "metrics.jsonl"
    if not file.is_file():
        raise ValueError(
            f"{run_dir} has no metrics.jsonl (is it a run folder? train with: scoresde train --out {run_dir})"
        )
    records = []
    for line in file.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            records.append(json.loads(line))
    if not records:
        raise ValueError(f"{file} holds no records yet")
    return records


def resume_point(run_dir: str | os.PathLike, warn: Callable[[str], None] | None = None) -> ckpt.Checkpoint:
    """The checkpoint a resumed run continues from: the newest valid one (a newer corrupt one is
    skipped with a warning through ``warn``). ValueError when there is none."""
    if not Path(run_dir).is_dir() or ckpt.latest_checkpoint(run_dir) is None:
        raise ValueError(f"nothing to resume: {run_dir} has no checkpoint")
    return ckpt.load_latest(run_dir, warn=warn)


def refuse_changes(saved: dict[str, Any], overrides: dict[str, Any], prefix: str = "") -> None:
    """ValueError if ``overrides`` changes a field of the ``saved`` config that may not change on resume
    (:func:`scoresde.config.resumable`)."""
    resumable = cfg.resumable()
    for key, value in overrides.items():
        if isinstance(value, dict):
            refuse_changes(saved.get(key, {}), value, f"{prefix}{key}.")
            continue
        old = saved.get(key)
        if isinstance(value, tuple):
            value = list(value)
        if f"{prefix}{key}" in resumable:
            continue
        if json.dumps(old) != json.dumps(value):
            raise ValueError(
                f"cannot change {prefix}{key} when resuming (the run has {old!r}, got {value!r}); "
                f"only {', '.join(sorted(resumable))} may change"
            )


@dataclass(frozen=True)
class PreparedRun:
    """A run folder ready for a trainer: the resolved config, the folder, the checkpoint to resume
    from (or None) and the folder's lock, held (None when the folder does not exist yet: the trainer
    takes it when it creates it, or on ranks other than 0)."""

    config: cfg.TrainConfig
    run_dir: Path
    checkpoint: ckpt.Checkpoint | None
    lock: RunLock | None


def prepare_run(
    run_dir: str | os.PathLike | None,
    overrides: dict[str, Any],
    *,
    resume: bool = False,
    warn: Callable[[str], None] | None = None,
) -> PreparedRun:
    """Resolve a training request into a config and a run folder, holding the folder's lock.

    ``overrides`` is a nested dict of config fields (a TOML file's tables and flags). A new run
    uses the field defaults < the data's defaults < ``overrides`` (:func:`scoresde.data_defaults.resolve`),
    in ``run_dir`` (default :func:`new_run_dir`), which must not hold checkpoints yet. ``resume``
    continues ``run_dir`` from :func:`resume_point` with the run's own config, where ``overrides`` may
    change only the resumable fields (:func:`scoresde.config.resumable`; a run length given replaces
    the saved one whole, :func:`scoresde.data_defaults.run_length`).
    ValueError with one sentence otherwise; the lock is released on any error.
    """
    run_dir = Path(run_dir) if run_dir is not None else None
    lock = None
    if run_dir is not None and run_dir.is_dir() and int(os.environ.get("RANK", "0")) == 0:
        lock = lock_run(run_dir)  # before the folder is looked at; under torchrun rank 0 writes
    try:
        checkpoint = None
        if resume:
            if run_dir is None:
                raise ValueError("--resume needs --out, the run folder to continue")
            checkpoint = resume_point(run_dir, warn)
            saved = cfg.complete_saved(checkpoint.config)
            refuse_changes(saved, overrides)
            config = cfg.from_dict(cfg.merge(saved, run_length(overrides)))
        else:
            config = resolve(overrides)
            run_dir = run_dir or new_run_dir(config)
            if ckpt.latest_checkpoint(run_dir) is not None:
                raise ValueError(
                    f"run folder {run_dir} already holds checkpoints; "
                    "pass --resume to continue it or choose another --out"
                )
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return PreparedRun(config, run_dir, checkpoint, lock)


def model_meta(config: cfg.TrainConfig, dataset: Dataset, num_classes: int | None) -> dict[str, Any]:
    """What a checkpoint records about its model (:func:`load_run` rebuilds the model from it)."""
    return {
        "config": cfg.to_dict(config),
        "data_shape": list(dataset.data_shape),
        "kind": dataset.kind,
        "num_classes": num_classes,
        "class_names": list(dataset.class_names) if num_classes else None,
    }


def check_fits(checkpoint: ckpt.Checkpoint, data_shape: tuple[int, ...], num_classes: int | None) -> None:
    """ValueError unless ``checkpoint`` was trained on data of ``data_shape`` with ``num_classes`` (resume)."""
    meta, path = checkpoint.meta, checkpoint.path
    if tuple(meta["data_shape"]) != data_shape:
        raise ValueError(
            f"checkpoint {path} was trained on data of shape {tuple(meta['data_shape'])}, "
            f"the data now has shape {data_shape}"
        )
    if meta["num_classes"] != num_classes:
        raise ValueError(
            f"checkpoint {path} was trained with num_classes={meta['num_classes']}, "
            f"the run now has num_classes={num_classes}"
        )


def load_run(
    run_dir: str | os.PathLike, *, device: str | torch.device = "cpu", warn: Callable[[str], None] | None = None
) -> DiffusionModel:
    """The newest valid checkpoint of a run folder, with its EMA weights, as a :class:`DiffusionModel`.

    A newer checkpoint that is corrupt, cut short or does not fit the network its config describes
    is skipped with a warning naming it (through ``warn``, else :func:`warnings.warn`). Raises
    ValueError for a missing folder, a folder without checkpoints, and one without a usable
    checkpoint (the message names the files tried). Never takes the run folder's lock.
    """
    run_dir = Path(run_dir)
    built: dict[str, Any] = {}

    def usable(checkpoint: ckpt.Checkpoint) -> None:  # build the network and load the weights, or ValueError
        meta, path = checkpoint.meta, checkpoint.path
        try:
            config = cfg.from_dict(cfg.complete_saved(meta["config"]))
            data_shape, kind = tuple(int(n) for n in meta["data_shape"]), str(meta["kind"])
            sde = build_sde(config)
            num_classes = None if meta["num_classes"] is None else int(meta["num_classes"])
            names = meta["class_names"]
            model = build_model(config, data_shape, kind, sde, num_classes)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"checkpoint {path} has an unusable config: {err}") from None
        ckpt.load_weights(model, ckpt.section(checkpoint.tensors, "ema."), path)
        built.update(
            config=config,
            data_shape=data_shape,
            kind=kind,
            sde=sde,
            model=model,
            num_classes=num_classes,
            class_names=None if names is None else tuple(str(n) for n in names),
        )

    checkpoint = ckpt.load_latest(run_dir, check=usable, warn=warn)
    config = built["config"]
    built["model"].requires_grad_(False).eval().to(device)
    args = (config, built["data_shape"], built["kind"], built["sde"], built["num_classes"])
    guide = load_guide(run_dir, lambda: build_model(*args))
    reference = reference_labels = None
    ref_path = run_dir / "reference.safetensors"
    if ref_path.is_file():
        with contextlib.suppress(Exception):  # an unreadable reference file: no reference data
            tensors = load_safetensors(ref_path.read_bytes())
            reference, reference_labels = tensors["x"], tensors.get("y")
    provenance = Provenance(
        "run",
        f"run {run_dir} (step {checkpoint.step})",
        run_dir=run_dir,
        step=checkpoint.step,
        checkpoint=checkpoint.path,
        config=config,
    )
    return run_model(
        built["model"],
        built["sde"],
        config,
        built["data_shape"],
        built["kind"],
        provenance,
        num_classes=built["num_classes"],
        class_names=built["class_names"],
        reference=reference,
        reference_labels=reference_labels,
        guide=None if guide is None else guide.to(device),
    )


def run_model(
    model: Any,
    sde: Any,
    config: cfg.TrainConfig,
    data_shape: tuple[int, ...],
    kind: str,
    provenance: Provenance,
    **fields: Any,
) -> DiffusionModel:
    """A model trained by scoresde as a :class:`DiffusionModel`: its reference data are named by the
    config, the VLB's chain length is the training N, images are sampled with x̂_0 clipped to [−1, 1],
    with autoguidance at the config's ``guide_scale`` where there is a guide, and a conditional run
    (labelled reference data) with classes drawn from the data at the config's ``class_guidance``.
    ``fields``: the record's other fields (classes, reference data)."""
    dataset = config.data.path or config.data.name
    clip = 1.0 if kind == "images" else None
    labelled = fields.get("num_classes") is not None and fields.get("reference_labels") is not None
    return DiffusionModel(
        model,
        sde,
        data_shape,
        kind,
        provenance,
        dataset=dataset,
        N=config.loss.N,
        clip_x0=clip,
        guide_scale=config.guide_scale,
        class_guidance=config.class_guidance,
        sample_classes="data" if labelled else None,
        **fields,
    )


def trained_model(
    model: Any,
    sde: Any,
    config: cfg.TrainConfig,
    dataset: Dataset,
    num_classes: int | None,
    provenance: Provenance,
    guide: Any = None,
) -> DiffusionModel:
    """:func:`run_model` for a model just trained on ``dataset``: the first :data:`REFERENCE_MAX` held-out
    samples (and labels) are its reference data, as in the run folder's ``reference.safetensors``;
    ``guide``: its autoguidance guide, if it kept one."""
    labels = dataset.heldout_labels
    return run_model(
        model,
        sde,
        config,
        dataset.data_shape,
        dataset.kind,
        provenance,
        num_classes=num_classes,
        class_names=dataset.class_names if num_classes else None,
        reference=dataset.heldout[:REFERENCE_MAX].cpu(),
        reference_labels=labels[:REFERENCE_MAX].cpu() if labels is not None else None,
        guide=guide,
    )
