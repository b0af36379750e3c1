"""Steering a solve with observations (scoresde.samplers.steering): imputation by replacement,
RePaint resampling and SDEdit, checked against closed forms on exact Gaussian-mixture models.

Exact answers. For a mixture Σ_k w_k N(μ_k, diag s_k²), observing coordinate 1 at x_1 = a leaves
x_2 | x_1 = a a 1-D mixture with weights ∝ w_k N(a; μ_k1, s_k1²) and components N(μ_k2, s_k2²).

Replacement (x_obs noised to t_k after every step) is not this conditional in general: the score of
p_t at a noised x_obs is not the conditional score (Chung et al. 2022). It is exact where the
observation tells the components apart at every noise level and the components x_1 cannot tell
apart share their x_1 law — :data:`SEPARATED` below, where the test holds every solver to the
Monte Carlo floor. On the default ``gmm`` it is not: :func:`test_replacement_is_biased_on_the_default_gmm`
records the failure (strict xfail; benchmarks/results/steering.md has the numbers per solver).

Monte Carlo tolerances (n = 4000 samples, fixed seeds), measured over 2000 exact draws of n = 4000
against a 200k exact reference for SEPARATED at a = −3.1 (0.6 N(−1, .15²) + 0.4 N(1, .15²)):
W1 median 0.012, 99.9% quantile 0.049, so ``W1_TOL`` = 0.05; P(x_2 > 0) has s.e. 0.0076, so
``WEIGHT_TOL`` = 0.03 (4 s.e.). ODE solvers sit 0.011 (1.5 s.e.) above the exact 0.4 at 25 steps in
every seed (the replacement bias of a deterministic solver), inside the same tolerance.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import wasserstein_distance

import scoresde as sd
from scoresde.analytic import GaussianMixture
from scoresde.metrics import sliced_wasserstein

N = 4000
W1_TOL = 0.05
WEIGHT_TOL = 0.03

# components 0 and 1 share their x_1 law (so x_1 cannot, and need not, tell them apart); component 2
# lies 6 away in x_1 (so a noised x_1 excludes it long before x_2 commits to a mode)
SEPARATED = GaussianMixture(
    [0.3, 0.2, 0.5], [[-3.0, -1.0], [-3.0, 1.0], [3.0, 0.0]], [[0.2, 0.15], [0.2, 0.15], [0.2, 0.3]]
)


def conditional_weights(data: GaussianMixture, a: float) -> torch.Tensor:
    """P(component k | x_1 = a) ∝ w_k N(a; μ_k1, s_k1²)."""
    mu, s = data.means[:, 0], data.stds[:, 0]
    return torch.softmax(torch.log(data.weights) - 0.5 * ((a - mu) / s) ** 2 - torch.log(s), 0)


def exact_conditional(data: GaussianMixture, a: float, n: int, seed: int) -> torch.Tensor:
    """n exact draws of x_2 | x_1 = a."""
    g = torch.Generator().manual_seed(seed)
    k = torch.multinomial(conditional_weights(data, a), n, replacement=True, generator=g)
    return data.means[k, 1] + data.stds[k, 1] * torch.randn(n, generator=g, dtype=torch.float64)


def impute(data, a, solver, steps, seed=0, **kw):
    sde = sd.VPSDE()
    known, mask = torch.tensor([a, 0.0]), torch.tensor([1.0, 0.0])
    g = torch.Generator().manual_seed(seed)
    return sd.sample(data.model(sde), sde, (N, 2), solver, steps, generator=g, known=known, mask=mask, **kw)


@pytest.mark.parametrize(
    ("solver", "steps"),
    [("ancestral", 100), ("euler-maruyama", 100), ("sde-dpm-solver++", 50), ("dpm-solver++", 25), ("unipc", 25)],
)
def test_imputation_matches_the_exact_conditional(solver, steps):
    a = -3.1
    x = impute(SEPARATED, a, solver, steps)
    assert (x[:, 0] == a).all()  # the observation, exactly
    x2 = x[:, 1].double()
    exact = exact_conditional(SEPARATED, a, 200_000, seed=1)
    assert wasserstein_distance(x2.numpy(), exact.numpy()) < W1_TOL
    # weights: 0.6 at −1, 0.4 at +1, and nothing of component 2 (at 0, excluded by x_1)
    assert abs((x2 > 0).double().mean().item() - 0.4) < WEIGHT_TOL
    assert (x2.abs() < 0.5).double().mean().item() < 0.005


@pytest.mark.xfail(
    strict=True,
    reason="replacement is not the conditional: on gmm at x_1 = 1.0 the exact x_2 is N(1.0, 0.06²) "
    "(component 1 only), but x_2 commits to a mode while the noised x_1 cannot yet tell component 1 "
    "(x_1 = 1.0) from component 2 (x_1 = 1.4): about half the samples land at x_2 = −1 (W1 ≈ 1.0)",
)
def test_replacement_is_biased_on_the_default_gmm():
    data = sd.analytic.gmm()
    x2 = impute(data, 1.0, "ancestral", 200)[:, 1].double()
    exact = exact_conditional(data, 1.0, 200_000, seed=1)
    assert wasserstein_distance(x2.numpy(), exact.numpy()) < W1_TOL


@pytest.mark.parametrize("solver", ["ancestral", "ddim", "heun", "unipc", "pc", "ode", "torchsde"])
def test_the_observed_part_follows_the_forward_marginal_at_every_grid_time(solver):
    """Song et al. App. I.2: after each step the observed value is a draw of α(t_k) a + σ(t_k) z."""
    a, steps = 0.7, 8
    grid = {"grid": "uniform"} if solver == "torchsde" else {}
    x, info = impute(sd.analytic.gmm(), a, solver, steps, return_info=True, trajectory=True, **grid)
    path = info.trajectory[:, :, 0].double()  # (N+1, n): t_N … t_0
    assert path.shape == (steps + 1, N)
    alpha, sigma = sd.VPSDE().marginal(info.times.flip(0))
    assert torch.allclose(path.mean(1), alpha * a, atol=4 / math.sqrt(N))
    assert torch.allclose(path.std(1), sigma, rtol=0.05, atol=1e-12)
    assert (x[:, 0] == a).all()


def test_resample_matches_too_and_costs_one_evaluation_per_pass():
    steps, K = 50, 3
    x, info = impute(SEPARATED, -3.1, "dpm-solver++", steps, resample=K, return_info=True)
    plain = impute(SEPARATED, -3.1, "dpm-solver++", steps, return_info=True)[1]
    assert info.nfe == plain.nfe + (K - 1) * (steps - 1)  # every step but the last, K − 1 passes
    assert info.options["resample"] == K
    x2 = x[:, 1].double()
    exact = exact_conditional(SEPARATED, -3.1, 200_000, seed=1)
    assert wasserstein_distance(x2.numpy(), exact.numpy()) < W1_TOL
    assert abs((x2 > 0).double().mean().item() - 0.4) < WEIGHT_TOL


def test_per_sample_observations_in_chunks_with_labels():
    """Rows observe different values (half at x_1 = −3.1, half at 3.0), solved in chunks of 1000; given a
    class y = k the data are one Gaussian with independent coordinates, so x_2 | x_1, y is N(μ_k2, s_k2²)."""
    sde = sd.VPSDE()
    known = torch.zeros(N, 2)
    known[: N // 2, 0], known[N // 2 :, 0] = -3.1, 3.0
    mask = torch.tensor([[1.0, 0.0]])
    g = torch.Generator().manual_seed(3)
    model = SEPARATED.model(sde)
    x = sd.sample(model, sde, (N, 2), "euler-maruyama", 100, generator=g, known=known, mask=mask, batch_size=1000)
    assert torch.equal(x[:, 0], known[:, 0])
    left, right = x[: N // 2, 1], x[N // 2 :, 1]
    assert abs((left > 0).double().mean().item() - 0.4) < 2 * WEIGHT_TOL  # n/2 samples: twice the tolerance
    assert abs(right.mean().item()) < 4 * 0.3 / math.sqrt(N // 2) and abs(right.std().item() / 0.3 - 1) < 0.06
    # a class and guidance: component 1 given x_1 = −3.1 is N(1, 0.15²) in x_2
    g = torch.Generator().manual_seed(4)
    x = sd.sample(
        model, sde, (N, 2), "sde-dpm-solver++", 50, generator=g, known=known[:1], mask=mask, y=1, guidance=1.0
    )
    assert abs(x[:, 1].mean().item() - 1.0) < 0.01 and abs(x[:, 1].std().item() / 0.15 - 1) < 0.06


@pytest.mark.parametrize(("solver", "steps"), [("ancestral", 50), ("sde-dpm-solver++", 25), ("dpm-solver++", 20)])
def test_sdedit_from_data_keeps_the_data_law_and_stays_near_init(solver, steps):
    """From exact data x0, x_{t_start} = α x0 + σ z is exactly p_{t_start}, so with the exact model the
    output law is the data law at every strength (Meng et al. 2022); the output moves away from init as
    strength grows, and at strength 0.05 it stays within σ(t_start)·√2 of it on average."""
    data, sde = sd.analytic.gmm(), sd.VPSDE()
    model = data.model(sde)
    x0 = data.sample(N, torch.Generator().manual_seed(7))
    ref = data.sample(N, torch.Generator().manual_seed(1))
    distances = []
    for strength in (0.05, 0.3, 1.0):
        g = torch.Generator().manual_seed(0)
        x, info = sd.sample(
            model, sde, (N, 2), solver, steps, generator=g, init=x0, strength=strength, return_info=True
        )
        assert info.times[-1].item() == pytest.approx(strength) and info.times.numel() == steps + 1
        assert info.options["strength"] == pytest.approx(strength)
        # SW2 between two exact draws of 4000 (200 seeds): mean 0.089, 99% quantile 0.136, max 0.136
        assert sliced_wasserstein(x, ref, 200, torch.Generator().manual_seed(0)) < 0.15
        modes = torch.bincount(data.responsibilities(x).argmax(1), minlength=data.K) / N
        assert (modes - data.weights).abs().max() < WEIGHT_TOL  # s.e. of the largest weight 0.0072
        distances.append((x - x0).norm(dim=1).mean().item())
    assert distances[0] < sde.sigma(0.05).item() * math.sqrt(2)
    assert distances[0] < distances[1] < distances[2]


def test_sdedit_with_an_explicit_grid_starts_at_its_last_time():
    data, sde = sd.analytic.gmm(), sd.VPSDE()
    grid = torch.linspace(0.0, 0.4, 11, dtype=torch.float64)
    x0 = data.sample(8, torch.Generator().manual_seed(0))
    _, info = sd.sample(data.model(sde), sde, (8, 2), "ddim", grid=grid, init=x0, return_info=True)
    assert info.options["strength"] == pytest.approx(0.4) and torch.equal(info.times, grid)
    with pytest.raises(ValueError, match=r"explicit grid ends at t=0\.4"):
        sd.sample(data.model(sde), sde, (8, 2), "ddim", grid=grid, init=x0, strength=0.5)


def _call(**kw):
    sde = sd.VPSDE()
    return sd.sample(sd.analytic.gmm().model(sde), sde, (4, 2), "ddim", 4, **kw)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"init": torch.zeros(4, 2), "strength": 0.0}, r"strength must lie in \(0, 1\]"),
        ({"init": torch.zeros(4, 2), "strength": 1.5}, r"strength must lie in \(0, 1\]"),
        ({"init": torch.zeros(4, 2), "strength": math.nan}, r"strength must lie in \(0, 1\]"),
        ({"strength": 0.5}, "give init= as well"),
        ({"init": torch.zeros(4, 2)}, "init= needs strength="),
        ({"init": torch.zeros(3, 2), "strength": 0.5}, r"init has shape \(3, 2\), but the samples have shape \(4, 2\)"),
        ({"known": torch.zeros(2), "mask": torch.ones(3)}, r"mask has shape \(3,\), .*\(2,\).*\(4, 2\)"),
        ({"known": torch.zeros(2), "mask": torch.ones(4)}, r"mask has shape \(4,\), .*\(2,\).*\(4, 2\)"),
        ({"known": torch.zeros(5, 2), "mask": torch.tensor([1, 0])}, r"known has shape \(5, 2\)"),
        ({"known": torch.zeros(2), "mask": torch.ones(2)}, "observes every value leaves nothing to sample"),
        ({"known": torch.zeros(2), "mask": torch.zeros(4, 2)}, "observes nothing"),
        ({"known": torch.zeros(2), "mask": torch.tensor([0.5, 0.0])}, "mask must hold 1 where"),
        ({"known": torch.tensor([math.nan, 0.0]), "mask": torch.tensor([1, 0])}, "known must be finite where"),
        ({"known": torch.zeros(2)}, "known= needs mask="),
        ({"mask": torch.tensor([1, 0])}, "mask= needs known="),
        ({"resample": 2}, "give known= and mask= as well"),
        ({"known": torch.zeros(2), "mask": torch.tensor([1, 0]), "resample": 0}, "resample must be an integer >= 1"),
        ({"init": torch.zeros(2), "strength": 0.0005, "t_min": 1e-3}, "not above the grid's end"),
    ],
)
def test_bad_observations_are_refused_with_a_sentence(kw, message):
    with pytest.raises(ValueError, match=message):
        _call(**kw)


def test_images_with_a_mask_of_one_channel_and_resampling_on_every_solver():
    """Rank-agnostic: (n, 3, 4, 4) samples, a (4, 4) mask broadcast over samples and channels (keep the top
    half), a per-sample x_obs; every solver, RePaint included, returns the observed pixels exactly."""
    shape = (2, 3, 4, 4)
    known = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(4, 4)
    mask[:2] = 1
    data, sde = sd.analytic.Gaussian(torch.zeros(3, 4, 4), 0.5), sd.VPSDE()
    for solver in sd.SOLVERS:
        grid = {"grid": "uniform"} if solver == "torchsde" else {}
        g = torch.Generator().manual_seed(1)
        x, info = sd.sample(data.model(sde), sde, shape, solver, 4, generator=g, known=known, mask=mask, resample=2,
                            return_info=True, **grid)  # fmt: skip
        assert torch.equal(x[:, :, :2], known[:, :, :2]) and torch.isfinite(x).all(), solver
        assert not torch.equal(x[:, :, 2:], known[:, :, 2:])
        assert info.options["resample"] == 2 and (solver != "ancestral" or info.nfe == 4 + 3)


def test_nan_in_unobserved_entries_is_ignored():
    known = torch.tensor([0.5, math.nan])
    x = _call(known=known, mask=torch.tensor([True, False]), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(x).all() and (x[:, 0] == 0.5).all()
