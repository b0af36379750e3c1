"""Train a score model on a 2-D toy set, sample it, and plot samples over the data.

    python examples/train_2d.py                          # 8 Gaussians, ~1 minute on a laptop CPU
    python examples/train_2d.py --data swiss-roll --steps 5000 --weighting likelihood --time continuous

Writes runs/example-2d/ (checkpoints, metrics) and runs/example-2d/samples.png.
"""

from __future__ import annotations

import argparse

import torch

import scoresde as sd
from scoresde.config import LossConfig, ModelConfig, from_dict
from scoresde.data import DATASETS
from scoresde.imageio import save_png, scatter_image
from scoresde.losses import TIME_SAMPLERS, WEIGHTINGS
from scoresde.metrics import sliced_wasserstein
from scoresde.run_folder import load_run
from scoresde.trainer import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="8gaussians", choices=[n for n in DATASETS if n not in ("folder", "array")])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--weighting", default=LossConfig.weighting, choices=list(WEIGHTINGS))
    parser.add_argument("--time", default=LossConfig.time, choices=list(TIME_SAMPLERS))
    parser.add_argument("--precondition", default=ModelConfig.precondition, choices=["none", "edm"])
    parser.add_argument("--solver", default="ancestral", choices=list(sd.SOLVERS))
    parser.add_argument("--out", default="runs/example-2d")
    args = parser.parse_args()

    config = from_dict(
        {
            "data": {"name": args.data},
            "model": {"width": args.width, "precondition": args.precondition},
            "loss": {"weighting": args.weighting, "time": args.time},
            "optim": {"lr": 2e-3, "ema_decay": 0.995},
            "steps": args.steps,
            "batch_size": args.batch_size,
            "checkpoint_every": 0,
            "sample_every": 0,
        }
    )
    train(config, args.out, resume=False)
    run = load_run(args.out)
    x = sd.sample(
        run.model, run.sde, (2000, 2), solver=args.solver, steps=200, generator=torch.Generator().manual_seed(0)
    )
    print(f"sliced W2 to held-out data: {sliced_wasserstein(x, run.reference):.4f}")
    path = save_png(f"{args.out}/samples.png", scatter_image(x, run.reference))
    print(f"samples (blue) over held-out data (grey): {path}")


if __name__ == "__main__":
    main()
