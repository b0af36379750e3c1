"""UniPC (Zhao et al. 2023): equal to diffusers' UniPCMultistepScheduler, its order on an exact flow, finiteness."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import scoresde as sd
from scoresde.analytic import gaussian, gmm

STEPS = (20, 40, 80, 160)


def exact_flow(data, sde, x_T: torch.Tensor, t: float) -> torch.Tensor:
    """The probability-flow ODE map of a Gaussian N(μ, diag s²) from T to t: affine in x_T, per coordinate."""
    (a_T, s_T), (a_t, s_t) = (sde.marginal(torch.tensor(v, dtype=torch.float64)) for v in (sde.T, t))
    mu, s = data.means[0], data.stds[0]
    z = (x_T - a_T * mu) / torch.sqrt(a_T**2 * s**2 + s_T**2)
    return a_t * mu + torch.sqrt(a_t**2 * s**2 + s_t**2) * z


@pytest.mark.parametrize(
    ("sde", "options", "grid", "order"),
    [
        (sd.VPSDE(), {}, "quadratic", 3.0),  # UniP-2 + UniC: one order above the predictor (Thm. 3.2)
        (sd.VPSDE(), {}, "log-snr", 3.0),
        (sd.VPSDE(), {"order": 1}, "quadratic", 2.0),
        (sd.VPSDE(), {"variant": "bh1"}, "quadratic", 3.0),
        (sd.SubVPSDE(), {}, "quadratic", 3.0),
        (sd.VESDE(), {}, "log-snr", 3.0),
    ],
)
def test_order_on_exact_gaussian_flow(sde, options, grid, order):
    """Slope of log RMS error vs log(1/N) against the closed-form flow map, same x_T, no denoising step."""
    data, t_min = gaussian(), 1e-3
    model = data.model(sde)
    x_T = sde.prior_sample((50, 2), torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = exact_flow(data, sde, x_T, t_min)
    errors = []
    for steps in STEPS:
        x = sd.sample(
            model,
            sde,
            (50, 2),
            "unipc",
            steps,
            generator=torch.Generator().manual_seed(1),
            dtype=torch.float64,
            grid=grid,
            t_min=t_min,
            denoise=False,
            **options,
        )
        errors.append((x - ref).pow(2).mean().sqrt().item())
    slope = np.polyfit(np.log(1 / np.array(STEPS)), np.log(errors), 1)[0]
    assert abs(slope - order) <= 0.35, f"fitted order {slope:.2f} (errors {errors}), expected {order}"


def test_order_3_beats_order_2():
    """UniP-3 + UniC converges at least as fast as order 3 and is more accurate than order 2 at 80 steps."""
    data, sde = gaussian(), sd.VPSDE()
    model = data.model(sde)
    x_T = sde.prior_sample((50, 2), torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = exact_flow(data, sde, x_T, 1e-3)
    err = {}
    for order in (2, 3):
        for steps in STEPS:
            x = sd.sample(
                model, sde, (50, 2), "unipc", steps, generator=torch.Generator().manual_seed(1), dtype=torch.float64,
                grid="quadratic", denoise=False, order=order,
            )  # fmt: skip
            err[order, steps] = (x - ref).pow(2).mean().sqrt().item()
    slope = np.polyfit(np.log(1 / np.array(STEPS)), np.log([err[3, s] for s in STEPS]), 1)[0]
    assert slope >= 2.9, f"order 3: fitted order {slope:.2f}"
    assert err[3, 80] < err[2, 80] / 2


def _diffusers_unipc(betas, sde, model, steps, final, **config):
    """diffusers' UniPC loop with its σ/α table replaced by our float64 one (the scheduler keeps float32)."""
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.UniPCMultistepScheduler(
        num_train_timesteps=1000, trained_betas=betas.tolist(), final_sigmas_type=final, **config
    )
    sched.set_timesteps(steps)
    ts = torch.tensor([(int(j) + 1) / 1000 for j in sched.timesteps], dtype=torch.float64)  # timestep j ↔ t=(j+1)/N
    t_end = 0.0 if final == "zero" else 1e-3  # "sigma_min": the chain's first σ, at t = 1/N
    alpha, sigma = sde.marginal(torch.cat([ts, torch.tensor([t_end], dtype=torch.float64)]))
    sched.sigmas = sigma / alpha  # σ = 0 at t = 0
    x = torch.randn((200, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for j in sched.timesteps:
        x = sched.step(model(x, torch.full((200,), (int(j) + 1) / 1000, dtype=torch.float64)), j, x).prev_sample
    return x, torch.cat([torch.tensor([t_end], dtype=torch.float64), ts.flip(0)])


@pytest.mark.parametrize("steps", [1, 2, 3, 5, 10, 25])
@pytest.mark.parametrize(
    ("options", "final"),
    [
        ({}, "zero"),  # diffusers' defaults: bh2, order 2, lower_order_final, final σ = 0
        ({"order": 3}, "zero"),
        ({"order": 1}, "zero"),
        ({"variant": "bh1", "lower_order_final": False}, "sigma_min"),  # bh1 + σ = 0 is NaN in diffusers
        ({"order": 3, "lower_order_final": False}, "sigma_min"),
    ],
)
def test_matches_diffusers_unipc(steps, options, final):
    """Same chain (VPSDE.from_betas of the scheduler's betas), same times, exact model: equal to float64 round-off."""
    betas = sd.VPSDE().discretize(1000).betas
    sde = sd.VPSDE.from_betas(betas)
    model = gmm().model(sde, "eps")
    config = {
        "solver_order": options.get("order", 2),
        "solver_type": options.get("variant", "bh2"),
        "lower_order_final": options.get("lower_order_final", True),
    }
    ref, grid = _diffusers_unipc(betas, sde, model, steps, final, **config)
    x, info = sd.sample(
        model, sde, (200, 2), "unipc", generator=torch.Generator().manual_seed(0), grid=grid, dtype=torch.float64,
        denoise=False, return_info=True, **options,
    )  # fmt: skip
    assert info.nfe == steps
    torch.testing.assert_close(x, ref, rtol=0, atol=1e-11)


@pytest.mark.parametrize("grid", ["log-snr", "auto"])
@pytest.mark.parametrize("steps", [1, 2, 3, 4, 4000])
@pytest.mark.parametrize("options", [{}, {"order": 3}, {"order": 3, "lower_order_final": False}])
def test_finite_at_any_step_count(steps, options, grid):
    sde = sd.VPSDE()
    x, info = sd.sample(
        gmm().model(sde), sde, (4, 2), "unipc", steps, generator=torch.Generator().manual_seed(0), grid=grid,
        return_info=True, **options,
    )  # fmt: skip
    assert torch.isfinite(x).all()
    assert info.nfe == steps + 1  # N steps + the denoising step: the corrector costs nothing


def test_trajectory_holds_corrected_states():
    """The recorded states are the corrected ones: UniC-1 on the first (DDIM) step lands nearer the exact flow."""
    data, sde = gaussian(), sd.VPSDE()
    model = data.model(sde)
    kw = {"generator": torch.Generator().manual_seed(0), "dtype": torch.float64, "grid": "log-snr", "denoise": False}
    x, info = sd.sample(model, sde, (64, 2), "unipc", 8, order=1, return_info=True, trajectory=True, **kw)
    kw["generator"] = torch.Generator().manual_seed(0)
    _, info_d = sd.sample(model, sde, (64, 2), "ddim", 8, return_info=True, trajectory=True, **kw)
    assert info.trajectory.shape == (9, 64, 2)
    torch.testing.assert_close(info.trajectory[-1], x)
    torch.testing.assert_close(info.trajectory[0], info_d.trajectory[0])  # same x_T
    exact = exact_flow(data, sde, info.trajectory[0], info.times[-2].item())
    err_unipc = (info.trajectory[1] - exact).norm()
    err_ddim = (info_d.trajectory[1] - exact).norm()  # = UniPC's predicted (uncorrected) state
    assert err_unipc < 0.5 * err_ddim, (err_unipc, err_ddim)


@pytest.mark.parametrize(
    ("options", "match"), [({"order": 4}, "order"), ({"order": True}, "order"), ({"variant": "bh3"}, "variant")]
)
def test_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        sd.sample(gmm().model(sd.VPSDE()), sd.VPSDE(), (2, 2), "unipc", 3, **options)
