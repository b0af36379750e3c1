"""The trainer: AdamW + warm-up, clipping, EMA, exact resume, checkpoints, metrics, DDP.

A run folder holds::

    config.json                 the resolved TrainConfig
    reference.safetensors       up to 2,048 held-out samples (metrics and plots compare to them)
    metrics.jsonl               one JSON line per log interval: loss overall and per t-bin
    samples/step_00001000.png   sample grids (images) or scatter plots (points) from the EMA model
    checkpoints/step_00001000.safetensors + .json
    tensorboard/, wandb/        with --logger tensorboard / wandb (:data:`scoresde.reporting.LOGGERS`)
    .lock                       the lock a trainer holds while it writes here (:mod:`scoresde.runlock`)

A checkpoint (:mod:`scoresde.checkpoint`) holds every tensor (weights, EMA weights, optimizer
moments) and the rest (step, config, optimizer hyper-parameters, the RNG states of every rank).
Resuming restores all of it (from the newest *valid* checkpoint, warning about each newer one that
is corrupt or cut short); the data order is a pure function of (seed, step)
(:func:`scoresde.data.batch_indices`), so a resumed run is bitwise identical to an uninterrupted one.
One trainer writes into a run folder at a time: rank 0 holds the folder's lock
(:func:`scoresde.runlock.lock_run`) from before its first write until :meth:`Trainer.close`.
With ``run_dir=None`` nothing is written: :func:`train` returns the EMA model and the metrics in memory.

The :class:`Trainer` is the loop; its pieces live apart: :class:`~scoresde.ema.EMA`, the
reporters (:mod:`scoresde.reporting`: metrics.jsonl, progress bar, messages), the process group
(:mod:`scoresde.distributed`), the loss tally per t-bin (:class:`LossTally`), Ctrl-C
(:func:`stop_on_sigint`) and the sample pictures (:func:`preview`).

Under ``torchrun`` the same code runs with DistributedDataParallel (gloo on CPU, NCCL on GPU):
each rank draws its own slice of every global batch and its own noise; rank 0 writes.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import inspect
import json
import math
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor, nn

from . import checkpoint as ckpt
from .config import OptimConfig, TrainConfig, check, from_dict, registry_options, to_dict
from .data import Dataset, batch_indices, hflip, hflip_mask
from .distributed import Distributed
from .distributed import setup as setup_distributed
from .ema import EMA
from .imageio import atomic_write_bytes, image_grid, scatter_image
from .labels import class_rows, drop_labels
from .losses import TIME_SAMPLERS, WEIGHTINGS, TimeSampler, Weighting, denoising_loss
from .nets import make_network
from .param import EDMPrecond, Model
from .reporting import EchoReporter, ProgressReporter, Reporter, Reporters, make_loggers, truncate_metrics
from .runlock import RunLock, lock_run
from .sde import SDE, make_sde
from .streaming import StreamingBatches, load_training_data

__all__ = [
    "LoadedRun",
    "LossTally",
    "TrainResult",
    "Trainer",
    "TrainingDiverged",
    "build_model",
    "build_optimizer",
    "build_sde",
    "latest_run",
    "load_run",
    "loss_parts",
    "metrics_record",
    "preview",
    "stop_on_sigint",
    "train",
    "validate",
    "write_run_files",
]

T_BINS = 10
REFERENCE_MAX = 2048


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` / :meth:`Trainer.run` did, and the trained model in memory.

    Attributes:
        run_dir: the run folder (``None`` when trained in memory).
        step: the last step trained.
        loss: the mean loss of the last metrics record (``None`` if none was logged).
        interrupted: stopped by Ctrl-C (a checkpoint was saved first).
        checkpoint: the newest checkpoint's JSON path (``None`` without a run folder).
        model: the EMA model, eval mode, on the CPU; samples as :func:`load_run`'s model does.
        sde, config, data_shape, kind, num_classes, class_names: as in :class:`LoadedRun`.
        reference: held-out data (up to 2,048 samples), as the run folder's ``reference.safetensors``.
        metrics: every metrics record logged by this run, oldest first (``metrics.jsonl``'s lines).
    """

    run_dir: Path | None
    step: int
    loss: float | None
    interrupted: bool
    checkpoint: Path | None
    model: Model | None = None
    sde: SDE | None = None
    config: TrainConfig | None = None
    data_shape: tuple[int, ...] = ()
    kind: str = ""
    reference: Tensor | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None

    @property
    def prediction(self) -> str:
        """What ``model`` returns (``config.model.prediction``; ``x0`` with the edm preconditioning)."""
        return model_prediction(self.config)


