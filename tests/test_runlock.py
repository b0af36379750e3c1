"""The run-folder lock (scoresde.runlock): a second writer is refused naming the holder's process
and writes nothing; the lock goes with its holder; the trainer takes it before its first write."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

fcntl = pytest.importorskip("fcntl")

from scoresde.config import from_dict  # noqa: E402
from scoresde.runlock import RunInUse, lock_run  # noqa: E402
from scoresde.trainer import Trainer  # noqa: E402


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*")}


def hold_as_another_process(folder: Path, pid: int) -> int:
    """Take the lock the way another process would (its own open file) and write its pid."""
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(fd, 0)
    os.write(fd, f"{pid}\n".encode())
    return fd


def test_a_held_folder_is_refused_naming_the_process_and_freed_when_its_holder_goes(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    fd = hold_as_another_process(run, 4242)
    before = snapshot(run)
    with pytest.raises(RunInUse, match=rf"^{run} is in use by process 4242 \(it holds {run}/.lock\)$"):
        lock_run(run)
    assert snapshot(run) == before
    os.close(fd)  # the holder is gone (as when a process dies: the OS drops its locks); its pid stays
    with lock_run(run):
        assert (run / ".lock").read_text() == f"{os.getpid()}\n"
        with lock_run(run):  # re-entrant within a process
            pass
        with pytest.raises(BlockingIOError):  # still held after the inner release
            hold_as_another_process(run, 1)
    os.close(hold_as_another_process(run, 1))  # released after the outer one

    missing = tmp_path / "missing"
    with lock_run(missing, create=False):
        assert not missing.exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"file is a file; a run folder \(a directory\) was expected"):
        lock_run(tmp_path / "file")


def test_the_trainer_refuses_a_folder_in_use_before_writing_and_releases_it_when_closed(tmp_path):
    config = from_dict({"data": {"name": "moons", "n": 200}, "model": {"width": 8}, "steps": 2, "sample_every": 0})
    run = tmp_path / "run"
    run.mkdir()
    fd = hold_as_another_process(run, 777)
    before = snapshot(run)
    with pytest.raises(RunInUse, match="in use by process 777"):
        Trainer(config, run, progress=False)
    assert snapshot(run) == before
    os.close(fd)
    trainer = Trainer(config, run, progress=False)
    with pytest.raises(BlockingIOError):
        hold_as_another_process(run, 1)
    trainer.run()
    trainer.close()
    os.close(hold_as_another_process(run, 1))
