"""The training progress bar: a :class:`~scoresde.reporting.Reporter` that draws a rich bar on the terminal.

Over the steps of a run, or, when the run has a time budget (:mod:`scoresde.budget`), over its
seconds; re-exported by :mod:`scoresde.reporting` with the other reporters.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ProgressReporter"]


class ProgressReporter:
    """A rich progress bar over ``total`` steps starting at ``start``, or, given a ``budget`` with minutes
    (:class:`scoresde.budget.TimeBudget`), over its seconds (elapsed/budget, and the step). Advanced by
    :meth:`advance`, its loss and speed updated by every metrics record. Started at construction,
    stopped by :meth:`close`."""

    def __init__(self, total: int | None, start: int = 0, budget: Any = None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.timed = budget is not None and budget.limit is not None
        self.step, self.total = start, total
        counter = TextColumn("{task.fields[clock]} step {task.fields[step]}") if self.timed else MofNCompleteColumn()
        self.bar = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            counter,
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[speed]}"),
            TimeRemainingColumn(),
        )
        if self.timed:
            self.limit = budget.limit
            task = {"total": budget.limit, "completed": min(budget.seconds, budget.limit)}
        else:
            task = {"total": total, "completed": start}
        self.task = self.bar.add_task("train", **task, loss="…", speed="", clock="", step="")
        if self.timed:
            self._show(budget.seconds)
        self.bar.start()

    def _show(self, seconds: float) -> None:
        step = f"{self.step}" + (f"/{self.total}" if self.total is not None else "")
        clock = f"{_mmss(seconds)}/{_mmss(self.limit)}"
        self.bar.update(self.task, completed=min(seconds, self.limit), clock=clock, step=step)

    def advance(self, seconds: float | None = None) -> None:
        """One step more; ``seconds``: the budget's seconds used so far (a timed bar)."""
        self.step += 1
        if self.timed:
            self._show(seconds or 0.0)
        else:
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


def _mmss(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"
