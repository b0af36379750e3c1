"""Where a training run reports to: metrics records, messages and sample pictures.

The trainer talks to one :class:`Reporter` (on rank 0 only); :class:`Reporters` fans out to
several. A new destination (TensorBoard, wandb, ...) is one class with the four methods.

* :class:`JsonlReporter`: ``<run>/metrics.jsonl`` (one JSON line per record) and ``<run>/samples/*.png``.
* :class:`ProgressReporter`: a rich progress bar showing the loss and speed.
* :class:`EchoReporter`: messages (warnings, "interrupt: ...") to a function such as ``print``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = ["EchoReporter", "JsonlReporter", "ProgressReporter", "Reporter", "Reporters"]


class Reporter(Protocol):
    """What a training run reports. A record is a JSON-ready dict with at least ``step`` and ``loss``
    (see :class:`scoresde.train.Trainer`); pixels are a (H, W) or (H, W, 3) uint8 array."""

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


class ProgressReporter:
    """A rich progress bar over ``total`` steps starting at ``start``: advanced by :meth:`advance`,
    its loss and speed updated by every metrics record. Started at construction, stopped by :meth:`close`."""

    def __init__(self, total: int, start: int = 0) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[speed]}"),
            TimeRemainingColumn(),
        )
        self.task = self.bar.add_task("train", total=total, completed=start, loss="…", speed="")
        self.bar.start()

    def advance(self) -> None:
        self.bar.update(self.task, advance=1)

    def log_metrics(self, record: dict[str, Any]) -> None:
        speed = f"{record['steps_per_s']:.1f} steps/s" if record.get("steps_per_s") else ""
        self.bar.update(self.task, loss=f"{record['loss']:.4f}", speed=speed)

    def log_message(self, text: str) -> None:
        pass

    def log_image(self, step: int, pixels: np.ndarray) -> None:
        pass

    def close(self) -> None:
        self.bar.stop()
