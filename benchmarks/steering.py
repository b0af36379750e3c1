"""Imputation by replacement against the exact conditional, per solver, NFE and RePaint resampling.

``sd.sample(..., known=x_obs, mask=m)`` (scoresde.samplers.steering) observes one coordinate of an
exact 2-D Gaussian mixture Σ_k w_k N(μ_k, diag s_k²) at x_i = a; the other coordinate's exact law is
the 1-D mixture with weights ∝ w_k N(a; μ_ki, s_ki²) and components N(μ_kj, s_kj²). Each cell is the
mean over seeds of

* W1 — the 1-D Wasserstein-1 distance of the sampled coordinate to 200k exact draws;
* weight error — total variation between the fraction of samples whose most likely component
  (given the full imputed point) is k and the exact conditional weight of k.

The floor rows are the same numbers for n exact draws. Budgets count every model evaluation
(denoising step and RePaint's extra passes included): ``resample=2`` gets about half the steps.
``ode`` (adaptive) runs at 2 / 5 / 10 grid intervals and shows the NFE it used.

    python benchmarks/steering.py          # n = 4000, 2 seeds, ~3 CPU-minutes; writes results/steering.md
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from scipy.stats import wasserstein_distance

import scoresde as sd
from scoresde.analytic import GaussianMixture

SOLVERS = ("ancestral", "euler-maruyama", "sde-dpm-solver++", "ddim", "dpm-solver++", "unipc", "heun")
ODE_INTERVALS = (2, 5, 10)
REF = 200_000

SEPARATED = GaussianMixture(
    [0.3, 0.2, 0.5], [[-3.0, -1.0], [-3.0, 1.0], [3.0, 0.0]], [[0.2, 0.15], [0.2, 0.15], [0.2, 0.3]]
)
# (label, data, observed coordinate, value, why it is there)
PROBLEMS = [
    ("gmm, x_1 = 1.0", sd.analytic.gmm(), 0, 1.0,
     "the exact x_2 is one component (1, at x_2 = 1.0), but component 2 lies 0.4 away in x_1 with x_2 = −1.0"),
    ("gmm, x_1 = −1.1", sd.analytic.gmm(), 0, -1.1,
     "two components; their conditional weights happen to equal their prior ratio (0.69 / 0.31)"),
    ("gmm, x_2 = −1.0", sd.analytic.gmm(), 1, -1.0,
     "observing the second coordinate: components 0 and 2, conditional weights 0.19 / 0.81 (prior ratio 0.63 / 0.37)"),
    ("separated, x_1 = −3.1", SEPARATED, 0, -3.1,
     "components 0 and 1 share their x_1 law and component 2 lies 6 away: the case replacement gets right "
     "(tests/test_steering.py)"),
]  # fmt: skip


def conditional(data: GaussianMixture, i: int, a: float) -> torch.Tensor:
    """P(component k | x_i = a) ∝ w_k N(a; μ_ki, s_ki²)."""
    mu, s = data.means[:, i], data.stds[:, i]
    return torch.softmax(torch.log(data.weights) - 0.5 * ((a - mu) / s) ** 2 - torch.log(s), 0)


def exact_draws(data: GaussianMixture, i: int, a: float, n: int, seed: int) -> torch.Tensor:
    """n exact draws of the full point given x_i = a (x_i = a exactly)."""
    g = torch.Generator().manual_seed(seed)
    k = torch.multinomial(conditional(data, i, a), n, replacement=True, generator=g)
    x = data.means[k] + data.stds[k] * torch.randn(n, 2, generator=g, dtype=torch.float64)
    x[:, i] = a
    return x


def errors(data, i, a, x, ref) -> tuple[float, float]:
    j = 1 - i
    w1 = wasserstein_distance(x[:, j].double().numpy(), ref[:, j].numpy())
    counts = data.responsibilities(x.double()).argmax(1).bincount(minlength=data.K).double() / len(x)
    return w1, 0.5 * (counts - conditional(data, i, a)).abs().sum().item()


def steps_at_budget(sde, solver: str, nfe: int, resample: int) -> tuple[int, int]:
    """(steps, NFE used): the most steps whose model evaluations fit ``nfe`` with this resampling."""

    def zero(x, t):
        return torch.zeros_like(x)

    observe = {"known": torch.zeros(2), "mask": torch.tensor([1.0, 0.0]), "resample": resample}
    for steps in range(nfe, 0, -1):
        _, info = sd.sample(zero, sde, (1, 2), solver, steps, return_info=True, **observe)
        if info.nfe <= nfe:
            return steps, info.nfe
    raise ValueError(f"{solver} does not fit {nfe} evaluations")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num", type=int, default=4000)
    parser.add_argument("--nfe", default="10,20,50")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "steering.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sde, nfes, seeds = sd.VPSDE(), [int(v) for v in args.nfe.split(",")], range(args.seeds)
    budgets = {(s, b, r): steps_at_budget(sde, s, b, r) for s in SOLVERS for b in nfes for r in (1, 2)}
    start = time.process_time()
    head = " | ".join(f"NFE {b}" for b in nfes)
    lines = [
        "# Imputation by replacement on exact mixtures",
        "",
        f"`python benchmarks/steering.py` — n = {args.num}, seeds {args.seeds} (mean), VPSDE, each solver's "
        "default grid and t_min. Cells: W1 of the sampled coordinate to the exact conditional / total-variation "
        "error of the component weights; (NFE) where the budget was not met exactly. Replacement: after every "
        "step the observed coordinate is redrawn from q(x_t | a) (Song et al. 2021, App. I.2); resample=2 is "
        "one RePaint pass per step (Lugmayr et al. 2022).",
        "",
        "Reading. Replacement is not the conditional law. Where the observed coordinate tells the components "
        "apart only at low noise (gmm at x_1 = 1.0 and at x_2 = −1.0), the hidden coordinate commits to a mode "
        "while the noised observation cannot yet tell them apart, and the weights stay near the prior ratio of "
        "the components the coarse observation allows: weight error about 0.4–0.5 for every solver at every "
        "NFE, with or without resampling, and 10 RePaint passes per step move it by less than 0.1 (last table). "
        "Where the observation separates the components at every noise level (separated), or where the conditional "
        "weights happen to equal that prior ratio (gmm at x_1 = −1.1), every solver approaches the floor as NFE "
        "grows, the SDE solvers (euler-maruyama, sde-dpm-solver++) closest, the ODE solvers 0.03–0.06 in W1 "
        "behind at NFE 50 on the gmm; resample=2 at equal NFE halves the steps and rarely pays below NFE 50, "
        "while at NFE 50 it brings the ODE solvers level with the SDE ones (dpm-solver++ 0.010 vs 0.056). "
        "Gradient guidance on the same mixture: benchmarks/results/posterior.md.",
        "",
    ]
    for label, data, i, a, why in PROBLEMS:
        model = data.model(sde)
        known, mask = torch.zeros(2), torch.zeros(2)
        known[i], mask[i] = a, 1.0
        ref = exact_draws(data, i, a, REF, seed=1000)
        floor = [errors(data, i, a, exact_draws(data, i, a, args.num, seed=s), ref) for s in seeds]
        weights = [round(w, 3) for w in conditional(data, i, a).tolist()]
        lines += [f"## {label}", "", f"{why[0].upper()}{why[1:]}. Exact conditional weights {weights}.", "",
                  f"| solver | resample | {head} |", "|---|---|" + "---|" * len(nfes)]  # fmt: skip
        lines.append(f"| exact draws (floor) | — | {_cell(floor)} |" + " |" * (len(nfes) - 1))
        for solver in (*SOLVERS, "ode"):
            for resample in (1, 2) if solver != "ode" else (1,):
                cells = []
                for b, steps_or_intervals in zip(nfes, ODE_INTERVALS if solver == "ode" else nfes, strict=False):
                    steps, used = (steps_or_intervals, None) if solver == "ode" else budgets[(solver, b, resample)]
                    runs = []
                    for s in seeds:
                        x, info = sd.sample(model, sde, (args.num, 2), solver, steps, return_info=True,
                                            generator=torch.Generator().manual_seed(s), known=known, mask=mask,
                                            resample=resample)  # fmt: skip
                        runs.append(errors(data, i, a, x, ref))
                    used = info.nfe
                    cells.append(_cell(runs) + (f" ({used})" if used != b or solver == "ode" else ""))
                name = f"ode ({', '.join(map(str, ODE_INTERVALS))} intervals)" if solver == "ode" else solver
                lines.append(f"| {name} | {resample} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += _more_passes(sde, args.num, seeds)
    lines += [f"CPU time: {time.process_time() - start:.0f} s (torch {torch.__version__}, one thread).", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


def _more_passes(sde, num: int, seeds) -> list[str]:
    """Does RePaint reach the conditional with more passes? 200 steps, resample 1 / 5 / 10, the gmm problems."""
    lines = ["## More RePaint passes (200 steps; NFE ≈ 200 · resample)", "",
             "| problem | solver | resample 1 | resample 5 | resample 10 |", "|---|---|---|---|---|"]  # fmt: skip
    for label, data, i, a, _ in PROBLEMS[:3]:
        model, ref = data.model(sde), exact_draws(data, i, a, REF, seed=1000)
        known, mask = torch.zeros(2), torch.zeros(2)
        known[i], mask[i] = a, 1.0
        for solver in ("ancestral", "dpm-solver++"):
            cells = []
            for resample in (1, 5, 10):
                runs = [
                    errors(data, i, a, sd.sample(model, sde, (num, 2), solver, 200, known=known, mask=mask,
                                                 resample=resample, generator=torch.Generator().manual_seed(s)), ref)
                    for s in seeds
                ]  # fmt: skip
                cells.append(_cell(runs))
            lines.append(f"| {label} | {solver} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _cell(runs) -> str:
    return f"{statistics.mean(r[0] for r in runs):.3f} / {statistics.mean(r[1] for r in runs):.3f}"


if __name__ == "__main__":
    main()
