"""EDM preconditioning for any linear SDE, its loss weight and its log-normal training times:
identities of the coefficients, the weight against the x_0-loss form, the time draw by a KS test."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import scoresde as sd
from scoresde.config import from_dict
from scoresde.losses import LogNormalTime, TimeDraw, denoising_loss, make_weighting
from scoresde.param import EDMPrecond, eps_and_x0

pytestmark = pytest.mark.usefixtures("float64")

SDES = [sd.VPSDE(), sd.SubVPSDE(), sd.VESDE()]


class Zero(nn.Module):
    def forward(self, x, label):
        return torch.zeros_like(x)


class Oracle(nn.Module):
    """Returns EDM's ideal output for a known x_0, reading σ̃ back from c_noise and x̃ from c_in x̃:
    F = (x_0 − c_skip x̃)/c_out. Then D(x̃) must be x_0 exactly, whatever the coefficients' values."""

    def __init__(self, x0, sigma_data):
        super().__init__()
        self.x0, self.sd = x0, sigma_data

    def forward(self, x_in, c_noise):
        s = sd._checks.append_dims(torch.exp(4 * c_noise), x_in.ndim)  # c_noise = ¼ ln σ̃
        norm = s * s + self.sd**2
        x_tilde = x_in * norm.sqrt()  # c_in = 1/√(σ̃² + σ_d²)
        c_skip, c_out = self.sd**2 / norm, s * self.sd / norm.sqrt()
        return (self.x0 - c_skip * x_tilde) / c_out


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_edm_with_zero_network_is_c_skip_times_x_tilde_and_converts_exactly(sde):
    sigma_data = 0.5
    model = EDMPrecond(Zero(), sde, sigma_data)
    assert model.prediction == "x0"
    t = torch.tensor([0.01, 0.2, 0.5, 0.9, 1.0])
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    alpha, sigma = (sd._checks.append_dims(v, 2) for v in sde.marginal(t))
    s = sigma / alpha
    expected = sigma_data**2 / (s * s + sigma_data**2) * x / alpha
    out = model(x, t)
    torch.testing.assert_close(out, expected)
    eps, x0 = eps_and_x0("x0", out, x, alpha, sigma)  # the rest of the library sees an x0 model
    torch.testing.assert_close(x0, expected)
    torch.testing.assert_close(alpha * x0 + sigma * eps, x)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_edm_with_the_ideal_network_output_returns_x0(sde):
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(6, 4, generator=g)
    t = torch.linspace(0.05, 1.0, 6)
    alpha, sigma = (sd._checks.append_dims(v, 2) for v in sde.marginal(t))
    x = alpha * x0 + sigma * torch.randn(6, 4, generator=g)
    torch.testing.assert_close(EDMPrecond(Oracle(x0, 0.7), sde, 0.7)(x, t), x0)


def test_edm_input_and_target_have_unit_variance_when_the_data_has_sigma_data():
    """c_in and (c_skip, c_out) are chosen so that Var[c_in x̃] = Var[(x_0 − c_skip x̃)/c_out] = 1 for
    Var[x_0] = σ_d² (Karras et al. 2022, App. B.6). Monte Carlo with 200k draws: 5 standard errors."""
    sde, sigma_data, n = sd.VPSDE(), 0.5, 200_000
    model = EDMPrecond(Zero(), sde, sigma_data)
    g = torch.Generator().manual_seed(2)
    for t in (0.05, 0.3, 0.8):
        alpha, c_in, c_skip, c_out, _ = model.coefficients(torch.tensor([t]))
        x0 = sigma_data * torch.randn(n, generator=g)
        x_tilde = x0 + (sde.sigma(torch.tensor(t)) / alpha) * torch.randn(n, generator=g)
        tol = 5 * math.sqrt(2 / n)  # standard error of a unit sample variance
        assert abs((c_in * x_tilde).var().item() - 1) < tol
        assert abs(((x0 - c_skip * x_tilde) / c_out).var().item() - 1) < tol


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_edm_weighting_on_the_eps_loss_equals_edm_lambda_on_the_x0_error(sde):
    """w‖ε − ε̂‖² with w = (σ̃² + σ_d²)/σ_d² equals λ(σ̃)‖D − x_0‖², λ = (σ̃² + σ_d²)/(σ̃ σ_d)², for any D."""
    sigma_data = 0.5
    g = torch.Generator().manual_seed(3)
    x0, noise = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    t = torch.linspace(0.02, 1.0, 8)
    alpha, sigma = sde.marginal(t)
    draw = TimeDraw(t, alpha, sigma, torch.ones_like(t))
    guess = torch.randn(8, 5, generator=g)  # D: an arbitrary x_0 prediction
    model = sd.as_model(lambda x, t: guess, prediction="x0")
    loss = denoising_loss(model, sde, x0, weighting=make_weighting("edm", sigma_data=sigma_data), time=draw,
                          noise=noise)  # fmt: skip
    s = sigma / alpha
    lam = (s * s + sigma_data**2) / (s * sigma_data) ** 2
    torch.testing.assert_close(loss, lam * (guess - x0).pow(2).sum(1))
    # and with the preconditioning it is unit weight on the network's own target (λ c_out² = 1)
    _, _, _, c_out, _ = EDMPrecond(Zero(), sde, sigma_data).coefficients(t)
    torch.testing.assert_close(lam * c_out**2, torch.ones_like(t))


