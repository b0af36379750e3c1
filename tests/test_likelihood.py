"""Likelihoods against closed forms: probability-flow ODE, Hutchinson, discrete VLB, bits/dim."""

import math

import pytest
import torch

import scoresde as sd
from scoresde.likelihood import (
    bits_per_dim,
    dequantize,
    discretized_gaussian_log_likelihood,
    level_spacing,
    log_likelihood,
)


class ExactGMM(torch.nn.Module):
    """Diagonal Gaussian mixture; its marginal under a linear SDE is a mixture again, so the
    exact ε(x, t) = −σ(t) ∇log p_t(x) and log p_t(x) are closed forms (kept local to this test)."""

    def __init__(self, sde, weights, means, stds):
        super().__init__()
        self.sde = sde
        self.logw = torch.log(torch.as_tensor(weights, dtype=torch.float64))
        self.means = torch.as_tensor(means, dtype=torch.float64)  # (K, D)
        self.stds = torch.as_tensor(stds, dtype=torch.float64)  # (K, D)

    def _components(self, x, t):
        alpha, sigma = self.sde.marginal(t)
        m = alpha[:, None, None] * self.means  # (B, K, D)
        v = alpha[:, None, None] ** 2 * self.stds**2 + sigma[:, None, None] ** 2
        diff = x[:, None, :] - m
        logpk = -0.5 * (diff**2 / v + torch.log(2 * math.pi * v)).sum(-1) + self.logw
        return logpk, diff, v, sigma

    def log_prob(self, x, t):
        return torch.logsumexp(self._components(x, t)[0], dim=1)

    def forward(self, x, t):
        logpk, diff, v, sigma = self._components(x, t)
        r = torch.softmax(logpk, dim=1)
        score = -(r[..., None] * diff / v).sum(1)
        return -sigma[:, None] * score  # ε

    def sample(self, n, generator):
        k = torch.multinomial(self.logw.exp(), n, replacement=True, generator=generator)
        return self.means[k] + self.stds[k] * torch.randn(
            n, self.means.shape[1], generator=generator, dtype=torch.float64
        )


