"""A run's time budget: ``--minutes`` of training on a ``--clock``, summed over resumes.

:data:`CLOCKS` names the clocks (``wall``: :func:`time.perf_counter`; ``cpu``: this process's CPU
time, :func:`time.process_time`, all its threads, fair on a shared machine). :class:`TimeBudget`
counts the seconds of the training loop (steps, logging, checkpoints, preview pictures) on one of
them, read once per step boundary, on top of the seconds of the run's earlier segments (stored in
each checkpoint as ``train_seconds``), and says when ``minutes`` are used. Under ``torchrun`` rank
0's count decides and the trainer shares the decision (:meth:`scoresde.distributed.Distributed.any_of`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .registry import Registry

__all__ = ["CLOCKS", "STOPPED", "TimeBudget", "budget_text", "run_length_text"]

CLOCKS: Registry[Callable[[], float]] = Registry("clock")
"""The clocks ``--minutes`` may be counted on (``--clock``): each a function returning seconds."""
CLOCKS.register("wall")(time.perf_counter)
CLOCKS.register("cpu")(time.process_time)

STOPPED = "time budget"
"""``stopped`` of the last metrics record and of the checkpoint of a run its budget ended."""


class TimeBudget:
    """The training seconds of a run on ``clock``, and whether ``minutes`` of them are used.

    Args:
        minutes: the budget (``None``: no budget, :attr:`used` is never true).
        clock: a function returning seconds (:data:`CLOCKS`, or a fake clock in tests); it is read
            by :meth:`start` and by each :meth:`tick`, and nowhere else.
        earlier: the seconds used by the run's earlier segments (a resumed run's checkpoint).
    """

    def __init__(self, minutes: float | None, clock: Callable[[], float], earlier: float = 0.0) -> None:
        self.limit = None if minutes is None else minutes * 60
        self.clock = clock
        self.earlier = self.seconds = float(earlier)
        self._start: float | None = None

    def start(self) -> None:
        """Start counting this segment (the first step follows)."""
        self._start = self.clock()
        self.seconds = self.earlier

    def tick(self) -> float:
        """Read the clock (at a step boundary): the seconds used so far, earlier segments included."""
        if self._start is None:
            raise RuntimeError("TimeBudget.tick before start")
        self.seconds = self.earlier + (self.clock() - self._start)
        return self.seconds

    @property
    def used(self) -> bool:
        """The budget is spent (as of the last :meth:`tick`, or of the earlier segments before the first)."""
        return self.limit is not None and self.seconds >= self.limit


def _minutes(minutes: float) -> str:
    return f"{minutes:g} min"


def run_length_text(config: Any) -> str:
    """``1200 steps``, ``3 min (wall clock)``, ``5000 steps or 3 min (cpu clock), whichever comes first``."""
    steps = None if config.steps is None else f"{config.steps} steps"
    time_ = None if config.minutes is None else f"{_minutes(config.minutes)} ({config.clock} clock)"
    if steps and time_:
        return f"{steps} or {time_}, whichever comes first"
    return steps or time_ or "no limit"


def budget_text(config: Any) -> str:
    """``time budget 3 min used``: the end of a run its budget stopped."""
    return f"time budget {_minutes(config.minutes)} used"
