"""The classifier of classifier guidance: p_φ(y | x_t, t), trained on the noisy data of a run's SDE.

Dhariwal & Nichol 2021 ("Diffusion Models Beat GANs on Image Synthesis", §4) guide an unconditional
model with the gradient of a classifier trained on noisy samples x_t = α(t) x_0 + σ(t) ε of the same
forward process: ε̃ = ε̂ − w σ ∇_x log p_φ(y | x_t, t) (their eq. 14;
:func:`scoresde.gradient_guidance.classifier_guided`). :func:`train_classifier` trains one for a run
(its data, its held-out split and its SDE, read from the run's config):

    t ~ U[t_min, T],  ε ~ N(0, I),  x_t = α(t) x_0 + σ(t) ε,   minimise  −log p_φ(y | x_t, t)   (AdamW),

then measures its held-out accuracy at a few noise levels (:data:`EVAL_TIMES`; near chance, 1/K,
where α(t) ≈ 0 has forgotten the data) and saves it into the run folder as
``noisy_classifier.safetensors`` + ``noisy_classifier.json`` (the JSON, written last, holds the
architecture, the SDE and data it was trained for, the step, the accuracies and the weights'
SHA-256). The file names differ from ``classifier.*``, the dataset classifier ``scoresde evaluate``
caches in the same folder (:func:`scoresde.metrics.load_or_train_classifier`), which sees clean data.
:func:`load_classifier` reads it back as ``classifier(x, t) -> (batch, K)`` logits.

The network (:class:`scoresde.nets.NoisyClassifier`) sees the time label 999·t/T (the ``scaled``
label of :mod:`scoresde.param`) and x_t / √(α² + σ²): unchanged under VP (α² + σ² = 1), of the data's
scale under VE, where σ reaches σ_max = 50.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from torch import Tensor, nn

from . import config as cfg
from ._checks import append_dims
from .batches import batch_indices
from .build import build_dataset, build_sde
from .checkpoint import read_verified, write_verified
from .data import labelled_datasets
from .diffusion_model import DiffusionModel
from .nets.noisy_classifier import NoisyClassifier
from .param import TIME_LABELS
from .sde import SDE, make_sde

__all__ = [
    "EVAL_TIMES",
    "FILES",
    "T_MIN",
    "TimeClassifier",
    "TrainedClassifier",
    "guided_by_classifier",
    "heldout_accuracy",
    "load_classifier",
    "train_classifier",
]

FILES = ("noisy_classifier.safetensors", "noisy_classifier.json")
"""The weights and the description :func:`train_classifier` writes into a run folder (the JSON last)."""
EVAL_TIMES = (0.1, 0.5, 0.9)
"""The times t (as fractions of T) at which the held-out accuracy is measured."""
T_MIN = 1e-3
"""Training times are drawn from U[T_MIN, T]."""
FORMAT = 1
"""The version of the JSON layout this code writes and reads."""
TIME_LABEL = "scaled"
"""The network's time label: 999·t/T (:data:`scoresde.param.TIME_LABELS`)."""


class TimeClassifier(nn.Module):
    """``classifier(x, t) -> (batch, K)`` logits of p(class | x_t = x): a network and its SDE.

    t is continuous time of shape (batch,) or a scalar; the network sees the label 999·t/T and the
    input x / √(α(t)² + σ(t)²). Differentiable in x (what guidance needs) whether or not its own
    parameters take gradients.
    """

    def __init__(self, net: NoisyClassifier, sde: SDE) -> None:
        super().__init__()
        self.net, self.sde = net, sde
        self.num_classes = net.num_classes
        self.time_label = TIME_LABELS.get(TIME_LABEL)(T=sde.T)

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must be a scalar or of shape (batch,) = ({x.shape[0]},), got {tuple(t.shape)}")
        alpha, sigma = self.sde.marginal(t.to(torch.float64))
        c_in = torch.rsqrt(alpha**2 + sigma**2).to(x.dtype)
        return self.net(x * append_dims(c_in, x.ndim), self.time_label(t).to(x.dtype))


@dataclass(frozen=True)
class TrainedClassifier:
    """What :func:`train_classifier` returns.

    Attributes:
        classifier: ``classifier(x, t) -> logits`` (eval mode, parameters frozen), on the CPU.
        info: the description saved as ``noisy_classifier.json`` (architecture, SDE, data, step,
            ``accuracy`` per time, ``chance`` = 1/K, ``seconds``).
        path: the JSON file written, or None (nothing written).
    """

    classifier: TimeClassifier
    info: dict[str, Any]
    path: Path | None

    @property
    def accuracy(self) -> dict[float, float]:
        """Held-out accuracy per time t (empty without held-out data)."""
        return {float(t): a for t, a in self.info["accuracy"].items()}


