"""Where a training run reports to: metrics records, messages and sample pictures.

The trainer talks to one :class:`Reporter` (on rank 0 only); :class:`Reporters` fans out to
several. A new destination (TensorBoard, wandb, ...) is one class with the four methods.

* :class:`JsonlReporter`: ``<run>/metrics.jsonl`` (one JSON line per record) and ``<run>/samples/*.png``.
* :class:`ProgressReporter`: a rich progress bar showing the loss and speed (:mod:`scoresde.progress`).
* :class:`EchoReporter`: messages (warnings, "interrupt: ...") to a function such as ``print``.
* :class:`TensorBoardReporter`: ``<run>/tensorboard/`` event files (tensorboardX, the ``log`` extra).
* :class:`WandbReporter`: a Weights & Biases run (the ``wandb`` extra; ``WANDB_MODE=offline`` is respected).

:data:`LOGGERS` maps the names of ``scoresde train --logger`` to the reporters of a run folder
(``jsonl`` is always on). :func:`progress_bar` is a rich bar for a sampler's ``callback``.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import json
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import Tensor

from .progress import ProgressReporter
from .registry import Registry

if TYPE_CHECKING:
    from .distributed import Distributed

__all__ = [
    "INSTALL_LOG",
    "LOGGERS",
    "EchoReporter",
    "JsonlReporter",
    "Logger",
    "LossTally",
    "ProgressReporter",
    "Reporter",
    "Reporters",
    "TensorBoardReporter",
    "WandbReporter",
    "check_loggers",
    "make_loggers",
    "metrics_record",
    "progress_bar",
    "truncate_metrics",
]

INSTALL_LOG = 'pip install -c constraints.txt -e ".[log]"'
INSTALL_WANDB = 'pip install -c constraints.txt -e ".[wandb]"'


class Reporter(Protocol):
    """What a training run reports. A record is a JSON-ready dict with at least ``step`` and ``loss``
    (see :class:`scoresde.trainer.Trainer`); pixels are a (H, W) or (H, W, 3) uint8 array."""

    def log_metrics(self, record: dict[str, Any]) -> None: ...

    def log_message(self, text: str) -> None: ...

    def log_image(self, step: int, pixels: np.ndarray) -> None: ...

    def close(self) -> None: ...


class Reporters:
    """Several reporters as one (in order)."""

    def __init__(self, reporters: Iterable[Reporter] = ()) -> None:
        self.reporters = list(reporters)

    def log_metrics(self, record: dict[str, Any]) -> None:
        for r in self.reporters:
            r.log_metrics(record)

    def log_message(self, text: str) -> None:
        for r in self.reporters:
            r.log_message(text)

    def log_image(self, step: int, pixels: np.ndarray) -> None:
        for r in self.reporters:
            r.log_image(step, pixels)

    def close(self) -> None:
        for r in self.reporters:
            r.close()


class JsonlReporter:
    """``metrics.jsonl`` (appended, one line per record) and ``samples/step_<step>.png`` in ``run_dir``."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)

    def log_metrics(self, record: dict[str, Any]) -> None:
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def log_message(self, text: str) -> None:
        pass

    def log_image(self, step: int, pixels: np.ndarray) -> None:
        from .imageio import save_png

        save_png(self.run_dir / "samples" / f"step_{step:08d}.png", pixels)

    def close(self) -> None:
        pass


def truncate_metrics(run_dir: str | os.PathLike, step: int) -> int:
    """Drop the records of ``<run>/metrics.jsonl`` after ``step`` (and a line cut short by a kill).

    Called when a run resumes from the checkpoint of ``step``: the steps after it are trained again
    and logged again, so the file keeps one record per step. Rewritten atomically; returns the number
    of lines dropped.
    """
    from .imageio import atomic_write_bytes

    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] > step:
            dropped += 1
        else:
            kept.append(line)
    if dropped:
        atomic_write_bytes(path, "".join(line + "\n" for line in kept).encode())
    return dropped


