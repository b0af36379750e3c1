"""``scoresde sample`` on the analytic models: PNG and npz outputs, one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from scoresde.cli import app

runner = CliRunner()


def test_sample_gmm_writes_png_and_npz(tmp_path):
    image = pytest.importorskip("PIL.Image")  # the test extra has Pillow, to read PNGs back
    png, npz = tmp_path / "gmm.png", tmp_path / "gmm.npz"
    args = ["sample", "--model", "gmm", "--solver", "dpm-solver++", "--steps", "15", "--num", "300", "--seed", "3"]
    result = runner.invoke(app, [*args, "--out", str(png)])
    assert result.exit_code == 0, result.output
    assert "NFE 16" in result.output and "mode-weight error" in result.output
    pixels = np.asarray(image.open(png))
    assert pixels.shape == (512, 512, 3)
    assert ((pixels[..., 2] > 150) & (pixels[..., 0] < 100)).sum() > 100  # blue sample dots were drawn
    result = runner.invoke(app, [*args, "--out", str(npz), "--grid", "log-snr", "-o", "order=3"])
    assert result.exit_code == 0, result.output
    with np.load(npz) as f:
        assert f["samples"].shape == (300, 2) and np.isfinite(f["samples"]).all()
        assert int(f["nfe"]) == 16 and str(f["solver"]) == "dpm-solver++"
    again = tmp_path / "again.npz"
    assert runner.invoke(app, [*args, "--out", str(again), "--grid", "log-snr", "-o", "order=3"]).exit_code == 0
    with np.load(npz) as a, np.load(again) as b:  # same seed, same samples
        assert np.array_equal(a["samples"], b["samples"])


def test_auto_solver_is_unipc_for_an_exact_score(tmp_path):
    """--solver auto (the default) takes the accurate ODE solve for an analytic model: the same numbers as unipc."""
    out = {name: tmp_path / f"{name}.npz" for name in ("auto", "unipc")}
    for name, path in out.items():
        extra = [] if name == "auto" else ["--solver", "unipc"]
        result = runner.invoke(app, ["sample", "--model", "gmm-hard", "--num", "200", *extra, "--out", str(path)])
        assert result.exit_code == 0, result.output
        assert "solver unipc, 20 steps, NFE 21" in result.output
    with np.load(out["auto"]) as a, np.load(out["unipc"]) as b:
        assert np.array_equal(a["samples"], b["samples"])


def test_sample_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./runs here
    cases = [
        (["sample"], "scoresde train"),
        (["sample", "--model", "gmm", "--solver", "rk4"], "unknown solver 'rk4'; choose one of: auto, ancestral"),
        (["sample", "--model", "moons"], "unknown analytic model 'moons'; choose one of: gmm, gmm-hard, gaussian"),
        (["sample", "--model", "gmm", "--solver", "ddim", "-o", "snr=1"], "does not take option 'snr'"),
        (["sample", "--model", "gmm", "--steps", "0"], "--steps must be a positive integer"),
        (["sample", "--model", "gmm", "--out", "x.jpg"], ".png or .npz"),
        (["sample", "--model", "gmm", "--run", "runs/x"], "either --model"),
        (["sample", "--run", "nowhere"], "does not exist"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, result.output)
