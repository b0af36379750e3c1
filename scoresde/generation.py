"""Draw many samples of a :class:`~scoresde.diffusion_model.DiffusionModel`, chunk by chunk, into
memory, an ``.npz`` file or a picture (what ``scoresde sample`` does, usable from Python).

:func:`generate` solves ``batch_size`` samples at a time, each chunk drawing from one generator in
turn (the same numbers as one call of :func:`scoresde.samplers.sample` with ``batch_size``). An
``.npz`` is written as the chunks come (:class:`NpzWriter`); for a ``.png`` only what the picture
shows is kept (64 images; one row per class; every vector), so memory does not grow with ``num``.
For an analytic model the ground truth is known, and running statistics of the samples come back
in :attr:`Generated.stats`: mean log p_data, the mode-weight error, and the share of samples in
their class's component. :func:`preview` is the trainer's picture of its EMA model.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from .diffusion_model import DiffusionModel
from .guidance import for_rows
from .imageio import fsync_folder, image_grid, save_png, scatter_image
from .labels import class_rows

if TYPE_CHECKING:
    from .config import TrainConfig

__all__ = [
    "AUTO_SOLVER",
    "CPU_VALUES_PER_BATCH",
    "GRID_PER_CLASS",
    "Generated",
    "NpzWriter",
    "auto_batch_size",
    "auto_solver",
    "generate",
    "picture",
    "preview",
]

AUTO_SOLVER = {"exact": "unipc", "trained": "sde-dpm-solver++"}
"""``solver="auto"``: with an exact score (an analytic model) the accurate ODE solve is best (unipc wins
the mixtures at NFE 5–20); a trained network's own probability flow carries its errors, and at 20
steps the stochastic sde-dpm-solver++ is ahead of unipc on young models and ties on a well-trained
one (benchmarks/results/sweep_digits.md, sweep_mnist.md, samplers_precise.md)."""

GRID_PER_CLASS = 16
"""At most this many samples of each class in the picture of ``classes="all"``."""


CPU_VALUES_PER_BATCH = 49_152
"""On the CPU a solve is chunked so that a batch holds about this many values (batch × values per
sample): the time per image of a forward pass grows with the batch once activations leave the cache
(benchmarks/results/sampling_throughput.md)."""


def auto_batch_size(dm: DiffusionModel, num: int, device: str | torch.device = "cpu") -> int:
    """The chunk size :func:`generate` uses when none is given: on the CPU a power of two with about
    :data:`CPU_VALUES_PER_BATCH` values per batch (64-dimensional digits: 512; MNIST: 32; 3×32×32: 16),
    elsewhere all ``num`` at once."""
    if torch.device(device).type != "cpu":
        return num
    per_sample = math.prod(dm.data_shape)
    return min(num, 2 ** max(3, int(math.log2(max(1, CPU_VALUES_PER_BATCH // per_sample)))))


def auto_solver(dm: DiffusionModel) -> str:
    """The solver ``auto`` stands for with this model (:data:`AUTO_SOLVER`)."""
    return AUTO_SOLVER["exact" if dm.provenance.source == "analytic" else "trained"]


@dataclass(frozen=True)
class Generated:
    """What :func:`generate` drew.

    Attributes:
        samples: every sample (no ``out``), what the picture shows (a ``.png``), or None (an ``.npz``).
        labels: the class label of every sample (conditional sampling), else None.
        out: the file written, or None.
        solver, steps, num, nfe, seconds: the solver run (``auto`` resolved), the number of samples,
            the model evaluations of one sample's solve (the mean over the chunks, rounded), and the
            wall-clock time.
        per_class: samples per class with ``classes="all"``, else None.
        guidance: the guidance scale (conditional sampling), else None.
        stats: ground-truth statistics for an analytic model (``mean_log_prob``, ``data_log_prob``,
            ``mode_error``; conditional: ``class_hit_rate``), else empty.
        autoguidance: the autoguidance scale (a model with a guide), else None.
    """

    samples: Tensor | None
    labels: Tensor | None
    out: Path | None
    solver: str
    steps: int
    num: int
    nfe: int
    seconds: float
    per_class: int | None = None
    guidance: float | None = None
    stats: dict[str, float] = field(default_factory=dict)
    autoguidance: float | None = None


def picture(x: Tensor, kind: str, reference: Tensor | None = None, nrow: int | None = None) -> np.ndarray:
    """The pixels of a picture of samples: an image grid (``nrow`` per row), or for vectors a scatter
    plot over ``reference`` (d = 2), a histogram (d = 1) or a pair grid (d ≥ 3)."""
    x = x.detach().cpu().float()
    if kind == "images":
        zoom = max(1, math.ceil(32 / x.shape[-1]))  # small images (8×8 digits) enlarged to be seen
        return image_grid(x.clamp(-1, 1).repeat_interleave(zoom, -1).repeat_interleave(zoom, -2), nrow=nrow)
    return scatter_image(x.flatten(1), None if reference is None else reference.flatten(1).cpu())


class NpzWriter:
    """Write ``samples`` (float32, ``shape``) into an .npz chunk by chunk, as ``np.savez`` lays it out
    (an uncompressed zip of .npy files), in a temporary file renamed over ``path`` by :meth:`close`;
    :meth:`discard` removes it after an error."""

    def __init__(self, path: str | os.PathLike, shape: tuple[int, ...]) -> None:
        self.path, self.shape, self.written = Path(path), shape, 0
        fd, self.tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        os.close(fd)
        self.zip = zipfile.ZipFile(self.tmp, "w", zipfile.ZIP_STORED, allowZip64=True)
        self.member = self.zip.open("samples.npy", "w", force_zip64=True)
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_2_0(self.member, header)

    def write(self, x: Tensor) -> None:
        self.member.write(np.ascontiguousarray(x.numpy(), dtype="<f4").tobytes())
        self.written += len(x)

    def close(self, **arrays: Any) -> None:
        if self.written != self.shape[0]:
            raise RuntimeError(f"wrote {self.written} of {self.shape[0]} samples")  # a bug, not a user error
        self.member.close()
        for key, value in arrays.items():
            with self.zip.open(f"{key}.npy", "w") as f:
                np.lib.format.write_array(f, np.asarray(value), allow_pickle=False)
        self.zip.close()
        with open(self.tmp, "rb+") as f:  # on disk before the rename, as every other output
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(self.tmp, self.path)
        fsync_folder(self.path.parent)

    def discard(self) -> None:
        Path(self.tmp).unlink(missing_ok=True)


def _labels(
    dm: DiffusionModel, classes: int | str | None, num: int | None, seed: int
) -> tuple[Tensor | None, int | None, int]:
    """(labels, per_class, num) for ``classes`` None (the null label), ``"data"``, a class id or ``"all"``."""
    images = dm.kind == "images"
    classes = None if classes is None else dm.class_id(classes, "classes", ("all", "data"))
    if classes == "all":
        per_class = num if num is not None else 8 if images else 500
        labels = class_rows(dm.num_classes, per_class)
        return labels, per_class, len(labels)
    num = num if num is not None else 64 if images else 2000
    if classes is None:
        return None, None, num
    if classes == "data":
        return dm.data_labels(num, seed), None, num
    return torch.full((num,), int(classes), dtype=torch.long), None, num


PER_SAMPLE = ("known", "mask", "init")
"""Options of :func:`scoresde.samplers.sample` that may hold one value per sample (cut per chunk)."""


def _rows(options: dict[str, Any], num: int, rank: int, first: int, stop: int) -> dict[str, Any]:
    """``options`` with per-sample observations (a batch of ``num``) cut to the rows first … stop − 1."""
    out = dict(options)
    for key in PER_SAMPLE:
        value = out.get(key)
        if isinstance(value, Tensor) and value.ndim == rank + 1 and value.shape[0] == num and num > 1:
            out[key] = value[first:stop]
    return out


def generate(
    dm: DiffusionModel,
    num: int | None = None,
    *,
    solver: str = "auto",
    steps: int = 20,
    seed: int = 0,
    grid: str | Tensor = "auto",
    t_min: float | None = None,
    classes: int | str | None = None,
    guidance: float | None = None,
    autoguidance: float | None = None,
    batch_size: int | None = None,
    out: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    **options: Any,
) -> Generated:
    """Draw ``num`` samples of ``dm`` with ``solver`` (``auto``: :func:`auto_solver`) and ``steps``.

    Args:
        num: how many (default 64 images or 2,000 points); per class with ``classes="all"``
            (default 8 images or 500 points per class).
        classes: a class id or name (a class-conditional model), ``"all"`` for every class in turn
            (one row per class in the picture), ``"data"`` for classes drawn from the data's class
            frequencies (:meth:`~scoresde.diffusion_model.DiffusionModel.data_labels`), ``"null"`` for the
            null label (unconditional), or None: the model's default, ``dm.sample_classes`` (a
            conditional run: ``"data"``), the null label with observations (``known``, ``init``).
        guidance: the classifier-free guidance scale with classes (default ``dm.class_guidance``, 1 for
            models that are not runs: conditional).
        autoguidance: the autoguidance scale with the model's guide (default
            ``dm.guide_scale`` when ``dm.guide`` is set; 1 = the model alone):
            :meth:`~scoresde.diffusion_model.DiffusionModel.sampling_model`. Two forwards per evaluation.
        batch_size: solve this many at a time (default :func:`auto_batch_size`: on the CPU about 49k
            values per batch, elsewhere all at once).
        out: ``.npz`` (the samples, and ``solver``, ``steps``, ``nfe``, ``seed``, ``y`` for labels) or
            ``.png`` (:func:`picture` of the first 64 images, of 16 per class, or of every vector);
            written atomically. None keeps every sample in memory.
        options: solver options (``eta=1``, ``order=3``, …; they override ``dm.sample_options``) and
            the observations of :func:`scoresde.samplers.sample`: ``known``/``mask``/``resample``
            (inpainting), ``init``/``strength`` (SDEdit), each of one sample's shape or one per sample
            (cut with the chunks). A model guided by gradients (:mod:`scoresde.gradient_guidance`)
            with one observation per sample is cut the same way.
        grid, t_min, device, seed: as in :func:`scoresde.samplers.sample` (``seed`` seeds one generator).
        progress: a progress bar for long work.
    """
    from .reporting import progress_bar
    from .samplers import SOLVERS, sample

    solver = auto_solver(dm) if solver == "auto" else solver
    SOLVERS.get(solver)  # an unknown name: ValueError listing the valid ones
    if dm.data_shape is None:
        raise ValueError(
            "the model's data_shape is unknown; give one when making it (e.g. from_denoiser(..., data_shape=))"
        )
    if classes is None and not any(key in options for key in PER_SAMPLE):
        classes = dm.sample_classes
    if classes == "null":
        classes = None
    if guidance is not None and classes is None:
        raise ValueError("guidance needs classes (the class to guide towards): a class id, a class name, all or data")
    for name, value in (("num", num), ("batch_size", batch_size)):
        if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    suffix = Path(out).suffix.lower() if out is not None else None
    if suffix not in (None, ".png", ".npz"):
        raise ValueError(f"out must end in .png or .npz, got {out}")
    labels, per_class, num = _labels(dm, classes, num, seed)
    model, auto = dm.sampling_model(autoguidance), dm.autoguidance_scale(autoguidance)
    cond = {} if labels is None else {"guidance": dm.class_guidance if guidance is None else float(guidance)}
    options = {**{k: v for k, v in dm.sample_options(solver).items() if k not in options}, **options}
    generator = torch.Generator(device).manual_seed(seed)
    origin = dm.provenance.origin  # ground truth: the analytic model itself, not steered by observations
    exact = dm.provenance.source == "analytic" and getattr(dm.model, "data", None) is origin
    truth = origin if exact and not any(key in options for key in PER_SAMPLE) else None
    chunk = batch_size or auto_batch_size(dm, num, device)
    starts = range(0, num, chunk)
    sink = NpzWriter(out, (num, *dm.data_shape)) if suffix == ".npz" else None
    kept, evaluations, logp, counts, hits = [], [], 0.0, None, 0
    start = time.perf_counter()
    try:
        with progress_bar(progress and num * steps >= 200_000, label=f"{solver} ({steps} steps)") as bar:
            for c, first in enumerate(starts):
                y = None if labels is None else labels[first : first + chunk]
                stop = min(first + chunk, num)
                x, info = sample(
                    for_rows(model, first, stop),  # per-sample observations of a guided model: these rows
                    dm.sde,
                    (min(chunk, num - first), *dm.data_shape),
                    solver=solver,
                    steps=steps,
                    generator=generator,
                    grid=grid,
                    t_min=t_min,
                    callback=None
                    if bar is None
                    else lambda s, c=c: bar({"progress": (c + s["progress"]) / len(starts)}),
                    return_info=True,
                    device=device,
                    **({"y": y.to(device)} if y is not None else {}),
                    **cond,
                    **_rows(options, num, len(dm.data_shape), first, stop),
                )
                x = x.detach().cpu().float()
                evaluations.append(info.nfe)
                if sink is not None:
                    sink.write(x)
                elif out is None or dm.kind != "images":
                    kept.append(x)
                elif per_class is not None:  # the first few of every class
                    kept.append(x[torch.arange(first, first + len(x)) % per_class < GRID_PER_CLASS])
                elif sum(len(k) for k in kept) < 64:
                    kept.append(x[: 64 - sum(len(k) for k in kept)])
                if truth is not None:  # ground truth known: running statistics of the finite samples
                    finite = torch.isfinite(x.flatten(1)).all(1)
                    logp += truth.log_prob(x[finite]).double().sum().item()
                    found = truth.responsibilities(x[finite]).argmax(1)
                    if y is not None:  # how many samples land in their class's component
                        hits += (found == y[finite]).sum().item()
                    found = found.bincount(minlength=truth.K).double()
                    counts = found if counts is None else counts + found
        seconds = time.perf_counter() - start
        nfe = round(sum(evaluations) / len(evaluations))
        samples = torch.cat(kept) if kept else None
        if sink is not None:
            extra = {"y": labels.numpy()} if labels is not None else {}
            extra.update({"autoguidance": auto} if auto is not None else {})
            sink.close(solver=solver, steps=steps, nfe=nfe, seed=seed, **extra)
        elif suffix == ".png":
            nrow = min(per_class, GRID_PER_CLASS) if per_class else None
            save_png(out, picture(samples, dm.kind, dm.reference, nrow))
    finally:
        if sink is not None:
            sink.discard()
    stats = {}
    if truth is not None:
        n = max(counts.sum().item(), 1)
        if labels is not None:
            stats["class_hit_rate"] = hits / n
        else:
            stats["mean_log_prob"] = logp / n
            stats["data_log_prob"] = (
                truth.log_prob(dm.reference).mean().item() if dm.reference is not None else math.nan
            )
            stats["mode_error"] = 0.5 * (counts / counts.sum() - truth.weights).abs().sum().item()
    where = Path(out) if out is not None else None
    return Generated(
        samples, labels, where, solver, steps, num, nfe, seconds, per_class, cond.get("guidance"), stats, auto
    )


@torch.no_grad()
def preview(
    model: torch.nn.Module, sde, config: TrainConfig, kind: str, heldout: Tensor, num_classes: int | None = None
):
    """A picture of samples of ``model``: a grid (images) or a scatter plot over ``heldout`` (points).

    Always the same noise (seeded by ``config.seed``), so pictures of successive steps compare.
    A class-conditional model (``num_classes`` K) is sampled at w = 1 with one row per class
    (``sample_num // K`` per class, at least one).
    """
    from .samplers import sample

    device = next(model.parameters()).device
    g = torch.Generator(device).manual_seed(config.seed + 12345)
    per_class = max(1, config.sample_num // num_classes) if num_classes else None
    y = {"y": class_rows(num_classes, per_class).to(device)} if num_classes else {}
    shape = (per_class * num_classes if num_classes else config.sample_num, *heldout.shape[1:])
    clip = {"clip_x0": 1.0} if kind == "images" else {}
    x = sample(model, sde, shape, config.sample_solver, config.sample_steps, generator=g, **y, **clip)
    return picture(x, kind, heldout, nrow=per_class)
