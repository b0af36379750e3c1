"""Analytic ground truth: normalization, score = ∇log p_t, marginals vs Monte Carlo, sampling."""

from __future__ import annotations

import math

import pytest
import torch

import scoresde as sd
from scoresde.analytic import Gaussian, GaussianMixture, gaussian, gmm
from scoresde.param import convert


def _mixture_4d() -> GaussianMixture:
    # data of shape (1, 2, 2): exercises per-component diagonal covariances on a rank-3 sample
    means = torch.tensor([[0.5, -1.0, 0.2, 1.0], [-0.7, 0.3, 1.1, -0.4]]).reshape(2, 1, 2, 2)
    stds = torch.tensor([[0.3, 0.2, 0.5, 0.1], [0.15, 0.4, 0.25, 0.3]]).reshape(2, 1, 2, 2)
    return GaussianMixture([0.35, 0.65], means, stds)


@pytest.mark.parametrize("t", [None, 0.05, 0.5])
def test_density_integrates_to_one(t):
    data, sde = gmm(), sd.VPSDE()
    u = torch.linspace(-4, 4, 801, dtype=torch.float64)
    xx, yy = torch.meshgrid(u, u, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], 1)
    p = data.log_prob(pts, sde, t).exp()
    mass = p.sum().item() * (u[1] - u[0]).item() ** 2
    assert mass == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.SubVPSDE(), sd.VESDE()], ids=lambda s: type(s).__name__)
def test_score_is_the_gradient_of_log_prob(sde):
    data = _mixture_4d()
    x = torch.randn(6, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.tensor([0.01, 0.1, 0.3, 0.5, 0.8, 1.0], dtype=torch.float64)
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(data.log_prob(x, sde, t).sum(), x)
    torch.testing.assert_close(data.score(x.detach(), sde, t), grad, rtol=1e-10, atol=1e-10)
    _, sigma = sde.marginal(t)
    torch.testing.assert_close(data.eps(x.detach(), sde, t), -sigma[:, None, None, None] * grad)


def test_marginal_log_prob_matches_monte_carlo_convolution():
    """p_t(x) = E_{x_0 ~ p_0} N(x; α x_0, σ² I), estimated with 400k data samples (rel. error ≲ 1%)."""
    data, sde = gmm(), sd.VPSDE()
    t = 0.1
    alpha, sigma = (v.item() for v in sde.marginal(torch.tensor(t, dtype=torch.float64)))
    x0 = data.sample(400_000, torch.Generator().manual_seed(1), dtype=torch.float64)
    queries = torch.tensor([[0.0, 0.0], [-1.1, -0.7], [0.9, 0.9], [0.5, -0.5]], dtype=torch.float64)
    d2 = (queries[:, None, :] - alpha * x0[None]).pow(2).sum(-1)
    mc = torch.exp(-0.5 * d2 / sigma**2).mean(1) / (2 * math.pi * sigma**2)
    exact = data.log_prob(queries, sde, t).exp()
    torch.testing.assert_close(mc, exact, rtol=0.03, atol=0)


def test_gaussian_log_prob_is_the_closed_form():
    data, sde = gaussian(), sd.VPSDE()
    x = torch.randn(5, 2, dtype=torch.float64)
    t = 0.3
    mean, var = data.marginal_moments(sde, t)
    expected = (-0.5 * ((x - mean) ** 2 / var + torch.log(2 * math.pi * var))).sum(1)
    torch.testing.assert_close(data.log_prob(x, sde, t), expected)


def test_samples_have_the_right_moments_and_mode_weights():
    data = gmm()
    n = 200_000
    x = data.sample(n, torch.Generator().manual_seed(2), dtype=torch.float64)
    var = data.variance()
    assert ((x.mean(0) - data.mean()).abs() < 5 * (var / n).sqrt()).all()
    assert ((x.var(0) / var - 1).abs() < 5 * math.sqrt(2 / n) * 2).all()  # ×2: heavier tails than a Gaussian
    counts = data.responsibilities(x).argmax(1).bincount(minlength=data.K).double() / n
    w = data.weights
    assert ((counts - w).abs() < 5 * (w * (1 - w) / n).sqrt() + 1e-3).all()


@pytest.mark.parametrize("kind", ["score", "x0", "v"])
def test_model_predictions_are_consistent(kind):
    data, sde = _mixture_4d(), sd.VPSDE()
    x = torch.randn(4, 1, 2, 2, dtype=torch.float64)
    t = torch.tensor([0.05, 0.2, 0.6, 0.9], dtype=torch.float64)
    alpha, sigma = (v[:, None, None, None] for v in sde.marginal(t))
    eps = data.model(sde, "eps")(x, t)
    torch.testing.assert_close(data.model(sde, kind)(x, t), convert(eps, "eps", kind, x, alpha, sigma))
    if kind == "x0":  # Tweedie: x̂_0 = E[x_0 | x_t], written from the responsibilities directly
        r = data.responsibilities(x, sde, t)
        mu, s2 = data.means.flatten(1), data.stds.flatten(1) ** 2
        a, sg = alpha.flatten(), sigma.flatten()
        v = a[:, None, None] ** 2 * s2 + sg[:, None, None] ** 2
        post = mu + (a[:, None, None] * s2 / v) * (x.flatten(1)[:, None] - a[:, None, None] * mu)
        torch.testing.assert_close(data.model(sde, "x0")(x, t).flatten(1), (r[..., None] * post).sum(1))


def test_default_data_sets():
    data = gmm()
    assert data.data_shape == (2,) and data.K == 6
    assert len(set(data.weights.tolist())) == 6  # unequal weights
    assert data.stds.max() <= 0.15  # tight modes
    assert gaussian().data_shape == (2,)


def test_bad_input():
    with pytest.raises(ValueError, match="weights must be positive"):
        GaussianMixture([0.5, -0.5], [[0.0], [1.0]], [[1.0], [1.0]])
    with pytest.raises(ValueError, match="K = len\\(weights\\) = 2"):
        GaussianMixture([0.5, 0.5], [[0.0, 1.0, 2.0]], 1.0)
    with pytest.raises(ValueError, match="stds must be positive"):
        Gaussian([0.0, 0.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="stds must broadcast"):
        Gaussian([0.0, 0.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"x must have shape \(batch, \*\(2,\)\)"):
        gmm().log_prob(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="unknown prediction"):
        gmm().model(sd.VPSDE(), "noise")


# --------------------------------------------------------------------------- components as classes


@pytest.mark.parametrize("prediction", ["eps", "score", "x0", "v"])
@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.VESDE()], ids=lambda s: type(s).__name__)
def test_conditional_model_is_the_components_gaussian_model(sde, prediction):
    data = _mixture_4d()
    model = data.model(sde, prediction)
    assert model.num_classes == data.K == 2
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 1, 2, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([0.01, 0.1, 0.3, 0.5, 0.8, 1.0], dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1, 0, 2])  # 2 = the null label: the full mixture
    out = model(x, t, y=y)
    for k in range(data.K):
        single = Gaussian(data.means[k], data.stds[k]).model(sde, prediction)
        rows = y == k
        torch.testing.assert_close(out[rows], single(x[rows], t[rows]), rtol=1e-12, atol=1e-12)
    full = y == data.K
    torch.testing.assert_close(out[full], model(x[full], t[full]), rtol=0, atol=0)
    # y=None is exactly the unconditional model of before
    torch.testing.assert_close(model(x, t), model(x, t, y=torch.full((6,), data.K)), rtol=0, atol=0)


