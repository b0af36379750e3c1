"""Samplers against closed forms: Gaussian moments, the DDPM loop, equivalences, seeds, errors."""

from __future__ import annotations

import math

import pytest
import torch

import scoresde as sd
from scoresde.analytic import Gaussian, GaussianMixture

SOLVERS = list(sd.SOLVERS)
DATA = Gaussian([0.5, -1.0], [0.3, 1.5])
N_MC = 4000


def _cheap_gaussian_eps(sde, data: Gaussian = DATA):
    """ε* of a Gaussian written out with no argument checks: cheap enough for thousands of steps."""
    mean, std = data.means[0].flatten(), data.stds[0].flatten()

    def model(x, t):
        t = t.double()
        alpha, sigma = torch.exp(sde._log_alpha(t))[:, None], sde._sigma(t)[:, None]
        var = alpha**2 * std**2 + sigma**2
        return (sigma / var * (x.double().flatten(1) - alpha * mean)).reshape(x.shape).to(x.dtype)

    return model


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _check_moments(x: torch.Tensor, data: Gaussian, bias: float, what: str) -> None:
    """Sample mean/variance vs the data's, within 5 Monte Carlo standard errors plus a stated bias."""
    x = x.double().flatten(1)
    n = x.shape[0]
    mu, var = data.means[0].flatten(), data.stds[0].flatten() ** 2
    se_mean = (var / n).sqrt()
    assert ((x.mean(0) - mu).abs() <= 5 * se_mean + bias * var.sqrt()).all(), f"{what}: mean {x.mean(0)} vs {mu}"
    rel = x.var(0) / var - 1
    assert (rel.abs() <= 5 * math.sqrt(2 / n) + 2 * bias).all(), f"{what}: variance ratio - 1 = {rel}"


# (steps, options) at which each solver reproduces the Gaussian within the stated bias
MOMENT_SETTINGS = {
    "ancestral": (200, {}),
    "euler-maruyama": (200, {}),
    "reverse-diffusion": (200, {}),
    "pc": (100, {}),
    "ode": (1, {}),
    "heun": (30, {}),
    "ddim": (200, {}),
    "dpm-solver++": (20, {"grid": "log-snr"}),
    "sde-dpm-solver++": (100, {}),
    "unipc": (20, {}),
    "torchsde": (200, {}),
}


@pytest.mark.parametrize("solver", SOLVERS)
def test_every_solver_reproduces_gaussian_moments(solver):
    sde = sd.VPSDE()
    steps, kw = MOMENT_SETTINGS[solver]
    x = sd.sample(_cheap_gaussian_eps(sde), sde, (N_MC, 2), solver, steps=steps, generator=_gen(1), **kw)
    _check_moments(x, DATA, bias=0.02, what=solver)


@pytest.mark.parametrize(
    ("sde", "solver", "steps"),
    [
        (sd.SubVPSDE(), "ancestral", 200),
        (sd.SubVPSDE(), "dpm-solver++", 20),
        (sd.VESDE(sigma_min=0.01, sigma_max=20.0), "ancestral", 200),
        (sd.VESDE(sigma_min=0.01, sigma_max=20.0), "ddim", 200),
        (sd.VESDE(sigma_min=0.01, sigma_max=20.0), "heun", 50),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, sd.SDE) else str(v),
)
def test_other_sdes_reproduce_gaussian_moments(sde, solver, steps):
    # the ODE solvers on VE / dpm-solver++ on sub-VP take their steps uniform in log-SNR
    grid = "log-snr" if solver != "ancestral" else "uniform"
    x = sd.sample(_cheap_gaussian_eps(sde), sde, (N_MC, 2), solver, steps=steps, generator=_gen(2), grid=grid)
    _check_moments(x, DATA, bias=0.02, what=f"{sde} {solver}")


