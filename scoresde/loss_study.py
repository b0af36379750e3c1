"""The compare-losses study: loss weightings × time sampling on equal terms.

The seed's claim: λ(t) = 1 (DDPM's L_simple) gives better samples, the ELBO weighting better
likelihood. :func:`compare_losses` tests it on your data: it trains one model per (weighting,
time) setting with the same budget (training steps), seed, network and data, then measures each
with the same held-out points and the same random numbers:

NLL by the probability-flow ODE and by the discrete VLB, sample quality per solver and the
unweighted denoising error per t-bin, all by :func:`scoresde.evaluation.evaluate`. It writes
``results.json``, ``results.md`` and, when matplotlib is installed (``bench`` extra),
``weightings.png`` and ``loss_by_t.png`` (:func:`scoresde.plots.loss_study_plots`).

In a notebook::

    from scoresde.loss_study import compare_losses
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

from .imageio import atomic_write_bytes

__all__ = ["CompareResult", "compare_losses", "weighting_curves"]


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
    from .build import build_sde, validate
    from .config import DataConfig, LossConfig, TrainConfig
    from .evaluation import evaluate
    from .plots import loss_study_plots
    from .samplers import SOLVERS
    from .trainer import train

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
        dm = train(cfg, None, progress=progress)
        log(f"[{name}] evaluating")
        row = evaluate(
            dm,
            solvers=solvers,
            sample_steps=sample_steps,
            num_samples=num_samples,
            nll_num=nll_num,
            vlb_steps=vlb_steps,
            classifier_dir=classifier_dir,
            seed=seed,
            log=lambda msg, name=name: log(f"[{name}] {msg}"),
        )
        metrics = dm.provenance.metrics
        row.update({"setting": name, "weighting": w, "time": t, "final_loss": dm.provenance.loss})
        row["train_loss_by_t"] = metrics[-1]["loss_by_t"] if metrics else None
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
    sde = build_sde(base)
    names = list(dict.fromkeys(w for w, _ in settings))
    result.plots = loss_study_plots(result, weighting_curves(sde, names, base.loss.N), sde.T, log)
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