def gmm(sde, dim=2):
    torch.manual_seed(1)
    means = torch.tensor([[-1.0, 0.5], [1.2, -0.3], [0.2, 1.0]]).repeat(1, dim // 2)
    stds = torch.tensor([[0.3, 0.4], [0.5, 0.25], [0.35, 0.35]]).repeat(1, dim // 2)
    return ExactGMM(sde, [0.3, 0.5, 0.2], means, stds)


def test_ode_likelihood_matches_analytic_gmm():
    sde = sd.VPSDE()
    model = gmm(sde)
    g = torch.Generator().manual_seed(0)
    x = model.sample(16, g)
    eps = 1e-5
    nll, info = log_likelihood(model, sde, x, method="ode", t_min=eps, return_info=True)
    exact = -model.log_prob(x, torch.full((16,), eps, dtype=torch.float64))
    err = (nll - exact).abs().max().item() / x.shape[1]
    assert err < 0.01, f"max |ODE − analytic| = {err:.4g} nats/dim"
    assert info.nfe > 10 and info.details["divergence"] == "exact"
    assert torch.allclose(info.terms["prior"] + info.terms["divergence"], nll)


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(noise):
    sde = sd.VPSDE()
    model = gmm(sde, dim=4)
    g = torch.Generator().manual_seed(3)
    x = model.sample(2, g)
    exact = log_likelihood(model, sde, x, divergence="exact", rtol=1e-4, atol=1e-4)
    m = 64  # copies of each point, each solved with its own fixed probe
    xs = x.repeat_interleave(m, 0)
    est = log_likelihood(model, sde, xs, divergence="hutchinson", probe_noise=noise, generator=g, rtol=1e-4, atol=1e-4)
    est = est.reshape(2, m)
    mean, se = est.mean(1), est.std(1) / math.sqrt(m)
    assert (est.std(1) > 1e-3).all(), "Hutchinson estimates should vary with the probe"
    # stated tolerance: 4 standard errors plus the solver tolerance
    assert ((mean - exact).abs() < 4 * se + 0.01).all(), (mean, exact, se)


def test_hutchinson_probes_reduce_variance():
    sde = sd.VPSDE()
    model = gmm(sde, dim=4)
    g = torch.Generator().manual_seed(5)
    x = model.sample(1, g).repeat(32, 1)
    one = log_likelihood(model, sde, x, divergence="hutchinson", probes=1, generator=g, rtol=1e-4, atol=1e-4)
    four = log_likelihood(model, sde, x, divergence="hutchinson", probes=4, generator=g, rtol=1e-4, atol=1e-4)
    assert four.var() < one.var()


def gaussian_model(sde, mu, s):
    """Exact ε for data N(mu, diag s²): ε = −σ ∇log p_t = σ (x − α mu)/(α² s² + σ²)."""

    def model(x, t):
        alpha, sigma = sde.marginal(t)
        alpha, sigma = alpha[:, None], sigma[:, None]
        return sigma * (x - alpha * mu) / (alpha**2 * s**2 + sigma**2)

    return model


def test_vlb_upper_bounds_nll_and_tightens_with_steps():
    # On a log-SNR grid (t_0 = 0, then uniform in λ from t_min) the discrete steps become fine
    # everywhere and the bound closes as N grows; DDPM's uniform-t grid does not (see below).
    sde = sd.VPSDE()
    mu, s = torch.tensor([0.5, -1.0, 0.2]).double(), torch.tensor([0.5, 0.8, 0.3]).double()
    model = gaussian_model(sde, mu, s)
    g = torch.Generator().manual_seed(0)
    x = mu + s * torch.randn(1000, 3, generator=g, dtype=torch.float64)
    exact = (0.5 * ((x - mu) / s) ** 2 + torch.log(s * math.sqrt(2 * math.pi))).sum(1)  # −log p_0(x)
    gaps = {}
    for n in (30, 100, 300, 1000):
        nll, info = log_likelihood(model, sde, x, method="vlb", steps=n, grid="log-snr", generator=g, return_info=True)
        assert torch.allclose(sum(info.terms.values()), nll)
        paired = nll - exact  # E over x ~ q of (VLB − NLL) >= KL(q ‖ p_θ) >= 0
        gaps[n] = (paired.mean().item(), paired.std().item() / math.sqrt(len(x)))
    for n, (gap, mc) in gaps.items():
        assert gap > -3 * mc, f"VLB below the exact NLL at N={n}: gap {gap:.4f} ± {mc:.4f}"
    assert gaps[30][0] > gaps[100][0] > gaps[300][0] > gaps[1000][0], gaps
    assert gaps[30][0] > 2.0 and gaps[1000][0] < 0.1 * x.shape[1], gaps


def test_uniform_grid_vlb_bounds_but_keeps_a_gap_near_t0():
    # DDPM's uniform grid: σ²(t) ∝ t near 0, so the first steps always have SNR ratios i/(i−1)
    # and the bound on continuous data keeps an O(D) gap (documented in log_likelihood).
    sde = sd.VPSDE()
    mu, s = torch.zeros(2, dtype=torch.float64), torch.full((2,), 0.5, dtype=torch.float64)
    model = gaussian_model(sde, mu, s)
    g = torch.Generator().manual_seed(0)
    x = s * torch.randn(1000, 2, generator=g, dtype=torch.float64)
    exact = (0.5 * (x / s) ** 2 + torch.log(s * math.sqrt(2 * math.pi))).sum(1)
    gap = (log_likelihood(model, sde, x, method="vlb", steps=1000, generator=g) - exact).mean().item()
    assert 0.2 < gap / 2 < 1.0, gap


@pytest.mark.parametrize("variance", ["small", "large"])
def test_vlb_terms_equal_closed_form_gaussian_kls(variance):
    # Gaussian data N(0, s²), exact ε: x̂_0(x_i) is the posterior mean, so E(x_0 − x̂_0)² is the
    # posterior variance V_i = s² s_i²/(a_i² s² + s_i²) and E_q L_{i−1} = ½[c_i² V_i/σ_i² + r − 1 − log r],
    # c_i = a_{i−1} β_i/s_i², r = β̃_i/σ_i² (Ho et al. 2020, eqs. 5–7).
    sde, n, sd0 = sd.VPSDE(), 50, 0.7
    model = gaussian_model(sde, torch.zeros(1, dtype=torch.float64), torch.full((1,), sd0, dtype=torch.float64))
    x = sd0 * torch.randn(20000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    _, info = log_likelihood(
        model,
        sde,
        x,
        method="vlb",
        steps=n,
        variance=variance,
        generator=torch.Generator().manual_seed(1),
        return_info=True,
    )
    ch = sde.discretize(n)
    a, s_, beta, bt = ch.alpha_bars.sqrt(), ch.sigmas, ch.betas, ch.posterior_variances
    i = torch.arange(2, n + 1)
    var = bt[i - 1] if variance == "small" else beta[i - 1]
    V = sd0**2 * s_[i] ** 2 / (a[i] ** 2 * sd0**2 + s_[i] ** 2)
    c = a[i - 1] * beta[i - 1] / s_[i] ** 2
    r = bt[i - 1] / var
    expected = 0.5 * (c**2 * V / var + r - 1 - torch.log(r))
    # each term is a mean over 20000 draws of a scaled χ²₁ (relative s.e. √2/√20000 = 1%); 5%
    assert torch.allclose(info.per_step[1:], expected, rtol=0.05, atol=1e-6)


def test_uniform_over_256_levels_is_8_bits_per_dim():
    # density uniform over the union of the 256 bins: p = 1/(256 Δ)^D; with dequantization the
    # discrete NLL bound is exact here (the density is constant on each bin)
    for levels, data_range, bits in ((256, (-1.0, 1.0), 8.0), (256, (0.0, 1.0), 8.0), (16, (0.0, 255.0), 4.0)):
        delta = level_spacing(levels, data_range)
        dim = 12
        density_nll = dim * math.log(levels * delta)
        discrete = density_nll - dim * math.log(delta)  # what log_likelihood adds with `levels`
        assert bits_per_dim(discrete, dim) == pytest.approx(bits, abs=1e-12)


def test_ode_dequantized_nll_bounds_the_discrete_nll():
    # Exact ε of N(0, 0.5² I): the ODE density is the true density, so with `levels` the result
    # must be E_u[−log p(x + Δ(u − ½))] − D log Δ >= −log ∫_bin p (Jensen), and close to it.
    sde = sd.VPSDE()
    mu, s = torch.zeros(3, dtype=torch.float64), torch.full((3,), 0.5, dtype=torch.float64)
    model = gaussian_model(sde, mu, s)
    levels = 16
    delta = level_spacing(levels, (-1.0, 1.0))
    k = torch.randint(3, levels - 3, (200, 3), generator=torch.Generator().manual_seed(0))
    x = (-1 + delta * k).double()
    nll, info = log_likelihood(
        model, sde, x, levels=levels, generator=torch.Generator().manual_seed(1), return_info=True
    )
    assert torch.allclose(info.terms["dequantization"], torch.full((200,), -3 * math.log(delta), dtype=torch.float64))
    normal = torch.distributions.Normal(0.0, 0.5)
    mass = normal.cdf(x + delta / 2) - normal.cdf(x - delta / 2)  # finite bins, exact
    diff = nll - (-torch.log(mass).sum(1))
    se = diff.std().item() / math.sqrt(len(diff))
    assert -3 * se < diff.mean().item() < 3 * se + 0.02, (diff.mean().item(), se)
    assert bits_per_dim(nll.mean().item(), 3) == pytest.approx(nll.mean().item() / (3 * math.log(2)))


@pytest.mark.parametrize("levels,data_range", [(256, (-1.0, 1.0)), (17, (0.0, 16.0)), (4, (-3.0, 5.0))])
def test_discretized_gaussian_masses_sum_to_one(levels, data_range):
    delta = level_spacing(levels, data_range)
    grid = data_range[0] + delta * torch.arange(levels, dtype=torch.float64)
    for mean, std in ((0.3, 0.01), (-0.9, 0.5), (100.0, 2.0), (0.0, 1e-4)):
        logp = discretized_gaussian_log_likelihood(
            grid, torch.full_like(grid, mean), torch.full_like(grid, std), levels, data_range
        )
        assert torch.isfinite(logp).all() or std < 1e-3
        assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)


def test_dequantize_stays_in_own_bin_and_checks_grid():
    levels = 256
    delta = level_spacing(levels)
    x = -1 + delta * torch.randint(0, levels, (1000, 4), generator=torch.Generator().manual_seed(0)).double()
    y = dequantize(x, levels, generator=torch.Generator().manual_seed(1))
    assert ((y - x).abs() <= delta / 2).all() and (y - x).std() > delta / 4
    with pytest.raises(ValueError, match="not quantized"):
        dequantize(x + delta / 2, levels)


def test_vlb_with_discretized_decoder_bounds_the_discrete_entropy():
    # data: N(0, 0.5²) rounded to 8 levels on [−1, 1]; the VLB with the discretized decoder is an
    # upper bound on a discrete NLL, so in expectation it is >= the data's entropy (in nats)
    sde = sd.VPSDE()
    levels, std = 8, 0.5
    delta = level_spacing(levels)
    grid = -1 + delta * torch.arange(levels, dtype=torch.float64)
    mass = discretized_gaussian_log_likelihood(grid, torch.zeros_like(grid), torch.full_like(grid, std), levels).exp()
    entropy = -(mass * mass.log()).sum().item() * 2  # two independent dimensions
    g = torch.Generator().manual_seed(0)
    x = grid[torch.multinomial(mass, 2 * 2000, replacement=True, generator=g)].reshape(2000, 2)
    model = gaussian_model(sde, torch.zeros(2, dtype=torch.float64), torch.full((2,), std, dtype=torch.float64))
    nll, info = log_likelihood(model, sde, x, method="vlb", steps=100, levels=levels, generator=g, return_info=True)
    assert "discretized" in info.details["decoder"]
    assert (info.terms["decoder"] >= 0).all()  # −log of a probability
    se = nll.std().item() / math.sqrt(len(nll))
    assert nll.mean().item() > entropy - 3 * se
    bpd = bits_per_dim(nll.mean().item(), 2)
    assert entropy / (2 * math.log(2)) - 0.1 < bpd < 3.0 + 2.0  # bounded by a few bits, above the entropy


def test_bad_input_is_refused_with_names():
    sde = sd.VPSDE()
    model = gaussian_model(sde, torch.zeros(2), torch.ones(2))
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match=r"unknown likelihood method 'exact'.*ode, vlb"):
        log_likelihood(model, sde, x, method="exact")
    with pytest.raises(ValueError, match="unknown divergence"):
        log_likelihood(model, sde, x, divergence="jacobian")
    with pytest.raises(ValueError, match="levels must be an integer"):
        log_likelihood(model, sde, x, levels=1)
    with pytest.raises(ValueError, match="steps must be"):
        log_likelihood(model, sde, x, method="vlb", steps=1)
    with pytest.raises(ValueError, match="model returned shape"):
        log_likelihood(lambda x, t: x[:, :1], sde, x)
    with pytest.raises(ValueError, match="no autograd graph"):  # would silently drop the score term
        log_likelihood(lambda x, t: model(x.detach(), t), sde, x)
    assert sd.log_likelihood is log_likelihood


def test_options_take_the_names_of_ode_nll_and_vlb_nll_and_no_others():
    sde = sd.VPSDE()
    model = gmm(sde)
    x = model.sample(3, torch.Generator().manual_seed(2))
    # the accepted names reach the estimator: the same numbers as calling it directly
    ode = {"t_min": 1e-3, "rtol": 1e-4, "atol": 1e-4, "ode_method": "RK23", "divergence": "hutchinson"}
    ode |= {"probes": 2, "probe_noise": "gaussian", "levels": None, "data_range": (-1.0, 1.0)}
    a = log_likelihood(model, sde, x, "ode", generator=torch.Generator().manual_seed(1), **ode)
    b = sd.ode_nll(model, sde, x, generator=torch.Generator().manual_seed(1), **ode)
    assert torch.equal(a, b)
    _, info = log_likelihood(model, sde, x, "ode", return_info=True, **ode)
    assert info.details["t_min"] == 1e-3 and info.details["ode_method"] == "RK23"
    vlb = {"steps": 20, "variance": "large", "grid": "log-snr", "t_min": 1e-3}
    c = log_likelihood(model, sde, x, "vlb", generator=torch.Generator().manual_seed(1), **vlb)
    assert torch.equal(c, sd.vlb_nll(model, sde, x, generator=torch.Generator().manual_seed(1), **vlb))
    # the old second names of the ODE's options are unknown names now
    for old in ("eps", "solver", "noise"):
        with pytest.raises(TypeError, match=rf"method='ode'\) got unknown option\(s\) {old}; accepted: .*ode_method"):
            log_likelihood(model, sde, x, "ode", **{old: 1})
    # an option of the other method is refused, not ignored
    with pytest.raises(TypeError, match=r"unknown option\(s\) steps \(steps: method='vlb' only\); accepted: atol"):
        log_likelihood(model, sde, x, "ode", steps=10)
    with pytest.raises(
        TypeError, match=r"divergence, rtol \(divergence, rtol: method='ode' only\); accepted: data_range"
    ):
        log_likelihood(model, sde, x, "vlb", rtol=1e-3, divergence="exact")
    with pytest.raises(TypeError, match=r"unknown option\(s\) nope; accepted: .*variance"):
        log_likelihood(model, sde, x, "vlb", nope=1)


@pytest.mark.parametrize(
    "sde", [sd.VPSDE(), sd.SubVPSDE(), sd.VESDE(sigma_min=0.01, sigma_max=50.0)], ids=["vp", "subvp", "ve"]
)
def test_ode_likelihood_with_analytic_models_every_prediction(sde):
    # scoresde.analytic's tight 2-D mixture: the exact model gives the analytic −log p_ε(x) within
    # 0.01 nats/dim under every SDE; on VP its ε/score/x0/v forms give the same NLL
    data = sd.analytic.gmm()
    x = data.sample(8, torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = -data.log_prob(x, sde, torch.tensor(1e-5, dtype=torch.float64))
    kinds = ("eps", "score", "x0", "v") if isinstance(sde, sd.VPSDE) and not isinstance(sde, sd.SubVPSDE) else ("eps",)
    results = {p: log_likelihood(data.model(sde, p), sde, x, prediction=p) for p in kinds}
    for p, nll in results.items():
        assert (nll - exact).abs().max().item() / 2 < 0.01, p
        assert torch.allclose(nll, results["eps"], atol=1e-6), p
