"""The SDE core against closed forms and Monte Carlo (docs/conventions.md §1)."""

import math

import pytest
import torch

import scoresde as sd

pytestmark = pytest.mark.usefixtures("float64")


def simulate_forward(sde, x0, t_end, steps, generator):
    """Fine Euler–Maruyama of dx = f(t)x dt + g(t) dW from 0 to t_end."""
    x = x0.clone()
    dt = t_end / steps
    for k in range(steps):
        t = torch.full((x.shape[0],), k * dt)
        x = (
            x
            + sde.drift(x, t) * dt
            + math.sqrt(dt) * sde.diffusion(t)[:, None] * torch.randn(x.shape, generator=generator)
        )
    return x


@pytest.mark.parametrize(
    "sde", [sd.VPSDE(), sd.SubVPSDE(), sd.VESDE(sigma_min=0.01, sigma_max=5.0)], ids=["vp", "subvp", "ve"]
)
@pytest.mark.parametrize("t_end", [0.1, 0.6])
def test_marginal_matches_monte_carlo(sde, t_end):
    g = torch.Generator().manual_seed(0)
    n, x0_value = 20000, 1.5
    x0 = torch.full((n, 1), x0_value)
    xt = simulate_forward(sde, x0, t_end, 2000, g)
    alpha, sigma = sde.marginal(torch.tensor(t_end))
    mean, var = xt.mean().item(), xt.var().item()
    # stated tolerance: 5 standard errors of the MC estimates, plus O(dt) EM bias
    se_mean = sigma.item() / math.sqrt(n)
    se_var = sigma.item() ** 2 * math.sqrt(2 / (n - 1))
    assert abs(mean - alpha.item() * x0_value) < 5 * se_mean + 2e-3
    assert abs(var - sigma.item() ** 2) < 5 * se_var + 2e-3 * max(1, sigma.item() ** 2)


def test_vp_closed_forms():
    sde = sd.VPSDE(0.1, 20.0)
    t = torch.linspace(0, 1, 11)
    B = 0.1 * t + 0.5 * t**2 * 19.9
    alpha, sigma = sde.marginal(t)
    torch.testing.assert_close(alpha, torch.exp(-0.5 * B), rtol=1e-14, atol=0)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(t), rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(sde.log_alpha_bar(t), -B)
    torch.testing.assert_close(sde.ou_time(t), 0.5 * B)
    torch.testing.assert_close(sde.beta(t), 0.1 + t * 19.9)
    torch.testing.assert_close(sde.diffusion(t) ** 2, sde.beta(t))


