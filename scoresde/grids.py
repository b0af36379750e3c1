"""Time grids samplers and likelihoods walk on: float64 times t_min = t_0 < t_1 < … < t_N = t_max.

Every grid takes the SDE (the log-SNR grids need its λ(t) and inverse). Named grids
(:data:`TIME_GRIDS`, the CLI's ``--grid``): ``uniform``, ``quadratic``, ``log-snr``, ``karras``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ._checks import check_int
from .registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from .sde import SDE

__all__ = ["TIME_GRIDS", "karras_grid", "log_snr_grid", "quadratic_grid", "time_grid", "uniform_grid"]

TimeGrid = Callable[..., Tensor]
TIME_GRIDS: Registry[TimeGrid] = Registry("time grid")
"""Sampling grids ``grid(sde, steps, t_min, t_max, **options) -> float64 (steps+1,)``, increasing."""


@TIME_GRIDS.register("uniform")
def uniform_grid(sde: SDE, steps: int, t_min: float, t_max: float) -> Tensor:
    """Uniform in t (Song et al. 2021; DDPM when t_min = 0 and steps = N)."""
    return torch.linspace(t_min, t_max, steps + 1, dtype=torch.float64)


@TIME_GRIDS.register("quadratic")
def quadratic_grid(sde: SDE, steps: int, t_min: float, t_max: float) -> Tensor:
    """Quadratic in t, dense near the data (Song, Meng & Ermon 2021, DDIM §D.2)."""
    u = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    return t_min + (t_max - t_min) * u**2


@TIME_GRIDS.register("log-snr")
def log_snr_grid(sde: SDE, steps: int, t_min: float, t_max: float) -> Tensor:
    """Uniform in log-SNR λ(t) (Lu et al. 2022, DPM-Solver §3.3 "logSNR")."""
    _need_positive_t_min("log-snr", t_min)
    ends = torch.tensor([t_min, t_max], dtype=torch.float64)
    lam = sde.log_snr(ends)
    grid = sde.t_from_log_snr(torch.linspace(lam[0].item(), lam[1].item(), steps + 1, dtype=torch.float64))
    grid[0], grid[-1] = t_min, t_max  # exact endpoints
    return grid


@TIME_GRIDS.register("karras")
def karras_grid(sde: SDE, steps: int, t_min: float, t_max: float, rho: float = 7.0) -> Tensor:
    """Karras et al. 2022, eq. 5, in the noise-to-signal ratio σ/α = exp(−λ/2), ρ = 7."""
    _need_positive_t_min("karras", t_min)
    ends = torch.tensor([t_min, t_max], dtype=torch.float64)
    s_min, s_max = torch.exp(-0.5 * sde.log_snr(ends)).tolist()
    u = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    # eq. 5 runs from σ_max down; we return increasing times, so walk up from σ_min
    s = (s_min ** (1 / rho) + u * (s_max ** (1 / rho) - s_min ** (1 / rho))) ** rho
    grid = sde.t_from_log_snr(-2 * torch.log(s))
    grid[0], grid[-1] = t_min, t_max
    return grid


def _need_positive_t_min(name: str, t_min: float) -> None:
    if t_min <= 0:
        raise ValueError(f"the {name!r} grid needs t_min > 0 (the log-SNR is infinite at t = 0), got t_min={t_min}")


def time_grid(
    sde: SDE,
    steps: int,
    grid: str | Tensor = "uniform",
    t_min: float = 0.0,
    t_max: float | None = None,
    **options,
) -> Tensor:
    """Increasing float64 times t_min = t_0 < … < t_steps = t_max (default t_max = T).

    ``grid`` is a name from :data:`TIME_GRIDS` or an explicit 1-D tensor of times.
    """
    if isinstance(grid, Tensor):
        times = grid.detach().to(torch.float64).flatten()
        if times.numel() < 2:
            raise ValueError(f"an explicit time grid needs at least 2 times, got {times.numel()}")
        if not (times[1:] > times[:-1]).all():
            raise ValueError("an explicit time grid must be strictly increasing")
        if times[0] < 0 or times[-1] > sde.T:
            raise ValueError(
                f"an explicit time grid must lie in [0, T] = [0, {sde.T}], got [{times[0]:.6g}, {times[-1]:.6g}]"
            )
        return times
    steps = check_int(steps, "steps")
    t_max = sde.T if t_max is None else float(t_max)
    if not 0 <= t_min < t_max <= sde.T:
        raise ValueError(f"need 0 <= t_min < t_max <= T = {sde.T}, got t_min={t_min}, t_max={t_max}")
    return TIME_GRIDS.get(grid)(sde, steps, float(t_min), t_max, **options)
