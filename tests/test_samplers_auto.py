"""grid="auto": every solver walks its registered grid, and the registered grids are real grids."""

from __future__ import annotations

import pytest
import torch

import scoresde as sd
from scoresde.grids import TIME_GRIDS, time_grid
from scoresde.samplers import SOLVERS


@pytest.mark.parametrize("name", [n for n in SOLVERS if n not in ("ode", "torchsde")])
def test_auto_is_the_registered_grid(name):
    spec = SOLVERS[name]
    assert spec.grid in TIME_GRIDS
    sde = sd.VPSDE()
    model = sd.analytic.gaussian().model(sde)
    _, info = sd.sample(model, sde, (3, 2), name, 7, generator=torch.Generator().manual_seed(0), return_info=True)
    t_min = spec.t_min if spec.t_min > 0 or spec.grid not in ("log-snr", "karras") else 1e-3
    torch.testing.assert_close(info.times, time_grid(sde, 7, spec.grid, t_min=t_min), rtol=0, atol=0)
    x = sd.sample(model, sde, (3, 2), name, 7, generator=torch.Generator().manual_seed(0), grid="auto")
    y = sd.sample(model, sde, (3, 2), name, 7, generator=torch.Generator().manual_seed(0), grid=spec.grid)
    torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_ancestral_default_is_the_full_ddpm_chain():
    """sd.sample's defaults (ancestral, 1000 steps, auto) walk the uniform chain from t = 0: DDPM."""
    _, info = sd.sample(sd.analytic.gaussian().model(sd.VPSDE()), sd.VPSDE(), (2, 2), return_info=True)
    torch.testing.assert_close(info.times, torch.linspace(0, 1, 1001, dtype=torch.float64), rtol=0, atol=0)
    assert not info.denoised and info.nfe == 1000
