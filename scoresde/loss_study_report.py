"""The tables and the computed reading of a compare-losses study (:mod:`scoresde.loss_study`).

:func:`summarize` turns the per-model rows into one entry per setting (mean ± sd over seeds of every
metric of :func:`metric_values`), :func:`read_metric` says which setting is best on one metric and
whether its lead over the runner-up exceeds 2 sd, and :func:`markdown` writes ``results.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .loss_study import CompareResult

__all__ = ["markdown", "mean_sd", "metric_values", "read_metric", "summarize"]


def metric_values(row: dict[str, Any]) -> dict[str, float]:
    """The comparable numbers of one model: NLL by ODE and VLB (bits/dim for quantized data, else
    nats/dim) and each solver's sample metrics, keyed ``nll_ode``, ``nll_vlb``, ``<solver>_<metric>``."""
    key = "bits_per_dim" if row.get("levels") is not None else "nats_per_dim"
    values = {f"nll_{m}": e[key] for m, e in row["nll"].items()}
    for solver, q in row["quality"].items():
        values.update({f"{solver}_{m}": q[m] for m in ("fd", "kid", "sw2", "mmd") if m in q})
    return values


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1; NaN for a single value)."""
    n, mean = len(values), sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return mean, sd


def summarize(rows: Sequence[dict[str, Any]], order: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One entry per setting (in ``order``, default first appearance): its ``n`` seeds and, per metric of
    :func:`metric_values`, ``mean``, ``sd`` (over seeds, n − 1), ``values`` and ``seeds``; plus the mean
    denoising error per t-bin and the mean VLB terms."""
    order = list(order or dict.fromkeys(r["setting"] for r in rows))
    out = []
    for name in order:
        mine = [r for r in rows if r["setting"] == name]
        if not mine:
            continue
        per = [metric_values(r) for r in mine]
        metrics = {}
        for key in per[0]:
            values = [p[key] for p in per]
            mean, sd = mean_sd(values)
            metrics[key] = {
                "mean": mean,
                "sd": sd,
                "n": len(values),
                "values": values,
                "seeds": [r["seed"] for r in mine],
            }
        entry = {"setting": name, "n": len(mine), "metrics": metrics}
        entry["loss_by_t"] = [sum(c) / len(c) for c in zip(*(r["loss_by_t"] for r in mine), strict=True)]
        losses = [r["final_loss"] for r in mine if r.get("final_loss") is not None]
        entry["final_loss"] = sum(losses) / len(losses) if losses else None
        terms = [r["nll"]["vlb"]["terms_nats_per_dim"] for r in mine if "vlb" in r["nll"]]
        if terms:
            entry["vlb_terms_nats_per_dim"] = {k: sum(t[k] for t in terms) / len(terms) for k in terms[0]}
        out.append(entry)
    return out


def read_metric(cells: dict[str, tuple[float, float, int]], lower_is_better: bool = True) -> dict[str, Any]:
    """Which setting is best on one metric, from ``{setting: (mean, sd, n)}``, and whether its lead is real.

    The gap to the runner-up counts when it exceeds 2 sd, sd the larger of the two settings' standard
    deviations over seeds; otherwise the verdict is ``within noise``; with a single seed in either it is
    ``spread unknown``. Returns best, runner_up, gap, threshold (2 sd) and verdict.
    """
    ranked = sorted(cells, key=lambda k: cells[k][0] if lower_is_better else -cells[k][0])
    best = ranked[0]
    if len(ranked) == 1:
        return {"best": best, "runner_up": None, "gap": None, "threshold": None, "verdict": "only setting"}
    runner = ranked[1]
    gap = abs(cells[best][0] - cells[runner][0])
    if min(cells[best][2], cells[runner][2]) < 2:
        return {"best": best, "runner_up": runner, "gap": gap, "threshold": None, "verdict": "spread unknown"}
    threshold = 2 * max(cells[best][1], cells[runner][1])
    verdict = "exceeds 2 sd" if gap > threshold else "within noise"
    return {"best": best, "runner_up": runner, "gap": gap, "threshold": threshold, "verdict": verdict}


def _label(key: str, unit: str) -> str:
    if key.startswith("nll_"):
        return f"NLL {key[4:].upper()} ({unit})"
    solver, metric = key.rsplit("_", 1)
    return f"{solver} {metric.upper()}"


def _cell(m: dict[str, Any] | None) -> str:
    if m is None:
        return "—"
    return f"{m['mean']:.4g}" + (f" ± {m['sd']:.2g}" if m["n"] > 1 else "")


