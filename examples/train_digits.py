"""Train a UNet on 8×8 digits (or the 5,000-image MNIST subset) and save a grid of samples.

    python examples/train_digits.py                               # tiny UNet, a few minutes on CPU
    python examples/train_digits.py --data mnist --unet-size small --steps 20000 --batch-size 128

Writes runs/example-digits/ and runs/example-digits/grid.png.
"""

from __future__ import annotations

import argparse

import torch

import scoresde as sd
from scoresde.config import LossConfig, ModelConfig, from_dict
from scoresde.imageio import image_grid, save_png
from scoresde.nets import UNET_SIZES
from scoresde.run_folder import load_run
from scoresde.trainer import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits", choices=["digits", "mnist"])
    parser.add_argument("--unet-size", default="tiny", choices=list(UNET_SIZES))
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--weighting", default=LossConfig.weighting)
    parser.add_argument("--time", default=LossConfig.time)
    parser.add_argument("--precondition", default=ModelConfig.precondition, choices=["none", "edm"])
    parser.add_argument("--solver", default="ancestral", choices=list(sd.SOLVERS))
    parser.add_argument("--sample-steps", type=int, default=200)
    parser.add_argument("--out", default="runs/example-digits")
    args = parser.parse_args()

    config = from_dict(
        {
            "data": {"name": args.data},
            "model": {"size": args.unet_size, "precondition": args.precondition},
            "loss": {"weighting": args.weighting, "time": args.time},
            "steps": args.steps,
            "batch_size": args.batch_size,
        }
    )
    train(config, args.out)
    run = load_run(args.out)
    g = torch.Generator().manual_seed(0)
    x = sd.sample(
        run.model, run.sde, (64, *run.data_shape), solver=args.solver, steps=args.sample_steps, generator=g, clip_x0=1.0
    )
    zoom = max(1, 32 // run.data_shape[-1])
    path = save_png(f"{args.out}/grid.png", image_grid(x.repeat_interleave(zoom, -1).repeat_interleave(zoom, -2)))
    print(f"64 samples: {path}")


if __name__ == "__main__":
    main()
