"""DDPM is the VP SDE read on a grid (docs/conventions.md §1): exactness of the bridge both ways."""

import math

import pytest
import torch

import scoresde as sd

pytestmark = pytest.mark.usefixtures("float64")


@pytest.mark.parametrize("N", [1, 10, 1000, 4000])
@pytest.mark.parametrize("schedule", [None, "cosine", "ddpm-linear"])
def test_discretize_alpha_bar_is_exact(N, schedule):
    sde = sd.VPSDE() if schedule is None else sd.VPSDE(schedule=schedule)
    chain = sde.discretize(N)
    exact = torch.exp(sde.log_alpha_bar(chain.times))
    torch.testing.assert_close(chain.alpha_bars, exact, rtol=1e-12, atol=0)
    # cumulative product of the one-step alphas reproduces alpha_bar (DDPM's definition)
    torch.testing.assert_close(torch.cumprod(chain.alphas, 0), chain.alpha_bars[1:], rtol=1e-12, atol=0)
    torch.testing.assert_close(chain.alphas, 1 - chain.betas, rtol=1e-12, atol=1e-15)
    assert torch.isfinite(chain.betas).all() and (chain.betas > 0).all() and (chain.betas < 1).all()
    assert torch.isfinite(chain.posterior_variances).all()


def test_seed_relation_beta_is_one_minus_exp_minus_two_delta_tau():
    sde = sd.VPSDE()
    chain = sde.discretize(250)
    tau = sde.ou_time(chain.times)
    torch.testing.assert_close(chain.betas, 1 - torch.exp(-2 * (tau[1:] - tau[:-1])), rtol=1e-12, atol=0)


def test_one_step_kernel_reproduces_marginal_moments():
    """Iterating q(x_i | x_{i-1}) = N(√α_i x, β_i) from x_0 gives q(x_N | x_0) (Monte Carlo)."""
    sde = sd.VPSDE()
    chain = sde.discretize(100)
    g = torch.Generator().manual_seed(3)
    n, x0 = 40000, 2.0
    x = torch.full((n,), x0)
    for a, b in zip(chain.alphas, chain.betas, strict=True):
        x = a.sqrt() * x + b.sqrt() * torch.randn(n, generator=g)
    mean_exact = chain.alpha_bars[-1].sqrt().item() * x0
    var_exact = 1 - chain.alpha_bars[-1].item()
    assert abs(x.mean().item() - mean_exact) < 5 * math.sqrt(var_exact / n)
    assert abs(x.var().item() - var_exact) < 5 * var_exact * math.sqrt(2 / n)
    # and the moments of the recursion in closed form are exact
    m, v = x0, 0.0
    for a, b in zip(chain.alphas.tolist(), chain.betas.tolist(), strict=True):
        m, v = math.sqrt(a) * m, a * v + b
    assert abs(m - mean_exact) < 1e-12 and abs(v - var_exact) < 1e-12


def test_from_betas_reproduces_ddpm_cumprod_and_round_trips():
    betas = torch.linspace(1e-4, 0.02, 1000)
    sde = sd.VPSDE.from_betas(betas)
    t = torch.arange(1001) / 1000
    torch.testing.assert_close(torch.exp(sde.log_alpha_bar(t[1:])), torch.cumprod(1 - betas, 0), rtol=1e-12, atol=0)
    chain = sde.discretize(1000)
    torch.testing.assert_close(chain.betas, betas, rtol=1e-12, atol=0)
    # the named schedule is the same object
    torch.testing.assert_close(sd.VPSDE(schedule="ddpm-linear").discretize(1000).betas, betas, rtol=1e-12, atol=0)


def test_from_betas_cosine_round_trip_and_respacing():
    betas = sd.cosine_betas(1000)
    sde = sd.VPSDE.from_betas(betas)
    torch.testing.assert_close(sde.discretize(1000).betas, betas, rtol=1e-11, atol=0)
    # respacing (Nichol & Dhariwal 2021): keep every 10th time; beta_i from alpha_bar ratios
    coarse = sde.discretize(100)
    ab = torch.cumprod(1 - betas, 0)[9::10]
    torch.testing.assert_close(coarse.alpha_bars[1:], ab, rtol=1e-11, atol=0)
    torch.testing.assert_close(coarse.betas, 1 - ab / torch.cat([torch.ones(1), ab[:-1]]), rtol=1e-10, atol=0)


def test_linear_schedule_matches_ddpm_betas_to_first_order():
    chain = sd.VPSDE(0.1, 20.0).discretize(1000)
    ddpm = torch.linspace(1e-4, 0.02, 1000)
    # β_i ≈ β(t_i)/N up to O(1/N²)-relative terms: within a few percent at the start, <1% later
    rel = (chain.betas - ddpm).abs() / ddpm
    assert rel[100:].max() < 0.02


def test_posterior_variance_is_ddpm_beta_tilde():
    chain = sd.VPSDE().discretize(50)
    ab = chain.alpha_bars
    expected = (1 - ab[:-1]) / (1 - ab[1:]) * chain.betas
    torch.testing.assert_close(chain.posterior_variances, expected, rtol=1e-12, atol=1e-300)
    assert chain.posterior_variances[0] == 0  # t_0 = 0: x_0 is known given x_0


def test_general_discretize_for_subvp_and_ve_matches_marginals():
    for sde in (sd.SubVPSDE(), sd.VESDE()):
        chain = sde.discretize(40)
        m, v = 1.0, 0.0
        for a, b in zip(chain.alphas.tolist(), chain.betas.tolist(), strict=True):
            m, v = math.sqrt(a) * m, a * v + b
        alpha, sigma = sde.marginal(torch.tensor(1.0))
        assert abs(m - alpha.item()) < 1e-12 and abs(v / sigma.item() ** 2 - 1) < 1e-10


def test_no_nan_for_any_number_of_steps():
    for sde in (sd.VPSDE(), sd.VPSDE(schedule="cosine"), sd.SubVPSDE(), sd.VESDE()):
        for N in (1, 2, 3, 17, 999, 4000):
            for t_min in (0.0, 1e-5, 1e-3):
                c = sde.discretize(N, t_min=t_min)
                for field in (c.betas, c.alphas, c.alpha_bars, c.posterior_variances, c.sigmas):
                    assert torch.isfinite(field).all()
