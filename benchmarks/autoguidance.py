"""Autoguidance on trained runs: each run guided by its own EMA weights from earlier in training.

Autoguidance (Karras et al. 2024) samples D_0 + w·(D_1 − D_0), D_1 the final EMA model and D_0 a
weaker version of it; here D_0 is the run's EMA at a fraction f of its steps (the checkpoint nearest
f × final step, so train the runs with ``--checkpoint-every 250 --keep 50``). Every (f, w) cell
draws ``--num`` samples with each solver at ``--steps`` (20) from the same noise as the model alone
(w = 1). An autoguided evaluation is two forwards: compare it with the model alone at about the same
NFE too (``--steps 10``, or ``--steps 41 --fractions ""`` for the model alone only).

Two judges, both trained on the labelled data set:

- **FD**: Fréchet distance in the features of the data's small classifier (``scoresde.metrics``,
  the judge of every other table) against every image of the data set;
- **digit share**: the share of samples that a second, stronger classifier (3,000 steps, seed 1;
  its held-out accuracy is in the report) assigns to one class with probability ≥ 0.9 — a
  count of recognisable digits; the data's own images score near 1.

Mean ± sd over runs, and each cell's paired difference to the model alone (same run, same noise)::

    for s in 0 1 2; do
        scoresde train --data mnist --clock cpu --seed $s --checkpoint-every 250 --keep 50 --out runs/m$s
    done
    python benchmarks/autoguidance.py runs/m0 --save m0.json      # one process per run
    python benchmarks/autoguidance.py --merge m0.json m1.json m2.json --out benchmarks/results/autoguidance_mnist.md

``--merge`` joins the cells of parts that measured the same run (e.g. another solver, measured later).

A class-conditional run (``scoresde train --conditional``) is sampled unconditionally (the null label)
in every cell above; ``--cfg 1,2`` adds the same cells again with classifier-free guidance at each
scale, ``--num`` split evenly over the classes. ``--arm NAME`` labels a process's runs: the report
keeps arms apart (mean ± sd over the runs of one arm) and, where two arms hold runs trained with the
same seeds, gives a paired difference to the first arm's model alone::

    python benchmarks/autoguidance.py runs/u0 --arm unconditional --save u0.json
    python benchmarks/autoguidance.py runs/c0 --arm conditional --cfg 1,2,3 --save c0.json
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from fair import mean_sd

from scoresde import checkpoint as ckpt
from scoresde.build import build_model
from scoresde.generation import generate
from scoresde.metrics import (
    frechet_distance,
    labelled_images,
    load_or_train_classifier,
    sliced_wasserstein,
    train_classifier,
)
from scoresde.nets.classifier import Classifier
from scoresde.run_folder import load_run

CONFIDENT = 0.9


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def guide_at(dm, fraction: float, weights: str = "ema"):
    """(the run's network at the checkpoint nearest ``fraction`` of its final step, that step); ``weights``:
    the checkpoint's ``ema`` or raw ``model`` weights."""
    run_dir, config = dm.provenance.run_dir, dm.provenance.config
    steps = [int(p.stem.split("_")[1]) for p in ckpt.checkpoint_files(run_dir)]
    step = min(steps, key=lambda s: abs(s - fraction * dm.provenance.step))
    _, tensors = ckpt.read_checkpoint(ckpt.checkpoint_path(run_dir, step))
    net = build_model(config, dm.data_shape, dm.kind, dm.sde, dm.num_classes)
    ckpt.load_weights(net, ckpt.section(tensors, f"{weights}."), run_dir)
    return net.requires_grad_(False).eval(), step


class Judges:
    """The data's FD classifier and the stronger classifier that counts confident samples."""

    def __init__(self, data: str, cache: Path) -> None:
        self.x, labels = labelled_images(data)
        self.fd_net, self.fd_info = load_or_train_classifier(data, cache)
        self.features = self.fd_net.embed(self.x)
        cached = cache / "strong.pt"  # the stronger judge, trained once per data set
        if cached.exists():
            state, self.strong_accuracy = torch.load(cached)
            self.strong = Classifier(tuple(self.x.shape[1:]), int(labels.max()) + 1)
            self.strong.load_state_dict(state)
            self.strong.eval()
        else:
            self.strong, self.strong_accuracy = train_classifier(self.x, labels, steps=3000, seed=1)
            cache.mkdir(parents=True, exist_ok=True)
            torch.save((self.strong.state_dict(), self.strong_accuracy), cached)
        self.data_share = self.share(self.x)

    @torch.no_grad()
    def share(self, images: torch.Tensor) -> float:
        p = torch.cat([self.strong(images[i : i + 500].float()).softmax(1) for i in range(0, len(images), 500)])
        return (p.max(1).values >= CONFIDENT).double().mean().item()

    def score(self, samples: torch.Tensor) -> dict[str, float]:
        samples = samples.clamp(-1, 1)
        return {"fd": frechet_distance(self.fd_net.embed(samples), self.features), "share": self.share(samples)}


class PointJudge:
    """2-D sets: sliced W2 to the run's held-out points (the judge of budget_2d.md)."""

    def __init__(self, reference: torch.Tensor) -> None:
        self.reference = reference

    def score(self, samples: torch.Tensor) -> dict[str, float]:
        g = torch.Generator().manual_seed(0)
        return {"sw2": sliced_wasserstein(samples.double(), self.reference.double(), generator=g)}


METRICS = {"fd": "FD", "share": "digit share", "sw2": "SW2"}


def run_cells(
    run: str,
    judges,
    fractions,
    scales,
    solvers,
    num: int,
    seed: int,
    steps: int = 20,
    weights: str = "ema",
    cfg=(),
    arm: str = "",
) -> dict:
    dm = load_run(run)
    if cfg and not dm.num_classes:
        raise SystemExit(f"--cfg needs a class-conditional run; {run} is unconditional")
    row = {"run": run, "arm": arm, "seed": dm.provenance.config.seed, "step": dm.provenance.step, "cells": []}
    guides = {f: guide_at(dm, f, weights) for f in fractions}
    for solver, c in ((solver, c) for solver in solvers for c in (None, *cfg)):
        cells = [(None, None, 1.0)] + [(f, *guides[f], w) for f in fractions for w in scales]
        labels = {"classes": "null"} if c is None else {"classes": "all", "guidance": c}
        n = num if c is None else num // dm.num_classes  # per class with classes="all"
        for cell in cells:
            f, w = cell[0], cell[-1]
            model = dm if f is None else dataclasses.replace(dm, guide=cell[1])
            t0 = time.process_time()
            out = generate(
                model, n, solver=solver, steps=steps, seed=seed, autoguidance=w if f is not None else 1, **labels
            )
            scores = judges.score(out.samples)
            entry = {"solver": out.solver, "steps": steps, "fraction": f, "w": w, "cfg": c}
            entry["guide_weights"] = None if f is None else weights
            entry["guide_step"] = None if f is None else cell[2]
            row["cells"].append({**entry, **scores, "nfe": out.nfe, "cpu_s": time.process_time() - t0})
            log(
                f"{run} {out.solver} cfg={c} f={f} w={w:g}: "
                + ", ".join(f"{METRICS[m]} {v:.4f}" for m, v in scores.items())
            )
    return row


def key(cell: dict) -> tuple:
    weights = cell.get("guide_weights") or "ema"
    return cell["solver"], cell.get("steps", 20), cell["fraction"], cell["w"], weights, cell.get("cfg")


def order(k: tuple) -> tuple:
    return k[0], k[5] or 0, k[1], k[2] or 0, k[4], k[3]


def report(result: dict) -> str:
    rows = result["rows"]
    arms = list(dict.fromkeys(r.get("arm", "") for r in rows))
    if len(arms) > 1:
        return arms_report(result, arms)
    keys = sorted(dict.fromkeys(key(c) for c in rows[0]["cells"]), key=order)
    by_run = [{key(c): c for c in row["cells"]} for row in rows]

    lines = header(
        result,
        "Autoguidance by the run's own early EMA weights",
        ", ".join(f"{r['run']} (step {r['step']})" for r in rows),
        f"{result['num']} samples per cell, sampling seed {result['seed']} (the same noise in every cell"
        f" of a run). {judged(result)} f: the guide is the EMA (or the raw weights, where the row says) at the"
        " checkpoint nearest f × the final step."
        " Δ: paired difference to the same solver's model alone at 20 steps (same run and noise), mean ± sd over"
        " runs.",
    )
    metrics = [m for m in METRICS if m in rows[0]["cells"][0]]
    lines.append("| solver | steps | guide at f | w | NFE | " + " | ".join(f"{METRICS[m]} | Δ" for m in metrics) + " |")
    lines.append("|---|---|---|---|---|" + "---|---|" * len(metrics))
    for k in keys:
        base = (k[0], 20, None, 1.0, "ema", None)  # the model alone at 20 steps
        cells = [k[0], str(k[1]), guide_text(k), f"{k[3]:g}", str(by_run[0][k]["nfe"])]
        for m in metrics:
            value, delta = mean_sd([r[k][m] for r in by_run]), mean_sd([r[k][m] - r[base][m] for r in by_run])
            cells += [f"{value[0]:.4f} ± {value[1]:.4f}", "" if k == base else f"{delta[0]:+.4f} ± {delta[1]:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def header(result: dict, title: str, runs: str, setting: str) -> list[str]:
    """The lines above a report's table: title, provenance (command, machine, runs) and setting."""
    data, n = result["data"], len(result["rows"])
    provenance = f"Generated {result['date']} by `{result['command']}` on {result['machine']}; runs: {runs}."
    return [f"# {title} ({data}, {n} runs)", "", provenance, "", setting, ""]


def guide_text(k: tuple) -> str:
    return "—" if k[2] is None else f"{k[2]:g}" + (" (raw weights)" if k[4] == "model" else "")


def arms_report(result: dict, arms: list[str]) -> str:
    """One table over arms (e.g. unconditional and conditional runs): mean ± sd over each arm's runs, and
    the paired difference (same seed) to the first arm's model alone at 20 steps."""
    rows = result["rows"]
    first = {r["seed"]: {key(c): c for c in r["cells"]} for r in rows if r["arm"] == arms[0]}
    lines = header(
        result,
        "Unconditional and class-conditional runs, guided",
        ", ".join(f"{r['run']} ({r['arm']}, seed {r['seed']}, step {r['step']})" for r in rows),
        f"{result['num']} samples per cell, sampling seed {result['seed']}. {judged(result)} Autoguidance: the"
        " guide is the run's EMA at the checkpoint nearest f × the final step, w its scale. CFG: classifier-free"
        " guidance at that scale with labels balanced over the classes; — : the null label (unconditional)."
        f" Δ: paired difference (same training seed) to the {arms[0]} runs' model alone at 20 steps, mean ± sd.",
    )
    metrics = [m for m in METRICS if m in rows[0]["cells"][0]]
    lines.append(
        "| runs | solver | steps | CFG | guide at f | w | NFE | "
        + " | ".join(f"{METRICS[m]} | Δ" for m in metrics)
        + " |"
    )
    lines.append("|---|---|---|---|---|---|---|" + "---|---|" * len(metrics))
    for arm in arms:
        by_run = [(r["seed"], {key(c): c for c in r["cells"]}) for r in rows if r["arm"] == arm]
        for k in sorted(dict.fromkeys(k for _, cells in by_run for k in cells), key=order):
            base = (k[0], 20, None, 1.0, "ema", None)
            present = [(s, cells[k]) for s, cells in by_run if k in cells]
            cfg = "—" if k[5] is None else f"{k[5]:g}"
            cells = [arm, k[0], str(k[1]), cfg, guide_text(k), f"{k[3]:g}", str(present[0][1]["nfe"])]
            for m in metrics:
                value = mean_sd([c[m] for _, c in present])
                paired = [c[m] - first[s][base][m] for s, c in present if s in first and base in first[s]]
                same = arm == arms[0] and k == base
                delta = "" if same or not paired else "{:+.4f} ± {:.4f}".format(*mean_sd(paired))
                cells += [f"{value[0]:.4f} ± {value[1]:.4f}", delta]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def judged(result: dict) -> str:
    if "sw2" in result["rows"][0]["cells"][0]:
        return "SW2: sliced W2 to each run's held-out points (256 projections)."
    return (
        f"FD: the data's classifier (held-out accuracy {result['fd_accuracy']:.3f}) against all"
        f" {result['n_data']} images. Digit share: samples a stronger classifier (held-out accuracy"
        f" {result['strong_accuracy']:.3f}) assigns to one class with p ≥ {CONFIDENT}; the data's own images:"
        f" {result['data_share']:.3f}."
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="*")
    p.add_argument("--fractions", default="0.2,0.4,0.6")
    p.add_argument("--scales", default="2,3,4")
    p.add_argument("--solvers", default="auto")
    p.add_argument("--num", type=int, default=500)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guide-weights", default="ema", choices=("ema", "model"), help="the guide's EMA or raw weights")
    p.add_argument("--cfg", default="", help="classifier-free guidance scales of a conditional run (e.g. 1,2)")
    p.add_argument("--arm", default="", help="label of these runs in the report (see the docstring)")
    p.add_argument("--judges", type=Path, help="folder caching the judges (default: RUN/classifier)")
    p.add_argument("--save", type=Path, help="write this process's rows (JSON) for --merge")
    p.add_argument("--merge", nargs="*", type=Path, help="JSON files of --save to report together")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/autoguidance_mnist.md"))
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.merge:
        parts = [json.loads(f.read_text()) for f in args.merge]
        rows: dict[str, dict] = {}  # one row per run: the cells of every part that measured it
        for row in (r for part in parts for r in part["rows"]):
            rows.setdefault(row["run"], {**row, "cells": []})["cells"] += row["cells"]
        result = {**parts[0], "rows": list(rows.values())}
        result["command"] = " && ".join(dict.fromkeys(part["command"] for part in parts))
    else:
        dm = load_run(args.runs[0])
        data = dm.dataset
        fractions = [float(f) for f in args.fractions.split(",") if f]
        scales = [float(w) for w in args.scales.split(",")]
        solvers = args.solvers.split(",")
        cfg = [float(c) for c in args.cfg.split(",") if c]
        result = {
            "data": data,
            "date": datetime.date.today().isoformat(),
            "command": "python " + shlex.join(sys.argv),
            "machine": f"{platform.machine()}, torch {torch.__version__}, one thread",
            "num": args.num,
            "seed": args.seed,
        }
        if dm.kind == "points":
            rows = [run_cells(r, PointJudge(load_run(r).reference), fractions, scales, solvers, args.num, args.seed,
                              args.steps, args.guide_weights) for r in args.runs]  # fmt: skip
        else:
            judges = Judges(data, Path(args.judges or Path(args.runs[0]) / "classifier"))
            log(f"judges: FD classifier {judges.fd_info['test_accuracy']:.3f}, strong {judges.strong_accuracy:.3f}")
            rows = [
                run_cells(
                    r,
                    judges,
                    fractions,
                    scales,
                    solvers,
                    args.num,
                    args.seed,
                    args.steps,
                    args.guide_weights,
                    cfg,
                    args.arm,
                )
                for r in args.runs
            ]
            result.update(
                fd_accuracy=judges.fd_info["test_accuracy"],
                strong_accuracy=judges.strong_accuracy,
                data_share=judges.data_share,
                n_data=len(judges.x),
            )
        result["rows"] = rows
        if args.save:
            args.save.write_text(json.dumps(result, indent=1))
            return
    args.out.write_text(report(result))
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
