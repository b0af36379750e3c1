"""Autoguidance: the formula, its closed form on Gaussians, its cost, and the guide a run keeps."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file
from test_train import tiny_images

import scoresde as sd
from scoresde import checkpoint as ckpt
from scoresde.analytic import Gaussian
from scoresde.config import from_dict
from scoresde.data_defaults import resolve
from scoresde.generation import generate
from scoresde.guidance import AutoGuided
from scoresde.param import convert
from scoresde.run_folder import GUIDE_FILE, load_run
from scoresde.trainer import train

GOOD, WEAK = Gaussian([1.0, -0.5], 0.3), Gaussian([0.2, 0.5], 0.3)  # the same spread, different means


class Calls:
    """A model wrapper that counts its calls."""

    def __init__(self, model):
        self.model, self.prediction, self.calls = model, model.prediction, 0

    def __call__(self, x, t, **cond):
        self.calls += 1
        return self.model(x, t, **cond)


def _points(n: int = 8):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 2, generator=g, dtype=torch.float64), 0.05 + 0.9 * torch.rand(n, generator=g).double()


@pytest.mark.parametrize("w", [1.0, 2.0, 0.5])
def test_autoguided_is_the_weak_model_plus_w_times_the_difference(w):
    sde = sd.VPSDE()
    good, weak = Calls(GOOD.model(sde, "eps")), Calls(WEAK.model(sde, "eps"))
    x, t = _points()
    out = AutoGuided(good, weak, w)(x, t)
    g, b = GOOD.model(sde, "eps")(x, t), WEAK.model(sde, "eps")(x, t)
    torch.testing.assert_close(out, b + w * (g - b), rtol=1e-12, atol=1e-12)
    assert (good.calls, weak.calls) == ((1, 0) if w == 1.0 else (1, 1))  # w = 1: the model alone, one forward
    assert AutoGuided(good, weak, w).forwards == (1 if w == 1.0 else 2)


@pytest.mark.parametrize("prediction", ["score", "x0", "v"])
def test_autoguiding_any_prediction_kind_equals_autoguiding_eps(prediction):
    sde, w = sd.VPSDE(), 2.5
    x, t = _points()
    eps = AutoGuided(GOOD.model(sde, "eps"), WEAK.model(sde, "eps"), w)
    other = AutoGuided(GOOD.model(sde, prediction), WEAK.model(sde, prediction), w)
    alpha, sigma = (v[:, None] for v in sde.marginal(t))
    torch.testing.assert_close(
        convert(other(x, t), prediction, "eps", x, alpha, sigma), eps(x, t), rtol=1e-9, atol=1e-9
    )


def test_autoguidance_of_two_gaussians_samples_the_extrapolated_gaussian():
    """With equal spreads the guided score is, at every t, the score of N(μ_0 + w (μ_1 − μ_0), s²)."""
    sde, w, n = sd.VPSDE(), 2.0, 20000
    model = AutoGuided(GOOD.model(sde, "eps"), WEAK.model(sde, "eps"), w)
    x = sd.sample(
        model, sde, (n, 2), "unipc", steps=20, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    target = WEAK.means[0] + w * (GOOD.means[0] - WEAK.means[0])  # (1.8, −1.5)
    # Monte Carlo: the mean's standard error is 0.3 / √n ≈ 0.002; 5 se, plus the solver's error
    torch.testing.assert_close(x.mean(0), target, rtol=0, atol=0.015)
    torch.testing.assert_close(x.std(0), torch.full((2,), 0.3, dtype=torch.float64), rtol=0, atol=0.01)
    alone = sd.sample(
        GOOD.model(sde, "eps"), sde, (n, 2), "unipc", steps=20, generator=torch.Generator().manual_seed(1)
    )
    assert (alone.double().mean(0) - target).abs().max() > 0.5  # the comparison can fail


def test_autoguidance_refuses_mixed_predictions_and_bad_scales():
    sde = sd.VPSDE()
    with pytest.raises(ValueError, match="the guide returns 'x0' but the model 'eps'"):
        AutoGuided(GOOD.model(sde, "eps"), WEAK.model(sde, "x0"), 2.0)
    for bad in (float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="autoguidance must be a finite number"):
            AutoGuided(GOOD.model(sde, "eps"), WEAK.model(sde, "eps"), bad)


@pytest.mark.parametrize("solver", ["ddim", "heun", "sde-dpm-solver++"])
def test_a_solver_counts_both_forwards_and_reports_per_sample_nfe_across_chunks(solver):
    sde = sd.VPSDE()
    good, weak = Calls(GOOD.model(sde, "eps")), Calls(WEAK.model(sde, "eps"))
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    _, plain = sd.sample(GOOD.model(sde, "eps"), sde, (10, 2), solver, steps=6, generator=gen(), return_info=True)
    _, info = sd.sample(
        AutoGuided(good, weak, 2.0), sde, (10, 2), solver, steps=6, generator=gen(), batch_size=4, return_info=True
    )
    assert info.nfe == 2 * plain.nfe  # per sample: two networks per evaluation
    assert good.calls == weak.calls == 3 * plain.nfe  # three chunks (4, 4, 2), one solve each


# --------------------------------------------------------------------------- the guide a run keeps


def test_a_run_keeps_its_ema_at_guide_at_and_sampling_uses_it_by_default(tmp_path):
    config = from_dict(tiny_images(steps=10, guide_at=0.3, guide_scale=2.5))
    dm = train(config, tmp_path / "run", progress=False)
    guide = load_file(tmp_path / "run" / GUIDE_FILE)
    early = train(from_dict(tiny_images(steps=3)), tmp_path / "early", progress=False)  # the same seed, 3 steps
    ema = ckpt.section(load_file(early.provenance.checkpoint.with_suffix(".safetensors")), "ema.")
    assert guide.keys() == ema.keys() and all(torch.equal(guide[k], ema[k]) for k in ema)  # the EMA at step 3
    final = ckpt.section(load_file(dm.provenance.checkpoint.with_suffix(".safetensors")), "ema.")
    assert not all(torch.equal(guide[k], final[k]) for k in ema)  # the comparison can fail

    run = load_run(tmp_path / "run")
    assert run.guide is not None and dm.guide is not None  # loaded, and kept by the trainer in memory
    default = generate(run, 6, solver="ddim", steps=4, seed=2)
    assert run.guide_scale == dm.guide_scale == 2.5
    assert default.autoguidance == 2.5 and default.nfe == 2 * 4
    in_memory = generate(dm, 6, solver="ddim", steps=4, seed=2)
    assert torch.equal(default.samples, in_memory.samples)
    alone = generate(run, 6, solver="ddim", steps=4, seed=2, autoguidance=1.0)
    plain = sd.sample(run.model, run.sde, (6, *run.data_shape), "ddim", 4, generator=torch.Generator().manual_seed(2),
                      clip_x0=1.0)  # fmt: skip
    assert alone.nfe == 4 and torch.equal(alone.samples, plain) and not torch.equal(alone.samples, default.samples)


def test_every_run_keeps_a_guide_and_the_data_decides_the_default_scale(tmp_path):
    mnist = resolve({"data": {"name": "mnist"}})  # conditional_mnist.md: CFG at 1.25 beats autoguidance
    assert mnist.guide_scale == 1.0 and mnist.model.conditional and mnist.class_guidance == 1.25
    assert resolve({"data": {"name": "digits"}}).guide_scale == 1.0  # autoguidance_digits.md: alone
    assert resolve({"data": {"name": "mnist"}, "guide_scale": 1.5}).guide_scale == 1.5
    assert not resolve({"data": {"name": "mnist"}, "model": {"conditional": False}}).model.conditional
    train(from_dict(tiny_images(steps=5)), tmp_path / "run", progress=False)  # the field defaults: 0.4, w = 1
    run = load_run(tmp_path / "run")
    assert run.guide is not None and run.guide_scale == 1.0
    alone, guided = generate(run, 4, solver="ddim", steps=3), generate(run, 4, solver="ddim", steps=3, autoguidance=3)
    assert (alone.autoguidance, alone.nfe, guided.autoguidance, guided.nfe) == (1.0, 3, 3.0, 6)


def test_no_guide_without_guide_at_and_no_late_guide_on_resume(tmp_path):
    train(from_dict(tiny_images(steps=4, guide_at=0.0)), tmp_path / "none", progress=False)
    assert not (tmp_path / "none" / GUIDE_FILE).exists()
    dm = load_run(tmp_path / "none")
    assert dm.guide is None and generate(dm, 4, solver="ddim", steps=3).autoguidance is None
    with pytest.raises(ValueError, match=r"autoguidance needs a guide, but run .* has none"):
        generate(dm, 4, solver="ddim", steps=3, autoguidance=2.0)
    # resumed past guide_at without a guide (a run from before guides): none is written late
    train(from_dict(tiny_images(steps=8, guide_at=0.2)), tmp_path / "none", resume=True, progress=False)
    assert not (tmp_path / "none" / GUIDE_FILE).exists()
    # resumed before guide_at: written when the run gets there, once
    train(from_dict(tiny_images(steps=2, guide_at=0.0)), tmp_path / "r", progress=False)
    train(from_dict(tiny_images(steps=8, guide_at=0.5)), tmp_path / "r", resume=True, progress=False)
    assert load_run(tmp_path / "r").guide is not None


def test_a_guide_that_does_not_load_is_one_line_naming_it(tmp_path):
    train(from_dict(tiny_images(steps=4)), tmp_path / "run", progress=False)
    (tmp_path / "run" / GUIDE_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=r"the autoguidance guide .*guide\.safetensors does not load"):
        load_run(tmp_path / "run")


def test_guidance_by_a_measurement_drops_the_guide():
    """A gradient-guided model has no guide: autoguiding it by the plain guide would scale its guidance term."""
    from scoresde.observations import measurement_guided

    dm = sd.analytic.gmm().diffusion_model(name="gmm")
    with_guide = dataclasses.replace(dm, guide=WEAK.model(dm.sde, "eps"), guide_scale=2.0)
    assert with_guide.autoguidance_scale() == 2.0 and with_guide.autoguidance_scale(1) == 1.0
    assert isinstance(with_guide.sampling_model(), AutoGuided) and with_guide.sampling_model(1.0) is dm.model
    posterior, _ = measurement_guided(with_guide, "mask", torch.zeros(1, 2), 0.1, mask=torch.tensor([1.0, 0.0]))
    assert posterior.guide is None and posterior.autoguidance_scale() is None


def test_classifier_free_guidance_wraps_an_autoguided_pair():
    """CFG of the autoguided model: both branches go through both networks, two forwards per evaluation."""
    from scoresde.analytic import GaussianMixture, gmm
    from scoresde.guidance import guided

    sde, good = sd.VPSDE(), gmm()
    weak = GaussianMixture(good.weights, good.means + 0.2, good.stds * 1.5)
    pair = AutoGuided(good.model(sde, "eps"), weak.model(sde, "eps"), 2.0)
    x, t = _points()
    y = torch.arange(8) % good.K
    out = guided(pair, y, guidance=3.0)(x, t)

    def auto(labels):
        g, b = good.model(sde, "eps")(x, t, y=labels), weak.model(sde, "eps")(x, t, y=labels)
        return b + 2.0 * (g - b)

    uncond = auto(torch.full((8,), good.K))
    torch.testing.assert_close(out, uncond + 3.0 * (auto(y) - uncond), rtol=1e-10, atol=1e-10)
    assert guided(pair, y, guidance=3.0).forwards == 2 and pair.num_classes == good.K
