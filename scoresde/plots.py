"""Everything scoresde draws with matplotlib (the ``log`` or ``bench`` extra): a run's loss curves
(:func:`plot_run`, ``scoresde plot``), fidelity against class accuracy over guidance scales
(:func:`guidance_plot`) and the compare-losses figures (:func:`loss_study_plots`).

Pictures of samples need no matplotlib: :func:`scoresde.generation.picture`. Every file is written
atomically (:func:`scoresde.imageio.atomic_write_bytes`).
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any

from .imageio import atomic_write_bytes

__all__ = ["INSTALL_PLOT", "guidance_plot", "loss_study_plots", "plot_run", "pyplot"]

INSTALL_PLOT = 'pip install -c constraints.txt -e ".[log]"'


def pyplot():
    """matplotlib's pyplot on the Agg backend, or ImportError naming the extra to install."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(f"plots need matplotlib; install it with: {INSTALL_PLOT}") from None
    return plt


def save(fig, path: str | os.PathLike, **options: Any) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", **options)
    pyplot().close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def plot_run(run: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write ``out``: left, the mean loss against the step (log scale) with one curve per t-bin
    (coloured from small t to large t); right, the newest ``samples/step_*.png``."""
    from .run_folder import read_metrics

    plt = pyplot()
    run, records = Path(run), read_metrics(run)
    previews = sorted((run / "samples").glob("step_*.png")) if (run / "samples").is_dir() else []
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [1.3, 1]})
    steps = [r["step"] for r in records]
    edges = records[-1].get("t_bins") or []
    bins = len(records[-1].get("loss_by_t") or [])
    colours = plt.cm.viridis([k / max(1, bins - 1) for k in range(bins)])
    for k in range(bins):
        values = [r["loss_by_t"][k] if r.get("loss_by_t") and k < len(r["loss_by_t"]) else None for r in records]
        points = [(s, v) for s, v in zip(steps, values, strict=True) if v is not None and v > 0]
        if points:
            label = f"t ∈ [{edges[k]:.2g}, {edges[k + 1]:.2g})" if k + 1 < len(edges) else f"bin {k}"
            left.plot(*zip(*points, strict=True), color=colours[k], lw=1, alpha=0.8, label=label)
    overall = [
        (s, r["loss"]) for s, r in zip(steps, records, strict=True) if r["loss"] > 0 and math.isfinite(r["loss"])
    ]
    if overall:
        left.plot(*zip(*overall, strict=True), color="black", lw=2.2, label="loss (all t)")
    left.set(xlabel="step", ylabel="loss", yscale="log", title=f"{run.name}: loss by training step")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7, ncol=2)
    if previews:
        image = plt.imread(previews[-1])
        right.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
        right.set_title(f"samples at step {int(previews[-1].stem.split('_')[-1])}")
    else:
        right.text(0.5, 0.5, "no sample pictures yet\n(--sample-every)", ha="center", va="center")
    right.axis("off")
    fig.tight_layout()
    return save(fig, out, dpi=110)


def guidance_plot(result: dict[str, Any], path: str | Path) -> Path | None:
    """FD against class accuracy (images), one point per guidance scale and a line per solver, as a
    PNG at ``path`` (the guidance sweep of :func:`scoresde.evaluation.evaluate`); ``None`` when
    matplotlib is missing or there is no accuracy to plot (points)."""
    sweeps = result.get("guidance", {})
    if not sweeps or not all("accuracy" in r for sweep in sweeps.values() for r in sweep.values()):
        return None
    try:
        plt = pyplot()
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
    return save(fig, path)


def loss_study_plots(result, curves: dict[str, tuple[Any, Any]], T: float, log) -> list[Path]:
    """``weightings.png`` (the ``curves`` w(t) of every weighting on one axis), ``loss_by_t.png`` (the
    denoising error per t-bin of every setting on [0, T], mean over seeds) and ``metrics.png`` (every
    metric's mean ± sd over seeds per setting) in ``result.out``, for
    :func:`scoresde.loss_study.compare_losses`; none (with a note through ``log``) without matplotlib."""
    try:
        plt = pyplot()
    except ImportError:
        log("plots skipped: matplotlib is not installed (pip install -e '.[bench]'); the tables hold the same numbers")
        return []
    paths = []
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name, (t, w) in curves.items():
        ax.plot(t.numpy(), w.numpy(), label=name)
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel("w(t) on ‖ε − ε̂‖² (normalized to mean 1)")
    ax.set_title("Loss weightings")
    ax.legend()
    fig.tight_layout()
    paths.append(save(fig, result.out / "weightings.png"))

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for e in result.summary:
        nb = len(e["loss_by_t"])
        centres = [(b + 0.5) / nb * T for b in range(nb)]
        ax.plot(centres, e["loss_by_t"], marker="o", label=f"{e['setting']} (n={e['n']})")
    ax.set_yscale("log")
    ax.set_xlabel("t (bin centre)")
    ax.set_ylabel("E‖ε − ε̂‖²/D (held-out, mean over seeds)")
    ax.set_title("Denoising error per t-bin")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(save(fig, result.out / "loss_by_t.png"))

    keys = list(dict.fromkeys(k for e in result.summary for k in e["metrics"]))
    fig, axes = plt.subplots(1, len(keys), figsize=(2.6 * len(keys), 3.6), dpi=100, squeeze=False)
    names = [e["setting"] for e in result.summary]
    for ax, key in zip(axes[0], keys, strict=True):
        cells = [e["metrics"].get(key) for e in result.summary]
        means = [c["mean"] if c else float("nan") for c in cells]
        sds = [c["sd"] if c and c["n"] > 1 else 0.0 for c in cells]
        ax.errorbar(range(len(names)), means, yerr=sds, fmt="o", capsize=3)
        for i, c in enumerate(cells):  # the seeds themselves, faint
            if c:
                ax.plot([i] * len(c["values"]), c["values"], ".", color="grey", alpha=0.5)
        ax.set_xticks(range(len(names)), names, rotation=75, fontsize=7)
        ax.set_title(key.replace("_", " "), fontsize=9)
    fig.suptitle("mean ± sd over seeds (grey: each seed); lower is better", fontsize=9)
    fig.tight_layout()
    paths.append(save(fig, result.out / "metrics.png"))
    return paths
