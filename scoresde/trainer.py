"""The trainer: AdamW + warm-up, clipping, EMA, exact resume, checkpoints, metrics, DDP.

:func:`train` trains as a :class:`~scoresde.config.TrainConfig` says and returns the EMA model as a
:class:`~scoresde.diffusion_model.DiffusionModel`, in memory (``run_dir=None``: nothing is written)
or in a run folder (:mod:`scoresde.run_folder`: layout, lock, loading). :class:`Trainer` is the loop;
its pieces live apart: what it builds (:mod:`scoresde.build`), :class:`~scoresde.ema.EMA`, the
reporters and the loss tally (:mod:`scoresde.reporting`), the process group
(:mod:`scoresde.distributed`), the checkpoint format (:mod:`scoresde.checkpoint`).

A checkpoint holds every tensor (weights, EMA weights, optimizer moments) and the rest (step,
config, optimizer hyper-parameters, the RNG states of every rank). Resuming restores all of it
from :func:`~scoresde.run_folder.resume_point`; the data order is a pure function of (seed, step)
(:func:`scoresde.batches.batch_indices`), so a resumed run is bitwise identical to an uninterrupted one.

At ``guide_at`` of the run the trainer keeps a copy of the EMA model, once: the weak model that
autoguidance steers the final one away from (:class:`scoresde.guidance.AutoGuided`), written to the
run folder as ``guide.safetensors`` and handed back as ``DiffusionModel.guide``.

Under ``torchrun`` the same code runs with DistributedDataParallel (gloo on CPU, NCCL on GPU):
each rank draws its own slice of every global batch and its own noise; rank 0 writes.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from torch import Tensor, nn

from . import checkpoint as ckpt
from .batches import MemoryBatches
from .budget import CLOCKS, STOPPED, TimeBudget, budget_text, run_length_text
from .build import build_dataset, build_model, build_sde, check_conditional, validate
from .config import TrainConfig, to_dict
from .data import Dataset
from .data_defaults import resolve
from .diffusion_model import DiffusionModel, Provenance
from .distributed import setup as setup_distributed
from .distributed import stop_on_sigint
from .ema import EMA
from .generation import preview
from .labels import drop_labels
from .losses import denoising_loss
from .optim import build_optimizer, clip_grad_norm, learning_rate
from .reporting import (
    EchoReporter,
    LossTally,
    ProgressReporter,
    Reporter,
    Reporters,
    make_loggers,
    metrics_record,
    truncate_metrics,
)
from .run_folder import (
    check_fits,
    load_guide,
    model_meta,
    prepare_run,
    resume_point,
    save_guide,
    trained_model,
    write_run_files,
)
from .runlock import RunLock, lock_run
from .streaming import StreamingBatches

__all__ = ["Trainer", "TrainingDiverged", "train", "train_in_folder"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


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
        clock: what ``config.minutes`` is counted on (default ``CLOCKS[config.clock]``,
            :mod:`scoresde.budget`); read once per step, so a fake clock makes the stop step exact.
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
        lock: RunLock | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        weighting, time_sampler = validate(config)
        if config.threads > 0:  # on a busy machine one thread per process is often much faster
            torch.set_num_threads(config.threads)
        c, self.config, self.progress = config, config, progress
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.dist = setup_distributed(c.device)
        self.reporter = self._reporters(log, reporters)
        self.pictures = run_dir is not None or bool(reporters)  # someone to show sample pictures to
        self.dataset = dataset or build_dataset(c, self.reporter.log_message if log else None)
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
        self.weighting, self.time_sampler = weighting, time_sampler
        self.generator = torch.Generator(self.device).manual_seed(c.seed * 7919 + 101 + self.rank)
        d = self.dataset
        if self.num_classes and not isinstance(d.train, Tensor):
            raise ValueError("conditional training on streamed data is not supported yet; use --stream off")
        where = {"rank": self.rank, "world": self.world, "flip": c.data.hflip, "device": self.device}
        if isinstance(d.train, Tensor):  # in memory, on the device
            labels = d.train_labels if self.num_classes else None
            self.batches = MemoryBatches(d.train, labels, c.batch_size, c.seed, **where)
        else:  # read batch by batch by DataLoader workers (scoresde.streaming)
            self.batches = StreamingBatches(d.train, c.batch_size, c.seed, workers=c.data.workers, **where)
        self.step, self.metrics, self.stopped = 0, [], None
        self.budget = TimeBudget(c.minutes, clock or CLOCKS[c.clock])
        self.last_checkpoint: Path | None = None
        # before anything is written: one writer per run folder (rank 0 writes for every rank)
        if lock is None and self.run_dir is not None and self.rank == 0:
            lock = lock_run(self.run_dir)
        self._lock = lock
        try:
            if resume is not False:
                if resume is True and self.run_dir is None:
                    raise ValueError("nothing to resume: a trainer without a run folder has no checkpoint")
                warn = lambda m: self.reporter.log_message(f"warning: {m}")  # noqa: E731
                self._restore(resume if resume is not True else resume_point(self.run_dir, warn))
            self.net = self.dist.wrap(self.model)
            self.guide = self._existing_guide() if resume is not False else None  # a fresh run keeps its own
            self._guide_due = self.guide is None and self.fraction_done() < c.guide_at  # not late, for a resumed run
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
        if getattr(self, "batches", None) is not None:
            self.batches.close()
        self.reporter.close()
        self._release()
        self.dist.close()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # ---- resume --------------------------------------------------------------------------
    def _restore(self, checkpoint: ckpt.Checkpoint) -> None:
        meta, path = checkpoint.meta, checkpoint.path
        try:
            check_fits(checkpoint, self.dataset.data_shape, self.num_classes)
            ckpt.load_training_state(checkpoint, self.model, self.ema, self.optimizer, self.device)
            rng = meta["rng"]
            if len(rng) != self.world:
                self.reporter.log_message(
                    f"warning: checkpoint was written by {len(rng)} ranks, now {self.world}: "
                    "resume is not bitwise exact"
                )
            ckpt.set_rng_states(rng[self.rank % len(rng)], self.generator, self.device)
            self.step = checkpoint.step
            self.budget = TimeBudget(self.config.minutes, self.budget.clock, meta.get("train_seconds", 0.0))
            if self.run_dir is not None and self.rank == 0:  # the steps after it are logged again
                truncate_metrics(self.run_dir, self.step)
        except (KeyError, TypeError, IndexError) as err:
            raise ValueError(f"checkpoint {path} is incomplete or corrupt (bad field {err})") from None
        self.last_checkpoint = path

    # ---- the autoguidance guide ----------------------------------------------------------
    def fraction_done(self) -> float:
        """How far the run is, in [0, 1]: of ``steps`` or of ``minutes``, whichever is further."""
        parts = [self.step / self.config.steps] if self.config.steps else []
        if self.budget.limit:
            parts.append(self.budget.seconds / self.budget.limit)
        return min(1.0, max(parts, default=0.0))

    def _existing_guide(self) -> nn.Module | None:
        """A resumed run's guide (kept once, never replaced)."""
        if self.run_dir is None:
            return None
        c, d = self.config, self.dataset
        return load_guide(self.run_dir, lambda: build_model(c, d.data_shape, d.kind, self.sde, self.num_classes))

    def _keep_guide_if_due(self) -> None:
        """At ``guide_at`` of the run, keep a copy of the EMA model (and write it to the run folder): the weak
        model of autoguidance (Karras et al. 2024 guide with an early, less trained version of the model)."""
        if not self._guide_due or self.fraction_done() < self.config.guide_at:
            return
        self._guide_due = False
        self.guide = copy.deepcopy(self.ema).requires_grad_(False).eval()
        if self.run_dir is not None and self.rank == 0:
            save_guide(self.run_dir, self.guide, self.step)

    # ---- one step ------------------------------------------------------------------------
    def lr(self, step: int) -> float:
        """The learning rate of step ``step`` (:func:`scoresde.optim.learning_rate`)."""
        return learning_rate(self.config.optim, step)

    def batch(self, step: int) -> Tensor:
        """This rank's slice of global batch ``step`` (a pure function of seed and step, :mod:`scoresde.batches`)."""
        return self.batches(step)

    def labels(self, step: int) -> Tensor | None:
        """The class labels of :meth:`batch` ``step`` (a conditional run), else None."""
        return self.batches.labels(step) if self.num_classes else None

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
                prediction=self.model.prediction,
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
    def run(self) -> DiffusionModel:
        """Train to ``config.steps`` or until ``config.minutes`` are used (:mod:`scoresde.budget`), whichever
        comes first: log every ``log_every``, checkpoint every ``checkpoint_every`` and at the end, preview
        every ``sample_every``; Ctrl-C finishes the step, saves and returns."""
        c = self.config
        if self.rank == 0 and self.run_dir is not None:
            write_run_files(self.run_dir, self.config, self.dataset)
        tally, start = LossTally(self.sde.T, self.device), self.step
        bar = ProgressReporter(c.steps, start, self.budget) if self.progress and self.rank == 0 else None
        self.reporter.reporters += [bar] if bar else []
        if self.budget.used:
            self.reporter.log_message(f"the run's time budget ({c.minutes:g} min) is used: nothing to train")
        self.budget.start()
        t_log = time.perf_counter()
        try:
            with stop_on_sigint(self.request_stop):
                out_of_time = self.budget.used
                while not out_of_time and (c.steps is None or self.step < c.steps):
                    loss, t = self.train_step(self.batch(self.step), self.labels(self.step))
                    tally.add(loss, t)
                    self.budget.tick()  # one all-reduce shares any rank's Ctrl-C and rank 0's clock
                    stop, out_of_time = self.dist.any_of(self._stop, self.rank == 0 and self.budget.used)
                    self.stopped = STOPPED if out_of_time else None
                    self._keep_guide_if_due()
                    if bar is not None:
                        bar.advance(self.budget.seconds)
                    at_end = self.step == c.steps or out_of_time
                    if self.step % c.log_every == 0 or at_end:
                        self._log_metrics(tally, time.perf_counter() - t_log)
                        t_log = time.perf_counter()
                    if c.checkpoint_every and self.step % c.checkpoint_every == 0 and not at_end:
                        self._checkpoint(tally)
                    if c.sample_every and self.step % c.sample_every == 0:
                        self.preview()
                    if stop and not out_of_time:
                        self._checkpoint(tally)
                        return self._result(interrupted=True)
                if self.step > start or self.last_checkpoint is None:
                    self._checkpoint(tally)
                    if c.sample_every and self.step % c.sample_every:
                        self.preview()
            return self._result(interrupted=False)
        finally:
            if bar is not None:
                bar.close()
                self.reporter.reporters.remove(bar)

    def request_stop(self) -> None:
        """Finish the current step, save a checkpoint and return from :meth:`run` (what Ctrl-C does)."""
        self._stop = True
        self.reporter.log_message("interrupt: finishing this step, saving a checkpoint (Ctrl-C again to abort)")

    def _result(self, *, interrupted: bool) -> DiffusionModel:
        ema = self.ema if self.device.type == "cpu" else copy.deepcopy(self.ema).cpu()
        where = f"run {self.run_dir}" if self.run_dir is not None else "a model trained in memory"
        end = f", {budget_text(self.config)}" if self.stopped else ""
        provenance = Provenance(
            "training",
            f"{where} (step {self.step}{end})",
            run_dir=self.run_dir,
            step=self.step,
            checkpoint=self.last_checkpoint,
            config=self.config,
            metrics=tuple(self.metrics),
            interrupted=interrupted,
        )
        guide = self.guide if self.guide is None or self.device.type == "cpu" else copy.deepcopy(self.guide).cpu()
        return trained_model(ema, self.sde, self.config, self.dataset, self.num_classes, provenance, guide)

    def _diverged(self) -> NoReturn:
        kept = (
            f"the last good checkpoint is {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint was saved"
        )
        raise TrainingDiverged(
            f"the loss became non-finite by step {self.step}; training stopped and {kept} "
            "(try a lower --lr, a smaller --grad-clip or another --weighting)"
        )

    def _log_metrics(self, tally: LossTally, seconds: float) -> None:
        loss, by_t = tally.take(self.dist)
        if not math.isfinite(loss):
            self._diverged()
        every = self.config.log_every
        steps = every if self.step % every == 0 else self.step % every
        speed = steps / seconds if seconds > 0 else None
        lr, used = self.lr(self.step - 1), self.budget.seconds
        record = metrics_record(self.step, loss, by_t, self.sde.T, lr, speed, used, self.stopped)
        self.metrics.append(record)
        self.reporter.log_metrics(record)

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
                **model_meta(self.config, self.dataset, self.num_classes),
                "world_size": self.world,
                "optimizer": optim_meta,
                "rng": rng,
                "train_seconds": self.budget.seconds,  # resumed runs count on from here (scoresde.budget)
                **({"stopped": self.stopped} if self.stopped else {}),
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
    config: TrainConfig | dict[str, Any],
    run_dir: str | os.PathLike | None = None,
    *,
    resume: bool | ckpt.Checkpoint = False,
    progress: bool = True,
    **kwargs: Any,
) -> DiffusionModel:
    """Train as ``config`` says (see :class:`Trainer`) into ``run_dir``, or in memory when it is ``None``.

    ``config`` is a :class:`~scoresde.config.TrainConfig`, used as is, or a nested dict of overrides,
    resolved with the data's defaults (:func:`scoresde.data_defaults.resolve`). Returns the EMA model
    with what describes it; ``.provenance`` holds the step, the checkpoint, the logged metrics (the
    last one says ``"stopped": "time budget"`` when ``minutes`` ended the run) and whether Ctrl-C stopped it.
    """
    if isinstance(config, dict):
        config = resolve(config)
    trainer = Trainer(config, run_dir, resume=resume, progress=progress, **kwargs)
    try:
        return trainer.run()
    finally:
        trainer.close()


def train_in_folder(
    run_dir: str | os.PathLike | None,
    overrides: dict[str, Any],
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    announce: Callable[[str], None] | None = None,
) -> DiffusionModel:
    """What ``scoresde train`` does: :func:`~scoresde.run_folder.prepare_run` (the config from
    ``overrides``, the folder, the resume point, the folder's lock, taken once), then :func:`train`.

    ``log`` gets warnings and messages; ``announce`` (rank 0) one line before the first step.
    """
    warn = (lambda m: log(f"warning: {m}")) if log else None
    run = prepare_run(run_dir, overrides, resume=resume, warn=warn)
    try:
        trainer = Trainer(
            run.config, run.run_dir, resume=run.checkpoint or False, progress=progress, log=log, lock=run.lock
        )
    except BaseException:
        if run.lock is not None:
            run.lock.release()
        raise
    try:
        if announce is not None and trainer.rank == 0:
            length = run_length_text(run.config)
            announce(f"training into {run.run_dir} on {trainer.device} ({trainer.world} rank(s)): {length}")
        return trainer.run()
    finally:
        trainer.close()