@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.SubVPSDE()], ids=lambda s: type(s).__name__)
def test_lognormal_times_have_log_normal_noise_levels(sde):
    """ln σ̃(t) of the drawn t follows N(P_mean, P_std²): Kolmogorov–Smirnov on 20k draws, p > 1e-3
    (clamping to [t_min, T] moves less than 1e-5 of the mass on VP/sub-VP with EDM's values)."""
    stats = pytest.importorskip("scipy.stats")
    draw = LogNormalTime()(sde, 20_000, None, generator=torch.Generator().manual_seed(4))
    assert ((draw.t >= 1e-5) & (draw.t <= sde.T)).all() and (draw.importance == 1).all()
    log_s = torch.log(draw.sigma / draw.alpha).numpy()
    assert stats.kstest(log_s, "norm", args=(-1.2, 1.2)).pvalue > 1e-3
    assert stats.kstest(log_s, "norm", args=(-1.0, 1.2)).pvalue < 1e-6  # the test can fail


def test_lognormal_clamps_to_the_sdes_noise_range():
    """On VE, σ̃ = σ(t) ≤ σ(T) = √(σ_max² − σ_min²): draws above it land on t = T; their fraction is
    1 − Φ((ln σ(T) − P_mean)/P_std) (binomial: 5 standard errors). Nothing lies below t_min."""
    sde, n = sd.VESDE(sigma_min=0.01, sigma_max=1.0), 40_000
    draw = LogNormalTime(t_min=0.0)(sde, n, None, generator=torch.Generator().manual_seed(5))
    top = math.log(sde.sigma(torch.tensor(sde.T)).item())
    p = 0.5 * (1 - math.erf((top + 1.2) / (1.2 * math.sqrt(2))))
    frac = (draw.t == sde.T).double().mean().item()
    assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert draw.t.min() >= 0


def test_lognormal_rejects_bad_options():
    with pytest.raises(ValueError, match="p_std"):
        LogNormalTime(p_std=0.0)
    with pytest.raises(ValueError, match="sigma_data"):
        make_weighting("edm", sigma_data=-1)
    with pytest.raises(ValueError, match="sigma_data"):
        EDMPrecond(Zero(), sd.VPSDE(), 0)


def test_trainer_builds_trains_and_reloads_the_edm_recipe(tmp_path):
    from scoresde.build import loss_parts, validate
    from scoresde.run_folder import load_run
    from scoresde.trainer import Trainer

    torch.set_default_dtype(torch.float32)  # a training run as users make it (the fixture restores float64's caller)

    config = from_dict(
        {
            "data": {"name": "moons", "n": 200},
            "model": {"precondition": "edm", "sigma_data": 0.6, "width": 16, "depth": 1},
            "loss": {"weighting": "edm", "time": "lognormal", "lognormal_p_mean": -0.5},
            "steps": 3, "batch_size": 16, "checkpoint_every": 0, "log_every": 1,
        }
    )  # fmt: skip
    weighting, time = loss_parts(config)
    assert time.p_mean == -0.5
    t = torch.tensor([0.3])
    a, s = sd.VPSDE().marginal(t)
    torch.testing.assert_close(weighting(sd.VPSDE(), TimeDraw(t, a, s, t)), 1 + (s / a / 0.6) ** 2)  # model's σ_d
    trainer = Trainer(config, tmp_path, progress=False)
    result = trainer.run()
    assert (
        isinstance(trainer.model, EDMPrecond)
        and result.provenance.loss is not None
        and math.isfinite(result.provenance.loss)
    )
    run = load_run(tmp_path)
    assert run.prediction == "x0" and isinstance(run.model, EDMPrecond) and run.model.sigma_data == 0.6
    x, tt = torch.randn(4, 2), torch.full((4,), 0.4)
    torch.testing.assert_close(run.model(x, tt), trainer.ema(x, tt))
    with pytest.raises(ValueError, match="precondition edm"):
        validate(from_dict({"model": {"precondition": "edm", "prediction": "v"}}))
