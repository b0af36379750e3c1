"""The command line of class conditioning: train --conditional, sample/likelihood --class,
evaluate --guidance, and the one-line errors for bad input (nothing written)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import scoresde as sd
from scoresde.cli import app

TINY = ["--channels", "8", "--channel-mult", "1,2", "--batch-size", "8", "--sample-every", "0", "--quiet"]


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def assert_one_line_error(result, pattern: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in result.output + result.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("conditional")
    cond, plain = root / "cond", root / "plain"
    result = invoke("train", "--out", str(cond), "--conditional", "--steps", "40", *TINY)
    assert result.exit_code == 0, result.output + result.stderr
    result = invoke("train", "--out", str(plain), "--steps", "2", *TINY)
    assert result.exit_code == 0, result.output + result.stderr
    return cond, plain


def test_train_refuses_bad_conditioning_with_one_line_and_no_run_folder(tmp_path):
    out = tmp_path / "never"
    assert_one_line_error(
        invoke("train", "--out", str(out), "--conditional", "--data", "moons", *TINY),
        r"--conditional needs class labels, but the data 'moons' has none; labelled data: 8gaussians, digits",
    )
    assert_one_line_error(
        invoke("train", "--out", str(out), "--conditional", "--cond-drop", "-0.1", *TINY),
        r"loss.cond_drop must be in \[0, 1\), got -0.1",
    )
    assert_one_line_error(
        invoke("train", "--out", str(out), "--conditional", "--cond-drop", "1", *TINY),
        r"loss.cond_drop must be in \[0, 1\), got 1.0",
    )
    x = np.zeros((20, 2), np.float32)
    for name, y, message in [
        ("float.npz", np.zeros(20, np.float32), r"labels 'y' must be integers of shape \(n,\) = \(20,\), got float32"),
        ("shape.npz", np.zeros((20, 2), np.int64), r"labels 'y' must be integers of shape \(n,\) = \(20,\)"),
        ("negative.npz", -np.ones(20, np.int64), r"labels 'y' must be class ids >= 0"),
    ]:
        np.savez(tmp_path / name, x=x, y=y)
        assert_one_line_error(invoke("train", "--out", str(out), "--conditional", "--data", str(tmp_path / name)),
                              message)  # fmt: skip
    assert not out.exists()


def test_sample_classes_of_a_conditional_run(runs, tmp_path):
    image = pytest.importorskip("PIL.Image")
    cond, _ = runs
    grid = tmp_path / "grid.png"
    args = ["sample", "--run", str(cond), "--solver", "dpm-solver++", "--steps", "4"]
    result = invoke(*args, "--class", "all", "--guidance", "2", "--num", "3", "--out", str(grid))
    assert result.exit_code == 0, result.output + result.stderr
    assert "30 samples (3 per class, guidance 2)" in result.output and "NFE 5" in result.output
    side = 8 * 4 + 1  # 8×8 digits enlarged 4×, 1-pixel padding
    assert np.asarray(image.open(grid)).shape[:2] == (10 * side + 1, 3 * side + 1)  # one row per class
    npz = tmp_path / "seven.npz"
    result = invoke(*args, "--class", "7", "--guidance", "3", "--num", "5", "--batch-size", "2", "--out", str(npz))
    assert result.exit_code == 0, result.output + result.stderr
    with np.load(npz) as f:
        assert f["samples"].shape == (5, 1, 8, 8) and f["y"].tolist() == [7] * 5
    # without --class: classes drawn from the data (the run's held-out labels); --class null: the null label
    result = invoke(*args, "--num", "6", "--guidance", "2", "--out", str(tmp_path / "drawn.npz"))
    assert result.exit_code == 0 and "6 samples (classes drawn from the data, guidance 2)" in result.output
    dm = sd.load_run(cond)
    with np.load(tmp_path / "drawn.npz") as f:
        assert f["y"].tolist() == dm.data_labels(6, seed=0).tolist()
    result = invoke(*args, "--num", "4", "--class", "null", "--out", str(tmp_path / "null.npz"))
    assert result.exit_code == 0 and "4 samples from run" in result.output
    with np.load(tmp_path / "null.npz") as f:
        assert "y" not in f.files


def test_data_labels_follow_the_class_frequencies_of_the_reference_labels(runs):
    """20,000 draws: each class frequency within 4 standard errors of its share of the held-out labels."""
    dm = sd.load_run(runs[0])
    counts = torch.bincount(dm.reference_labels, minlength=10).double()
    p = counts / counts.sum()
    drawn = torch.bincount(dm.data_labels(20_000, seed=3), minlength=10).double() / 20_000
    assert ((drawn - p).abs() <= 4 * (p * (1 - p) / 20_000).sqrt() + 1e-12).all()
    assert dm.sample_classes == "data" and dm.class_guidance == 1.0
    from scoresde.generation import generate

    assert generate(dm, 3, steps=2).labels.tolist() == dm.data_labels(3).tolist()
    known, mask = dm.reference[:1], (torch.arange(8) < 4).float().expand(1, 8, 8)  # the left half observed
    assert generate(dm, 3, steps=2, known=known, mask=mask).labels is None  # inpainting: the class is unknown


def test_sample_a_class_of_the_analytic_mixture():
    result = invoke("sample", "--model", "gmm", "--class", "4", "--guidance", "2", "--num", "300", "--out",
                    str(Path(pytest.importorskip("tempfile").mkdtemp()) / "k.npz"))  # fmt: skip
    assert result.exit_code == 0, result.output + result.stderr
    share = float(re.search(r"samples in their class's component: ([\d.]+)%", result.output).group(1))
    assert share >= 99.0


def test_conditioning_errors_are_one_line_and_write_nothing(runs, tmp_path):
    cond, plain = runs
    out = tmp_path / "never.png"
    sample = ["sample", "--steps", "2", "--out", str(out)]
    cases = [
        ([*sample, "--run", str(cond), "--class", "10"], r"--class 10 is out of range: .* has 10 classes, ids 0 … 9"),
        ([*sample, "--run", str(cond), "--class", "seven"], r"--class 'seven' is not a class of run"),
        ([*sample, "--run", str(cond), "--class", "null", "--guidance", "2"], r"guidance needs classes"),
        (
            [*sample, "--run", str(plain), "--class", "3"],
            r"--class needs a class-conditional model, but run .* is "
            r"unconditional",
        ),
        ([*sample, "--run", str(plain), "--guidance", "2"], r"--guidance needs a class-conditional model"),
        ([*sample, "--model", "gmm", "--class", "6"], r"--class 6 is out of range: analytic gmm has 6 classes"),
        (["likelihood", "--run", str(plain), "--class", "data"], r"--class needs a class-conditional model"),
        (["likelihood", "--run", str(cond), "--class", "12"], r"--class 12 is out of range"),
        (["likelihood", "--run", str(cond), "--class", "all"], r"--class all draws a grid"),
        (
            ["evaluate", "--run", str(plain), "--guidance", "0,2", "--json", str(tmp_path / "e.json")],
            r"--guidance needs a class-conditional model",
        ),
        (
            ["evaluate", "--run", str(cond), "--guidance", "1,x", "--json", str(tmp_path / "e.json")],
            r"--guidance takes comma-separated numbers",
        ),
    ]
    for args, pattern in cases:
        assert_one_line_error(invoke(*args), pattern)
    assert list(tmp_path.iterdir()) == []


def test_likelihood_given_the_labels_of_the_data(runs, tmp_path):
    cond, _ = runs
    base = ["likelihood", "--run", str(cond), "--method", "vlb", "--steps", "20", "--num", "6"]
    values = {}
    for name, extra, said in [("data", ["--class", "data"], "given their labels"), ("3", ["--class", "3"],
                              "given class 3"), ("none", [], "samples of digits, method")]:  # fmt: skip
        result = invoke(*base, *extra, "--json", str(tmp_path / f"{name}.json"))
        assert result.exit_code == 0, result.output + result.stderr
        assert said in result.output
        values[name] = json.loads((tmp_path / f"{name}.json").read_text())["nats_per_dim"]
    # same noise (seed), three different models of the data: the labels reach the network
    assert len(set(values.values())) == 3, values


def test_evaluate_guidance_sweep_reports_accuracy_per_scale(runs, tmp_path):
    cond, _ = runs
    out = tmp_path / "eval.json"
    result = invoke("evaluate", "--run", str(cond), "--solver", "ddim", "--steps", "3", "--num", "20", "--nll-num",
                    "0", "--guidance", "0,2", "--json", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output + result.stderr
    record = json.loads(out.read_text())
    sweep = record["guidance"]["ddim"]
    assert list(sweep) == ["0", "2"]
    for w, entry in sweep.items():
        assert entry["guidance"] == float(w) and entry["n"] == 20
        assert len(entry["per_class"]) == 10 and 0 <= entry["accuracy"] <= 1
        assert entry["worst_class_accuracy"] == min(entry["per_class"])
        # 20 balanced labels: 2 per class, so the overall accuracy is the mean of the per-class ones
        assert entry["accuracy"] == pytest.approx(sum(entry["per_class"]) / 10)
        assert entry["fd"] > 0 and "kid" in entry
    assert sweep["0"]["nfe"] == sweep["2"]["nfe"] == record["quality"]["ddim"]["nfe"]
    assert "| ddim (3 NFE) | 2 |" in result.output
    pytest.importorskip("matplotlib")
    assert out.with_suffix(".guidance.png").is_file()


def test_evaluate_draws_in_chunks_with_each_chunks_labels(runs, monkeypatch, tmp_path):
    """Chunks of 7 (auto_batch_size on the CPU) give the samples of one batch: the same noise stream,
    each chunk with its own labels; ddim is deterministic, so the metrics agree to float round-off,
    and the NFE is a sample's (3 steps), not the sum over the chunks."""
    import scoresde.generation
    import scoresde.samplers
    from scoresde.evaluation import evaluate
    from scoresde.run_folder import load_run

    solve, batches = scoresde.samplers.sample, []

    def spy(model, sde, shape, **kwargs):
        batches.append((shape[0], kwargs["batch_size"], "y" in kwargs))
        return solve(model, sde, shape, **kwargs)

    monkeypatch.setattr(scoresde.samplers, "sample", spy)
    dm = load_run(runs[0])
    results = {}
    for chunk in (7, 20):
        monkeypatch.setattr(scoresde.generation, "auto_batch_size", lambda dm, num, device="cpu", c=chunk: c)
        results[chunk] = evaluate(dm, solvers=("ddim",), sample_steps=3, num_samples=20, nll_num=1, methods=(),
                                  classifier_dir=tmp_path, guidance=(2.0,))  # fmt: skip
    for one, many in ((results[20]["quality"]["ddim"], results[7]["quality"]["ddim"]),
                      (results[20]["guidance"]["ddim"]["2"], results[7]["guidance"]["ddim"]["2"])):  # fmt: skip
        assert many["nfe"] == one["nfe"] == 3 and many["n"] == one["n"] == 20
        assert many["fd"] == pytest.approx(one["fd"], rel=1e-4)
    assert results[7]["guidance"]["ddim"]["2"]["per_class"] == results[20]["guidance"]["ddim"]["2"]["per_class"]
    assert batches == [(20, 7, True)] * 2 + [(20, 20, True)] * 2  # the headline too: classes drawn from the data
    assert results[7]["classes"] == {"drawn": "data", "guidance": 1.0}