def test_ancestral_full_chain_is_ddpm_algorithm_2():
    """Full 1000-step chain of the VP SDE == a hand-written Ho et al. Alg. 2 loop on its betas (float64)."""
    sde = sd.VPSDE()
    betas = sde.discretize(1000).betas  # DDPM's chain of this SDE (tests/test_discrete.py checks it)
    model = _cheap_gaussian_eps(sde)
    shape = (16, 2)
    x = sd.sample(model, sde, shape, "ancestral", steps=1000, generator=_gen(3), dtype=torch.float64)

    # Ho et al. (2020), Algorithm 2, with σ_t² = β̃_t, written from the betas alone
    N = 1000
    alphas = 1 - betas
    alpha_bars = torch.cumprod(alphas, 0)
    g = _gen(3)
    xt = torch.randn(shape, generator=g, dtype=torch.float64)
    for t in range(N, 0, -1):
        i = t - 1  # 0-based position of step t
        z = torch.randn(shape, generator=g, dtype=torch.float64) if t > 1 else torch.zeros(shape, dtype=torch.float64)
        eps = model(xt, torch.full((shape[0],), t / N, dtype=torch.float64))
        var = (1 - alpha_bars[i - 1]) / (1 - alpha_bars[i]) * betas[i] if t > 1 else torch.tensor(0.0)
        xt = (xt - betas[i] / torch.sqrt(1 - alpha_bars[i]) * eps) / torch.sqrt(alphas[i]) + var.sqrt() * z
    torch.testing.assert_close(x, xt, rtol=1e-10, atol=1e-10)


def test_ddim_eta_one_is_ancestral_small():
    sde = sd.VPSDE()
    model = _cheap_gaussian_eps(sde)
    kw = {"steps": 50, "dtype": torch.float64, "grid": "uniform"}  # the same grid (their "auto" grids differ)
    a = sd.sample(model, sde, (2000, 2), "ancestral", generator=_gen(4), variance="small", **kw)
    b = sd.sample(model, sde, (2000, 2), "ddim", generator=_gen(4), eta=1.0, **kw)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)  # same formula, same noise: same samples
    # and in distribution, with independent noise: two-sample moment comparison
    c = sd.sample(model, sde, (2000, 2), "ddim", generator=_gen(5), eta=1.0, **kw)
    se = (a.var(0) / 2000 + c.var(0) / 2000).sqrt()
    assert ((a.mean(0) - c.mean(0)).abs() < 5 * se).all()
    assert ((a.var(0) / c.var(0) - 1).abs() < 5 * math.sqrt(4 / 2000)).all()


def test_torchsde_euler_agrees_with_euler_maruyama_in_distribution():
    from scipy.stats import ks_2samp

    sde = sd.VPSDE()
    data = GaussianMixture([0.3, 0.7], [[-1.0], [1.0]], [[0.3], [0.2]])
    model = data.model(sde)
    a = sd.sample(model, sde, (3000, 1), "euler-maruyama", steps=60, generator=_gen(6), denoise=False)
    b = sd.sample(model, sde, (3000, 1), "torchsde", steps=60, generator=_gen(7), denoise=False, method="euler")
    assert ks_2samp(a[:, 0].numpy(), b[:, 0].numpy()).pvalue > 1e-3
    # both are the same discrete scheme: the fraction in the right-hand mode matches the weight too
    for x in (a, b):
        assert abs((x[:, 0] > 0).double().mean().item() - 0.7) < 5 * math.sqrt(0.21 / 3000)
    # and the two-sample test has power: EM with far too few steps is told apart
    c = sd.sample(model, sde, (3000, 1), "euler-maruyama", steps=3, generator=_gen(8), denoise=False)
    assert ks_2samp(a[:, 0].numpy(), c[:, 0].numpy()).pvalue < 1e-6


@pytest.mark.parametrize("solver", SOLVERS)
def test_same_seed_same_samples_different_seed_different(solver):
    sde = sd.VPSDE()
    model = DATA.model(sde)
    steps = 5 if solver != "ode" else 1
    a = sd.sample(model, sde, (16, 2), solver, steps=steps, generator=_gen(8))
    b = sd.sample(model, sde, (16, 2), solver, steps=steps, generator=_gen(8))
    c = sd.sample(model, sde, (16, 2), solver, steps=steps, generator=_gen(9))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("solver", SOLVERS)
def test_every_prediction_kind_gives_the_same_samples(solver):
    """The exact model in eps/score/x0/v form: same seed, same samples (float64)."""
    sde = sd.VPSDE()
    steps = 8 if solver != "ode" else 1
    out = {
        kind: sd.sample(DATA.model(sde, kind), sde, (32, 2), solver, steps, kind, _gen(10), dtype=torch.float64)
        for kind in sd.PREDICTIONS
    }
    for kind in ("score", "x0", "v"):
        # the ODE solver is adaptive: its step choices may differ at rounding level, hence rtol 1e-6 there
        tol = 1e-6 if solver == "ode" else 1e-8
        torch.testing.assert_close(out[kind], out["eps"], rtol=tol, atol=tol, msg=f"{solver}: {kind} vs eps")


