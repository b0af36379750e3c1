"""Time grids on a trained digits run: Fréchet distance (classifier features) per solver × grid × NFE.

A check of ``grid="auto"`` (chosen on exact mixtures by ``samplers.py --defaults``) on a real
model: unipc and dpm-solver++ at NFE 10 and 20 (steps = NFE − 1, plus the denoising step) on
every grid, and ancestral on its uniform grid, 500 samples per cell, 2 seeds, FD against the
run's held-out reference with the digits feature classifier (``scoresde.metrics``).

    scoresde train --out runs/digits && python benchmarks/samplers_digits.py runs/digits
"""

from __future__ import annotations

import argparse

import torch

import scoresde as sd
from scoresde.grids import TIME_GRIDS
from scoresde.metrics import image_metrics, load_or_train_classifier
from scoresde.train import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a trained digits run folder")
    parser.add_argument("--num", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = load_run(args.run)
    classifier, info = load_or_train_classifier("digits", args.run)
    print(f"classifier test accuracy {info['test_accuracy']:.3f}; reference {tuple(run.reference.shape)}")
    print("| NFE | solver | grid | FD per seed |\n|---|---|---|---|")

    def fd(solver: str, steps: int, grid: str, seed: int) -> float:
        g = torch.Generator().manual_seed(seed)
        shape = (args.num, *run.data_shape)
        x = sd.sample(run.model, run.sde, shape, solver, steps, run.prediction, g, grid=grid, clip_x0=1.0)
        return image_metrics(x.clamp(-1, 1), run.reference, classifier, torch.Generator().manual_seed(0))["fd"]

    for nfe in (10, 20):
        cells = [(s, nfe - 1, g) for s in ("unipc", "dpm-solver++") for g in TIME_GRIDS] + [
            ("ancestral", nfe, "uniform")
        ]
        for solver, steps, grid in cells:
            values = [fd(solver, steps, grid, seed) for seed in range(args.seeds)]
            print(f"| {nfe} | {solver} | {grid} | " + ", ".join(f"{v:.3f}" for v in values) + " |", flush=True)


if __name__ == "__main__":
    main()