def heldout_accuracy(
    classifier: Callable[[Tensor, Tensor], Tensor],
    sde: SDE,
    x0: Tensor,
    labels: Tensor,
    t: float,
    *,
    draws: int = 2000,
    generator: torch.Generator | None = None,
    batch_size: int = 500,
) -> float:
    """The fraction of noisy samples x_t = α(t) x_0 + σ(t) ε whose class ``classifier`` gets right.

    Each of the ``x0`` (with ``labels``) is noised ⌈draws / n⌉ times (at least ``draws`` evaluations
    in all, so that a small held-out split still gives a steady number).
    """
    if len(x0) == 0:
        raise ValueError("no samples to measure the accuracy on")
    repeats = max(1, math.ceil(draws / len(x0)))
    params = list(classifier.parameters()) if isinstance(classifier, nn.Module) else []
    device = params[0].device if params else x0.device  # a module's own device, else the data's
    alpha, sigma = (float(v) for v in sde.marginal(torch.tensor(float(t), dtype=torch.float64)))
    correct = 0
    with torch.no_grad():
        for _ in range(repeats):
            for i in range(0, len(x0), batch_size):
                x, y = x0[i : i + batch_size].to(device), labels[i : i + batch_size].to(device)
                eps = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(device)
                logits = classifier(alpha * x + sigma * eps, torch.full((len(x),), float(t), device=device))
                correct += int((logits.argmax(1) == y).sum())
    return correct / (repeats * len(x0))


# --------------------------------------------------------------------------- training


def _source(source: Any) -> tuple[cfg.TrainConfig, Path | None, int | None]:
    """(config, run folder or None, the run's step or None) of a run folder, a DiffusionModel trained by
    scoresde, a TrainConfig, or a dataset name or path."""
    if isinstance(source, cfg.TrainConfig):
        return source, None, None
    if isinstance(source, DiffusionModel):
        p = source.provenance
        if not isinstance(p.config, cfg.TrainConfig):
            raise ValueError(
                f"{p.description} was not trained by scoresde, so its data and SDE are unknown; give a run "
                "folder, a DiffusionModel from scoresde.trainer.train, a TrainConfig or a dataset name "
                "(an analytic mixture has its exact classifier: GaussianMixture.classifier(sde))"
            )
        return p.config, p.run_dir, p.step
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if path.is_dir() and ((path / "config.json").is_file() or (path / "checkpoints").is_dir()):
            from .run_folder import load_run

            dm = load_run(path)
            return dm.provenance.config, path, dm.provenance.step
        return cfg.from_dict({"data": {"name": str(source)}}), None, None
    raise TypeError(
        "train_classifier takes a run folder, a DiffusionModel, a TrainConfig or a dataset name, "
        f"got {type(source).__name__}"
    )


def _positive(name: str, value: Any, kind: type) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or (kind is int and not float(value).is_integer()) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive {'integer' if kind is int else 'number'}, got {value!r}")