@pytest.mark.parametrize("solver", SOLVERS)
def test_rank_agnostic_points_and_images_are_the_same_computation(solver):
    """(B, 4) points and (B, 1, 2, 2) images of the same Gaussian give the same numbers."""
    mean, std = torch.tensor([0.5, -1.0, 0.0, 1.0]), torch.tensor([0.3, 1.5, 0.5, 1.0])
    flat, img = Gaussian(mean, std), Gaussian(mean.reshape(1, 2, 2), std.reshape(1, 2, 2))
    sde = sd.VPSDE()
    steps = 6 if solver != "ode" else 1
    a = sd.sample(flat.model(sde), sde, (8, 4), solver, steps, generator=_gen(11), dtype=torch.float64)
    b = sd.sample(img.model(sde), sde, (8, 1, 2, 2), solver, steps, generator=_gen(11), dtype=torch.float64)
    assert b.shape == (8, 1, 2, 2)
    torch.testing.assert_close(b.reshape(8, 4), a, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("solver", SOLVERS)
def test_no_nan_or_inf_for_few_steps(solver, dtype):
    """Steps 1, 2, 3, 7, 100 on a batch of 64, exact x0-model, float32 and float64."""
    sde = sd.VPSDE()
    model = DATA.model(sde, "x0")
    for steps in (1, 2, 3, 7, 100) if solver != "ode" else (1,):  # ode: adaptive
        x = sd.sample(model, sde, (64, 2), solver, steps, "x0", _gen(12), dtype=dtype)
        assert x.dtype == dtype
        assert torch.isfinite(x).all(), f"{solver} steps={steps} produced non-finite samples"


@pytest.mark.parametrize("solver", [s for s in SOLVERS if s != "ode"])
def test_no_nan_or_inf_at_4000_steps(solver):
    sde = sd.VPSDE()
    for dtype in (torch.float32, torch.float64) if solver not in ("pc", "torchsde") else (torch.float32,):
        x = sd.sample(_cheap_gaussian_eps(sde), sde, (2, 2), solver, 4000, generator=_gen(12), dtype=dtype)
        assert torch.isfinite(x).all(), f"{solver} steps=4000 {dtype} produced non-finite samples"


@pytest.mark.parametrize("grid", list(sd.TIME_GRIDS))
@pytest.mark.parametrize("solver", ["ancestral", "ddim", "dpm-solver++", "heun", "euler-maruyama"])
def test_every_grid_runs(solver, grid):
    sde = sd.VPSDE()
    x = sd.sample(DATA.model(sde), sde, (N_MC // 4, 2), solver, 60, generator=_gen(13), grid=grid, t_min=1e-3)
    _check_moments(x, DATA, bias=0.05, what=f"{solver} on {grid}")


def test_info_nfe_times_trajectory():
    sde = sd.VPSDE()
    model = DATA.model(sde)
    _, info = sd.sample(model, sde, (10, 2), "heun", 7, generator=_gen(), return_info=True, trajectory=True)
    assert info.nfe == 2 * 7 + 1  # Heun: two evaluations per step (t_min > 0), plus the denoising step
    assert info.denoised and info.times.dtype == torch.float64 and info.times.numel() == 8
    assert info.trajectory.shape == (8, 10, 2)
    _, info = sd.sample(model, sde, (10, 2), "ancestral", 7, generator=_gen(), return_info=True)
    assert info.nfe == 7 and not info.denoised  # t_min = 0: DDPM ends at the data
    _, info = sd.sample(model, sde, (10, 2), "pc", 7, generator=_gen(), return_info=True, corrector_steps=2)
    assert info.nfe == 7 * 3 + 1
    _, info = sd.sample(model, sde, (10, 2), "ode", 7, generator=_gen(), return_info=True, trajectory=True)
    assert info.nfe > 10 and info.trajectory.shape == (8, 10, 2)


def test_chunks_and_callback():
    sde = sd.VPSDE()
    model = DATA.model(sde)
    seen = []
    x = sd.sample(model, sde, (10, 2), "ddim", 5, generator=_gen(), batch_size=4, callback=seen.append)
    assert x.shape == (10, 2)
    assert len(seen) == 3 * 5  # three chunks of 5 steps
    progress = [s["progress"] for s in seen]
    assert progress == sorted(progress) and progress[-1] == pytest.approx(1.0)
    whole = sd.sample(model, sde, (10, 2), "ddim", 5, generator=_gen(), batch_size=10)
    assert torch.equal(whole, sd.sample(model, sde, (10, 2), "ddim", 5, generator=_gen()))


def test_clip_x0_bounds_the_final_prediction():
    sde = sd.VPSDE()
    x = sd.sample(DATA.model(sde), sde, (500, 2), "ddim", 10, generator=_gen(), clip_x0=0.5)
    assert x.abs().max() <= 0.5 + 1e-6  # DDIM's last step to t = 0 returns x̂_0, clipped


# ---------------------------------------------------------------------------- errors


def test_unknown_solver_lists_the_choices():
    sde = sd.VPSDE()
    with pytest.raises(ValueError, match=r"unknown solver 'rk4'.*ancestral.*dpm-solver\+\+"):
        sd.sample(DATA.model(sde), sde, (4, 2), "rk4")


@pytest.mark.parametrize("steps", [0, -3, 2.5, True])
def test_bad_steps(steps):
    sde = sd.VPSDE()
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        sd.sample(DATA.model(sde), sde, (4, 2), "ddim", steps)


def test_option_a_solver_does_not_take():
    sde = sd.VPSDE()
    with pytest.raises(ValueError, match="solver 'ddim' does not take option 'snr'; it accepts: eta"):
        sd.sample(DATA.model(sde), sde, (4, 2), "ddim", 5, snr=0.1)
    with pytest.raises(ValueError, match="'heun' does not take option 'eta'; it accepts: none"):
        sd.sample(DATA.model(sde), sde, (4, 2), "heun", 5, eta=0.1)
    with pytest.raises(ValueError, match="unknown variance 'medium'; choose one of: large, small"):
        sd.sample(DATA.model(sde), sde, (4, 2), "ancestral", 5, variance="medium")
    with pytest.raises(ValueError, match="unknown torchsde method 'rk4'"):
        sd.sample(DATA.model(sde), sde, (4, 2), "torchsde", 5, method="rk4")


def test_model_with_wrong_shape_names_both_shapes():
    sde = sd.VPSDE()
    with pytest.raises(ValueError, match=r"shape \(4, 1\) at t=1.*shape of x, \(4, 2\)"):
        sd.sample(lambda x, t: x[:, :1], sde, (4, 2), "ddim", 5)


def test_non_finite_model_output_names_the_time():
    sde = sd.VPSDE()

    def model(x, t):  # breaks below t = 0.5
        return torch.where(t[:, None] < 0.5, torch.nan, x)

    with pytest.raises(ValueError, match=r"not finite \(NaN or inf\) at t=0.4"):
        sd.sample(model, sde, (4, 2), "ancestral", 10)
    with pytest.raises(ValueError, match=r"not finite"):
        sd.sample(model, sde, (4, 2), "ode", 10)
    with pytest.raises(ValueError, match=r"not finite \(NaN or inf\) at t=1"):  # +inf and -inf: NaN sum
        sd.sample(lambda x, t: x * torch.tensor([torch.inf, -torch.inf]), sde, (4, 2), "ddim", 10)
    # huge but finite outputs (their float32 sum overflows) are not an error
    sd.sample(lambda x, t: torch.full_like(x, 3e38), sde, (4, 2), "ddim", 2, denoise=False)


def test_other_bad_input():
    sde = sd.VPSDE()
    model = DATA.model(sde)
    with pytest.raises(ValueError, match="unknown prediction 'noise'"):
        sd.sample(model, sde, (4, 2), "ddim", 5, prediction="noise")
    with pytest.raises(ValueError, match="t_min > 0"):
        sd.sample(model, sde, (4, 2), "ode", 5, t_min=0.0)
    with pytest.raises(ValueError, match="shape must be a tuple of positive integers"):
        sd.sample(model, sde, (0, 2), "ddim", 5)
    with pytest.raises(ValueError, match="batch_size"):
        sd.sample(model, sde, (4, 2), "ddim", 5, batch_size=0)
    with pytest.raises(ValueError, match="unknown time grid 'cosine'"):
        sd.sample(model, sde, (4, 2), "ddim", 5, grid="cosine")
    with pytest.raises(ValueError, match="grid='uniform'"):
        sd.sample(model, sde, (4, 2), "torchsde", 5, grid="karras")
    with pytest.raises(ValueError, match="eta must be a finite number >= 0"):
        sd.sample(model, sde, (4, 2), "ddim", 5, eta=-1)
