"""Every command of ``scoresde`` with a table of bad inputs (unknown names, negative numbers, missing
and corrupt runs, bad paths, bad TOML, unknown option values): each ends in one line (or click's
short usage error), a non-zero exit and no traceback, before any work."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import typer.main
from typer.testing import CliRunner

from scoresde.cli import app

BAD = {
    "train": [
        ["--data", "nope"],
        ["--data", "missing.npy"],
        ["--data", "garbage.npy"],
        ["--steps", "-1"],
        ["--minutes", "0"],
        ["--minutes", "-2"],
        ["--clock", "sundial"],
        ["--batch-size", "0"],
        ["--lr", "-1"],
        ["--width", "-1"],
        ["--dropout", "2"],
        ["--t-min", "-1"],
        ["--channel-mult", "a,b"],
        ["--attention", "-8"],
        ["--keep", "0"],
        ["--threads", "-2"],
        ["--weighting", "nope"],
        ["--time", "nope"],
        ["--sde", "nope"],
        ["--prediction", "nope"],
        ["--sample-solver", "nope"],
        ["--device", "tpu"],
        ["--config", "bad.toml"],
        ["--config", "unknown-key.toml"],
        ["--config", "missing.toml"],
        ["--out", "a-file"],
        ["--out", "a-file/run"],
        ["--out", "missing", "--resume"],
        ["--out", "corrupt", "--resume"],
        ["--out", "good", "--resume", "--weighting", "score"],
        ["--out", "good"],
        ["--resume"],
        ["--bogus"],
    ],
    "sample": [
        ["--solver", "nope"],
        ["--model", "nope"],
        ["--model", "gmm", "--run", "good"],
        ["--run", "missing"],
        ["--run", "corrupt"],
        ["--run", "a-file"],
        ["--diffusers", "missing"],
        ["--steps", "-1"],
        ["--num", "-5"],
        ["--batch-size", "-1", "--model", "gmm"],
        ["--grid", "nope"],
        ["--t-min", "-1", "--model", "gmm"],
        ["--option", "no-equals-sign"],
        ["--option", "nope=1", "--model", "gmm"],
        ["--device", "tpu", "--model", "gmm"],
        ["--threads", "-1", "--model", "gmm"],
        ["--out", "x.txt"],
        ["--out", "a-file/x.png", "--model", "gmm"],
        ["--autoguidance", "2", "--model", "gmm"],
        ["--autoguidance", "nan", "--model", "gmm"],
    ],
    "evaluate": [
        ["--run", "missing"],
        ["--run", "corrupt"],
        ["--run", "a-file"],
        ["--solver", "nope"],
        ["--solver", ","],
        ["--method", "nope"],
        ["--steps", "-1"],
        ["--num", "-1"],
        ["--nll-num", "-3", "--run", "good"],
        ["--threads", "-1"],
        ["--run", "good", "--json", "a-file/x.json"],
        ["--run", "good", "--autoguidance", "inf"],
    ],
    "likelihood": [
        ["--run", "missing"],
        ["--run", "corrupt"],
        ["--method", "nope"],
        ["--grid", "nope"],
        ["--num", "-1"],
        ["--divergence", "nope", "--run", "good"],
        ["--probes", "-1", "--run", "good"],
        ["--rtol", "-1", "--run", "good"],
        ["--steps", "-1", "--run", "good", "--method", "vlb"],
        ["--threads", "-1"],
        ["--run", "good", "--json", "a-file/x.json"],
    ],
    "compare-losses": [
        ["--data", "nope"],
        ["--weightings", "nope"],
        ["--weightings", ","],
        ["--time", "nope"],
        ["--budget", "0"],
        ["--budget", "-1"],
        ["--net", "nope"],
        ["--precondition", "nope"],
        ["--solver", "nope"],
        ["--batch-size", "0"],
        ["--lr", "-1"],
        ["--num", "-1"],
        ["--width", "-1"],
        ["--out", "a-file"],
        ["--seeds", "0"],
        ["--seeds", "-2"],
        ["--importance", "maybe"],
        ["--recipe", "nope"],
        ["--ode-tol", "-1"],
    ],
    "edit": [
        [],
        ["--from", "missing.npy", "--run", "good"],
        ["--from", "garbage.npy", "--run", "good"],
        ["--from", "a-file", "--run", "good"],
        ["--from", "points.npy", "--run", "good", "--strength", "0"],
        ["--from", "points.npy", "--run", "good", "--strength", "2"],
        ["--from", "points.npy", "--run", "corrupt"],
        ["--from", "points.npy", "--run", "good", "--solver", "nope"],
        ["--from", "points.npy", "--run", "good", "--out", "x.txt"],
        ["--from", "image.npy", "--run", "good"],
    ],
    "encode": [
        ["--from", "points.npy", "--run", "good", "--solver", "euler-maruyama"],
        ["--from", "points.npy", "--run", "good", "--solver", "nope"],
        ["--from", "points.npy", "--run", "good", "--tol", "-1"],
        ["--from", "points.npy", "--run", "good", "--steps", "0"],
        ["--from", "missing.npy", "--run", "good"],
        ["--from", "image.npy", "--run", "good"],
    ],
    "decode": [
        ["--from", "points.npy", "--run", "good", "--solver", "ancestral"],
        ["--from", "nan.npy", "--run", "good"],
        ["--from", "points.npy", "--run", "missing"],
        ["--from", "points.npy", "--run", "good", "--out", "a-file/x.png"],
    ],
    "train-classifier": [
        [],
        ["--run", "missing"],
        ["--run", "corrupt"],
        ["--run", "a-file"],
        ["--run", "good"],
        ["--run", "good", "--steps", "0"],
        ["--run", "good", "--batch-size", "-1"],
        ["--run", "good", "--lr", "-1"],
        ["--run", "good", "--lr", "nan"],
        ["--run", "good", "--threads", "-1"],
        ["--run", "good", "--device", "tpu"],
        ["--run", "good", "--out", "a-file"],
        ["--bogus"],
    ],
    "info": [["--bogus"]],
    "plot": [["no-such-run"], ["a-file"], ["--bogus"]],
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder with a good tiny run, a run whose every checkpoint is corrupt, a file, bad files."""
    folder = tmp_path_factory.mktemp("errors")
    good = folder / "good"
    args = ["--data", "moons", "--n-points", "300", "--width", "8", "--steps", "2", "--sample-every", "0", "--quiet"]
    result = CliRunner().invoke(app, ["train", "--out", str(good), *args])
    assert result.exit_code == 0, result.stderr
    shutil.copytree(good, folder / "corrupt")
    for weights in (folder / "corrupt" / "checkpoints").glob("*.safetensors"):
        weights.write_bytes(weights.read_bytes()[:-3])
    (folder / "a-file").write_text("not a folder")
    (folder / "bad.toml").write_text("steps = [oops")
    (folder / "unknown-key.toml").write_text("stepz = 3\n")
    (folder / "garbage.npy").write_bytes(b"not an array")
    np.save(folder / "points.npy", np.array([[0.5, -0.2], [1.0, 0.3]], np.float32))
    np.save(folder / "image.npy", np.zeros((1, 8, 8), np.float32))  # not the moons run's shape
    np.save(folder / "nan.npy", np.array([[np.nan, 0.0]], np.float32))
    return folder


def files(folder: Path) -> dict[str, int]:
    """Every file's modification time, but the run locks' (a train that takes one writes its pid there)."""
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and p.name != ".lock"}


def test_the_table_covers_every_command():
    assert set(BAD) == set(typer.main.get_command(app).commands)


@pytest.mark.parametrize(("command", "args"), [(c, a) for c, rows in BAD.items() for a in rows], ids=str)
def test_a_bad_input_ends_in_one_line_and_a_non_zero_exit(workdir, monkeypatch, command, args):
    monkeypatch.chdir(workdir)
    before = files(workdir)
    result = CliRunner().invoke(app, [command, *args])
    assert result.exit_code not in (0, None), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    if lines and lines[0].startswith("Usage:"):  # click's own usage error (an unknown option, a bad type)
        assert len(lines) <= 6 and "Error" in result.stderr
    else:
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert files(workdir) == before  # nothing written (compare-losses may have made its empty --out folder)


def test_unknown_commands_and_values_of_typed_options_are_usage_errors():
    for args in (["nope"], ["sample", "--steps", "many"], ["train", "--bf16", "maybe"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert result.stderr.startswith("Usage:"), result.stderr
