"""Posterior sampling against the exact posterior: gradient guidance (``scoresde.gradient_guidance.dps``)
on the exact Gaussian mixture, per solver and NFE, with the point-mass (Chung et al. 2023) and the ΠGDM
(Song et al. 2023) variance of x̂_0.

The observation y = x_1 + n, n ~ N(0, σ_y²), of the default 2-D mixture has a closed-form posterior
(:meth:`scoresde.analytic.GaussianMixture.posterior`), a mixture again. Judged by the 1-D W1 of each
coordinate to exact posterior draws (n samples; the floor is W1 between two exact draws) and the
total-variation error of the mode weights, 2 seeds.

    python benchmarks/posterior.py            # ~3 CPU-minutes
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from scipy.stats import wasserstein_distance

import scoresde as sd
from scoresde.gradient_guidance import dps
from scoresde.measurements import make_measurement

SOLVERS = {"ancestral": "uniform", "euler-maruyama": "auto", "sde-dpm-solver++": "auto", "ddim": "auto",
           "dpm-solver++": "auto", "unipc": "auto", "heun": "auto"}  # fmt: skip
CASES = {"x_1 = −1.1, σ_y = 0.05 (two modes)": (-1.1, 0.05), "x_1 = 0.0, σ_y = 0.2 (wide)": (0.0, 0.2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num", type=int, default=2000)
    parser.add_argument("--nfe", default="10,20,50")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "posterior.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sde, data = sd.VPSDE(), sd.analytic.gmm()
    mask = torch.tensor([1.0, 0.0])
    lines = ["# Posterior sampling on the exact mixture", "",
             f"`python benchmarks/posterior.py` — n = {args.num}, {args.seeds} seeds (mean), 1-D W1 of x_2 (the "
             "hidden coordinate) and x_1, and the mode-weight error, against exact posterior draws.", ""]  # fmt: skip
    for case, (a, noise) in CASES.items():
        post = data.posterior(mask, torch.tensor([a, 0.0]), noise)
        truth = post.sample(args.num, torch.Generator().manual_seed(100))
        floor = wasserstein_distance(post.sample(args.num, torch.Generator().manual_seed(101))[:, 1], truth[:, 1])
        lines += [f"## {case}", "", f"Posterior weights {[round(w, 3) for w in post.weights.tolist()]}; "
                  f"floor (two exact draws) W1 x_2 = {floor:.4f}.", "",
                  "| solver | NFE | x̂_0 variance | W1 x_2 | W1 x_1 | weight error | s |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for solver, grid in SOLVERS.items():
            per_step = 2 if solver == "heun" else 1
            for nfe in (int(n) for n in args.nfe.split(",")):
                steps = max(1, nfe // per_step - (1 if solver not in ("ancestral", "ddim") else 0))
                for kind in ("dps", "pigdm"):
                    guided = dps(data.model(sde, "eps"), sde, make_measurement("mask", mask=mask), (mask * a)[None],
                                 noise, x0_variance=kind)  # fmt: skip
                    cells, start = [], time.perf_counter()
                    for seed in range(args.seeds):
                        x = sd.sample(guided, sde, (args.num, 2), solver, steps, grid=grid,
                                      generator=torch.Generator().manual_seed(seed))  # fmt: skip
                        finite = torch.isfinite(x).all(1)
                        x = x[finite]
                        w = post.responsibilities(x).argmax(1).bincount(minlength=post.K).double() / args.num
                        cells.append((wasserstein_distance(x[:, 1], truth[:, 1]),
                                      wasserstein_distance(x[:, 0], truth[:, 0]),
                                      0.5 * (w - post.weights).abs().sum().item()))  # fmt: skip
                    seconds = (time.perf_counter() - start) / args.seeds
                    mean = [statistics.mean(c[i] for c in cells) for i in range(3)]
                    lines.append(f"| {solver} | {nfe} | {kind} | {mean[0]:.4f} | {mean[1]:.4f} | {mean[2]:.3f} | "
                                 f"{seconds:.2f} |")  # fmt: skip
                    print(lines[-1], flush=True)
        lines.append("")
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
