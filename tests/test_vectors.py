"""Vectors of any dimension d: pictures (histogram, scatter, pair grid), metrics, and the CLI end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from scoresde.cli import app
from scoresde.imageio import scatter_image
from scoresde.metrics import mmd, sliced_wasserstein

BLUE = (31, 94, 204)


def blue_pixels(canvas: np.ndarray) -> np.ndarray:
    return np.argwhere((canvas == BLUE).all(-1))


def test_pair_grid_places_each_coordinate_pair_in_its_panel():
    """d = 3: panels (0, 1), (0, 2), (1, 2), side size/2; one point lands where its coordinates say."""
    corners = np.array(list(np.ndindex(2, 2, 2)), dtype=float) * 2 - 1  # the reference: the cube [-1, 1]^3
    point = np.array([[0.5, -0.5, 0.0]])
    canvas = scatter_image(point, corners, size=200)
    assert canvas.shape == (100, 300, 3)
    pad = 0.08 * 2  # the padded box of the reference: [-1.16, 1.16] in every panel
    for panel, (i, j) in enumerate([(0, 1), (0, 2), (1, 2)]):
        hits = blue_pixels(canvas[:, 100 * panel : 100 * (panel + 1)])
        col = (point[0, i] + 1 + pad) / (2 + 2 * pad) * 99
        row = (1 + pad - point[0, j]) / (2 + 2 * pad) * 99
        assert len(hits) == 9  # one 3×3 dot
        assert hits[:, 0].mean() == pytest.approx(round(row)) and hits[:, 1].mean() == pytest.approx(round(col))
    wide = scatter_image(np.zeros((5, 6)), size=200)
    assert wide.shape == (200, 300, 3)  # d >= 4: six panels of the first four coordinates


def test_histogram_for_one_dimensional_data_peaks_where_the_mass_is():
    x = np.concatenate([np.full(300, -2.0), np.full(100, 1.0)])[:, None]
    canvas = scatter_image(x, size=256)
    hits = blue_pixels(canvas)
    highest = hits[hits[:, 0] == hits[:, 0].min(), 1].mean()  # the top of the tallest bar
    lo, hi = -2 - 0.08 * 3, 1 + 0.08 * 3
    assert highest == pytest.approx((-2 - lo) / (hi - lo) * 254, abs=256 / 32 + 2)
    with pytest.raises(ValueError, match="points have 1 coordinates but the reference has 2"):
        scatter_image(x, np.zeros((3, 2)))


@pytest.mark.parametrize("d", [1, 3, 7])
def test_sliced_wasserstein_between_shifted_gaussians_in_any_dimension(d):
    """For N(0, I) and N(m, I): W₂²(θᵀx, θᵀy) = (θᵀm)², so SW₂² = E(θᵀm)² = ‖m‖²/d."""
    g = torch.Generator().manual_seed(d)
    m = torch.full((d,), 2.0)
    x, y = torch.randn(4000, d, generator=g), torch.randn(4000, d, generator=g) + m
    sw = sliced_wasserstein(x, y, projections=1000, generator=g)  # s.e. of the mean over θ < 3%
    assert sw**2 == pytest.approx(m.pow(2).sum().item() / d, rel=0.1)
    assert mmd(x[:500], y[:500]) > 10 * abs(mmd(x[:500], x[500:1000]))


def test_three_dimensional_data_trains_samples_and_evaluates_from_the_cli(tmp_path):
    """An (n, 3) .npy trains with previews (a pair grid), samples to PNG and .npz, and evaluates."""
    image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    z = rng.normal(size=(400, 3))
    np.save(tmp_path / "pts3.npy", z)
    runner = CliRunner()
    run = tmp_path / "r3"
    common = ["--width", "16", "--batch-size", "32", "--quiet", "--steps", "6", "--sample-every", "3"]
    data = str(tmp_path / "pts3.npy")
    result = runner.invoke(app, ["train", "--data", data, "--out", str(run), *common])
    assert result.exit_code == 0, result.output + result.stderr
    previews = sorted((run / "samples").glob("*.png"))
    assert previews and np.asarray(image.open(previews[-1])).shape == (256, 768, 3)
    for target in ("s.png", "s.npz"):
        result = runner.invoke(
            app, ["sample", "--run", str(run), "--steps", "10", "--num", "50", "--out", str(tmp_path / target)]
        )
        assert result.exit_code == 0, result.output + result.stderr
    assert np.asarray(image.open(tmp_path / "s.png")).shape == (256, 768, 3)
    x = np.load(tmp_path / "s.npz")["samples"]
    assert x.shape == (50, 3) and np.isfinite(x).all()
    report = tmp_path / "eval.json"
    options = ["--steps", "5", "--num", "40", "--nll-num", "5", "--method", "ode", "--json", str(report)]
    result = runner.invoke(app, ["evaluate", "--run", str(run), *options])
    assert result.exit_code == 0, result.output + result.stderr
    record = json.loads(report.read_text())
    text = json.dumps(record)
    assert "sw2" in text and "mmd" in text
    result = runner.invoke(app, ["likelihood", "--run", str(run), "--num", "5", "--json", str(tmp_path / "nll.json")])
    assert result.exit_code == 0, result.output + result.stderr
    assert math.isfinite(json.loads((tmp_path / "nll.json").read_text())["nats_per_dim"])