def markdown(result: CompareResult) -> str:
    """results.md of a study: the settings, the table of mean ± sd per setting, the VLB terms, the
    denoising error per t-bin and the computed reading (:func:`read_metric`) per metric."""
    rows, s, summary = result.rows, result.settings, result.summary
    bits = rows[0]["levels"] is not None
    unit = "bits/dim" if bits else "nats/dim"
    images = rows[0]["kind"] == "images"
    keys = list(dict.fromkeys(k for e in summary for k in e["metrics"]))
    done, planned = len(rows), len(s["seeds"]) * len(s["settings"])
    lines = [
        f"# Loss comparison on {s['data']}",
        "",
        f"Budget: {s['budget_steps']} training steps per model, batch {s['batch_size']}; seeds "
        f"{s['seeds'][0]}…{s['seeds'][-1]} (each: initial weights, data order, held-out split and evaluation draws); "
        f"importance sampling of t: {s['importance']}. NLL on {s['nll_num']} held-out samples "
        f"(ODE rtol = atol = {s.get('ode_tol') or 'the default 1e-5'}); VLB with N = {s['vlb_steps']}; "
        f"samples: {s['num_samples']} per solver at {s['sample_steps']} steps.",
        "",
        f"Models done: {done} of {planned}"
        + (" (partial: the study is running or was stopped)." if done < planned else "."),
        "",
        "Cells: mean ± sd over seeds (sd with n − 1); n = the seeds of that setting. Lower is better everywhere.",
        "",
    ]
    if bits:
        lines += [f"Bits/dim, {rows[0]['levels']} levels (ODE: uniform dequantization; VLB: discretized decoder).", ""]
    header = ["setting", "n", "final loss", *(_label(k, unit) for k in keys)]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for e in summary:
        loss = f"{e['final_loss']:.4g}" if e["final_loss"] is not None else "—"
        lines.append(
            f"| {e['setting']} | {e['n']} | {loss} | " + " | ".join(_cell(e["metrics"].get(k)) for k in keys) + " |"
        )
    lines += [
        "",
        (
            "FD/KID: in the features of a classifier trained on the dataset "
            f"(test accuracy {rows[0]['classifier']['test_accuracy']:.3f})."
            if images and "classifier" in rows[0]
            else "SW2: sliced Wasserstein-2; MMD: unbiased MMD² (Gaussian kernels) against held-out data."
        ),
    ]
    if any("vlb_terms_nats_per_dim" in e for e in summary):
        scale = 1 / math.log(2) if bits else 1.0
        lines += [
            "",
            f"Where the VLB goes ({unit}, mean over seeds): L_T + Σ L_(t−1) + L_0 (Ho et al. 2020, eq. 5):",
            "",
        ]
        lines += ["| setting | prior L_T | diffusion Σ L_(t−1) | decoder L_0 |", "|---|---|---|---|"]
        for e in summary:
            terms = e.get("vlb_terms_nats_per_dim", {})
            cells = [f"{terms[k] * scale:.4f}" if k in terms else "—" for k in ("prior", "diffusion", "decoder")]
            lines.append(f"| {e['setting']} | " + " | ".join(cells) + " |")
    lines += ["", "Unweighted denoising error E‖ε − ε̂‖²/D per t-bin (held-out data, mean over seeds):", ""]
    nb = len(summary[0]["loss_by_t"])
    lines += ["| setting | " + " | ".join(f"t∈[{b / nb:.1f},{(b + 1) / nb:.1f}]" for b in range(nb)) + " |"]
    lines += ["|" + "---|" * (nb + 1)]
    for e in summary:
        lines.append(f"| {e['setting']} | " + " | ".join(f"{v:.4f}" for v in e["loss_by_t"]) + " |")
    for note in result.skipped:
        lines += ["", f"Skipped: {note}."]
    lines += ["", "## Reading (computed)", "", "Best = lowest mean; the lead counts when the gap to the runner-up "
              "exceeds 2 sd (the larger sd of the two).", ""]  # fmt: skip
    by = {e["setting"]: e["metrics"] for e in summary}
    for k in keys:
        cells = {e["setting"]: (m["mean"], m["sd"], m["n"]) for e in summary if (m := e["metrics"].get(k))}
        r = read_metric(cells)
        text = f"- {_label(k, unit)}: best {r['best']} ({_cell(by[r['best']].get(k))})"
        if r["runner_up"] is not None:
            text += f", runner-up {r['runner_up']} ({_cell(by[r['runner_up']].get(k))}); gap {r['gap']:.3g}"
            text += f" vs 2 sd = {r['threshold']:.3g}: " if r["threshold"] is not None else ": "
            text += "one seed, spread unknown" if r["verdict"] == "spread unknown" else r["verdict"]
        lines.append(text + ".")
    return "\n".join(lines) + "\n"
