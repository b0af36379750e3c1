"""Every command that writes, against every way a write can fail after the path checks passed: a special
file system (/proc), a file standing where a folder is needed, no permission and a full disk. Each ends
in one line ``error: ...`` naming the path, exit code 2, no traceback, and no partial file left behind.

No permission and a full disk are made by the operating system's own error at the moment of writing
(``tempfile.mkstemp`` raising EACCES, ``os.fsync`` raising ENOSPC: every output is written through a
temporary file that is flushed to disk before it is renamed into place), so the tests also run as root.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from scoresde.cli import app

TRAIN = ["--data", "moons", "--steps", "2", "--batch-size", "8", "--sample-every", "0", "--quiet"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("writes") / "run"
    result = CliRunner().invoke(app, ["train", "--out", str(folder), *TRAIN])
    assert result.exit_code == 0, result.output + result.stderr
    labelled = ["train", "--out", str(folder.parent / "labelled"), *TRAIN, "--data", "8gaussians"]  # train-classifier
    assert CliRunner().invoke(app, labelled).exit_code == 0
    np.save(folder.parent / "points.npy", np.array([[0.5, -0.2], [1.0, 0.3]], np.float32))  # data, or latents
    return folder


def commands(run: Path, out: Path) -> dict[str, list[str]]:
    """Each writing command with its output under ``out``."""
    points, labelled = run.parent / "points.npy", run.parent / "labelled"
    return {
        "train": ["train", "--out", str(out / "run"), *TRAIN],
        "sample png": [*"sample --model gmm --steps 3 --num 8 --out".split(), str(out / "x.png")],
        "sample npz": [*f"sample --run {run} --steps 2 --num 4 --batch-size 2 --out".split(), str(out / "x.npz")],
        "likelihood": [*f"likelihood --run {run} --method vlb --steps 4 --num 4 --json".split(), str(out / "l.json")],
        "evaluate": [
            *f"evaluate --run {run} --solver ddim --steps 2 --num 8 --nll-num 0 --json".split(),
            str(out / "e.json"),
        ],
        "plot": ["plot", str(run), "--out", str(out / "p.png")],
        "edit": [*f"edit --from {points} --run {run} --steps 2 --out".split(), str(out / "e.png")],
        "encode": [*f"encode --from {points} --run {run} --steps 4 --tol 1e-4 --out".split(), str(out / "z.npz")],
        "decode": [*f"decode --from {points} --run {run} --steps 4 --tol 1e-4 --out".split(), str(out / "d.png")],
        "train-classifier": [*f"train-classifier --run {labelled} --steps 2 --quiet --out".split(), str(out / "c")],
        "compare-losses": [
            *"compare-losses --data moons --weightings simple --time discrete --budget 2 --batch-size 8".split(),
            *"--solver ddim --sample-steps 2 --num 8 --nll-num 2 --out".split(),
            str(out / "cmp"),
        ],
    }


def needs(name: str) -> None:
    """``plot`` draws with matplotlib (the log/bench extra), which the test install may lack."""
    if name == "plot":
        pytest.importorskip("matplotlib")


def one_line_error(args: list[str], path_fragment: str) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, (args, result.exit_code, result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)
    assert "Traceback" not in result.output + result.stderr
    assert path_fragment in lines[0], (args, lines[0])
    return lines[0]


NAMES = ["train", "sample png", "sample npz", "likelihood", "evaluate", "plot", "compare-losses", "edit", "encode",
         "decode", "train-classifier"]  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("folder", ["/proc", "/proc/scoresde-test"])
def test_a_special_file_system(run, name, folder):
    if not Path("/proc/self").is_dir():
        pytest.skip("needs /proc")
    needs(name)
    # /proc exists but takes no new files (`sample --out /proc/x.npz` once ended in a traceback);
    # /proc/scoresde-test cannot be made
    one_line_error(commands(run, Path(folder))[name], folder)


@pytest.mark.parametrize("name", NAMES)
def test_a_file_where_a_folder_is_needed(run, tmp_path, name):
    (tmp_path / "file").write_text("a file, not a folder")
    one_line_error(commands(run, tmp_path / "file" / "sub")[name], str(tmp_path / "file"))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("failure", ["no permission", "full disk"])
def test_the_write_itself_fails(run, tmp_path, monkeypatch, name, failure):
    needs(name)
    args = commands(run, tmp_path / "out")[name]
    if failure == "no permission":

        def refuse(*a, **k):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
        words = "Permission denied"
    else:

        def full(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "fsync", full)
        words = "No space left on device"
    line = one_line_error(args, str(tmp_path / "out"))
    assert words in line, line
    leftovers = [p for p in (tmp_path / "out").rglob("*.tmp")] if (tmp_path / "out").exists() else []
    assert leftovers == [], leftovers  # temporary files are removed
