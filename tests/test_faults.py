"""Fault injection: a training process SIGKILLed at 10 seeded random moments (some of them between
the weights and the JSON of a checkpoint), one newest weights file cut short by hand, resumed each
time, ends with weights bitwise equal to an uninterrupted run; a second trainer on the same folder is
refused while one runs; no unreadable checkpoint and no partial file is left at the end."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from scoresde import checkpoint as ckpt
from scoresde.cli import app

STEPS = 80
ARGS = [
    "--data", "moons", "--n-points", "1000", "--width", "16", "--depth", "2", "--batch-size", "32",
    "--steps", str(STEPS), "--checkpoint-every", "4", "--log-every", "4", "--keep", "3",
    "--sample-every", "0", "--threads", "1", "--quiet",
]  # fmt: skip
DELAY = "SCORESDE_FAULT_DELAY_BETWEEN_WEIGHTS_AND_JSON"
ROOT = str(Path(__file__).resolve().parents[1])

# Starting Python and importing torch takes seconds on a busy machine, 11 times here; so the trainers
# are forks of one process that imported the CLI and trained 2 steps once (with one torch thread: no
# thread pool is inherited, so forking is safe; first-use costs are paid once). Each
# fork runs `scoresde train ARGS` exactly as `python -m scoresde` does, with its own stderr file, and
# is SIGKILLed by the test directly. Lines in: "run DELAY STDERR ARGS..." (tab-separated) -> its pid;
# "poll PID" -> its exit code or "running".
SERVER = r"""
import os, sys, tempfile, traceback
import torch
from scoresde.cli import app
torch.set_num_threads(1)
with tempfile.TemporaryDirectory() as warm_up:
    app(args=["train", "--out", warm_up + "/run", *sys.argv[1:], "--steps", "2"], standalone_mode=False)
print("ready", flush=True)
for line in sys.stdin:
    command, *words = line.rstrip("\n").split("\t")
    if command == "poll":
        pid, status = os.waitpid(int(words[0]), os.WNOHANG)
        print("running" if pid == 0 else os.waitstatus_to_exitcode(status), flush=True)
        continue
    delay, stderr, *argv = words
    # the stderr file is created before the fork, so it exists even for a child killed at once
    err_fd = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    pid = os.fork()
    if pid == 0:
        os.environ["SCORESDE_FAULT_DELAY_BETWEEN_WEIGHTS_AND_JSON"] = delay
        os.dup2(err_fd, 2)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        code = 1
        try:
            app(args=argv, prog_name="scoresde")
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        except BaseException:
            traceback.print_exc()
        sys.stderr.flush()
        os._exit(code)
    os.close(err_fd)
    print(pid, flush=True)
"""


class Trainers:
    """The fork server: ``start`` a trainer, ``poll`` it, ``kill`` it."""

    def __init__(self, folder: Path) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
        self.server = subprocess.Popen(
            [sys.executable, "-c", SERVER, *ARGS], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.folder, self.jobs, self.ready = folder, 0, False

    def ask(self, *words: str) -> str:
        if not self.ready:
            while not self.ready:  # the warm-up run's own output comes first
                line = self.server.stdout.readline()
                assert line, "the fork server did not start"
                self.ready = line.strip() == "ready"
        self.server.stdin.write("\t".join(words) + "\n")
        self.server.stdin.flush()
        return self.server.stdout.readline().strip()

    def start(self, out: Path, delay: float) -> tuple[int, Path]:
        """`scoresde train` into ``out``: a fresh run, or ``--resume`` once it has a checkpoint."""
        args = ["--out", str(out), "--resume"] if ckpt.checkpoint_files(out) else ["--out", str(out), *ARGS]
        self.jobs += 1
        stderr = self.folder / f"stderr_{self.jobs}.txt"
        return int(self.ask("run", str(delay), str(stderr), "train", *args)), stderr

    def poll(self, pid: int) -> int | None:
        answer = self.ask("poll", str(pid))
        return None if answer == "running" else int(answer)

    def wait(self, pid: int, timeout: float = 120.0) -> int:
        deadline = time.monotonic() + timeout
        while (code := self.poll(pid)) is None:
            assert time.monotonic() < deadline, "the training process did not end"
            time.sleep(0.01)
        return code

    def kill(self, pid: int) -> int:
        """SIGKILL ``pid`` if it still runs; its exit code (``-SIGKILL`` if killed)."""
        code = self.poll(pid)
        if code is not None:
            return code
        os.kill(pid, signal.SIGKILL)
        return self.wait(pid)

    def close(self) -> None:
        self.server.stdin.close()
        self.server.wait(timeout=30)


def newest_step(out: Path) -> int:
    files = ckpt.checkpoint_files(out)
    return int(files[-1].stem.split("_")[1]) if files else 0


def orphan_weights(out: Path) -> list[Path]:
    """Weights files without their JSON: a checkpoint write that was killed half-way."""
    return [p for p in (out / "checkpoints").glob("step_*.safetensors") if not p.with_suffix(".json").exists()]


def wait_until(trainers: Trainers, pid: int, condition, timeout: float = 60.0) -> bool:
    """Poll ``condition`` every 2 ms while the trainer ``pid`` runs; True once it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if trainers.poll(pid) is not None:
            return condition()
        time.sleep(0.002)
    raise AssertionError("the training process made no progress")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the trainers are forked (POSIX)")