def test_drift_and_diffusion_are_consistent_with_marginals():
    """d log α/dt = f(t) and dσ²/dt = 2fσ² + g² (moment ODEs), checked by finite differences."""
    for sde in (sd.VPSDE(), sd.SubVPSDE(), sd.VESDE(), sd.VPSDE(schedule="cosine")):
        t = torch.tensor([0.1305, 0.3705, 0.7105])  # off the 1/1000 knots of "cosine"
        h = 1e-6
        a_p, s_p = sde.marginal(t + h)
        a_m, s_m = sde.marginal(t - h)
        dlog_a = (torch.log(a_p) - torch.log(a_m)) / (2 * h)
        dvar = (s_p**2 - s_m**2) / (2 * h)
        f = sde.drift(torch.ones(3, 1), t)[:, 0]
        _, s = sde.marginal(t)
        torch.testing.assert_close(dlog_a, f, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(dvar, 2 * f * s**2 + sde.diffusion(t) ** 2, rtol=1e-5, atol=1e-6)


def test_sigma_accurate_for_tiny_t():
    sde = sd.VPSDE()
    for t in [1e-8, 1e-6, 1e-4]:
        B = 0.1 * t + 0.5 * t * t * 19.9
        exact = math.sqrt(-math.expm1(-B))  # float64 reference; compare float32 path too
        _, s64 = sde.marginal(torch.tensor(t, dtype=torch.float64))
        _, s32 = sde.marginal(torch.tensor(t, dtype=torch.float32))
        assert abs(s64.item() / exact - 1) < 1e-12
        assert abs(s32.item() / exact - 1) < 1e-6
        # the naive formula in float32 loses everything at t = 1e-8
    naive = math.sqrt(max(0.0, 1 - float(torch.exp(torch.tensor(-1e-9, dtype=torch.float32)))))
    assert naive == 0.0 or abs(naive / math.sqrt(1e-9) - 1) > 1e-3


def test_log_snr_and_its_inverse():
    for sde in (sd.VPSDE(), sd.SubVPSDE(), sd.VESDE(), sd.VPSDE(schedule="ddpm-linear")):
        t = torch.linspace(1e-4, 1, 50)
        lam = sde.log_snr(t)
        alpha, sigma = sde.marginal(t)
        torch.testing.assert_close(lam, torch.log(alpha**2 / sigma**2), rtol=1e-10, atol=1e-10)
        assert (lam[1:] < lam[:-1]).all()
        torch.testing.assert_close(sde.t_from_log_snr(lam), t, rtol=1e-9, atol=1e-12)


def test_ou_time_inverse():
    sde = sd.VPSDE()
    t = torch.linspace(0, 1, 33)
    torch.testing.assert_close(sde.t_from_ou_time(sde.ou_time(t)), t, rtol=1e-12, atol=1e-14)


def test_prior():
    sde = sd.VESDE(sigma_max=3.0)
    g = torch.Generator().manual_seed(1)
    x = sde.prior_sample((4000, 2, 3), g, dtype=torch.float64)
    assert abs(x.std().item() - 3.0) < 0.05
    logp = sde.prior_logp(x)
    ref = torch.distributions.Normal(0.0, 3.0).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(logp, ref)


def test_reverse_and_probability_flow_drifts():
    sde = sd.VPSDE()
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    t = torch.full((5,), 0.4)

    def score(x, t):
        return -x  # score of N(0, I), which is stationary under VP

    rev = sde.reverse(score)
    ode = sde.reverse(score, probability_flow=True)
    beta = sde.beta(t)[:, None]
    torch.testing.assert_close(rev.drift(x, t), -0.5 * beta * x + beta * x)
    torch.testing.assert_close(ode.drift(x, t), torch.zeros_like(x))  # stationary: no flow
    torch.testing.assert_close(rev.diffusion(t), torch.sqrt(sde.beta(t)))
    assert (ode.diffusion(t) == 0).all()


def test_drift_is_rank_agnostic():
    sde = sd.VPSDE()
    for shape in [(3, 2), (3, 1, 4, 4), (3,)]:
        x = torch.ones(shape)
        assert sde.drift(x, torch.full((3,), 0.5)).shape == x.shape


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: sd.VPSDE().marginal(torch.tensor([0.5, 1.5])), r"\[0, T\]"),
        (lambda: sd.VPSDE().marginal(torch.tensor([-0.1])), r"\[0, T\]"),
        (lambda: sd.VPSDE().marginal(torch.tensor([float("nan")])), "finite"),
        (lambda: sd.VPSDE(beta_min=5.0, beta_max=1.0), "beta_min must not exceed beta_max"),
        (lambda: sd.VPSDE(beta_min=float("inf")), "finite"),
        (lambda: sd.VPSDE.from_betas([0.1, 1.0]), r"strictly inside \(0, 1\)"),
        (lambda: sd.VPSDE.from_betas([0.0, 0.5]), r"strictly inside \(0, 1\)"),
        (lambda: sd.VPSDE.from_betas([0.1, float("nan")]), "finite"),
        (lambda: sd.VPSDE(schedule="quadratic-ish"), "choose one of: linear, ddpm-linear, cosine"),
        (lambda: sd.make_sde("vpp"), "choose one of: vp, subvp, ve"),
        (lambda: sd.VESDE(sigma_min=2.0, sigma_max=1.0), "sigma_min < sigma_max"),
        (lambda: sd.VPSDE().drift(torch.ones(3, 2), torch.ones(2) * 0.5), r"shape \(batch,\)"),
        (lambda: sd.VPSDE().discretize(0), "positive integer"),
    ],
)
def test_bad_input_raises_clear_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
