"""The README's figures: sample quality against NFE per solver, and the loss weightings λ(t).

    python benchmarks/figures.py                              # docs/nfe_quality.png (GMM) + docs/weightings.png
    python benchmarks/figures.py --run runs/tour-digits       # adds a digits panel (FD of a trained run)

*NFE vs quality.* Left: the 2-D Gaussian mixture ``scoresde.analytic.gmm()`` sampled with its exact
ε model, so the sliced W2 to fresh ground-truth samples is the solver's error alone (the dotted
line is the Monte Carlo floor: ground truth vs ground truth). Right (with ``--run``): Fréchet
distance of a trained digits run in the features of the digits classifier (``scoresde.metrics``)
to the run's held-out digits. NFE counts the final denoising step (``benchmarks/samplers.py``'s
``steps_for``).

*Weightings.* w(t) on ‖ε − ε̂‖² of every registered weighting (``scoresde.losses.WEIGHTINGS``) on
the DDPM grid of the VP SDE, normalized to mean 1 (the curves ``scoresde compare-losses`` plots).
Needs the ``bench`` extra (matplotlib).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

sys.path.insert(0, str(Path(__file__).parent))

import scoresde as sd
from scoresde.analytic import gmm
from scoresde.loss_study import weighting_curves  # the same curves compare-losses plots
from scoresde.losses import WEIGHTINGS
from scoresde.metrics import sliced_wasserstein

SOLVERS = (
    ("ancestral", {}, "uniform"),
    ("ddim", {}, "uniform"),
    ("dpm-solver++", {}, "log-snr"),
    ("heun", {}, "karras"),
    ("euler-maruyama", {}, "uniform"),
)
NFES = (5, 10, 20, 50, 100, 200)


def nfe_curves(model, sde, shape, metric, nfes, seed=0, prediction="eps", clip=None):
    from samplers import steps_for

    curves = {}
    for solver, options, grid in SOLVERS:
        points = []
        for nfe in nfes:
            steps = steps_for(solver, nfe, options)
            if not steps or steps < 1:
                continue
            g = torch.Generator().manual_seed(seed)
            x, info = sd.sample(
                model, sde, shape, solver, steps, prediction, g, grid=grid, clip_x0=clip, return_info=True, **options
            )
            points.append((info.nfe, metric(x)))
        curves[f"{solver} ({grid})"] = points
        print(solver, [(n, round(v, 4)) for n, v in points], flush=True)
    return curves


def plot_panel(ax, curves, title, ylabel, floor=None):
    for label, points in curves.items():
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    if floor is not None:
        ax.axhline(floor, color="grey", linestyle=":", label="Monte Carlo floor (one draw)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("NFE (model evaluations)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None, help="a trained digits run for the FD panel")
    parser.add_argument("--n", type=int, default=4000, help="GMM samples per point")
    parser.add_argument("--num", type=int, default=500, help="digits samples per point")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    sde = sd.VPSDE()

    # ---- NFE vs quality --------------------------------------------------------------------------
    data = gmm()
    truth = data.sample(args.n, torch.Generator().manual_seed(10_000))
    floor = sliced_wasserstein(data.sample(args.n, torch.Generator().manual_seed(20_000)), truth)
    gmm_curves = nfe_curves(data.model(sde), sde, (args.n, 2), lambda x: sliced_wasserstein(x, truth), NFES)
    panels = 2 if args.run else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), dpi=100, squeeze=False)
    plot_panel(axes[0, 0], gmm_curves, "2-D mixture, exact model", "sliced W2 to ground truth", floor)
    if args.run:
        from scoresde.metrics import image_metrics, load_or_train_classifier
        from scoresde.run_folder import load_run

        run = load_run(args.run)
        classifier, _ = load_or_train_classifier("digits", args.run)
        shape = (args.num, *run.data_shape)

        def fd(x):
            return image_metrics(x.clamp(-1, 1), run.reference, classifier)["fd"]

        digit_curves = nfe_curves(run.model, run.sde, shape, fd, (10, 20, 50, 100), prediction=run.prediction, clip=1.0)
        plot_panel(
            axes[0, 1], digit_curves, f"8×8 digits, trained run ({run.provenance.step} steps)", "Fréchet distance"
        )
    fig.tight_layout()
    fig.savefig(args.out / "nfe_quality.png")
    plt.close(fig)

    # ---- weightings ------------------------------------------------------------------------------
    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=100)
    for name, (t, w) in weighting_curves(sde, list(WEIGHTINGS), 1000).items():
        dashed = name == "elbo"  # drawn over 'likelihood': discrete ELBO weights x N -> the continuous weight
        ax.plot(t.numpy(), w.numpy(), label=name, linestyle="--" if dashed else "-", linewidth=2.5 if dashed else 1.5)
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel("w(t) on ‖ε − ε̂‖² (mean 1)")
    ax.set_title("Loss weightings λ(t), VP SDE (β 0.1–20), N = 1000")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "weightings.png")
    plt.close(fig)
    print(f"wrote {args.out / 'nfe_quality.png'} and {args.out / 'weightings.png'}")


if __name__ == "__main__":
    main()
