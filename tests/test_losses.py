"""Losses: weightings against their closed forms and limits, the ELBO against the Gaussian KL,
parametrizations against each other, and importance sampling against quadrature."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy import integrate
from torch.distributions import Normal, kl_divergence

import scoresde as sd
from scoresde.losses import (
    WEIGHTINGS,
    ContinuousTime,
    DiscreteTime,
    denoising_loss,
    make_time_sampler,
    make_weighting,
)
from scoresde.param import from_eps

pytestmark = pytest.mark.usefixtures("float64")  # closed-form comparisons run in float64


def _linear_eps_model(c: float = 0.3):
    """ε̂(x, t) = c·x·(1 + t): simple, random-looking, and with closed-form expected loss."""
    return lambda x, t: c * x * (1 + sd._checks.append_dims(t, x.ndim))


@pytest.mark.parametrize("variance", ["large", "small"])
def test_N_times_elbo_weight_converges_to_likelihood_weight(variance):
    sde = sd.VPSDE()
    w_elbo, w_lik = make_weighting("elbo", variance=variance), make_weighting("likelihood")
    t_check = torch.tensor([0.1, 0.3, 0.5, 0.9])
    errors = []
    for N in (10, 100, 1000, 10000):
        steps = DiscreteTime(N)
        draw = steps.at(sde, torch.round(t_check * N).long())
        assert torch.allclose(draw.t, t_check)
        rel = (N * w_elbo(sde, draw) - w_lik(sde, draw)).abs() / w_lik(sde, draw)
        errors.append(rel.max().item())
    # first-order convergence: each 10x refinement divides the error by about 10
    for coarse, fine in itertools.pairwise(errors):
        assert fine < coarse / 5
    assert errors[-1] < 2e-3


@pytest.mark.parametrize("variance", ["large", "small"])
def test_elbo_loss_equals_gaussian_kl_term(variance):
    """w_i‖ε − ε̂‖² = KL(q(x_{i−1}|x_i,x_0) ‖ p_θ(x_{i−1}|x_i)) − (its ε̂-independent variance part)."""
    g = torch.Generator().manual_seed(0)
    sde, N = sd.VPSDE.from_betas(sd.ddpm_linear_betas(50)), 50
    x0 = torch.randn(6, 3, 4, 4, generator=g)
    eps = torch.randn(x0.shape, generator=g)
    index = torch.tensor([2, 3, 10, 25, 49, 50])
    model = _linear_eps_model()
    draw = DiscreteTime(N).at(sde, index)
    loss = denoising_loss(model, sde, x0, weighting=make_weighting("elbo", variance=variance), time=draw, noise=eps)

    betas = sd.ddpm_linear_betas(50)  # Ho et al.'s own chain, independent of the SDE code path
    alphas = 1 - betas
    abar = torch.cat([torch.ones(1), torch.cumprod(alphas, 0)])
    b, a, ab, ab_prev = (
        append(v[i]) for v, i in ((betas, index - 1), (alphas, index - 1), (abar, index), (abar, index - 1))
    )
    x_i = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    mu_q = ab_prev.sqrt() * b / (1 - ab) * x0 + a.sqrt() * (1 - ab_prev) / (1 - ab) * x_i  # Ho et al. eq. 7
    var_q = (1 - ab_prev) / (1 - ab) * b
    eps_hat = model(x_i, draw.t)
    mu_p = (x_i - b / (1 - ab).sqrt() * eps_hat) / a.sqrt()  # Ho et al. eq. 11
    var_p = b if variance == "large" else var_q
    kl = kl_divergence(Normal(mu_q, var_q.sqrt()), Normal(mu_p, var_p.sqrt())).flatten(1).sum(1)
    # the part of the KL that does not depend on ε̂ (zero when var_p = var_q)
    ratio = (var_q / var_p).flatten()
    kl_var_only = x0[0].numel() * 0.5 * (ratio - 1 - torch.log(ratio))
    torch.testing.assert_close(loss, kl - kl_var_only, rtol=1e-9, atol=1e-12)
    assert (loss > 0).all()


def append(v):
    return v.reshape(-1, 1, 1, 1)


def test_elbo_needs_discrete_time():
    with pytest.raises(ValueError, match="discrete"):
        denoising_loss(_linear_eps_model(), sd.VPSDE(), torch.randn(4, 2), weighting="elbo", time="continuous")


@pytest.mark.parametrize("prediction", ["x0", "v", "score"])
def test_parametrizations_give_the_same_loss(prediction):
    """A model predicting x0/v/score that implies the same ε̂ has the same ε-scale loss."""
    g = torch.Generator().manual_seed(1)
    sde = sd.VPSDE()
    x0 = torch.randn(5, 2, 3, generator=g)
    eps = torch.randn(x0.shape, generator=g)
    draw = ContinuousTime(1e-3).at(sde, torch.tensor([1e-3, 0.1, 0.4, 0.7, 1.0]))
    eps_model = _linear_eps_model()

    def other(x, t):
        alpha, sigma = (sd._checks.append_dims(v, x.ndim) for v in sde.marginal(t))
        return from_eps(prediction, eps_model(x, t), x, alpha, sigma)

    for weighting in WEIGHTINGS:
        if weighting == "elbo":
            continue
        ref = denoising_loss(eps_model, sde, x0, weighting=weighting, time=draw, noise=eps)
        got = denoising_loss(other, sde, x0, weighting=weighting, time=draw, noise=eps, prediction=prediction)
        torch.testing.assert_close(got, ref, rtol=1e-8, atol=1e-12)


def test_weightings_closed_forms():
    sde = sd.VPSDE()
    t = torch.tensor([0.01, 0.2, 0.5, 1.0])
    draw = ContinuousTime().at(sde, t)
    alpha, sigma = sde.marginal(t)
    snr = alpha**2 / sigma**2
    torch.testing.assert_close(make_weighting("score")(sde, draw), 1 / sigma**2)
    torch.testing.assert_close(make_weighting("likelihood")(sde, draw), sde.beta(t) / (2 * sigma**2))
    torch.testing.assert_close(make_weighting("min-snr", gamma=2.0)(sde, draw), torch.clamp(snr, max=2.0) / snr)
    torch.testing.assert_close(make_weighting("simple")(sde, draw), torch.ones(4))
    # the score weighting makes the loss the plain score-matching error ‖ŝ − ∇log p_{0t}‖²
    x0, eps = torch.randn(4, 3), torch.randn(4, 3)
    model = _linear_eps_model()
    x_t = alpha[:, None] * x0 + sigma[:, None] * eps
    direct = ((-model(x_t, t) / sigma[:, None]) - (-eps / sigma[:, None])).pow(2).sum(1)
    torch.testing.assert_close(denoising_loss(model, sde, x0, weighting="score", time=draw, noise=eps), direct)


def test_bad_arguments_are_named():
    model, sde, x = _linear_eps_model(), sd.VPSDE(), torch.randn(3, 2)
    with pytest.raises(ValueError, match="unknown weighting 'nope'; choose one of: simple, elbo"):
        denoising_loss(model, sde, x, weighting="nope")
    with pytest.raises(ValueError, match="prediction"):
        denoising_loss(model, sde, x, prediction="mu")
    with pytest.raises(ValueError, match="gamma"):
        make_weighting("min-snr", gamma=-1)
    with pytest.raises(ValueError, match="unknown time sampler"):
        make_time_sampler("sometimes")
    with pytest.raises(ValueError, match=r"1\.\.10"):
        DiscreteTime(10).at(sde, torch.tensor([0]))


def test_the_smallest_training_time_has_one_name():
    from scoresde.config import from_dict
    from scoresde.losses import LogNormalTime

    assert ContinuousTime(t_min=1e-3).t_min == LogNormalTime(t_min=1e-3).t_min == 1e-3
    assert not hasattr(ContinuousTime(), "eps")
    for cls in (ContinuousTime, LogNormalTime):
        with pytest.raises(TypeError, match="eps"):
            cls(eps=1e-3)
    assert from_dict({"loss": {"t_min": 1e-3}}).loss.t_min == 1e-3
    with pytest.raises(ValueError, match=r"unknown config key 'loss\.eps'"):
        from_dict({"loss": {"eps": 1e-3}})


def _expected_linear_loss(sde, t, c, x0):
    """E_ε ‖ε − c(1+t)x_t‖² for ε̂ = c(1+t)x (per sample, summed over dimensions)."""
    alpha, sigma = sde.marginal(t)
    k = c * (1 + t)
    d = x0[0].numel()
    return d * (1 - k * sigma) ** 2 + (k * alpha) ** 2 * x0.pow(2).flatten(1).sum(1)


def test_importance_sampled_continuous_loss_is_unbiased():
    sde, eps_t, c, n = sd.VPSDE(), 1e-3, 0.3, 100_000
    x0 = torch.full((n, 2), 0.5)
    w = make_weighting("likelihood")

    def f(t):
        tt = torch.tensor([t])
        return (w(sde, ContinuousTime().at(sde, tt)) * _expected_linear_loss(sde, tt, c, x0[:1])).item()

    # exact value: (1/(T − ε)) ∫ w(t) E‖ε − ε̂‖² dt, integrated in log t
    exact = integrate.quad(lambda s: f(math.exp(s)) * math.exp(s), math.log(eps_t), 0.0, limit=200)[0] / (1 - eps_t)
    results = {}
    for importance in (False, True):
        g = torch.Generator().manual_seed(3)
        loss = denoising_loss(
            _linear_eps_model(c),
            sde,
            x0,
            weighting="likelihood",
            time=ContinuousTime(eps_t, importance=importance),
            generator=g,
        )
        results[importance] = (loss.mean().item(), loss.std().item() / math.sqrt(n))
    for mean, se in results.values():
        assert abs(mean - exact) < 4 * se, (mean, exact, se)
    assert results[True][1] < results[False][1] / 3  # and it is what importance sampling is for


def test_importance_sampled_discrete_loss_is_unbiased():
    sde, N, c, n = sd.VPSDE(), 100, 0.3, 100_000
    x0 = torch.full((n, 2), 0.5)
    w = make_weighting("elbo")
    every = DiscreteTime(N).at(sde, torch.arange(1, N + 1))
    exact = (w(sde, every) * _expected_linear_loss(sde, every.t, c, x0[:1].expand(N, 2))).mean().item()
    for importance in (False, True):
        g = torch.Generator().manual_seed(4)
        loss = denoising_loss(
            _linear_eps_model(c), sde, x0, weighting="elbo", time=DiscreteTime(N, importance), generator=g
        )
        se = loss.std().item() / math.sqrt(n)
        assert abs(loss.mean().item() - exact) < 4 * se, (importance, loss.mean().item(), exact, se)


def test_user_callable_weighting_and_lazy_public_names():
    sde, x = sd.VPSDE(), torch.randn(4, 2)
    draw = ContinuousTime().at(sde, torch.full((4,), 0.5))
    eps = torch.randn(4, 2)
    twice = denoising_loss(
        _linear_eps_model(), sde, x, weighting=lambda s, d: 2 * torch.ones_like(d.t), time=draw, noise=eps
    )
    once = sd.denoising_loss(_linear_eps_model(), sde, x, weighting="simple", time=draw, noise=eps)
    torch.testing.assert_close(twice, 2 * once)
    assert "likelihood" in sd.WEIGHTINGS