def train_classifier(
    source: str | os.PathLike | DiffusionModel | cfg.TrainConfig,
    *,
    steps: int = 2000,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    width: int | None = None,
    out: str | os.PathLike | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
    eval_times: Sequence[float] = EVAL_TIMES,
    log: Callable[[str], None] | None = None,
) -> TrainedClassifier:
    """Train a time-dependent classifier p_φ(y | x_t, t) on the data and SDE of ``source``.

    Args:
        source: a run folder (its config: data, held-out split, SDE), a :class:`DiffusionModel` trained
            by scoresde (a loaded run or the result of :func:`scoresde.trainer.train`), a
            :class:`~scoresde.config.TrainConfig`, or a dataset name or path (the default VP SDE).
            The data must carry class labels: ``digits``, ``mnist``, ``8gaussians``, a folder with one
            sub-folder per class, an ``.npz`` with labels ``y``.
        steps, batch_size, lr: AdamW steps (one-cycle learning-rate schedule peaking at ``lr``), the
            batch size, the peak learning rate.
        seed: the initial weights, the batches (the trainer's order, :func:`scoresde.batches.batch_indices`),
            the times and the noise.
        width: the network's width (default 32 for images, 128 for vectors).
        out: the folder to write ``noisy_classifier.safetensors`` + ``.json`` into; default the run
            folder of a run (nothing is written for a config or a dataset name, or a model trained in memory).
        progress: show a progress bar.
        device: where to train (the returned classifier is on the CPU).
        eval_times: the times, as fractions of T, at which the held-out accuracy is measured.
        log: where to send one line when the classifier is written (e.g. ``print``).

    Raises ValueError (one sentence) for unlabelled data, bad numbers, a missing or unusable run.
    """
    _positive("steps", steps, int)
    _positive("batch_size", batch_size, int)
    _positive("lr", lr, float)
    if width is not None:
        _positive("width", width, int)
    times = [float(t) for t in eval_times]
    if not all(0 < t <= 1 for t in times):
        raise ValueError(f"eval_times are fractions of T in (0, 1], got {list(eval_times)}")
    config, run_dir, run_step = _source(source)
    dataset = build_dataset(config)
    if not dataset.labelled:
        raise ValueError(
            f"a classifier needs class labels, but the data {dataset.name!r} have none; labelled data: "
            f"{', '.join(labelled_datasets())}, a folder with one sub-folder per class, or an .npz with labels 'y'"
        )
    if dataset.num_classes < 2:
        raise ValueError(f"the data {dataset.name!r} hold a single class; a classifier needs at least two")
    sde = build_sde(config)
    target = Path(out) if out is not None else run_dir
    device = torch.device(device)
    images = dataset.kind == "images"
    width = int(width or (32 if images else 128))
    steps, batch_size = int(steps), int(batch_size)

    torch.manual_seed(seed)
    net = NoisyClassifier(dataset.data_shape, int(dataset.num_classes), width=width)
    classifier = TimeClassifier(net, sde).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps + 1)
    generator = torch.Generator(device).manual_seed(seed * 7919 + 7)
    train, labels, n = dataset.train, dataset.train_labels, len(dataset.train)
    in_memory = isinstance(train, Tensor)
    if in_memory:
        train, labels = train.to(device), labels.to(device)
    bar = None
    if progress:
        from .reporting import ProgressReporter

        bar = ProgressReporter(steps)
    start, tally = time.perf_counter(), []
    classifier.train()
    try:
        for step in range(steps):
            idx = batch_indices(step, n, batch_size, seed)
            x0 = train[idx.to(device)] if in_memory else train.read(idx).to(device)
            y = labels[idx.to(labels.device)].to(device)
            # t ~ U[t_min, T], x_t = α(t) x_0 + σ(t) ε: the forward process the diffusion model was trained on
            t = T_MIN + (sde.T - T_MIN) * torch.rand(len(x0), generator=generator, device=device, dtype=torch.float64)
            alpha, sigma = sde.marginal(t, check=False)
            eps = torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype)
            xt = append_dims(alpha.to(x0.dtype), x0.ndim) * x0 + append_dims(sigma.to(x0.dtype), x0.ndim) * eps
            loss = nn.functional.cross_entropy(classifier(xt, t), y)  # −log p_φ(y | x_t, t)
            if not torch.isfinite(loss):
                raise ValueError(f"the classifier's loss became non-finite at step {step}; try a lower lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            tally.append(loss.detach())
            if bar is not None:
                bar.advance()
                if (step + 1) % 50 == 0 or step + 1 == steps:
                    elapsed = time.perf_counter() - start
                    bar.log_metrics(
                        {"loss": float(torch.stack(tally[-50:]).mean()), "steps_per_s": (step + 1) / elapsed}
                    )
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    classifier.eval().requires_grad_(False)
    accuracy: dict[str, float] = {}
    if len(dataset.heldout):
        g = torch.Generator().manual_seed(seed + 1)
        for frac in times:
            acc = heldout_accuracy(classifier, sde, dataset.heldout, dataset.heldout_labels, frac * sde.T, generator=g)
            accuracy[f"{frac * sde.T:g}"] = acc
    classifier.cpu()
    info = {
        "format": FORMAT,
        "what": "noisy classifier p(y | x_t, t) for classifier guidance (scoresde.noisy_classifier)",
        "network": {
            "name": "NoisyClassifier",
            "data_shape": list(dataset.data_shape),
            "num_classes": int(dataset.num_classes),
            "width": width,
            "depth": len(net.blocks),
            "time_dim": net.time.base_dim,
            "embedding": net.embedding,
        },
        "time_label": TIME_LABEL,
        "sde": cfg.to_dict(config)["sde"],
        "data": cfg.to_dict(config)["data"],
        "seed_of_split": config.seed,
        "dataset": dataset.name,
        "kind": dataset.kind,
        "class_names": list(dataset.class_names or ()),
        "run": str(run_dir) if run_dir is not None else None,
        "run_step": run_step,
        "step": steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "t_min": T_MIN,
        "final_loss": float(torch.stack(tally[-50:]).mean()),
        "accuracy": accuracy,
        "heldout": len(dataset.heldout),
        "chance": 1 / int(dataset.num_classes),
        "seconds": round(seconds, 2),
        "device": str(device),
    }
    path = save_classifier(classifier, info, target) if target is not None else None
    if path is not None and log is not None:
        log(f"wrote {path}")
    return TrainedClassifier(classifier, info, path)


# --------------------------------------------------------------------------- the files


def save_classifier(classifier: TimeClassifier, info: dict[str, Any], folder: str | os.PathLike) -> Path:
    """Write ``folder/noisy_classifier.safetensors`` then ``.json`` (with the weights' SHA-256 and the
    time), each atomically; returns the JSON path."""
    folder = Path(folder)
    tensors = dict(classifier.net.state_dict())
    write_verified(folder / FILES[1], tensors, info, indent=2)  # folder / FILES[0]: the weights
    return folder / FILES[1]


def load_classifier(path: str | os.PathLike) -> TimeClassifier:
    """The classifier saved by :func:`train_classifier`: ``classifier(x, t) -> (batch, K)`` logits.

    ``path`` is the folder holding ``noisy_classifier.json`` (a run folder, or ``out``) or that JSON
    file (or its ``.safetensors``). Eval mode, parameters frozen (gradients flow to x); its
    description is ``classifier.info``. ValueError naming the file for a missing folder or file, a
    corrupt JSON, weights that are missing, do not match their SHA-256 or do not fit the network.
    """
    path = Path(path).expanduser()
    if path.suffix in (".json", ".safetensors"):
        meta_path = path.with_suffix(".json")
    else:
        if not path.is_dir():
            what = "is a file, not a folder" if path.exists() else "does not exist"
            raise ValueError(f"{path} {what}; give a run folder holding {FILES[1]} or the file itself")
        meta_path = path / FILES[1]
    if not meta_path.is_file():
        raise ValueError(
            f"{meta_path.parent} holds no noisy classifier ({meta_path.name}); "
            f"train one with: scoresde train-classifier --run {meta_path.parent}"
        )
    info, blob = read_verified(
        meta_path,
        "classifier",
        lambda m: m.get("format") == FORMAT and "network" in m,
        f"{meta_path} is not a scoresde noisy classifier (format {FORMAT})",
    )
    try:
        n = info["network"]
        net = NoisyClassifier(
            tuple(n["data_shape"]), int(n["num_classes"]), width=int(n["width"]), depth=int(n["depth"]),
            time_dim=int(n["time_dim"]), embedding=n.get("embedding", "add"),  # "add" before it was saved
        )  # fmt: skip
        sde = make_sde(**info["sde"])
        if info.get("time_label") != TIME_LABEL:
            raise ValueError(f"time label {info.get('time_label')!r} (this version reads {TIME_LABEL!r})")
        net.load_state_dict(load_safetensors(blob), strict=True)
    except Exception as err:  # a bad field (KeyError, TypeError, ValueError), safetensors' or torch's errors
        detail = " ".join(str(err).split())[:300]
        raise ValueError(f"classifier {meta_path} is unusable: {detail}") from None
    classifier = TimeClassifier(net, sde).eval().requires_grad_(False)
    classifier.info = info
    return classifier


def guided_by_classifier(
    dm: DiffusionModel, classes: int | str, scale: float, path: str | os.PathLike | None = None, num: int | None = None
) -> tuple[DiffusionModel, int | None]:
    """``dm`` guided towards ``classes`` (a class id, or ``"all"``: ``num`` per class in turn, default 8)
    by the classifier saved at ``path`` (default: the model's run folder), with scale w, and the number of
    samples that asks for (None: as the caller likes). ValueError for a class the classifier does not
    know, a classifier of other data, or no classifier to find.
    """
    import dataclasses

    from .gradient_guidance import classifier_guided
    from .labels import class_rows

    where = path if path is not None else dm.provenance.run_dir
    if where is None:
        raise ValueError(f"{dm.description} has no run folder to find its classifier in; give --classifier PATH")
    classifier = load_classifier(where)
    network = classifier.info["network"]
    if dm.data_shape is not None and tuple(network["data_shape"]) != tuple(dm.data_shape):
        raise ValueError(f"the classifier at {where} takes samples of shape {tuple(network['data_shape'])}, "
                         f"the model {tuple(dm.data_shape)}")  # fmt: skip
    k = int(network["num_classes"])
    if str(classes).strip() == "all":
        labels = class_rows(k, num if num is not None else 8)
        guided = classifier_guided(dm.model, dm.sde, classifier, labels, scale)
        return dataclasses.replace(dm, model=guided, guide=None, sample_classes=None), len(labels)  # no autoguidance
    try:
        label = int(str(classes).strip())
    except ValueError:
        raise ValueError(f"--class {classes!r} is not a class id 0 … {k - 1} of the classifier at {where}") from None
    if not 0 <= label < k:
        raise ValueError(f"--class {label} is out of range: the classifier at {where} knows {k} classes, 0 … {k - 1}")
    guided = classifier_guided(dm.model, dm.sde, classifier, label, scale)
    return dataclasses.replace(dm, model=guided, guide=None, sample_classes=None), num