# --------------------------------------------------------------------------- building blocks


def build_sde(config: TrainConfig) -> SDE:
    return make_sde(config.sde.name, config.sde.schedule)


def build_model(
    config: TrainConfig, data_shape: tuple[int, ...], kind: str, sde: SDE, num_classes: int | None = None
) -> Model | EDMPrecond:
    """The network from the config wrapped as ``model(x, t, y=None)`` (scoresde.param.Model).

    ``num_classes`` K makes the network class-conditional (labels 0 … K − 1, K the null label);
    ``None`` builds an unconditional one.
    """
    m = config.model
    net_name = m.net if m.net != "auto" else ("unet" if kind == "images" else "mlp")
    if net_name == "unet":
        options: dict[str, Any] = {"size": m.size}
        for key in ("channels", "channel_mult", "num_res_blocks", "attention_resolutions", "dropout"):
            if getattr(m, key) is not None:
                options[key] = getattr(m, key)
    elif net_name == "mlp":
        options = {"width": m.width, "depth": m.depth, "dropout": m.dropout or 0.0}
    else:
        options = {}
    if num_classes is not None:
        options["num_classes"] = int(num_classes)
    net = make_network(net_name, data_shape, **options)
    if m.precondition == "edm":
        return EDMPrecond(net, sde, m.sigma_data)
    return Model(net, m.prediction, m.time_label, T=sde.T, N=config.loss.N)


def model_prediction(config: TrainConfig) -> str:
    """What the built model returns: ``x0`` under the ``edm`` preconditioning, else ``model.prediction``."""
    return "x0" if config.model.precondition == "edm" else config.model.prediction


