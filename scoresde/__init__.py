"""scoresde — the VP SDE, its reverse, its probability-flow ODE and DDPM as one object.

See docs/conventions.md for the conventions; the public API is re-exported here.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .grids import TIME_GRIDS, time_grid
from .param import PREDICTIONS, TIME_LABELS, Model, as_model, convert, eps_and_x0, from_eps, resolve_prediction, to_eps
from .registry import Registry
from .schedules import SCHEDULES, LinearBeta, PiecewiseConstantBeta, cosine_betas, ddpm_linear_betas
from .sde import SDE, SDES, VESDE, VPSDE, DiscreteChain, ReverseSDE, SubVPSDE, make_sde

# Public names that live in modules built later in the dependency order; resolved lazily
# so `import scoresde` stays cheap and each module can land on its own.
_LAZY = {
    "sample": "scoresde.samplers",
    "SOLVERS": "scoresde.samplers",
    "encode": "scoresde.encoding",
    "decode": "scoresde.encoding",
    "log_likelihood": "scoresde.likelihood",
    "ode_nll": "scoresde.likelihood",
    "vlb_nll": "scoresde.likelihood",
    "guided": "scoresde.guidance",
    "WEIGHTINGS": "scoresde.losses",
    "denoising_loss": "scoresde.losses",
    "from_diffusers": "scoresde.interop",
    "from_denoiser": "scoresde.interop",
    "to_denoiser": "scoresde.interop",
    "DiffusionModel": "scoresde.diffusion_model",
    "open_model": "scoresde.sources",
    "load_run": "scoresde.run_folder",
    "train": "scoresde.trainer",
    "generate": "scoresde.generation",
    "evaluate": "scoresde.evaluation",
}

_LAZY_MODULES = {"analytic", "guidance", "interop"}


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        return getattr(module, name)
    if name in _LAZY_MODULES:
        return importlib.import_module(f"scoresde.{name}")
    raise AttributeError(f"module 'scoresde' has no attribute {name!r}")


try:
    __version__ = version("scoresde")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.1.0"

__all__ = [
    "PREDICTIONS",
    "SCHEDULES",
    "SDE",
    "SDES",
    "TIME_GRIDS",
    "TIME_LABELS",
    "VESDE",
    "VPSDE",
    "DiscreteChain",
    "LinearBeta",
    "Model",
    "PiecewiseConstantBeta",
    "Registry",
    "ReverseSDE",
    "SubVPSDE",
    "__version__",
    "as_model",
    "convert",
    "cosine_betas",
    "ddpm_linear_betas",
    "eps_and_x0",
    "from_eps",
    "make_sde",
    "resolve_prediction",
    "time_grid",
    "to_eps",
]
