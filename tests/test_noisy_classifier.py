"""The time-dependent classifier of classifier guidance (scoresde.noisy_classifier): on 8gaussians its
held-out accuracy matches the exact Bayes classifier's at every noise level (measured on the same noisy
draws) and is chance at t = T; on digits it is high at small t and chance at T; the saved files round-trip
bit for bit and refuse corruption; guiding a trained unconditional run with it moves samples into the
asked component; ``scoresde train-classifier`` trains, saves and prints."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

import scoresde as sd
from scoresde.cli import app
from scoresde.config import from_dict
from scoresde.data import load_dataset
from scoresde.gradient_guidance import classifier_guided
from scoresde.nets import NoisyClassifier
from scoresde.noisy_classifier import (
    FILES,
    TimeClassifier,
    heldout_accuracy,
    load_classifier,
    save_classifier,
    train_classifier,
)
from scoresde.trainer import train

GAUSSIANS = from_dict({"data": {"name": "8gaussians", "n": 4000}})
angle = torch.arange(8, dtype=torch.float64) * math.pi / 4
EIGHT = sd.analytic.GaussianMixture(torch.full((8,), 1 / 8), 2 * torch.stack([angle.cos(), angle.sin()], 1), 0.1)
"""8gaussians as an exact mixture (class k = the component at angle k·45°): its Bayes classifier is exact."""


@pytest.fixture(scope="module")
def gaussians_classifier():
    return train_classifier(GAUSSIANS, steps=300, batch_size=256, lr=3e-3, progress=False)


def test_the_accuracy_is_the_bayes_accuracy_at_every_noise_level_and_chance_at_T(gaussians_classifier):
    """Paired with the exact classifier on the same 2,000 noisy draws of the 400 held-out points, 300 steps
    of training reach the Bayes accuracy within 0.03 (measured: 0.979 vs 0.973 at t = 0.1, 0.234 vs 0.239 at
    0.5, 0.138 vs 0.140 at 0.9; on a finite sample the trained one may come out a little above); at t = T
    (α = 0.007) both are chance, 1/8 (measured 0.122 and 0.137; standard error of 2,000 draws 0.007)."""
    clf = gaussians_classifier.classifier
    data = load_dataset("8gaussians", n=4000)
    sde = clf.sde
    for t in (0.1, 0.5, 0.9, 1.0):
        draw = lambda: torch.Generator().manual_seed(5)  # noqa: E731 -- the same noise for both
        got = heldout_accuracy(clf, sde, data.heldout, data.heldout_labels, t, generator=draw())
        bayes = heldout_accuracy(EIGHT.classifier(sde), sde, data.heldout.double(), data.heldout_labels, t,
                                 generator=draw())  # fmt: skip
        assert abs(got - bayes) < 0.03, (t, got, bayes)
        if t == 0.1:
            assert got > 0.93
        if t == 1.0:
            assert abs(got - 1 / 8) < 0.03 and abs(bayes - 1 / 8) < 0.03
    acc = gaussians_classifier.accuracy
    assert list(acc) == [0.1, 0.5, 0.9] and acc[0.1] > 0.93 > 0.3 > acc[0.5] > acc[0.9]
    assert gaussians_classifier.info["chance"] == 1 / 8 and gaussians_classifier.path is None


def test_on_digits_the_accuracy_is_high_at_small_t_and_chance_at_T(tmp_path):
    """The image network (CNN), 300 steps of batch 64 on the 1,617 training digits: measured 0.92 at
    t = 0.1, 0.26 at 0.5, 0.10 at 0.9 and at T (chance 0.1, 2,000 draws: standard error 0.007)."""
    result = train_classifier(
        from_dict({"data": {"name": "digits"}}), steps=300, batch_size=64, lr=3e-3, progress=False,
        eval_times=(0.1, 0.5, 1.0), out=tmp_path,
    )  # fmt: skip
    acc = result.accuracy
    assert acc[0.1] > 0.85 and acc[0.1] > acc[0.5] > acc[1.0], acc
    assert abs(acc[1.0] - 0.1) < 0.03, acc
    assert result.info["network"]["data_shape"] == [1, 8, 8] and result.info["heldout"] == 180
    x = torch.randn(6, 1, 8, 8)
    assert torch.equal(load_classifier(tmp_path)(x, torch.full((6,), 0.3)), result.classifier(x, torch.full((6,), 0.3)))
    assert result.info["network"]["embedding"] == "scale-shift"
    # a classifier saved before the embedding option: its blocks added the time embedding before the norm
    old = TimeClassifier(NoisyClassifier((1, 8, 8), 10, width=32, embedding="add"), result.classifier.sde)
    info = {**result.info, "network": {k: v for k, v in result.info["network"].items() if k != "embedding"}}
    save_classifier(old, info, tmp_path / "old")
    loaded, t = load_classifier(tmp_path / "old"), torch.full((6,), 0.3)
    assert loaded.net.embedding == "add" and torch.equal(loaded(x, t), old(x, t))


def test_the_saved_classifier_round_trips_and_corruption_is_refused(gaussians_classifier, tmp_path):
    trained = gaussians_classifier
    path = save_classifier(trained.classifier, trained.info, tmp_path)
    g = torch.Generator().manual_seed(0)
    x, t = 2 * torch.randn(64, 2, generator=g), torch.rand(64, generator=g) * 0.99 + 0.01
    for where in (tmp_path, path, tmp_path / FILES[0]):  # the folder, the JSON, the weights
        loaded = load_classifier(where)
        assert torch.equal(loaded(x, t), trained.classifier(x, t))
        assert loaded.info["accuracy"] == trained.info["accuracy"] and not loaded.training
    # differentiable in x with frozen parameters: what guidance needs
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(torch.log_softmax(loaded(xg, t), 1)[:, 3].sum(), xg)
    assert grad.abs().sum() > 0 and not any(p.requires_grad for p in loaded.parameters())
    assert torch.equal(loaded(x, torch.tensor(0.5)), loaded(x, torch.full((64,), 0.5)))  # scalar t

    with pytest.raises(ValueError, match="does not exist"):
        load_classifier(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"holds no noisy classifier.*train-classifier --run"):
        load_classifier(tmp_path / "empty")
    weights, meta = tmp_path / FILES[0], tmp_path / FILES[1]
    good_weights, good_meta = weights.read_bytes(), meta.read_text()
    weights.write_bytes(good_weights[:-5])
    with pytest.raises(ValueError, match="SHA-256"):
        load_classifier(tmp_path)
    weights.unlink()
    with pytest.raises(ValueError, match="no weights file"):
        load_classifier(tmp_path)
    weights.write_bytes(good_weights)
    meta.write_text(good_meta[:40])
    with pytest.raises(ValueError, match="unreadable JSON"):
        load_classifier(tmp_path)
    meta.write_text(json.dumps({"format": 99}))
    with pytest.raises(ValueError, match="not a scoresde noisy classifier"):
        load_classifier(tmp_path)
    info = json.loads(good_meta)
    info["network"]["width"] = 64  # weights of width 128
    meta.write_text(json.dumps(info))
    with pytest.raises(ValueError, match="unusable"):
        load_classifier(tmp_path)


def test_refusals():
    with pytest.raises(ValueError, match=r"needs class labels.*8gaussians"):
        train_classifier("moons", steps=1, progress=False)
    with pytest.raises(ValueError, match=r"not trained by scoresde.*GaussianMixture\.classifier"):
        train_classifier(sd.analytic.gmm().diffusion_model(), steps=1, progress=False)
    for bad in ({"steps": 0}, {"batch_size": -1}, {"lr": float("nan")}, {"steps": 2.5}, {"eval_times": (0.0,)}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            train_classifier("8gaussians", **{"steps": 1, **bad}, progress=False)
    with pytest.raises(TypeError, match="run folder, a DiffusionModel"):
        train_classifier(3, steps=1)
    with pytest.raises(ValueError, match="num_classes"):
        NoisyClassifier((2,), 1)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        NoisyClassifier((2,), 3)(torch.zeros(4, 3), torch.zeros(4))
    for shape in ((1, 8, 8), (3, 28, 28), (5,)):
        assert NoisyClassifier(shape, 4, width=16)(torch.randn(2, *shape), torch.tensor([0.0, 999.0])).shape == (2, 4)


def test_classifier_guidance_of_a_trained_run_samples_the_asked_component(tmp_path):
    """A small unconditional 8gaussians run (400 steps) guided by its noisy classifier (300 steps),
    DPM-Solver++ with 20 steps, 400 samples: at w = 0 about 1/8 land in component k (measured 0.12, 0.13);
    at w = 1 measured 0.93 and 0.96, at w = 2 1.0 (thresholds 0.85 and 0.95)."""
    config = from_dict(
        {
            "data": {"name": "8gaussians", "n": 4000},
            "model": {"width": 64, "depth": 2},
            "optim": {"lr": 3e-3, "warmup": 20, "ema_decay": 0.99},
            "steps": 400,
            "batch_size": 256,
            "checkpoint_every": 0,
            "sample_every": 0,
        }
    )
    dm = train(config, tmp_path / "run", progress=False)
    result = train_classifier(dm, steps=300, batch_size=256, lr=3e-3, progress=False)
    assert result.path == tmp_path / "run" / FILES[1]  # a model trained into a folder: saved there
    clf = load_classifier(tmp_path / "run")

    def share(y, w: float) -> float:
        guided = classifier_guided(dm.model, dm.sde, clf, y=y, scale=w)
        x = sd.sample(guided, dm.sde, (400, 2), "dpm-solver++", 20, generator=torch.Generator().manual_seed(1))
        return (EIGHT.responsibilities(x.double()).argmax(1) == torch.as_tensor(y)).double().mean().item()

    for k in (0, 3):
        assert share(k, 0.0) < 0.25
        assert share(k, 1.0) > 0.85
        assert share(k, 2.0) > 0.95
    assert share(torch.arange(400) % 8, 2.0) > 0.95  # one class per sample


def test_the_command_trains_saves_and_prints(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    args = "train --data 8gaussians --n-points 2000 --width 16 --steps 2 --sample-every 0 --quiet --out runs/a"
    assert runner.invoke(app, args.split()).exit_code == 0
    result = runner.invoke(app, "train-classifier --steps 100 --batch-size 128 --lr 3e-3 --quiet".split())
    assert result.exit_code == 0, result.output + result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("held-out accuracy (200 samples, 8 classes, chance 12.5%): t=0.1 ")
    assert "t=0.5" in lines[0] and "t=0.9" in lines[0] and lines[-1].endswith(f"wrote runs/a/{FILES[1]}")
    info = load_classifier("runs/a").info
    assert info["run"] == "runs/a" and info["run_step"] == 2 and info["step"] == 100 and info["sde"]["name"] == "vp"
    assert f"t=0.1 {100 * info['accuracy']['0.1']:.1f}%" in lines[0]
