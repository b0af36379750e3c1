"""The run-folder lock: one training process writes into a run folder at a time.

A trainer holds an OS-level lock (``fcntl.flock``; ``msvcrt.locking`` on Windows) on ``<run>/.lock``
for as long as it runs, with its process id written in the file for the message a second trainer
gets: ``runs/x is in use by process 1234``. The operating system releases the lock when the process
ends, however it ends (return, exception, SIGKILL, power cut), so a lock left by a dead process is
no lock: the next trainer takes it. Readers (``load_run``, ``scoresde sample``/``evaluate``/
``likelihood``) never take it. It is taken once: by :func:`scoresde.run_folder.prepare_run` before
the folder is looked at, or by the :class:`~scoresde.trainer.Trainer` before it writes; within one
process it is re-entrant.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
try:
    import msvcrt
except ImportError:  # POSIX
    msvcrt = None

__all__ = ["LOCK_NAME", "RunInUse", "RunLock", "lock_run"]

LOCK_NAME = ".lock"
_held: dict[Path, list] = {}  # resolved run folder -> [file descriptor, holders in this process]


class RunInUse(ValueError):
    """Another process holds the run folder's lock."""


class RunLock:
    """A held lock on a run folder; :meth:`release` (or leaving the ``with`` block) lets it go."""

    def __init__(self, key: Path | None) -> None:
        self._key = key

    def release(self) -> None:
        key, self._key = self._key, None
        if key is None or key not in _held:
            return
        entry = _held[key]
        entry[1] -= 1
        if entry[1] == 0:
            del _held[key]
            os.close(entry[0])  # closing the descriptor releases the OS lock

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_run(run_dir: str | os.PathLike, *, create: bool = True) -> RunLock:
    """Lock ``run_dir`` for writing (created with its parents unless ``create=False``, in which case
    a folder that does not exist yet is not locked: there is nothing to protect).

    Raises :class:`RunInUse` (a ValueError) naming the process that holds it, and ValueError if
    ``run_dir`` is an existing file.
    """
    folder = Path(run_dir)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file; a run folder (a directory) was expected")
    if not folder.is_dir():
        if not create:
            return RunLock(None)
        folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    if key in _held:
        _held[key][1] += 1
        return RunLock(key)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd):
            raise RunInUse(f"{folder} is in use by process {_holder(fd)} (it holds {path})")
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except BaseException:
        os.close(fd)
        raise
    _held[key] = [fd, 1]
    return RunLock(key)


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock without waiting; False if another process holds it."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    if msvcrt is not None:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    warnings.warn("this system has neither fcntl nor msvcrt: the run folder is not locked", stacklevel=3)
    return True


def _holder(fd: int) -> str:
    """The process id written in the lock file (or "another process" if it cannot be read)."""
    try:
        text = os.pread(fd, 32, 0).decode().strip() if hasattr(os, "pread") else ""
    except OSError:
        text = ""
    return text if text.isdigit() else "another process"
