"""Real images end to end: train a UNet, sample it with several solvers, measure FD/KID and bits/dim.

The per-dataset scripts call :func:`main` with their preset::

    python examples/digits.py                      # 8x8 digits, tiny UNet: ~6-11 minutes on one CPU core
    python examples/mnist.py                       # 5,000 MNIST digits (28x28), small settings: ~20-25 minutes
    python examples/digits.py --steps 6000 --num 2000 --solvers ancestral:1000,ddim:100,dpm-solver++:20
    python examples/mnist.py --unet-size small --steps 20000 --batch-size 128 --device cuda

Steps: (1) ``scoresde.trainer.train`` with the preset's config (the flags override it); (2) for every
``solver:steps`` pair, a 64-sample grid ``grid_<solver>.png`` and ``--num`` samples scored by
Fréchet distance and KID in the features of a classifier trained on the dataset
(``scoresde.metrics``); (3) the negative log-likelihood of ``--nll-num`` held-out images in
bits/dim by the probability-flow ODE and by the discrete VLB (``scoresde.evaluation.evaluate``).
Writes ``results.json`` and ``results.md`` into the run folder. Needs the ``data`` extra.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

import scoresde as sd
from scoresde.config import LossConfig, ModelConfig, from_dict
from scoresde.evaluation import evaluate
from scoresde.imageio import image_grid, save_png
from scoresde.metrics import image_metrics, load_or_train_classifier
from scoresde.nets import UNET_SIZES
from scoresde.run_folder import load_run
from scoresde.trainer import train

PRESETS = {
    "digits": {
        "model": {"size": "tiny"},
        "steps": 1200,
        "batch_size": 64,
        "solvers": "ancestral:100,ddim:50,dpm-solver++:20",
        "num": 500,
        "nll_num": 200,
    },
    "mnist": {  # a narrow 3-level UNet (28 -> 14 -> 7) that trains in minutes on a CPU core
        "model": {
            "channels": 32,
            "channel_mult": [1, 2, 2],
            "num_res_blocks": 1,
            "attention_resolutions": [7],
            "dropout": 0.0,
        },
        "steps": 1000,
        "batch_size": 32,
        "solvers": "ancestral:100,ddim:50,dpm-solver++:20",
        "num": 300,
        "nll_num": 50,
    },
}


def parse_solvers(text: str) -> list[tuple[str, int]]:
    pairs = []
    for item in text.split(","):
        name, _, steps = item.strip().partition(":")
        if name not in sd.SOLVERS:
            raise SystemExit(f"unknown solver {name!r}; choose from: {', '.join(sd.SOLVERS)}")
        pairs.append((name, int(steps or 100)))
    return pairs


def main(dataset: str) -> None:
    preset = PRESETS[dataset]
    parser = argparse.ArgumentParser(description=f"{dataset}: train, sample with several solvers, FD/KID, bits/dim")
    parser.add_argument("--steps", type=int, default=preset["steps"], help="training steps")
    parser.add_argument("--batch-size", type=int, default=preset["batch_size"])
    parser.add_argument("--unet-size", choices=list(UNET_SIZES), default=None, help="a named UNet size instead")
    parser.add_argument("--weighting", default=LossConfig.weighting, help="loss weighting λ(t) (see scoresde info)")
    parser.add_argument("--time", default=LossConfig.time, help="training times (see scoresde info)")
    parser.add_argument("--precondition", default=ModelConfig.precondition, help="none or edm")
    parser.add_argument("--solvers", default=preset["solvers"], help="solver:steps pairs, comma-separated")
    parser.add_argument("--num", type=int, default=preset["num"], help="samples per solver for FD/KID")
    parser.add_argument("--nll-num", type=int, default=preset["nll_num"], help="held-out images for bits/dim")
    parser.add_argument("--vlb-steps", type=int, default=1000, help="length of the VLB chain")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", default=f"runs/example-{dataset}")
    parser.add_argument("--skip-training", action="store_true", help="evaluate the run already in --out")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    solvers = parse_solvers(args.solvers)
    out = Path(args.out)

    if not args.skip_training:
        model = {"size": args.unet_size} if args.unet_size else preset["model"]
        config = from_dict(
            {
                "data": {"name": dataset},
                "model": {**model, "precondition": args.precondition},
                "loss": {"weighting": args.weighting, "time": args.time},
                "steps": args.steps,
                "batch_size": args.batch_size,
                "checkpoint_every": 0,
                "sample_every": 0,
                "device": args.device,
                "threads": args.threads,
            }
        )
        start = time.perf_counter()
        train(config, out)
        print(f"trained {args.steps} steps in {time.perf_counter() - start:.0f} s -> {out}")
    run = load_run(out, device=args.device)
    classifier, cinfo = load_or_train_classifier(dataset, out)
    print(f"feature classifier: test accuracy {cinfo['test_accuracy']:.3f}")

    quality = {}
    zoom = max(1, math.ceil(32 / run.data_shape[-1]))
    for solver, steps in solvers:
        g = torch.Generator(args.device).manual_seed(0)
        start = time.perf_counter()
        x, info = sd.sample(
            run.model,
            run.sde,
            (args.num, *run.data_shape),
            solver,
            steps,
            generator=g,
            clip_x0=1.0,
            return_info=True,
            device=args.device,
        )
        seconds = time.perf_counter() - start
        x = x.clamp(-1, 1).cpu()
        grid = image_grid(x[:64].repeat_interleave(zoom, -1).repeat_interleave(zoom, -2))
        save_png(out / f"grid_{solver}.png", grid)
        metrics = image_metrics(x, run.reference, classifier, generator=torch.Generator().manual_seed(0))
        quality[solver] = {"steps": steps, "nfe": info.nfe, "seconds": seconds, **metrics}
        print(f"{solver:>14} {info.nfe:4d} NFE  FD {metrics['fd']:8.3f}  KID {metrics['kid']:.4f}  ({seconds:.1f} s)")

    nll = {}
    if args.nll_num > 0:
        result = evaluate(  # on the CPU: the likelihood solvers run through scipy
            load_run(out), solvers=(), nll_num=args.nll_num, vlb_steps=args.vlb_steps, classifier_dir=out, log=print
        )
        nll = result["nll"]

    results = {"dataset": dataset, "step": run.provenance.step, "quality": quality, "nll": nll, "classifier": cinfo}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    lines = [
        f"# {dataset}: {run.provenance.step} training steps, held-out reference of {len(run.reference)} images",
        "",
        "| solver | steps | NFE | FD | KID | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for solver, q in quality.items():
        lines.append(f"| {solver} | {q['steps']} | {q['nfe']} | {q['fd']:.3f} | {q['kid']:.4f} | {q['seconds']:.1f} |")
    if nll:
        lines += ["", "| likelihood | bits/dim | ± s.e. | NFE |", "|---|---|---|---|"]
        for method, entry in nll.items():
            lines.append(
                f"| {method} | {entry['bits_per_dim']:.4f} | {entry['bits_per_dim_se']:.4f} | {entry['nfe']} |"
            )
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"grids: {', '.join(str(out / f'grid_{s}.png') for s, _ in solvers)}")