def test_conditional_eps_is_closed_form_and_mixes_to_the_unconditional_one():
    # ε*(x,t) = Σ_k P(k | x_t) ε*(x,t|k): Tweedie's formula is linear in the posterior over components
    data, sde = gmm(), sd.VPSDE()
    model = data.model(sde, "eps")
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.full((5,), 0.3, dtype=torch.float64)
    r = data.responsibilities(x, sde, t)
    per_class = torch.stack([model(x, t, y=torch.full((5,), k)) for k in range(data.K)], 1)  # (B, K, 2)
    torch.testing.assert_close((r[..., None] * per_class).sum(1), model(x, t), rtol=1e-10, atol=1e-12)
    alpha, sigma = sde.marginal(t[:1])
    k = 2
    expected = sigma * (x - alpha * data.means[k]) / (alpha**2 * data.stds[k] ** 2 + sigma**2)
    torch.testing.assert_close(per_class[:, k], expected, rtol=1e-12, atol=1e-12)


def test_conditional_model_refuses_bad_labels():
    model = gmm().model(sd.VPSDE())
    x, t = torch.zeros(3, 2), torch.full((3,), 0.5)
    with pytest.raises(ValueError, match=r"y must lie in 0 … 6 .*got values in \[0, 7\]"):
        model(x, t, y=torch.tensor([0, 7, 1]))
    with pytest.raises(TypeError, match="integer class labels"):
        model(x, t, y=torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"shape \(batch,\) = \(3,\), got \(2,\)"):
        model(x, t, y=torch.tensor([0, 1]))


def test_gmm_hard_modes_are_separated_and_weighted():
    """Nine modes; true samples are assigned to their own mode (mode error ≈ 0 for exact samples)."""
    data = sd.analytic.gmm_hard()
    assert data.K == 9 and len(set(data.weights.tolist())) >= 8
    x = data.sample(20_000, torch.Generator().manual_seed(0), dtype=torch.float64)
    counts = data.responsibilities(x).argmax(1).bincount(minlength=data.K).double() / len(x)
    assert 0.5 * (counts - data.weights).abs().sum() < 0.02
    assert data.log_prob(x).isfinite().all()
