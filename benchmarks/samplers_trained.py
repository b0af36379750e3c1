"""Time grids on trained runs: Fréchet distance (classifier features) per solver × grid × NFE.

A check of ``grid="auto"`` (chosen on exact mixtures by ``samplers.py --defaults``) on real
models: unipc and dpm-solver++ at NFE 10 and 20 (steps = NFE − 1, plus the denoising step) on
every registered grid, and ancestral on its uniform grid, ``--num`` samples per cell and
``--seeds`` sampling seeds per run. The judge is the FD in the features of the dataset's
classifier (``scoresde.metrics``) against the *whole* labelled set (1,797 digits or 5,000 MNIST
images: a larger reference than the held-out split, so less noise), computed for each run.

Several runs (training seeds) may be given; the summary averages every grid over runs × seeds
and ranks grids by the mean paired difference to the per-cell best (paired: same run, seed and
x_T), with its sd.

    scoresde train --out runs/digits && python benchmarks/samplers_trained.py runs/digits
    python benchmarks/samplers_trained.py runs/a runs/b runs/c --out benchmarks/results/grids_digits.md
    python benchmarks/samplers_trained.py runs/a runs/b --sweep --out ...   # solver families per NFE

``--sweep`` instead compares the solver families with their default (``auto``) grids at NFE 10,
20, 50 and 100 (ODE: unipc, dpm-solver++, ddim; SDE: ancestral, euler-maruyama, sde-dpm-solver++), plus the
converged ODE (scipy RK45, rtol 1e-4): where on a trained model the stochastic samplers overtake
the deterministic ones.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import scoresde as sd
from scoresde.grids import TIME_GRIDS
from scoresde.metrics import frechet_distance, labelled_images, load_or_train_classifier
from scoresde.run_folder import load_run

NFES = (10, 20)
SOLVERS = ("unipc", "dpm-solver++")
SWEEP_NFES = (10, 20, 50, 100)
SWEEP_SOLVERS = ("unipc", "dpm-solver++", "ddim", "ancestral", "euler-maruyama", "sde-dpm-solver++")


def cells() -> list[tuple[int, str, int, str]]:
    """(NFE, solver, steps, grid) for every cell of one run."""
    out = []
    for nfe in NFES:
        out += [(nfe, s, nfe - 1, g) for s in SOLVERS for g in TIME_GRIDS]
        out.append((nfe, "ancestral", nfe, "uniform"))
    return out


def sweep_cells(nfes=SWEEP_NFES, solvers=SWEEP_SOLVERS) -> list[tuple[int, str, int, str]]:
    """(NFE, solver, steps, grid): every sweep solver on its default grid, steps fitting the NFE budget."""
    out = []
    for nfe in nfes:
        for solver in solvers:
            out.append((nfe, solver, nfe if solver in ("ancestral", "ddim") else nfe - 1, "auto"))
    return out


def evaluate(run_dir: str, num: int, seeds: int, sweep: bool = False, nfes=SWEEP_NFES, solvers=SWEEP_SOLVERS):
    """(dataset, {(nfe, solver, grid): [FD per seed]}) for one run."""
    run = load_run(run_dir)
    dataset = run.provenance.config.data.name
    classifier, info = load_or_train_classifier(dataset, run_dir)
    reference, _ = labelled_images(dataset)
    print(f"{run_dir}: {dataset}, classifier accuracy {info['test_accuracy']:.3f}, reference {len(reference)}")
    ref_features = classifier.embed(reference.float())  # once per run, not once per cell
    results = {}
    todo = [*sweep_cells(nfes, solvers), (None, "ode", None, "uniform")] if sweep else cells()
    for nfe, solver, steps, grid in todo:
        values = []
        for seed in range(seeds):
            g = torch.Generator().manual_seed(seed)
            kwargs = {"rtol": 1e-4, "atol": 1e-4} if solver == "ode" else {"grid": grid}
            x, info = sd.sample(
                run.model, run.sde, (num, *run.data_shape), solver, steps or 1, run.prediction, g, clip_x0=1.0,
                return_info=True, **kwargs,
            )  # fmt: skip
            values.append(frechet_distance(classifier.embed(x.clamp(-1, 1).float()), ref_features))
            nfe_used = info.nfe
        results[(nfe or nfe_used, solver, grid)] = values
        print(f"  NFE {nfe or nfe_used} {solver} {grid}: " + ", ".join(f"{v:.3f}" for v in values), flush=True)
    return dataset, results


def _runs_line(runs: dict[str, tuple[str, dict]], args) -> str:
    return (
        f"Runs: {', '.join(f'`{r}` ({d})' for r, (d, _) in runs.items())}. {args.num} samples per cell, "
        f"{args.seeds} sampling seeds per run; "
    )


def _mean_sd(vals: list[float]) -> str:
    return f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals) if len(vals) > 1 else 0:.3f}"


def sweep_report(runs: dict[str, tuple[str, dict]], args) -> str:
    lines = [
        "# Solver families per NFE on trained runs (python benchmarks/samplers_trained.py --sweep)",
        "",
        _runs_line(runs, args)
        + "every solver with its default grid (`auto`) and the steps that fit the NFE budget (final denoising "
        "step included); FD in classifier features against the whole labelled "
        f"set; clip_x0=1; torch {torch.__version__}, one thread. Cells: mean ± sd over runs × seeds.",
        "",
        "| solver | " + " | ".join(f"NFE {n}" for n in args.nfes) + " |",
        "|---|" + "---|" * len(args.nfes),
    ]
    for solver in args.solvers:
        row = []
        for nfe in args.nfes:
            vals = [v for _, res in runs.values() for v in res[(nfe, solver, "auto")]]
            row.append(_mean_sd(vals))
        lines.append(f"| {solver} | " + " | ".join(row) + " |")
    for run, (_, res) in runs.items():
        (key,) = [k for k in res if k[1] == "ode"]
        lines.append(f"\nConverged ODE (RK45, rtol 1e-4) on `{run}`: NFE {key[0]}, FD " + ", ".join(
            f"{v:.3f}" for v in res[key]) + ".")  # fmt: skip
    lines.append(f"\n{time.time() - args.t0:.0f} s.")
    return "\n".join(lines) + "\n"


def report(runs: dict[str, tuple[str, dict]], args) -> str:
    lines = [
        "# Time grids on trained runs (python benchmarks/samplers_trained.py)",
        "",
        _runs_line(runs, args) + "FD in classifier features against the whole labelled set; "
        f"clip_x0=1; torch {torch.__version__}, one thread. Cells: mean ± sd over runs × seeds.",
        "",
        "| NFE | solver | " + " | ".join(TIME_GRIDS) + " |",
        "|---|---|" + "---|" * len(TIME_GRIDS),
    ]
    keys = [k for k in next(iter(runs.values()))[1]]
    for nfe in NFES:
        for solver in SOLVERS:
            row = []
            for grid in TIME_GRIDS:
                vals = [v for _, res in runs.values() for v in res[(nfe, solver, grid)]]
                row.append(_mean_sd(vals))
            lines.append(f"| {nfe} | {solver} | " + " | ".join(row) + " |")
        vals = [v for _, res in runs.values() for v in res[(nfe, "ancestral", "uniform")]]
        lines.append(f"| {nfe} | ancestral | {statistics.mean(vals):.3f} (uniform) |" + " |" * (len(TIME_GRIDS) - 1))
    lines += [
        "",
        "## Paired difference to the quadratic grid (grid − quadratic, same run, seed and x_T)",
        "",
        "Negative: the grid beats quadratic. Mean ± sd over runs × seeds × solvers.",
        "",
        "| NFE | " + " | ".join(TIME_GRIDS) + " |",
        "|---|" + "---|" * len(TIME_GRIDS),
    ]
    for nfe in NFES:
        row = []
        for grid in TIME_GRIDS:
            diffs = [
                a - b
                for _, res in runs.values()
                for solver in SOLVERS
                for a, b in zip(res[(nfe, solver, grid)], res[(nfe, solver, "quadratic")], strict=True)
            ]
            row.append(f"{statistics.mean(diffs):+.3f} ± {statistics.stdev(diffs) if len(diffs) > 1 else 0:.3f}")
        lines.append(f"| {nfe} | " + " | ".join(row) + " |")
    lines += ["", "## Per run", ""]
    for run, (dataset, res) in runs.items():
        lines.append(f"- `{run}` ({dataset}): " + "; ".join(
            f"NFE {k[0]} {k[1]} {k[2]} " + "/".join(f"{v:.2f}" for v in res[k]) for k in keys
        ))  # fmt: skip
    lines.append(f"\n{time.time() - args.t0:.0f} s.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="trained run folders (digits or mnist)")
    parser.add_argument("--num", type=int, default=1000, help="samples per cell")
    parser.add_argument("--seeds", type=int, default=2, help="sampling seeds per run")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown report here")
    parser.add_argument("--sweep", action="store_true", help="solver families per NFE instead of the grid study")
    parser.add_argument("--nfes", default=",".join(map(str, SWEEP_NFES)), help="--sweep: NFE budgets")
    parser.add_argument("--solvers", default=",".join(SWEEP_SOLVERS), help="--sweep: solvers")
    args = parser.parse_args()
    args.t0 = time.time()
    args.nfes, args.solvers = tuple(int(v) for v in args.nfes.split(",")), tuple(args.solvers.split(","))
    torch.set_num_threads(1)
    runs = {r: evaluate(r, args.num, args.seeds, args.sweep, args.nfes, args.solvers) for r in args.runs}
    text = (sweep_report if args.sweep else report)(runs, args)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