def build_optimizer(params: list[nn.Parameter], optim: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW as ``optim`` says; the learning rate is set every step (:meth:`Trainer.lr`)."""
    # fused AdamW: one kernel over all parameters (CPU and CUDA); on the CPU ~6x cheaper than the default
    # per-tensor loop, ~4% of a tiny-UNet step (benchmarks/peers.py)
    return torch.optim.AdamW(
        params,
        lr=optim.lr,
        betas=(optim.beta1, optim.beta2),
        weight_decay=optim.weight_decay,
        fused=device.type in ("cpu", "cuda"),
    )


@torch.no_grad()
def clip_grad_norm(grads: list[Tensor], max_norm: float) -> Tensor:
    """Scale ``grads`` in place so that their joint 2-norm is at most ``max_norm``; returns the norm before.

    The arithmetic of ``torch.nn.utils.clip_grad_norm_`` (the same result, bit for bit, for
    gradients of one device and dtype: one ``_foreach_norm``, the norm of the norms, one
    ``_foreach_mul_`` by min(1, max_norm/(norm + 1e-6))) without its per-call grouping and checks:
    about a third of its cost on the small MLPs, where the trainer's fixed costs show
    (benchmarks/results/training.md).
    """
    if not grads:
        return torch.zeros(())
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return total


def loss_parts(config: TrainConfig) -> tuple[Weighting, TimeSampler]:
    """The weighting and time sampler the config names, built from their registry entries
    (each factory's parameters read from the loss config, :func:`scoresde.config.registry_options`)."""
    c = config.loss
    time = c.time_sampler
    make_w, make_t = WEIGHTINGS.get(c.weighting), TIME_SAMPLERS.get(time)
    w_options = registry_options(make_w, c, c.weighting)
    if "sigma_data" in inspect.signature(make_w).parameters:  # one σ_data for the model and the weighting
        w_options["sigma_data"] = config.model.sigma_data
    return make_w(**w_options), make_t(**registry_options(make_t, c, time))


def validate(config: TrainConfig) -> None:
    """Check the settings that are cheap to check before any work; ValueError names the field.

    Choices and bounds come from the fields' metadata (:func:`scoresde.config.check`); the loss's
    options are checked by building it.
    """
    check(config)
    loss_parts(config)
    if config.model.precondition == "edm" and config.model.prediction not in ("eps", "x0"):
        raise ValueError(
            f"--precondition edm makes the model predict x0; --prediction {config.model.prediction} contradicts it "
            "(leave --prediction at its default)"
        )
    if config.loss.weighting == "elbo" and config.loss.time_sampler != "discrete":
        raise ValueError("the 'elbo' weighting needs --time discrete; use 'likelihood' for continuous time")
    if config.device not in ("auto", "cpu") and not config.device.startswith(("cuda", "mps")):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {config.device!r}")


def check_conditional(config: TrainConfig, dataset: Dataset) -> int | None:
    """The number of classes to condition on: the data's K for a ``--conditional`` run, else None.

    ValueError when a conditional run is asked on data without labels.
    """
    if not config.model.conditional:
        return None
    if not dataset.labelled:
        from .data import labelled_datasets

        raise ValueError(
            f"--conditional needs class labels, but the data {dataset.name!r} has none; labelled data: "
            f"{', '.join(labelled_datasets())}, a folder with one sub-folder per class, or an .npz with labels 'y'"
        )
    return dataset.num_classes


# --------------------------------------------------------------------------- loading a run


@dataclass(frozen=True)
class LoadedRun:
    """A trained run ready to sample: the EMA model in eval mode and what describes it.

    Attributes:
        model: ``model(x, t, y=None) -> prediction`` (EMA weights, eval mode, on the CPU unless moved);
            a class-conditional model takes labels y (0 … K − 1; None or K: unconditional).
        sde: the forward SDE it was trained with.
        prediction: what ``model`` returns (``eps``, ``x0``, ``v`` or ``score``).
        data_shape: the shape of one sample, without the batch dimension.
        kind: ``points`` or ``images``.
        config: the run's :class:`~scoresde.config.TrainConfig`.
        reference: held-out data (up to 2,048 samples) or ``None``.
        step: the training step of the checkpoint.
        checkpoint: the checkpoint's JSON path.
        run_dir: the run folder.
        num_classes: K for a class-conditional run (``--conditional``), else None.
        class_names: the name of each class id (a conditional run), else None.
        reference_labels: the class labels of ``reference`` when the data are labelled (runs
            written before labels were saved: None).
    """

    model: Model
    sde: SDE
    prediction: str
    data_shape: tuple[int, ...]
    kind: str
    config: TrainConfig
    reference: Tensor | None
    step: int
    checkpoint: Path
    run_dir: Path
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    reference_labels: Tensor | None = None


def load_run(
    run_dir: str | os.PathLike, *, device: str | torch.device = "cpu", warn: Callable[[str], None] | None = None
) -> LoadedRun:
    """Load the newest valid checkpoint of a run folder with its EMA weights.

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
            config = from_dict(meta["config"])
            data_shape, kind = tuple(int(n) for n in meta["data_shape"]), str(meta["kind"])
            sde = build_sde(config)
            num_classes = meta.get("num_classes")  # absent in checkpoints older than conditioning: unconditional
            num_classes = None if num_classes is None else int(num_classes)
            names = meta.get("class_names")
            class_names = None if names is None else tuple(str(n) for n in names)
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
            class_names=class_names,
        )

    checkpoint = ckpt.load_latest(run_dir, check=usable, warn=warn)
    path = checkpoint.path
    config, data_shape, kind, sde, model = (built[k] for k in ("config", "data_shape", "kind", "sde", "model"))
    num_classes, class_names = built["num_classes"], built["class_names"]
    model.requires_grad_(False).eval().to(device)
    reference = reference_labels = None
    ref_path = run_dir / "reference.safetensors"
    if ref_path.is_file():
        with contextlib.suppress(Exception):
            tensors = load_safetensors(ref_path.read_bytes())
            reference, reference_labels = tensors["x"], tensors.get("y")
    return LoadedRun(
        model,
        sde,
        model_prediction(config),
        data_shape,
        kind,
        config,
        reference,
        checkpoint.step,
        path,
        run_dir,
        num_classes,
        class_names,
        reference_labels,
    )


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


# --------------------------------------------------------------------------- pieces of the trainer


def write_run_files(run_dir: Path, config: TrainConfig, dataset: Dataset) -> None:
    """``config.json`` and, once, ``reference.safetensors`` (the first 2,048 held-out samples ``x``
    and, for labelled data, their labels ``y``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / "config.json", json.dumps(to_dict(config), indent=2).encode())
    ref = run_dir / "reference.safetensors"
    if not ref.exists():
        tensors = {"x": dataset.heldout[:REFERENCE_MAX].contiguous().cpu()}
        if dataset.heldout_labels is not None:
            tensors["y"] = dataset.heldout_labels[:REFERENCE_MAX].contiguous().cpu()
        atomic_write_bytes(ref, save_safetensors(tensors, metadata={"kind": dataset.kind}))


@torch.no_grad()
def preview(
    model: Model, sde: SDE, config: TrainConfig, kind: str, heldout: Tensor, num_classes: int | None = None
) -> np.ndarray:
    """A picture of samples of ``model``: a grid (images) or a scatter plot over ``heldout`` (points).

    Always the same noise (seeded by ``config.seed``), so pictures of successive steps compare.
    A class-conditional model (``num_classes`` K) is sampled at w = 1 with one row per class
    (``sample_num // K`` per class, at least one).
    """
    from .samplers import sample

    device = next(model.parameters()).device
    g = torch.Generator(device).manual_seed(config.seed + 12345)
    per_class = max(1, config.sample_num // num_classes) if num_classes else None
    y = {"y": class_rows(num_classes, per_class).to(device)} if num_classes else {}
    shape = (per_class * num_classes if num_classes else config.sample_num, *heldout.shape[1:])
    clip = {"clip_x0": 1.0} if kind == "images" else {}
    x = sample(
        model,
        sde,
        shape,
        solver=config.sample_solver,
        steps=config.sample_steps,
        prediction=model_prediction(config),
        generator=g,
        **y,
        **clip,
    )
    if kind == "images":
        zoom = max(1, math.ceil(32 / x.shape[-1]))  # small images (8×8 digits) enlarged to be seen
        return image_grid(x.clamp(-1, 1).repeat_interleave(zoom, -1).repeat_interleave(zoom, -2), nrow=per_class)
    return scatter_image(x, heldout)


class LossTally:
    """Sums of the per-sample loss, overall and in ``T_BINS`` equal t-bins, since the last record."""

    def __init__(self, T: float, device: torch.device) -> None:
        self.T = T
        self.bins = torch.zeros(T_BINS, device=device, dtype=torch.float64)
        self.counts = torch.zeros(T_BINS, device=device, dtype=torch.float64)
        self.total = torch.zeros(2, device=device, dtype=torch.float64)  # (sum of losses, count)

    def add(self, loss: Tensor, t: Tensor) -> None:
        self.total[0] += loss.sum()
        self.total[1] += loss.numel()
        k = (t / self.T * T_BINS).long().clamp_(0, T_BINS - 1).to(self.bins.device)
        self.bins.index_add_(0, k, loss.to(self.bins.dtype))
        self.counts.index_add_(0, k, torch.ones_like(self.bins[k]))

    def finite(self) -> bool:
        """False if a non-finite loss was added on this rank since the last record."""
        return not self.total[1].item() or bool(torch.isfinite(self.total[0]).item())

    def take(self, dist: Distributed) -> tuple[float, list[float | None]]:
        """(mean loss, mean loss per t-bin or ``None`` for an empty bin) over all ranks; then reset."""
        dist.all_reduce_(self.total, self.bins, self.counts)
        loss = (self.total[0] / self.total[1]).item()
        by_t = [b / k if k > 0 else None for b, k in zip(self.bins.tolist(), self.counts.tolist(), strict=True)]
        for t in (self.total, self.bins, self.counts):
            t.zero_()
        return loss, by_t


def metrics_record(
    step: int, loss: float, loss_by_t: list[float | None], T: float, lr: float, steps_per_s: float | None
) -> dict[str, Any]:
    """One line of ``metrics.jsonl``: the mean loss since the last record, per t-bin too."""
    return {
        "step": step,
        "loss": loss,
        "loss_by_t": loss_by_t,
        "t_bins": [i * T / T_BINS for i in range(T_BINS + 1)],
        "lr": lr,
        "steps_per_s": steps_per_s,
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


@contextlib.contextmanager
def stop_on_sigint(stop: Callable[[], None]):
    """While inside, the first Ctrl-C calls ``stop()`` (finish the step, save, return), the second one
    raises KeyboardInterrupt. Only in the main thread (signals cannot be caught elsewhere)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    requested = False

    def handler(signum, frame):
        nonlocal requested
        if requested:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        requested = True
        stop()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# --------------------------------------------------------------------------- the trainer


class Trainer:
    """Train a denoising model as ``config`` says, writing into ``run_dir``.

    Args:
        config: the resolved :class:`~scoresde.config.TrainConfig`.
        run_dir: the run folder (created); ``None`` trains in memory and writes nothing.
        resume: continue from the newest checkpoint of ``run_dir`` (``True``) or from a
            :class:`~scoresde.checkpoint.Checkpoint` already read; ``steps`` may grow.
        progress: show a rich progress bar (rank 0 only).
        dataset: a preloaded :class:`~scoresde.data.Dataset` instead of ``config.data``.
        log: where messages go (warnings, "interrupt: ..."), e.g. ``print``.
        reporters: further :class:`~scoresde.reporting.Reporter` s (metrics, messages, pictures); a run
            folder also gets those ``config.loggers`` names (:data:`~scoresde.reporting.LOGGERS`, jsonl always).
    """

    def __init__(
        self,
        config: TrainConfig,
        run_dir: str | os.PathLike | None,
        *,
        resume: bool | ckpt.Checkpoint = False,
        progress: bool = True,
        dataset: Dataset | None = None,
        log: Callable[[str], None] | None = None,
        reporters: Sequence[Reporter] = (),
    ) -> None:
        validate(config)
        if config.threads > 0:  # on a busy machine one thread per process is often much faster
            torch.set_num_threads(config.threads)
        c, self.config, self.progress = config, config, progress
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.dist = setup_distributed(c.device)
        self.reporter = self._reporters(log, reporters)
        self.pictures = run_dir is not None or bool(reporters)  # someone to show sample pictures to
        self.dataset = dataset or load_training_data(
            c.data.name,
            path=c.data.path,
            n=c.data.n,
            resize=c.data.resize,
            heldout=c.data.heldout,
            seed=c.seed,
            stream=c.data.stream,
            log=self.reporter.log_message if log else None,
            strict=c.data.strict,
        )
        if c.data.hflip and self.dataset.kind != "images":
            raise ValueError(f"--hflip flips images; the data {self.dataset.name!r} are points")
        if c.batch_size % self.world:
            raise ValueError(f"batch_size {c.batch_size} must be divisible by the number of ranks {self.world}")
        self.num_classes = check_conditional(c, self.dataset)
        self.sde = build_sde(c)
        torch.manual_seed(c.seed)  # the initial weights: the same on every rank
        self.model = build_model(c, self.dataset.data_shape, self.dataset.kind, self.sde, self.num_classes)
        self.model.to(self.device)
        torch.manual_seed(c.seed + 1 + self.rank)  # dropout: each rank its own stream
        self.averager = EMA(self.model, c.optim.ema_decay, c.optim.ema_warmup, c.optim.ema_gamma)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.params, c.optim, self.device)
        self.weighting, self.time_sampler = loss_parts(c)
        self.generator = torch.Generator(self.device).manual_seed(c.seed * 7919 + 101 + self.rank)
        if isinstance(self.dataset.train, Tensor):  # in memory, on the device
            self.train_x, self.stream = self.dataset.train.to(self.device), None
        else:  # read batch by batch by DataLoader workers (scoresde.streaming)
            self.train_x = None
            self.stream = StreamingBatches(
                self.dataset.train,
                c.batch_size,
                c.seed,
                rank=self.rank,
                world=self.world,
                workers=c.data.workers,
                flip=c.data.hflip,
                device=self.device,
            )
        if self.num_classes and self.stream is not None:
            raise ValueError("conditional training on streamed data is not supported yet; use --stream off")
        self.train_y = self.dataset.train_labels.to(self.device) if self.num_classes else None
        self.step, self.metrics = 0, []
        self.last_checkpoint: Path | None = None
        # before anything is written: one writer per run folder (rank 0 writes for every rank)
        self._lock: RunLock | None = lock_run(self.run_dir) if self.run_dir is not None and self.rank == 0 else None
        try:
            if resume is not False:
                self._restore(self._checkpoint_to_resume(resume))
            self.net = self.dist.wrap(self.model)
            if c.compile:
                self.net = torch.compile(self.net)
        except BaseException:
            self._release()
            raise
        self._stop = False

    @property
    def ema(self) -> nn.Module:
        """The EMA of the model (eval mode): the weights to sample from."""
        return self.averager.module

    @property
    def world(self) -> int:
        return self.dist.world

    @property
    def rank(self) -> int:
        return self.dist.rank

    @property
    def device(self) -> torch.device:
        return self.dist.device

    def _reporters(self, log, extra: Sequence[Reporter]) -> Reporters:
        if self.rank != 0:
            return Reporters()
        folder = make_loggers(self.config.loggers, self.run_dir, to_dict(self.config)) if self.run_dir else []
        return Reporters([*folder, *([EchoReporter(log)] if log else []), *extra])

    def close(self) -> None:
        """Close the reporters, stop the data workers, release the run folder and leave the process group
        if this trainer created it."""
        if getattr(self, "stream", None) is not None:
            self.stream.close()
        self.reporter.close()
        self._release()
        self.dist.close()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # ---- resume --------------------------------------------------------------------------
    def _checkpoint_to_resume(self, resume: bool | ckpt.Checkpoint) -> ckpt.Checkpoint:
        if isinstance(resume, ckpt.Checkpoint):
            return resume
        if self.run_dir is None or ckpt.latest_checkpoint(self.run_dir) is None:
            raise ValueError(f"nothing to resume: {self.run_dir} has no checkpoint")
        return ckpt.load_latest(self.run_dir, warn=lambda m: self.reporter.log_message(f"warning: {m}"))

    def _restore(self, checkpoint: ckpt.Checkpoint) -> None:
        meta, path = checkpoint.meta, checkpoint.path
        try:
            if tuple(meta["data_shape"]) != self.dataset.data_shape:
                raise ValueError(
                    f"checkpoint {path} was trained on data of shape {tuple(meta['data_shape'])}, "
                    f"the data now has shape {self.dataset.data_shape}"
                )
            if meta.get("num_classes") != self.num_classes:
                raise ValueError(
                    f"checkpoint {path} was trained with num_classes={meta.get('num_classes')}, "
                    f"the run now has num_classes={self.num_classes}"
                )
            ckpt.load_training_state(checkpoint, self.model, self.ema, self.optimizer, self.device)
            rng = meta["rng"]
            if len(rng) != self.world:
                self.reporter.log_message(
                    f"warning: checkpoint was written by {len(rng)} ranks, now {self.world}: "
                    "resume is not bitwise exact"
                )
            ckpt.set_rng_states(rng[self.rank % len(rng)], self.generator, self.device)
            self.step = checkpoint.step
            if self.run_dir is not None and self.rank == 0:  # the steps after it are logged again
                truncate_metrics(self.run_dir, self.step)
        except (KeyError, TypeError, IndexError) as err:
            raise ValueError(f"checkpoint {path} is incomplete or corrupt (bad field {err})") from None
        self.last_checkpoint = path

    # ---- one step ------------------------------------------------------------------------
    def lr(self, step: int) -> float:
        """The learning rate of step ``step``: linear warm-up to ``optim.lr``."""
        warmup = self.config.optim.warmup
        return self.config.optim.lr * min(1.0, (step + 1) / warmup) if warmup else self.config.optim.lr

    def rows(self, step: int) -> Tensor:
        """The indices into the training set of this rank's slice of global batch ``step``
        (a pure function of seed and step)."""
        c = self.config
        idx = batch_indices(step, len(self.train_x), c.batch_size, c.seed)
        per_rank = c.batch_size // self.world
        return idx[self.rank * per_rank : (self.rank + 1) * per_rank].to(self.device)

    def batch(self, step: int) -> Tensor:
        """This rank's slice of global batch ``step`` (a pure function of seed and step), flipped by
        ``--hflip`` (:func:`~scoresde.data.hflip_mask`); streamed data are read ahead by workers."""
        if self.stream is not None:
            return self.stream(step)
        c = self.config
        x = self.train_x[self.rows(step)]
        if not c.data.hflip:
            return x
        per_rank = c.batch_size // self.world
        mask = hflip_mask(step, c.batch_size, c.seed)[self.rank * per_rank : (self.rank + 1) * per_rank]
        return hflip(x, mask)

    def labels(self, step: int) -> Tensor | None:
        """The class labels of :meth:`batch` ``step`` (a conditional run), else None."""
        return None if self.train_y is None else self.train_y[self.rows(step)]

    def train_step(self, x0: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One optimizer step on batch ``x0`` (with labels ``y`` for a conditional run); returns
        (per-sample loss, times) detached.

        The labels are dropped to the null label with probability ``loss.cond_drop`` (classifier-free
        guidance; Ho & Salimans 2022, Alg. 1), drawn from the trainer's generator before the loss's
        times and noise, so that a resumed run draws the same.
        """
        c = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr(self.step)
        cond = None
        if y is not None:
            cond = {"y": drop_labels(y, c.loss.cond_drop, self.num_classes, self.generator)}
        with torch.autocast("cuda", torch.bfloat16, enabled=c.bf16 and self.device.type == "cuda"):
            loss, draw = denoising_loss(
                self.net,
                self.sde,
                x0,
                weighting=self.weighting,
                time=self.time_sampler,
                prediction=model_prediction(c),
                generator=self.generator,
                reduce=c.loss.reduce,
                return_draw=True,
                cond=cond,
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.mean().backward()
        if c.optim.grad_clip > 0:
            clip_grad_norm(self.grads(), c.optim.grad_clip)
        self.optimizer.step()
        self.averager.update(self.step)
        self.step += 1
        return loss.detach(), draw.t

    def grads(self) -> list[Tensor]:
        """The parameters' gradients (those that have one)."""
        return [p.grad for p in self.params if p.grad is not None]

    # ---- the loop ------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Train to ``config.steps``: log every ``log_every``, checkpoint every ``checkpoint_every``
        and at the end, preview every ``sample_every``; Ctrl-C finishes the step, saves and returns."""
        c = self.config
        if self.rank == 0 and self.run_dir is not None:
            write_run_files(self.run_dir, self.config, self.dataset)
        tally, last_loss, start = LossTally(self.sde.T, self.device), None, self.step
        bar = ProgressReporter(c.steps, start) if self.progress and self.rank == 0 else None
        self.reporter.reporters += [bar] if bar else []
        t_log = time.perf_counter()
        try:
            with stop_on_sigint(self.request_stop):
                while self.step < c.steps:
                    loss, t = self.train_step(self.batch(self.step), self.labels(self.step))
                    tally.add(loss, t)
                    if bar is not None:
                        bar.advance()
                    at_end = self.step == c.steps
                    if self.step % c.log_every == 0 or at_end:
                        last_loss, t_log = self._log_metrics(tally, time.perf_counter() - t_log), time.perf_counter()
                    if c.checkpoint_every and self.step % c.checkpoint_every == 0 and not at_end:
                        self._checkpoint(tally)
                    if c.sample_every and self.step % c.sample_every == 0:
                        self.preview()
                    if self.dist.any(self._stop):
                        self._checkpoint(tally)
                        return self._result(last_loss, interrupted=True)
                if self.step > start or self.last_checkpoint is None:
                    self._checkpoint(tally)
                    if c.sample_every and self.step % c.sample_every:
                        self.preview()
            return self._result(last_loss, interrupted=False)
        finally:
            if bar is not None:
                bar.close()
                self.reporter.reporters.remove(bar)

    def request_stop(self) -> None:
        """Finish the current step, save a checkpoint and return from :meth:`run` (what Ctrl-C does)."""
        self._stop = True
        self.reporter.log_message("interrupt: finishing this step, saving a checkpoint (Ctrl-C again to abort)")

    def _result(self, loss: float | None, *, interrupted: bool) -> TrainResult:
        ema = self.ema if self.device.type == "cpu" else copy.deepcopy(self.ema).cpu()
        return TrainResult(
            self.run_dir,
            self.step,
            loss,
            interrupted,
            self.last_checkpoint,
            model=ema,
            sde=self.sde,
            config=self.config,
            data_shape=self.dataset.data_shape,
            kind=self.dataset.kind,
            reference=self.dataset.heldout[:REFERENCE_MAX].cpu(),
            metrics=list(self.metrics),
            num_classes=self.num_classes,
            class_names=self.dataset.class_names if self.num_classes else None,
        )

    def _diverged(self) -> NoReturn:
        kept = (
            f"the last good checkpoint is {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint was saved"
        )
        raise TrainingDiverged(
            f"the loss became non-finite by step {self.step}; training stopped and {kept} "
            "(try a lower --lr, a smaller --grad-clip or another --weighting)"
        )

    def _log_metrics(self, tally: LossTally, seconds: float) -> float:
        loss, by_t = tally.take(self.dist)
        if not math.isfinite(loss):
            self._diverged()
        every = self.config.log_every
        steps = every if self.step % every == 0 else self.step % every
        record = metrics_record(
            self.step, loss, by_t, self.sde.T, self.lr(self.step - 1), steps / seconds if seconds > 0 else None
        )
        self.metrics.append(record)
        self.reporter.log_metrics(record)
        return loss

    # ---- checkpoints and pictures --------------------------------------------------------
    def _checkpoint(self, tally: LossTally) -> None:
        """Refuse to save a non-finite state; save a checkpoint if there is a run folder."""
        if not tally.finite():
            self._diverged()
        if self.run_dir is not None:
            self.save_checkpoint()

    def save_checkpoint(self) -> Path:
        """Write the checkpoint of the current step (rank 0) and prune to the newest ``keep``."""
        if self.run_dir is None:
            raise ValueError("this trainer has no run folder to save a checkpoint in (run_dir=None)")
        rng = self.dist.gather(ckpt.rng_states(self.generator, self.device))
        path = ckpt.checkpoint_path(self.run_dir, self.step)
        if self.rank == 0:
            tensors, optim_meta = ckpt.training_tensors(self.model, self.ema, self.optimizer)
            meta = {
                "step": self.step,
                "config": to_dict(self.config),
                "data_shape": list(self.dataset.data_shape),
                "kind": self.dataset.kind,
                "num_classes": self.num_classes,
                "class_names": list(self.dataset.class_names) if self.num_classes else None,
                "world_size": self.world,
                "optimizer": optim_meta,
                "rng": rng,
            }
            ckpt.save_checkpoint(path, tensors, meta, keep=self.config.keep)
        self.dist.barrier()
        self.last_checkpoint = path
        return path

    def preview(self) -> np.ndarray | None:
        """Sample the EMA model and report the picture (rank 0; on a run folder, ``samples/step_N.png``).
        Skipped without a run folder or reporters."""
        if self.rank != 0 or not self.pictures:
            return None
        pixels = preview(self.ema, self.sde, self.config, self.dataset.kind, self.dataset.heldout, self.num_classes)
        self.reporter.log_image(self.step, pixels)
        return pixels


def train(
    config: TrainConfig,
    run_dir: str | os.PathLike | None = None,
    *,
    resume: bool | ckpt.Checkpoint = False,
    progress: bool = True,
    **kwargs,
) -> TrainResult:
    """Train as ``config`` says (see :class:`Trainer`) into ``run_dir``, or in memory when it is ``None``.

    The result holds the EMA model and the logged metrics either way.
    """
    trainer = Trainer(config, run_dir, resume=resume, progress=progress, **kwargs)
    try:
        return trainer.run()
    finally:
        trainer.close()