class EchoReporter:
    """Messages to ``echo`` (e.g. ``print`` or ``typer.echo``); metrics and images are ignored."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo

    def log_metrics(self, record: dict[str, Any]) -> None:
        pass

    def log_message(self, text: str) -> None:
        self.echo(text)

    def log_image(self, step: int, pixels: np.ndarray) -> None:
        pass

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- loggers people plot


def _need(module: str, logger: str, package: str, install: str) -> Any:
    """Import ``module`` or raise one ValueError line naming the logger, the package and the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(
            f"the {logger} logger needs the optional package {package}; install it with: {install}"
        ) from None


def _scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of a metrics record by tag: ``loss``, ``loss_by_t/0.0-0.1`` (one per non-empty t-bin),
    ``lr``, ``steps_per_s``, ``train_s``."""
    out = {"loss": record["loss"]}
    edges = record.get("t_bins") or []
    for k, value in enumerate(record.get("loss_by_t") or []):
        if value is not None and k + 1 < len(edges):
            out[f"loss_by_t/{edges[k]:.2g}-{edges[k + 1]:.2g}"] = value
    for key in ("lr", "steps_per_s", "train_s"):
        if record.get(key) is not None:
            out[key] = record[key]
    return out


class TensorBoardReporter:
    """TensorBoard event files in ``log_dir`` (``<run>/tensorboard``) written with tensorboardX.

    Scalars: ``loss``, ``loss_by_t/<t0>-<t1>`` per t-bin, ``lr``, ``steps_per_s``, ``train_s``; images: ``samples``
    (the preview grids); messages as text. View with ``tensorboard --logdir runs``.
    """

    def __init__(self, log_dir: str | os.PathLike) -> None:
        tbx = _need("tensorboardX", "tensorboard", "tensorboardX", INSTALL_LOG)
        self.writer = tbx.SummaryWriter(str(log_dir))
        self.step = 0

    def log_metrics(self, record: dict[str, Any]) -> None:
        self.step = record["step"]
        for tag, value in _scalars(record).items():
            self.writer.add_scalar(tag, value, record["step"])
        self.writer.flush()

    def log_message(self, text: str) -> None:
        self.writer.add_text("messages", text, self.step)

    def log_image(self, step: int, pixels: np.ndarray) -> None:
        self.writer.add_image("samples", pixels, step, dataformats="HWC" if pixels.ndim == 3 else "HW")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbReporter:
    """A Weights & Biases run: the same scalars as :class:`TensorBoardReporter` and the preview grids.

    Its files go to ``<run>/wandb``; the run id is kept in ``<run>/wandb-id.txt`` so that a resumed
    training run continues the same wandb run. ``WANDB_MODE=offline`` (or ``wandb offline``) keeps
    everything local, as wandb itself decides.
    """

    def __init__(self, run_dir: str | os.PathLike, config: dict[str, Any] | None = None) -> None:
        self.wandb = _need("wandb", "wandb", "wandb", INSTALL_WANDB)
        run_dir = Path(run_dir)
        id_file = run_dir / "wandb-id.txt"
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
        run_dir.mkdir(parents=True, exist_ok=True)
        id_file.write_text(run_id + "\n")
        self.run = self.wandb.init(
            project=os.environ.get("WANDB_PROJECT", "scoresde"),
            name=run_dir.name,
            id=run_id,
            resume="allow",
            dir=str(run_dir),
            config=config,
        )

    def log_metrics(self, record: dict[str, Any]) -> None:
        self.run.log(_scalars(record), step=record["step"])

    def log_message(self, text: str) -> None:
        pass

    def log_image(self, step: int, pixels: np.ndarray) -> None:
        self.run.log({"samples": self.wandb.Image(pixels)}, step=step)

    def close(self) -> None:
        self.run.finish()


@dataclass(frozen=True)
class Logger:
    """A ``--logger`` choice: ``make(run_dir, config_dict) -> Reporter`` and the optional package it
    needs (``module``, its pip name ``package`` and the ``install`` command), checked by :meth:`check`."""

    make: Callable[[Path, dict[str, Any]], Reporter]
    module: str | None = None
    package: str | None = None
    install: str = INSTALL_LOG

    def check(self, name: str) -> None:
        """Raise one ValueError line naming the extra to install if the optional package is missing."""
        if self.module is not None:
            _need(self.module, name, self.package or self.module, self.install)


LOGGERS: Registry[Logger] = Registry("logger")
LOGGERS.register("jsonl")(Logger(lambda run_dir, config: JsonlReporter(run_dir)))
LOGGERS.register("tensorboard")(
    Logger(lambda run_dir, config: TensorBoardReporter(run_dir / "tensorboard"), "tensorboardX", "tensorboardX")
)
LOGGERS.register("wandb")(
    Logger(lambda run_dir, config: WandbReporter(run_dir, config), "wandb", "wandb", INSTALL_WANDB)
)


def check_loggers(names: Iterable[str]) -> None:
    """ValueError (one line) for an unknown logger name or a missing optional package; nothing is created."""
    for name in names:
        LOGGERS.get(name).check(name)


def make_loggers(names: Iterable[str], run_dir: str | os.PathLike, config: dict[str, Any]) -> list[Reporter]:
    """The reporters of a run folder: ``jsonl`` first (always), then each other name of :data:`LOGGERS` once.

    Unknown names and missing optional packages raise a ValueError (one line naming the extra to
    install) before any reporter is made.
    """
    wanted = list(dict.fromkeys(["jsonl", *names]))
    check_loggers(wanted)
    made: list[Reporter] = []
    try:
        for name in wanted:
            made.append(LOGGERS.get(name).make(Path(run_dir), config))
    except BaseException:
        for r in made:
            r.close()
        raise
    return made


# --------------------------------------------------------------------------- a bar for samplers


@contextlib.contextmanager
def progress_bar(
    enabled: bool = True, callback: Callable[[dict[str, Any]], None] | None = None, label: str = "sample"
) -> Iterator[Callable[[dict[str, Any]], None] | None]:
    """A rich progress bar driven by a sampler's ``callback`` states (their ``progress`` in [0, 1]).

    ``with progress_bar() as cb: sample(..., callback=cb)``. The callback it yields also calls
    ``callback`` (the caller's own); when not ``enabled`` it yields ``callback`` itself and draws
    nothing. The bar disappears when the block ends.
    """
    if not enabled:
        yield callback
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=True,
    )
    task = bar.add_task(label, total=1.0)

    def update(state: dict[str, Any]) -> None:
        if callback is not None:
            callback(state)
        bar.update(task, completed=state["progress"])

    with bar:
        yield update


# --------------------------------------------------------------------------- what a metrics record holds

T_BINS = 10
"""The loss is reported per t-bin: this many equal bins of [0, T]."""


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
    step: int,
    loss: float,
    loss_by_t: list[float | None],
    T: float,
    lr: float,
    steps_per_s: float | None,
    train_s: float | None = None,
    stopped: str | None = None,
) -> dict[str, Any]:
    """One line of ``metrics.jsonl``: the mean loss since the last record, per t-bin too; ``train_s``, the
    training seconds of the run so far (on its ``--clock``, summed over resumes: :mod:`scoresde.budget`);
    ``stopped`` (only on the last record of a run its time budget ended): ``"time budget"``."""
    record = {
        "step": step,
        "loss": loss,
        "loss_by_t": loss_by_t,
        "t_bins": [i * T / T_BINS for i in range(T_BINS + 1)],
        "lr": lr,
        "steps_per_s": steps_per_s,
        "train_s": None if train_s is None else round(train_s, 3),
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    return {**record, "stopped": stopped} if stopped else record
