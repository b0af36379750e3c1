"""Open a model by name, as the commands do: ``--model NAME`` (an analytic model, no training),
``--run DIR`` (a trained run; default: the newest under ./runs) or ``--diffusers DIR`` (a
``save_pretrained`` folder of a UNet2DModel and its scheduler), with ``--data`` as the reference data.

Each resolves to a :class:`~scoresde.diffusion_model.DiffusionModel`.
"""

from __future__ import annotations

import dataclasses
import os

from .diffusion_model import DiffusionModel

__all__ = ["open_model", "with_reference"]


def with_reference(dm: DiffusionModel, data: str | os.PathLike) -> DiffusionModel:
    """``dm`` with the whole data set ``data`` (a name or a path) as its reference data.

    ValueError when the data's samples do not have the model's shape.
    """
    from .data import load_dataset

    ds = load_dataset(str(data), heldout=0.0)  # a foreign model's training set is unknown: use all of it
    x = ds.train
    if dm.data_shape is not None and tuple(x.shape[1:]) != tuple(dm.data_shape):
        raise ValueError(
            f"--data {data} has samples of shape {tuple(x.shape[1:])}, but the model takes {tuple(dm.data_shape)}"
        )
    return dataclasses.replace(dm, reference=x, reference_labels=ds.train_labels, dataset=ds.name)


def open_model(
    *,
    model: str | None = None,
    run: str | os.PathLike | None = None,
    diffusers: str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    device: str = "cpu",
    runs: str | os.PathLike = "runs",
) -> DiffusionModel:
    """The model named by ``model`` (an analytic model), ``run`` or ``diffusers`` (at most one; none:
    the newest run under ``runs``), with ``data`` as its reference data when given.

    ValueError with one sentence for anything that does not resolve.
    """
    given = [name for name, value in (("--model", model), ("--run", run), ("--diffusers", diffusers)) if value]
    if len(given) > 1:
        raise ValueError(f"give either --model, --run or --diffusers, not {' and '.join(given)}")
    if model is not None:
        from .analytic import MODELS

        if model not in MODELS:
            raise ValueError(f"unknown analytic model {model!r}; choose one of: {', '.join(MODELS)}")
        dm = MODELS[model]().diffusion_model(name=model)
    elif diffusers is not None:
        import warnings

        from .interop import from_diffusers

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the notes are in dm.provenance.notes
            dm = from_diffusers(diffusers, device=device)
    else:
        from .run_folder import latest_run, load_run

        if run is None:
            run = latest_run(runs)
            if run is None:
                raise ValueError(
                    f"no trained run under ./{runs}: run `scoresde train` first, pass --run DIR, --diffusers DIR, "
                    "or --model gmm (sample only; no training needed)"
                )
        dm = load_run(run, device=device)
    return with_reference(dm, data) if data is not None else dm
