"""How good a model is: likelihood (:func:`likelihood`) and sample quality with likelihoods
(:func:`evaluate`) of a :class:`~scoresde.diffusion_model.DiffusionModel` against its reference data.

* NLL by the probability-flow ODE and by the discrete VLB (:mod:`scoresde.likelihood`), in bits/dim
  for quantized images (:func:`data_levels`; uniform dequantization / discretized decoder), in
  nats/dim for continuous data;
* sample quality per solver (:mod:`scoresde.metrics`): Fréchet distance and KID in the features of a
  classifier trained on the dataset for images, sliced W₂ and MMD for points; with guidance scales,
  the class accuracy of the samples (:func:`class_accuracy`);
* the unweighted denoising error E‖ε − ε̂‖²/D per t-bin (:func:`denoising_error_by_t`).

Everything matplotlib draws lives in :mod:`scoresde.plots`; the compare-losses study in
:mod:`scoresde.loss_study`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ._checks import append_dims
from .diffusion_model import DiffusionModel
from .param import eps_and_x0, resolve_prediction

__all__ = [
    "DATA_LEVELS",
    "class_accuracy",
    "data_levels",
    "denoising_error_by_t",
    "evaluate",
    "guidance_table",
    "likelihood",
    "nll_text",
]

# Quantization of the built-in datasets as scoresde.data loads them (levels over [−1, 1]).
DATA_LEVELS = {"digits": 17, "mnist": 256, "folder": 256}


def data_levels(dataset: str, kind: str) -> int | None:
    """Number of quantization levels of a dataset (``None``: continuous data, no bits/dim).

    digits: 17 (values 0..16), mnist and image folders: 256 (8 bits), points: ``None``; an image
    folder given by path counts as 8-bit.
    """
    if kind != "images":
        return None
    if dataset in DATA_LEVELS:
        return DATA_LEVELS[dataset]
    return 256 if Path(dataset).is_dir() else None


def denoising_error_by_t(
    model, sde, x0: Tensor, bins: int = 10, t_min: float = 1e-5, seed: int = 0, *, prediction: str | None = None
) -> list[float]:
    """E‖ε − ε̂(x_t, t)‖²/D on ``x0`` in ``bins`` equal t-bins of [t_min, T] (unweighted, comparable
    across weightings); t, ε drawn from ``seed``, so every model sees the same inputs.
    ``prediction``: for a plain function without ``.prediction`` (:func:`scoresde.param.resolve_prediction`)."""
    prediction = resolve_prediction(model, prediction)
    g = torch.Generator().manual_seed(seed)
    edges = torch.linspace(t_min, sde.T, bins + 1, dtype=torch.float64)
    out = []
    with torch.no_grad():
        for b in range(bins):
            t = edges[b] + (edges[b + 1] - edges[b]) * torch.rand(len(x0), generator=g, dtype=torch.float64)
            e = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
            alpha, sigma = sde.marginal(t)
            alpha, sigma = append_dims(alpha.to(x0.dtype), x0.ndim), append_dims(sigma.to(x0.dtype), x0.ndim)
            xt = alpha * x0 + sigma * e
            eps_hat, _ = eps_and_x0(prediction, model(xt, t.to(x0.dtype)), xt, alpha, sigma)
            out.append((e - eps_hat).pow(2).flatten(1).mean(1).mean().item())
    return out


def _mean_se(v: Tensor) -> tuple[float, float]:
    v = v.double()
    return v.mean().item(), (v.std().item() / math.sqrt(len(v)) if len(v) > 1 else float("nan"))


def _reference(dm: DiffusionModel, least: int) -> Tensor:
    """``dm.reference``, or ValueError when it has fewer than ``least`` samples."""
    if dm.reference is not None and len(dm.reference) >= least:
        return dm.reference
    if dm.provenance.source == "diffusers":
        raise ValueError("a diffusers model has no held-out data: give the reference images with --data NAME|PATH")
    raise ValueError(f"{dm.description} has no held-out reference data (reference.safetensors); pass --data")


def likelihood(
    dm: DiffusionModel,
    method: str = "ode",
    num: int = 200,
    *,
    classes: int | str | None = None,
    seed: int = 0,
    **options: Any,
) -> dict[str, Any]:
    """−log p of the first ``num`` reference samples of ``dm`` (:func:`scoresde.likelihood.log_likelihood`).

    ``classes``: a class id or name (−log p(x | y) at that class), ``"data"`` (each sample at its own
    label, ``dm.reference_labels``) or None (−log p(x)). ``options`` go to the estimator (VLB: ``steps``,
    default ``dm.N``, ``grid``; ODE: ``divergence``, ``probes``, ``rtol``, ``atol``, …). Returns a
    JSON-ready record: ``nats_per_dim`` and its standard error, ``nfe``, ``n``, the terms per dimension
    and, for quantized images, ``bits_per_dim`` with its ``levels``.
    """
    from .likelihood import METHODS, log_likelihood

    if method not in METHODS:
        raise ValueError(f"unknown likelihood method {method!r}; choose one of: {', '.join(METHODS)}")
    if isinstance(num, bool) or int(num) != num or num < 1:
        raise ValueError(f"num must be a positive integer, got {num!r}")
    _reference(dm, 1)
    cond: dict[str, Any] = {}
    if classes == "data":
        if dm.num_classes is None:
            dm.class_id("data")  # the sentence for an unconditional model
        if dm.reference_labels is None:
            raise ValueError(f"--class data needs the labels of the reference data, but {dm.dataset} has none")
        y = dm.reference_labels[:num]
        if int(y.max()) >= dm.num_classes:
            raise ValueError(
                f"the labels of {dm.dataset} go up to {int(y.max())}, but the model has {dm.num_classes} classes"
            )
        cond = {"y": y}
    elif classes is not None:
        k = dm.class_id(classes)
        if k == "all":
            raise ValueError("--class all draws a grid in `scoresde sample`; for a likelihood give a class K or data")
        cond = {"y": k}
    if method == "vlb":
        options.setdefault("steps", dm.N)
    levels = data_levels(dm.dataset, dm.kind)
    dim = math.prod(dm.data_shape)
    nll, info = log_likelihood(
        dm.model,
        dm.sde,
        dm.reference[:num].float(),
        method,
        levels=levels,
        generator=torch.Generator().manual_seed(seed),
        return_info=True,
        **cond,
        **options,
    )
    mean, se = _mean_se(nll / dim)
    se = se if len(nll) > 1 else 0.0
    record: dict[str, Any] = {
        "method": method,
        "nats_per_dim": mean,
        "nats_per_dim_se": se,
        "nfe": info.nfe,
        "n": len(nll),
    }
    if levels is not None:
        record.update(bits_per_dim=mean / math.log(2), bits_per_dim_se=se / math.log(2), levels=levels)
    record["terms_nats_per_dim"] = {k: v.mean().item() / dim for k, v in info.terms.items()}
    return record


def evaluate(
    dm: DiffusionModel,
    *,
    solvers: Sequence[str] = ("ancestral", "ode"),
    sample_steps: int = 100,
    num_samples: int = 500,
    nll_num: int = 200,
    methods: Sequence[str] = ("ode", "vlb"),
    vlb_steps: int | None = None,
    classifier_dir: str | Path | None = None,
    inception: str | Path | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    guidance: Sequence[float] = (),
    autoguidance: float | None = None,
) -> dict[str, Any]:
    """Likelihood and sample quality of a model against its reference data (``dm.reference``: a run's
    held-out split, or ``--data``).

    Returns a JSON-ready dict: ``nll`` (per method: nats/dim and, for quantized images, bits/dim,
    each with its standard error, NFE and the term breakdown), ``quality`` (per solver: the
    metrics, NFE, seconds) and ``loss_by_t``. Images use the dataset classifier, trained once and
    cached in ``classifier_dir`` (default: the run folder); ``inception`` adds Inception FID. Samples
    are drawn with the model's own sampling defaults (``dm.sample_options``: x̂_0 clipping for images),
    on the CPU in chunks of :func:`~scoresde.generation.auto_batch_size` (one noise stream; NFE per sample).

    ``guidance`` (a class-conditional model, ``dm.num_classes`` K): for each solver and each
    classifier-free guidance scale w, ``num_samples`` samples with balanced labels (sample i of
    class i mod K) are scored like the unconditional ones and, for images, by their **class
    accuracy**: the fraction the dataset classifier assigns to the class they were drawn for,
    overall and per class (``result["guidance"][solver][w]``; :func:`guidance_table`).

    ``autoguidance``: samples are drawn as ``scoresde sample`` draws them, autoguided by the model's
    guide where it has one (default scale ``dm.guide_scale``, 1 = the model
    alone; ``result["autoguidance"]``, None without a guide), and for a conditional run with classes
    drawn from the data at ``dm.class_guidance`` (``dm.sample_classes``; ``result["classes"]``).
    Likelihoods are always the model's own (unconditional: the null label).
    """
    import time

    from .generation import auto_batch_size
    from .likelihood import METHODS, log_likelihood
    from .metrics import frechet_distance, image_metrics, inception_features, load_or_train_classifier, vector_metrics
    from .samplers import SOLVERS, sample

    log = log or (lambda msg: None)
    for s in solvers:
        SOLVERS.get(s)  # an unknown name: ValueError listing the valid ones
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown likelihood method {m!r}; choose one of: {', '.join(METHODS)}")
    num_classes = dm.num_classes
    if guidance and num_classes is None:
        raise ValueError(f"guidance scales need a class-conditional model, but {dm.description} is unconditional")
    ref = _reference(dm, 2).float()
    dim = math.prod(dm.data_shape)
    dataset = dm.dataset
    levels = data_levels(dataset, dm.kind)
    vlb_steps = vlb_steps or dm.N
    run_dir = dm.provenance.run_dir
    result: dict[str, Any] = {
        "run": str(run_dir) if run_dir is not None else None,
        "step": dm.provenance.step,
        "dataset": dataset,
        "kind": dm.kind,
        "dim": dim,
        "levels": levels,
        "nll": {},
        "quality": {},
        "autoguidance": dm.autoguidance_scale(autoguidance),  # a scale without a guide: ValueError, before any work
    }
    sampled = dm.sampling_model(autoguidance)

    x = ref[:nll_num]
    for method in methods:
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(seed)
        options = {"steps": vlb_steps} if method == "vlb" else {}
        nll, info = log_likelihood(dm.model, dm.sde, x, method, levels=levels, generator=g, return_info=True, **options)
        mean, se = _mean_se(nll / dim)
        entry = {
            "nats_per_dim": mean,
            "nats_per_dim_se": se,
            "nfe": info.nfe,
            "n": len(x),
            "seconds": time.perf_counter() - t0,
            "terms_nats_per_dim": {k: v.mean().item() / dim for k, v in info.terms.items()},
            "details": {k: v for k, v in info.details.items() if isinstance(v, (int, float, str, type(None)))},
        }
        if info.per_step is not None:  # VLB: where the nats go along t (sums of L_{i−1} over 10 equal t-bins)
            t_i = info.times[1:].to(torch.float64)
            bin_of = torch.clamp((t_i / dm.sde.T * 10).ceil().long() - 1, 0, 9)
            by_t = torch.zeros(10, dtype=torch.float64).index_add_(0, bin_of, info.per_step.double())
            entry["by_t_bin_nats_per_dim"] = (by_t / dim).tolist()
        if levels is not None:
            entry["bits_per_dim"], entry["bits_per_dim_se"] = mean / math.log(2), se / math.log(2)
        result["nll"][method] = entry
        log(f"NLL ({method}): {nll_text(entry)}")

    classifier = None
    if dm.kind == "images" and classifier_dir is not False:
        classifier, cinfo = load_or_train_classifier(dataset, classifier_dir or run_dir)
        result["classifier"] = {k: cinfo[k] for k in ("dataset", "test_accuracy", "steps")}
        log(f"classifier test accuracy: {cinfo['test_accuracy']:.3f}")
    if classifier is not None and num_classes is not None and classifier.num_classes != num_classes:
        raise ValueError(
            f"the dataset classifier knows {classifier.num_classes} classes but the run has {num_classes}; "
            "class accuracy needs the classes the model was trained on"
        )
    ref_inception = inception_features(ref, inception) if inception is not None else None

    chunk = auto_batch_size(dm, num_samples)  # on the CPU: chunks that avoid the large-batch slowdown

    def draw(solver: str, **cond: Any):  # every solver and guidance scale starts from the same noise
        samples, info = sample(
            sampled,
            dm.sde,
            (num_samples, *dm.data_shape),
            solver=solver,
            steps=sample_steps,
            generator=torch.Generator().manual_seed(seed + 1),
            batch_size=chunk,
            return_info=True,
            **dm.sample_options(solver),
            **cond,
        )
        return samples, info.nfe

    default: dict[str, Any] = {}  # as scoresde sample draws: a conditional run's classes from the data
    if dm.sample_classes == "data":
        default = {"y": dm.data_labels(num_samples, seed), "guidance": dm.class_guidance}
        result["classes"] = {"drawn": "data", "guidance": dm.class_guidance}
    for solver in solvers:
        t0 = time.perf_counter()
        samples, nfe = draw(solver, **default)
        seconds = time.perf_counter() - t0
        entry = {"steps": sample_steps, "nfe": nfe, "n": num_samples, "seconds": seconds}
        if dm.kind == "images":
            entry.update(
                image_metrics(samples.clamp(-1, 1), ref, classifier, generator=torch.Generator().manual_seed(seed))
            )
            if ref_inception is not None:
                entry["inception_fid"] = frechet_distance(inception_features(samples, inception), ref_inception)
        else:
            entry.update(vector_metrics(samples, ref, generator=torch.Generator().manual_seed(seed)))
        result["quality"][solver] = entry
        log(f"{solver} ({nfe} NFE): " + ", ".join(f"{k} {v:.4g}" for k, v in entry.items() if k in _QUALITY))
        if guidance:
            result.setdefault("guidance", {})[solver] = {}
        for w in guidance:
            t0 = time.perf_counter()
            labels = torch.arange(num_samples) % num_classes  # balanced: every class equally often
            samples, nfe = draw(solver, y=labels, guidance=float(w))
            entry = {"guidance": float(w), "nfe": nfe, "n": num_samples, "seconds": time.perf_counter() - t0}
            if dm.kind == "images":
                samples = samples.clamp(-1, 1)
                entry.update(image_metrics(samples, ref, classifier, generator=torch.Generator().manual_seed(seed)))
                entry.update(class_accuracy(classifier, samples, labels, num_classes))
            else:
                entry.update(vector_metrics(samples, ref, generator=torch.Generator().manual_seed(seed)))
            result["guidance"][solver][f"{float(w):g}"] = entry
            log(
                f"{solver}, guidance {w:g}: "
                + ", ".join(
                    f"{k} {entry[k]:.4g}" for k in (*_QUALITY, "accuracy", "worst_class_accuracy") if k in entry
                )
            )
    result["loss_by_t"] = denoising_error_by_t(dm.model, dm.sde, ref[:nll_num], seed=seed)
    return result


_QUALITY = ("fd", "kid", "sw2", "mmd", "inception_fid")


@torch.no_grad()
def class_accuracy(classifier, samples: Tensor, labels: Tensor, num_classes: int) -> dict[str, Any]:
    """How often ``classifier`` assigns samples to the class they were drawn for: ``accuracy``
    overall, ``per_class`` (a list, ``None`` for a class without samples) and ``worst_class_accuracy``."""
    predicted = classifier(samples.float()).argmax(1).cpu()
    hit = (predicted == labels).double()
    per_class = [hit[labels == k].mean().item() if (labels == k).any() else None for k in range(num_classes)]
    present = [a for a in per_class if a is not None]
    return {"accuracy": hit.mean().item(), "per_class": per_class, "worst_class_accuracy": min(present)}


def guidance_table(result: dict[str, Any]) -> str:
    """The guidance sweep of :func:`evaluate` as a markdown table, one row per (solver, w)."""
    lines = []
    for solver, sweep in result.get("guidance", {}).items():
        rows = list(sweep.values())
        keys = [k for k in ("fd", "kid", "sw2", "mmd", "accuracy", "worst_class_accuracy") if k in rows[0]]
        names = {"fd": "FD", "kid": "KID", "sw2": "SW₂", "mmd": "MMD", "accuracy": "accuracy",
                 "worst_class_accuracy": "worst class"}  # fmt: skip
        if not lines:
            lines += ["| solver | w | " + " | ".join(names[k] for k in keys) + " |", "|---" * (len(keys) + 2) + "|"]
        for r in rows:
            cells = [f"{r[k]:.1%}" if "accuracy" in k else f"{r[k]:.4g}" for k in keys]
            lines.append(f"| {solver} ({r['nfe']} NFE) | {r['guidance']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def nll_text(entry: dict[str, Any]) -> str:
    """One NLL entry of :func:`evaluate` as text: bits/dim for quantized data, else nats/dim."""
    if "bits_per_dim" in entry:
        return f"{entry['bits_per_dim']:.4f} ± {entry['bits_per_dim_se']:.4f} bits/dim ({entry['nfe']} NFE)"
    return f"{entry['nats_per_dim']:.4f} ± {entry['nats_per_dim_se']:.4f} nats/dim ({entry['nfe']} NFE)"
