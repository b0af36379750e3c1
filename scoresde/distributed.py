"""Data-parallel training under ``torchrun``: join the process group, pick the device, share results.

``torchrun`` describes the job in the environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``);
:func:`setup` joins the group it describes (NCCL on GPUs, each rank on ``cuda:LOCAL_RANK``; gloo
on CPU) and returns a :class:`Distributed` handle. Without ``torchrun`` the handle is a single
rank and every method is a no-op, so the trainer runs the same code either way.

:func:`stop_on_sigint` turns the first Ctrl-C into a stop request (the trainer finishes the step,
every rank agreeing through :meth:`Distributed.any_of`, and saves a checkpoint); the same all-reduce
shares rank 0's decision that the time budget is used (:mod:`scoresde.budget`).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["Distributed", "setup", "stop_on_sigint"]


@dataclass
class Distributed:
    """The process's place in the job: ``world`` ranks, this one ``rank``, computing on ``device``."""

    world: int
    rank: int
    device: torch.device
    owns_group: bool = False

    def all_reduce_(self, *tensors: Tensor) -> None:
        """Sum each tensor over the ranks, in place."""
        if self.world > 1:
            for t in tensors:
                dist.all_reduce(t)

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order (``[obj]`` on a single rank)."""
        if self.world == 1:
            return [obj]
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, obj)
        return gathered

    def any_of(self, *flags: bool) -> tuple[bool, ...]:
        """For each flag, True on every rank if it is true on some rank, in one all-reduce. A decision
        of rank 0 alone (the time budget) is shared by passing ``False`` for it on the other ranks."""
        if self.world == 1:
            return tuple(bool(f) for f in flags)
        t = torch.tensor([1.0 if f else 0.0 for f in flags], device=self.device)
        dist.all_reduce(t)
        return tuple(bool(v > 0) for v in t.tolist())

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` in DistributedDataParallel when there are several ranks, else ``model`` itself."""
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def close(self) -> None:
        """Leave the process group if :func:`setup` created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def setup(device: str = "auto") -> Distributed:
    """Join the process group ``torchrun`` describes, if any, and choose the device.

    ``device="auto"`` is ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU; any other
    value (``cpu``, ``cuda:1``) is used as given.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() and device != "cpu"
    if device == "auto":
        chosen = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu")
    else:
        chosen = torch.device(device)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)  # before NCCL starts, so each rank talks from its own GPU
    owns = world > 1 and not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    if dist.is_initialized():
        return Distributed(dist.get_world_size(), dist.get_rank(), chosen, owns)
    return Distributed(1, 0, chosen, owns)


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
