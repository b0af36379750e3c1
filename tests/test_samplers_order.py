"""Order of accuracy of the deterministic solvers (diffrax-style: slope of log-error vs log-step)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import scoresde as sd
from scoresde.analytic import GaussianMixture

STEPS = (20, 40, 80, 160)


@pytest.fixture(scope="module")
def problem():
    """A 2-D, three-mode mixture with exact ε, and a tight adaptive reference solve from the same x_T."""
    data = GaussianMixture(
        [0.3, 0.5, 0.2], [[-1.0, 0.5], [0.8, 0.8], [0.5, -1.0]], [[0.3, 0.2], [0.25, 0.4], [0.3, 0.3]]
    )
    sde = sd.VPSDE()
    model = data.model(sde)
    common = {"generator_seed": 1, "shape": (50, 2)}
    ref = sd.sample(
        model,
        sde,
        common["shape"],
        "ode",
        1,
        generator=torch.Generator().manual_seed(1),
        dtype=torch.float64,
        denoise=False,
        method="DOP853",
        rtol=1e-10,
        atol=1e-10,
    )
    return sde, model, ref, common


@pytest.mark.parametrize(
    ("solver", "options", "order"),
    [("ddim", {}, 1.0), ("heun", {}, 2.0), ("dpm-solver++", {}, 2.0)],
)
def test_order_of_accuracy(problem, solver, options, order):
    """Same x_T (same seed), grid 'quadratic' (dense near the data), t_min = 1e-3, no denoising step."""
    sde, model, ref, common = problem
    errors = []
    for steps in STEPS:
        x = sd.sample(
            model,
            sde,
            common["shape"],
            solver,
            steps,
            generator=torch.Generator().manual_seed(common["generator_seed"]),
            dtype=torch.float64,
            grid="quadratic",
            denoise=False,
            **options,
        )
        errors.append((x - ref).pow(2).mean().sqrt().item())
    slope = np.polyfit(np.log(1 / np.array(STEPS)), np.log(errors), 1)[0]
    assert abs(slope - order) <= 0.3, f"{solver}: fitted order {slope:.2f} (errors {errors}), expected {order}"


def test_reference_is_tight(problem):
    """The reference agrees with an independent high-order solve far below the errors measured above."""
    sde, model, ref, common = problem
    x = sd.sample(
        model,
        sde,
        common["shape"],
        "dpm-solver++",
        400,
        generator=torch.Generator().manual_seed(common["generator_seed"]),
        dtype=torch.float64,
        grid="quadratic",
        denoise=False,
        order=3,
    )
    assert (x - ref).pow(2).mean().sqrt().item() < 1e-5
