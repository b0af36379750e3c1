"""Evaluate trained runs, and compare loss weightings × time sampling on equal terms.

The seed's claim: λ(t) = 1 (DDPM's L_simple) gives better samples, the ELBO weighting better
likelihood. :func:`compare_losses` tests it on your data: it trains one model per (weighting,
time) setting with the same budget (training steps), seed, network and data, then measures each
with the same held-out points and the same random numbers:

* NLL by the probability-flow ODE and by the discrete VLB (:mod:`scoresde.likelihood`), in
  bits/dim for quantized images (uniform dequantization / discretized decoder), in nats/dim
  for continuous data;
* sample quality per solver (:mod:`scoresde.metrics`): Fréchet distance and KID in the
  features of a classifier trained on the dataset for images, sliced W₂ and MMD for points;
* the unweighted denoising error E‖ε − ε̂‖²/D per t-bin on held-out data (where each
  weighting spends its capacity).

It writes ``results.json``, ``results.md`` and, when matplotlib is installed (``bench`` extra),
``weightings.png`` (w(t) of every weighting on one axis) and ``loss_by_t.png``.

In a notebook::

    from scoresde.compare import compare_losses
    result = compare_losses("moons", budget=2000, out="compare/moons")
    print(result.markdown)
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ._checks import append_dims
from .imageio import atomic_write_bytes
from .param import eps_and_x0, resolve_prediction

__all__ = [
    "CompareResult",
    "class_accuracy",
    "compare_losses",
    "data_levels",
    "denoising_error_by_t",
    "evaluate_run",
    "guidance_plot",
    "guidance_table",
    "weighting_curves",
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
    model,
    sde,
    prediction: str | None,
    x0: Tensor,
    bins: int = 10,
    t_min: float = 1e-5,
    seed: int = 0,
    *,
    eps: float | None = None,
) -> list[float]:
    """E‖ε − ε̂(x_t, t)‖²/D on ``x0`` in ``bins`` equal t-bins of [t_min, T] (unweighted, comparable
    across weightings); t, ε drawn from ``seed``, so every model sees the same inputs.
    ``prediction``: None for a model carrying its own (see :func:`scoresde.param.resolve_prediction`);
    ``eps=`` is the old name of ``t_min``."""
    prediction = resolve_prediction(model, prediction)
    t_min = t_min if eps is None else eps
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


def evaluate_run(
    run,
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
) -> dict[str, Any]:
    """Likelihood and sample quality of a loaded run (:func:`scoresde.train.load_run`) or of a
    :class:`~scoresde.train.TrainResult` (a model trained in memory).

    Returns a JSON-ready dict: ``nll`` (per method: nats/dim and, for quantized images, bits/dim,
    each with its standard error, NFE and the term breakdown), ``quality`` (per solver: the
    metrics, NFE, seconds) and ``loss_by_t``. Images use the dataset classifier, trained once and
    cached in ``classifier_dir`` (default: the run folder); ``inception`` adds Inception FID.

    ``guidance`` (a class-conditional run, ``run.num_classes`` K): for each solver and each
    classifier-free guidance scale w, ``num_samples`` samples with balanced labels (sample i of
    class i mod K) are scored like the unconditional ones and, for images, by their **class
    accuracy**: the fraction the dataset classifier assigns to the class they were drawn for,
    overall and per class (``result["guidance"][solver][w]``; :func:`guidance_table`).
    """
    import time

    from .likelihood import log_likelihood
    from .metrics import frechet_distance, image_metrics, inception_features, load_or_train_classifier, vector_metrics
    from .samplers import sample

    log = log or (lambda msg: None)
    num_classes = getattr(run, "num_classes", None)
    if guidance and num_classes is None:
        raise ValueError("guidance scales need a class-conditional run (trained with --conditional); this one is not")
    if run.reference is None or len(run.reference) < 2:
        raise ValueError(f"run {run.run_dir} has no held-out reference data (reference.safetensors)")
    ref = run.reference.float()
    dim = math.prod(run.data_shape)
    dataset = run.config.data.name if run.config.data.path is None else run.config.data.path
    levels = data_levels(dataset, run.kind)
    vlb_steps = vlb_steps or run.config.loss.N
    result: dict[str, Any] = {
        "run": str(run.run_dir) if run.run_dir is not None else None,
        "step": run.step,
        "dataset": dataset,
        "kind": run.kind,
        "dim": dim,
        "levels": levels,
        "nll": {},
        "quality": {},
    }

    x = ref[:nll_num]
    for method in methods:
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(seed)
        options = {"steps": vlb_steps} if method == "vlb" else {}
        nll, info = log_likelihood(
            run.model, run.sde, x, method, levels=levels, generator=g, return_info=True, **options
        )
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
            bin_of = torch.clamp((t_i / run.sde.T * 10).ceil().long() - 1, 0, 9)
            by_t = torch.zeros(10, dtype=torch.float64).index_add_(0, bin_of, info.per_step.double())
            entry["by_t_bin_nats_per_dim"] = (by_t / dim).tolist()
        if levels is not None:
            entry["bits_per_dim"], entry["bits_per_dim_se"] = mean / math.log(2), se / math.log(2)
        result["nll"][method] = entry
        log(f"NLL ({method}): {_nll_text(entry)}")

    classifier = None
    if run.kind == "images" and classifier_dir is not False:
        classifier, cinfo = load_or_train_classifier(dataset, classifier_dir or run.run_dir)
        result["classifier"] = {k: cinfo[k] for k in ("dataset", "test_accuracy", "steps")}
        log(f"classifier test accuracy: {cinfo['test_accuracy']:.3f}")
    if classifier is not None and num_classes is not None and classifier.num_classes != num_classes:
        raise ValueError(
            f"the dataset classifier knows {classifier.num_classes} classes but the run has {num_classes}; "
            "class accuracy needs the classes the run was trained on"
        )
    ref_inception = inception_features(ref, inception) if inception is not None else None

    def draw(solver: str, **cond: Any):  # every solver and guidance scale starts from the same noise
        return sample(
            run.model,
            run.sde,
            (num_samples, *run.data_shape),
            solver=solver,
            steps=sample_steps,
            generator=torch.Generator().manual_seed(seed + 1),
            clip_x0=1.0 if run.kind == "images" else None,
            return_info=True,
            **cond,
        )

    for solver in solvers:
        t0 = time.perf_counter()
        samples, info = draw(solver)
        seconds = time.perf_counter() - t0
        entry = {"steps": sample_steps, "nfe": info.nfe, "n": num_samples, "seconds": seconds}
        if run.kind == "images":
            entry.update(
                image_metrics(samples.clamp(-1, 1), ref, classifier, generator=torch.Generator().manual_seed(seed))
            )
            if ref_inception is not None:
                entry["inception_fid"] = frechet_distance(inception_features(samples, inception), ref_inception)
        else:
            entry.update(vector_metrics(samples, ref, generator=torch.Generator().manual_seed(seed)))
        result["quality"][solver] = entry
        log(f"{solver} ({info.nfe} NFE): " + ", ".join(f"{k} {v:.4g}" for k, v in entry.items() if k in _QUALITY))
        if guidance:
            result.setdefault("guidance", {})[solver] = {}
        for w in guidance:
            t0 = time.perf_counter()
            labels = torch.arange(num_samples) % num_classes  # balanced: every class equally often
            samples, info = draw(solver, y=labels, guidance=float(w))
            entry = {"guidance": float(w), "nfe": info.nfe, "n": num_samples, "seconds": time.perf_counter() - t0}
            if run.kind == "images":
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
    result["loss_by_t"] = denoising_error_by_t(run.model, run.sde, None, ref[:nll_num], seed=seed)
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
    """The guidance sweep of :func:`evaluate_run` as a markdown table, one row per (solver, w)."""
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


def guidance_plot(result: dict[str, Any], path: str | Path) -> Path | None:
    """FD against class accuracy (images), one point per guidance scale and a line per solver, as a
    PNG at ``path``; ``None`` when matplotlib is missing or there is no accuracy to plot (points)."""
    sweeps = result.get("guidance", {})
    if not sweeps or not all("accuracy" in r for sweep in sweeps.values() for r in sweep.values()):
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for solver, sweep in sweeps.items():
        rows = list(sweep.values())
        acc, fd = [r["accuracy"] for r in rows], [r["fd"] for r in rows]
        ax.plot(acc, fd, marker="o", label=solver)
        for r, a, f in zip(rows, acc, fd, strict=True):
            ax.annotate(f"w={r['guidance']:g}", (a, f), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("class accuracy of the samples (dataset classifier)")
    ax.set_ylabel("FD (classifier features)")
    ax.set_title("Classifier-free guidance: fidelity vs. class accuracy")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def _nll_text(entry: dict[str, Any]) -> str:
    if "bits_per_dim" in entry:
        return f"{entry['bits_per_dim']:.4f} ± {entry['bits_per_dim_se']:.4f} bits/dim ({entry['nfe']} NFE)"
    return f"{entry['nats_per_dim']:.4f} ± {entry['nats_per_dim_se']:.4f} nats/dim ({entry['nfe']} NFE)"


# ----------------------------------------------------------------------------- the comparison


@dataclass
class CompareResult:
    """What :func:`compare_losses` measured; ``rows`` holds one dict per setting."""

    out: Path
    rows: list[dict[str, Any]]
    settings: dict[str, Any]
    skipped: list[str] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)

    @property
    def markdown(self) -> str:
        return (self.out / "results.md").read_text()


def _settings(weightings: Sequence[str], times: Sequence[str]) -> tuple[list[tuple[str, str]], list[str]]:
    from .losses import TIME_SAMPLERS, WEIGHTINGS

    for w in weightings:
        WEIGHTINGS.get(w)
    for t in times:
        TIME_SAMPLERS.get(t)
    keep, skipped = [], []
    for w in weightings:
        for t in times:
            if w == "elbo" and t != "discrete":
                skipped.append(f"elbo × {t}: the discrete ELBO weighting is defined on the chain only")
            else:
                keep.append((w, t))
    if not keep:
        raise ValueError("no valid (weighting, time) setting to compare; 'elbo' needs time 'discrete'")
    return keep, skipped


def compare_losses(
    data: str = "digits",
    *,
    weightings: Sequence[str] = ("simple", "elbo", "likelihood"),
    times: Sequence[str] = ("discrete", "continuous"),
    budget: int = 2000,
    out: str | Path = "compare",
    seed: int = 0,
    batch_size: int = 128,
    solvers: Sequence[str] = ("ancestral", "ode"),
    sample_steps: int = 100,
    num_samples: int = 500,
    nll_num: int = 200,
    vlb_steps: int | None = None,
    importance: bool = False,
    config=None,
    progress: bool = False,
    log: Callable[[str], None] | None = print,
) -> CompareResult:
    """Train one model per (weighting, time) with equal ``budget`` (training steps) and seed; evaluate.

    Args:
        data: a dataset name from ``DATASETS`` or a path.
        weightings, times: the settings; ``elbo`` with continuous time is skipped (noted).
        budget: training steps per model (same batch size, learning rate and seed for all).
        out: output folder for the results, the plots and the dataset classifier (images); the
            models are trained and evaluated in memory, no run folder is written.
        solvers, sample_steps, num_samples: sample quality per solver at this many steps.
        nll_num: held-out samples for the likelihoods; vlb_steps: VLB chain length (default N).
        importance: draw training times with density ∝ w(t) for every setting (unbiased; reduces
            the variance of the ELBO/likelihood weightings, Song et al. 2021b; a no-op for ``simple``).
        config: a base :class:`~scoresde.config.TrainConfig` (network, preconditioning, lr, …) to start
            from; default ``TrainConfig()``, whose model is EDM-preconditioned (``scoresde
            compare-losses`` passes ``precondition="none"`` unless told otherwise: ε-networks).
    """
    from .config import DataConfig, LossConfig, TrainConfig
    from .samplers import SOLVERS
    from .train import train, validate

    log = log or (lambda msg: None)
    settings, skipped = _settings(weightings, times)
    for s in solvers:
        SOLVERS.get(s)
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be a positive number of training steps, got {budget!r}")
    for name, value, least in (
        ("sample_steps", sample_steps, 1),
        ("num_samples", num_samples, 2),
        ("nll_num", nll_num, 1),
    ):
        if value < least:
            raise ValueError(f"{name} must be >= {least}, got {value}")
    if vlb_steps is not None and vlb_steps < 2:
        raise ValueError(f"vlb_steps must be >= 2 (the VLB chain length) or None for the training N, got {vlb_steps}")
    out = Path(out)
    base = config or TrainConfig()
    base = dataclasses.replace(
        base,
        data=dataclasses.replace(base.data, name=data) if not Path(data).exists() else DataConfig(name=data),
        steps=budget,
        batch_size=batch_size,
        seed=seed,
        sample_every=0,
        checkpoint_every=0,
        keep=1,
    )
    configs = {}
    for w, t in settings:  # every setting checked before the first one trains
        loss = dataclasses.replace(base.loss or LossConfig(), weighting=w, time=t, importance=importance)
        configs[w, t] = dataclasses.replace(base, loss=loss)
        validate(configs[w, t])
    rows, classifier_dir = [], out / "classifier"
    for w, t in settings:
        name, cfg = f"{w}-{t}", configs[w, t]
        log(f"[{name}] training {budget} steps")
        run = train(cfg, None, progress=progress)
        log(f"[{name}] evaluating")
        row = evaluate_run(
            run,
            solvers=solvers,
            sample_steps=sample_steps,
            num_samples=num_samples,
            nll_num=nll_num,
            vlb_steps=vlb_steps,
            classifier_dir=classifier_dir,
            seed=seed,
            log=lambda msg, name=name: log(f"[{name}] {msg}"),
        )
        row.update({"setting": name, "weighting": w, "time": t, "final_loss": run.loss})
        row["train_loss_by_t"] = run.metrics[-1]["loss_by_t"] if run.metrics else None
        rows.append(row)
    settings_record = {
        "data": data,
        "budget_steps": budget,
        "batch_size": batch_size,
        "seed": seed,
        "solvers": list(solvers),
        "sample_steps": sample_steps,
        "num_samples": num_samples,
        "nll_num": nll_num,
        "vlb_steps": vlb_steps or base.loss.N,
        "importance": importance,
        "config": _jsonable(dataclasses.asdict(base)),
    }
    result = CompareResult(out, rows, settings_record, skipped)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(
        out / "results.json",
        json.dumps({"settings": settings_record, "skipped": skipped, "rows": rows}, indent=2).encode(),
    )
    atomic_write_bytes(out / "results.md", _markdown(result).encode())
    result.plots = _plots(result, base, log)
    return result


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def _markdown(result: CompareResult) -> str:
    rows, s = result.rows, result.settings
    bits = rows[0]["levels"] is not None
    unit = "bits/dim" if bits else "nats/dim"
    key = "bits_per_dim" if bits else "nats_per_dim"
    images = rows[0]["kind"] == "images"
    metrics = ("fd", "kid") if images else ("sw2", "mmd")
    lines = [
        f"# Loss comparison on {s['data']}",
        "",
        f"Budget: {s['budget_steps']} training steps per model, batch {s['batch_size']}, seed {s['seed']}"
        + (", training times importance-sampled ∝ w(t). " if s.get("importance") else ". ")
        + f"NLL on {s['nll_num']} held-out samples (mean ± s.e.); VLB with N = {s['vlb_steps']}; "
        f"samples: {s['num_samples']} per solver at {s['sample_steps']} steps.",
        "",
    ]
    if bits:
        lines += [
            f"Bits/dim with {rows[0]['levels']} levels "
            "(uniform dequantization for the ODE, discretized decoder for the VLB).",
            "",
        ]
    header = ["setting", "final loss", f"NLL ODE ({unit})", f"NLL VLB ({unit})"]
    for solver in s["solvers"]:
        header += [f"{solver} {m.upper()}" for m in metrics]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["setting"], f"{r['final_loss']:.4g}" if r["final_loss"] is not None else "—"]
        for method in ("ode", "vlb"):
            e = r["nll"].get(method)
            cells.append(f"{e[key]:.4f} ± {e[key + '_se']:.4f}" if e else "—")
        for solver in s["solvers"]:
            q = r["quality"].get(solver, {})
            cells += [f"{q[m]:.4g}" if m in q else "—" for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Lower is better everywhere. "
        + (
            "FD/KID: in the features of a classifier trained on the dataset "
            f"(test accuracy {rows[0]['classifier']['test_accuracy']:.3f})."
            if images and "classifier" in rows[0]
            else "SW2: sliced Wasserstein-2; MMD: unbiased MMD² (Gaussian kernels) against held-out data."
        ),
    ]
    if any("vlb" in r["nll"] for r in rows):
        scale = 1 / math.log(2) if bits else 1.0
        lines += ["", f"Where the VLB goes ({unit}): L_T + Σ L_(t−1) + L_0 (Ho et al. 2020, eq. 5):", ""]
        lines += ["| setting | prior L_T | diffusion Σ L_(t−1) | decoder L_0 |", "|---|---|---|---|"]
        for r in rows:
            terms = r["nll"].get("vlb", {}).get("terms_nats_per_dim", {})
            cells = [f"{terms[k] * scale:.4f}" if k in terms else "—" for k in ("prior", "diffusion", "decoder")]
            lines.append(f"| {r['setting']} | " + " | ".join(cells) + " |")
    lines += ["", "Unweighted denoising error E‖ε − ε̂‖²/D per t-bin (held-out data, same draws for every model):", ""]
    nb = len(rows[0]["loss_by_t"])
    lines += ["| setting | " + " | ".join(f"t∈[{b / nb:.1f},{(b + 1) / nb:.1f}]" for b in range(nb)) + " |"]
    lines += ["|" + "---|" * (nb + 1)]
    for r in rows:
        lines.append(f"| {r['setting']} | " + " | ".join(f"{v:.4f}" for v in r["loss_by_t"]) + " |")
    for note in result.skipped:
        lines += ["", f"Skipped: {note}."]
    return "\n".join(lines) + "\n"


def weighting_curves(sde, names: Sequence[str], N: int) -> dict[str, tuple[Tensor, Tensor]]:
    """w(t) of each weighting on a grid of t, normalized to mean 1 over the grid (discrete: N·w_i at t_i)."""
    from .losses import TimeDraw, make_weighting

    chain = sde.discretize(N)
    i = torch.arange(1, N + 1)
    t = chain.times[i]
    alpha, sigma = sde.marginal(t)
    draw = TimeDraw(t=t, alpha=alpha, sigma=sigma, importance=torch.ones_like(t), index=i, chain=chain)
    curves = {}
    for name in names:
        w = make_weighting(name)(sde, draw).double()
        curves[name] = (t, w / w.mean())
    return curves


def _plots(result: CompareResult, config, log) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("plots skipped: matplotlib is not installed (pip install -e '.[bench]'); the tables hold the same numbers")
        return []
    from .train import build_sde

    sde = build_sde(config)
    paths = []
    names = list(dict.fromkeys(r["weighting"] for r in result.rows))
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name, (t, w) in weighting_curves(sde, names, config.loss.N).items():
        ax.plot(t.numpy(), w.numpy(), label=name)
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel("w(t) on ‖ε − ε̂‖² (normalized to mean 1)")
    ax.set_title("Loss weightings")
    ax.legend()
    fig.tight_layout()
    paths.append(result.out / "weightings.png")
    fig.savefig(paths[-1])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for r in result.rows:
        nb = len(r["loss_by_t"])
        centres = [(b + 0.5) / nb * sde.T for b in range(nb)]
        ax.plot(centres, r["loss_by_t"], marker="o", label=r["setting"])
    ax.set_yscale("log")
    ax.set_xlabel("t (bin centre)")
    ax.set_ylabel("E‖ε − ε̂‖²/D (held-out)")
    ax.set_title("Denoising error per t-bin")
    ax.legend()
    fig.tight_layout()
    paths.append(result.out / "loss_by_t.png")
    fig.savefig(paths[-1])
    plt.close(fig)
    return paths
