"""A model ready to use: the network, its SDE, the data it models and where it came from.

Every way of getting a model hands back one frozen :class:`DiffusionModel`:
:func:`scoresde.run_folder.load_run` (a trained run folder), :func:`scoresde.trainer.train` (a model
trained just now, in memory or in a run folder), :func:`scoresde.interop.from_diffusers`,
:func:`scoresde.interop.from_denoiser` and the analytic distributions' ``.diffusion_model(sde)``
(:mod:`scoresde.analytic`); :func:`scoresde.sources.open_model` opens any of them by name, as the
commands do. Sampling to a file (:func:`scoresde.generation.generate`), evaluation and likelihoods
(:mod:`scoresde.evaluation`) take it, typed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .sde import SDE

__all__ = ["SOURCES", "DiffusionModel", "Provenance"]

SOURCES = ("run", "training", "diffusers", "denoiser", "analytic")
"""Where a :class:`DiffusionModel` can come from (:attr:`Provenance.source`)."""


@dataclass(frozen=True)
class Provenance:
    """Where a :class:`DiffusionModel` came from.

    Attributes:
        source: one of :data:`SOURCES`.
        description: one line naming it, for reports (``run runs/x (step 1200)``, ``analytic gmm``, …).
        run_dir: the run folder (a run, or a model trained into one), else None.
        step: the training step of its weights (runs and training), else None.
        checkpoint: the checkpoint's JSON path, else None.
        config: the :class:`~scoresde.config.TrainConfig` it was trained with, else None.
        metrics: the metrics records logged by :func:`~scoresde.trainer.train` (oldest first).
        interrupted: training stopped early by Ctrl-C (a checkpoint was saved first).
        notes: settings of the original that scoresde does not reproduce, one line each (diffusers).
        origin: the object it was made from: the analytic distribution (its exact ``log_prob`` and
            components), the diffusers scheduler, or the EDM denoiser.
    """

    source: str
    description: str
    run_dir: Path | None = None
    step: int | None = None
    checkpoint: Path | None = None
    config: Any = None
    metrics: tuple[dict[str, Any], ...] = ()
    interrupted: bool = False
    notes: tuple[str, ...] = ()
    origin: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"unknown source {self.source!r}; choose one of: {', '.join(SOURCES)}")

    @property
    def loss(self) -> float | None:
        """The mean training loss of the last metrics record, or None."""
        return self.metrics[-1]["loss"] if self.metrics else None


@dataclass(frozen=True)
class DiffusionModel:
    """A model ready to use.

    Attributes:
        model: ``model(x, t, **cond) -> prediction`` in continuous t, eval mode, carrying
            ``.prediction`` (docs/conventions.md §3); a class-conditional model takes ``y=labels``.
        sde: the forward SDE it was trained with.
        data_shape: the shape of one sample (no batch dimension); None when unknown (a denoiser
            given without one).
        kind: ``points`` (vectors) or ``images``.
        num_classes: K of a class-conditional model (labels 0 … K − 1, K the null label), else None.
        class_names: the name of each class id, else None.
        reference: reference data (a run's held-out split, ``--data``, draws of an analytic model) or None.
        reference_labels: the class labels of ``reference`` (labelled data), else None.
        dataset: the reference data's name or path (decides quantization levels and the classifier).
        N: the default chain length of the discrete VLB (the training N; a scheduler's timesteps).
        clip_x0: x̂_0 clipping every solver applies by default (1 for images; a scheduler's
            ``clip_sample_range``), or None.
        variance: the ancestral variance the original implies (a diffusers ``variance_type``), or
            None for the solver's own default.
        provenance: where it came from (:class:`Provenance`).
        guide: a weaker model of the same kind for autoguidance (a run's EMA weights from early in
            training, :data:`scoresde.run_folder.GUIDE_FILE`), or None
            (:func:`scoresde.generation.generate`'s ``autoguidance``).
        guide_scale: the autoguidance scale sampling uses by default when there is a guide (1: the model
            alone); a run's is its config's ``guide_scale`` (a per-data default).
        class_guidance: the classifier-free guidance scale sampling uses by default with labels (1: the
            conditional model); a run's is its config's ``class_guidance`` (a per-data default).
        sample_classes: what sampling without a class draws: None, the null label (unconditional), or
            ``"data"``, classes drawn from the frequencies of :attr:`reference_labels`
            (:meth:`data_labels`) at :attr:`class_guidance` — a conditional run's default. Models
            steered by observations sample the null label (the class is not known).
    """

    model: Any
    sde: SDE
    data_shape: tuple[int, ...] | None
    kind: str
    provenance: Provenance
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    reference: Tensor | None = field(default=None, repr=False)
    reference_labels: Tensor | None = field(default=None, repr=False)
    dataset: str | None = None
    N: int = 1000
    clip_x0: float | None = None
    variance: str | None = None
    guide: Any = field(default=None, repr=False)
    guide_scale: float = 1.0
    class_guidance: float = 1.0
    sample_classes: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("points", "images"):
            raise ValueError(f"kind must be 'points' or 'images', got {self.kind!r}")
        if self.sample_classes not in (None, "data"):
            raise ValueError(f"sample_classes must be None or 'data', got {self.sample_classes!r}")
        if getattr(self.model, "prediction", None) is None:
            raise TypeError("the model must carry .prediction (wrap it with sd.as_model(net, prediction=...))")

    @property
    def prediction(self) -> str:
        """What :attr:`model` returns: ``eps``, ``score``, ``x0`` or ``v``."""
        return self.model.prediction

    @property
    def description(self) -> str:
        return self.provenance.description

    def sample_options(self, solver: str) -> dict[str, Any]:
        """The keyword arguments of ``sd.sample`` this model implies for ``solver``."""
        options: dict[str, Any] = {}
        if self.clip_x0 is not None:
            options["clip_x0"] = self.clip_x0
        if self.variance is not None and solver == "ancestral":
            options["variance"] = self.variance
        return options

    def autoguidance_scale(self, autoguidance: float | None = None) -> float | None:
        """The autoguidance scale a solve of this model uses: ``autoguidance``, by default
        :attr:`guide_scale`; None when there is no :attr:`guide` (the model alone). ValueError for a
        scale other than 1 without a guide."""
        if self.guide is None:
            if autoguidance is not None and float(autoguidance) != 1.0:
                raise ValueError(
                    f"autoguidance needs a guide, but {self.description} has none (a run keeps one at --guide-at "
                    "of training: guide.safetensors; runs trained before 2026-12-06 or with --guide-at 0 have none)"
                )
            return None
        return float(self.guide_scale if autoguidance is None else autoguidance)

    def sampling_model(self, autoguidance: float | None = None) -> Any:
        """The model the solvers call: :attr:`model`, autoguided by :attr:`guide` at
        :meth:`autoguidance_scale` (:class:`scoresde.guidance.AutoGuided`; scale 1 is the model alone)."""
        from .guidance import AutoGuided

        w = self.autoguidance_scale(autoguidance)
        return self.model if w is None or w == 1.0 else AutoGuided(self.model, self.guide, w)

    def data_labels(self, num: int, seed: int = 0) -> Tensor:
        """``num`` labels drawn from the class frequencies of :attr:`reference_labels` (a run's held-out
        labels), so that y ~ p(y) then x ~ p(x | y) is a draw of p(x) at guidance 1. ValueError when
        the model is unconditional or its data's labels are unknown."""
        if self.num_classes is None or self.reference_labels is None:
            raise ValueError(
                f"drawing classes from the data needs a class-conditional model with labelled reference data; "
                f"{self.description} has {'none' if self.num_classes is not None else 'no classes'}"
            )
        counts = torch.bincount(self.reference_labels.long(), minlength=self.num_classes)[: self.num_classes]
        g = torch.Generator().manual_seed(seed)
        return torch.multinomial(counts.double(), num, replacement=True, generator=g)

    def class_id(self, text: int | str, option: str = "--class", words: tuple[str, ...] = ("all",)) -> int | str:
        """A class given as an id, a class name or one of ``words`` (``all``), checked against the model.

        ValueError (naming ``option``) for any class on an unconditional model, an unknown name
        or an id out of range.
        """
        if self.num_classes is None:
            raise ValueError(
                f"{option} needs a class-conditional model, but {self.description} is unconditional "
                "(train one with `scoresde train --conditional`)"
            )
        given_id = isinstance(text, int) and not isinstance(text, bool)
        text = str(text).strip()
        if text in words:
            return text
        names = self.class_names or tuple(str(i) for i in range(self.num_classes))
        if not given_id and text in names:  # a name first: class names may look like other ids
            return names.index(text)
        try:
            k = int(text)
        except ValueError:
            raise ValueError(
                f"{option} {text!r} is not a class of {self.description}; give an id 0 … {self.num_classes - 1}, "
                f"a class name ({', '.join(names)}) or {' / '.join(words)}"
            ) from None
        if not 0 <= k < self.num_classes:
            raise ValueError(
                f"{option} {k} is out of range: {self.description} has {self.num_classes} classes, "
                f"ids 0 … {self.num_classes - 1}"
            )
        return k
