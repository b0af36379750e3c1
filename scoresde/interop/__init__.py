"""Models from other libraries as scoresde models: diffusers UNets and EDM / k-diffusion denoisers.

A scoresde model is ``model(x, t, **cond) -> prediction`` in continuous time t ∈ [0, T] with a
``.prediction`` attribute (eps, score, x0 or v; docs/conventions.md §3). This package turns foreign
models into that one protocol, offline and exactly, each as a
:class:`~scoresde.diffusion_model.DiffusionModel`:

* :mod:`.diffusers_unet` — :func:`from_diffusers`: a diffusers ``UNet2DModel`` and its scheduler
  (a ``save_pretrained`` folder or the objects), on the scheduler's exact VP SDE;
  :func:`scheduler_grid` the times its scheduler visits.
* :mod:`.denoisers` — :func:`from_denoiser` / :func:`to_denoiser`: the denoiser D(x̃, σ̃) of
  Karras et al. (2022) and k-diffusion, for any of our SDEs, and back.
"""

from .denoisers import DenoiserModel, ModelDenoiser, from_denoiser, to_denoiser
from .diffusers_unet import (
    DIFFUSERS_PREDICTIONS,
    SUPPORTED_SCHEDULERS,
    DiffusersModel,
    from_diffusers,
    scheduler_grid,
)

__all__ = [
    "DIFFUSERS_PREDICTIONS",
    "SUPPORTED_SCHEDULERS",
    "DenoiserModel",
    "DiffusersModel",
    "ModelDenoiser",
    "from_denoiser",
    "from_diffusers",
    "scheduler_grid",
    "to_denoiser",
]