def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run_bitwise(tmp_path):
    trainers = Trainers(tmp_path)  # imports while the reference trains
    try:
        reference = tmp_path / "reference"
        result = CliRunner().invoke(app, ["train", "--out", str(reference), *ARGS])
        assert result.exit_code == 0, result.stderr
        out = tmp_path / "killed"
        kill_at_random_moments(trainers, out, random.Random(13))
        pid, stderr = trainers.start(out, 0.0)
        assert trainers.wait(pid) == 0, stderr.read_text()
    finally:
        trainers.close()

    # the end: every checkpoint readable, no half-written file, the same bits as the uninterrupted run
    assert [p.name for p in ckpt.checkpoint_files(out)] == [p.name for p in ckpt.checkpoint_files(reference)]
    assert not orphan_weights(out) and not list((out / "checkpoints").glob(".*.tmp"))
    ours, theirs = ckpt.load_latest(out), ckpt.load_latest(reference)
    assert ours.step == theirs.step == STEPS
    assert ours.tensors.keys() == theirs.tensors.keys()
    for name, tensor in theirs.tensors.items():
        assert torch.equal(ours.tensors[name], tensor), name
    assert ours.meta["rng"] == theirs.meta["rng"] and ours.meta["optimizer"] == theirs.meta["optimizer"]


def kill_at_random_moments(trainers: Trainers, out: Path, rng: random.Random) -> None:
    """10 trainers into ``out``, each SIGKILLed; checks what every kill leaves behind."""
    mid_write_rounds, truncate_round = {2, 6}, 4
    landed_mid_write, fell_back, truncated = 0, False, None
    for k in range(10):
        mid_write = k in mid_write_rounds
        # every checkpoint write is slowed a little (so kills land at many places, between writes
        # and inside them); in the mid-write rounds slowed enough to kill there for certain
        resumed_from = newest_step(out)
        pid, stderr_file = trainers.start(out, 1.0 if mid_write else 0.02)
        try:
            if k == 0:  # a second trainer on the same folder is refused while this one runs
                wait_until(trainers, pid, lambda: (out / "checkpoints").is_dir())
                second = CliRunner().invoke(app, ["train", "--out", str(out), *ARGS])
                assert second.exit_code == 2 and "Traceback" not in second.output
                assert second.stderr.strip() == f"error: {out} is in use by process {pid} (it holds {out}/.lock)"
            if mid_write:  # kill while the weights are written and the JSON is not
                newer = f"step_{resumed_from:08d}"
                assert wait_until(trainers, pid, lambda n=newer: any(p.stem > n for p in orphan_weights(out)))
            else:  # kill a seeded random moment after a seeded random checkpoint (or at once, at start-up)
                target = min(resumed_from + rng.randint(1, 8), STEPS - 12)
                if k == truncate_round + 1:  # past the cut-short checkpoint: it was skipped and written anew
                    target = max(target, int(truncated.stem.split("_")[1]) + 1)
                assert wait_until(trainers, pid, lambda t=target: newest_step(out) >= t)
                time.sleep(rng.uniform(0.0, 0.03))
        finally:
            code = trainers.kill(pid)
        stderr = stderr_file.read_text()
        assert code == -signal.SIGKILL, f"round {k}: the run ended ({code}) before it was killed: {stderr}"
        assert "Traceback" not in stderr, stderr
        if k == truncate_round + 1:  # the resume after the cut-short file fell back past it, naming it
            assert f"{truncated.name} are corrupt" in stderr and "skipped it" in stderr, stderr
            fell_back = True
        if mid_write:
            landed_mid_write += bool(orphan_weights(out))
        # whatever the moment of the kill, the newest checkpoint is complete (the writes are atomic)
        newest = ckpt.latest_checkpoint(out)
        assert newest is not None and ckpt.read_checkpoint(newest)[0]["step"] == newest_step(out) >= resumed_from
        if k == truncate_round:  # a torn newest weights file (as after a disk fault): resume must fall back
            truncated = newest.with_suffix(".safetensors")
            truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    assert landed_mid_write == len(mid_write_rounds) and fell_back
