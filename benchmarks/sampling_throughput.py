"""Sampling throughput on the CPU: images/s of ``generate`` for 1,000 samples against 64, by chunk size.

The per-image cost of a forward pass grows with the batch once the activations leave the cache, so
one solve of 1,000 images is slower per image than 16 solves of 64. This measures, on untrained
networks of the default recipe (the weights do not change the cost):

1. ms per image of one forward pass at batch 16 … 512, per data shape (digits 1×8×8, MNIST 1×28×28,
   3×32×32), median of ``--reps``;
2. ``generate`` with the CLI's default solver (sde-dpm-solver++, 20 steps, NFE 21) for ``--num``
   samples in one chunk, in the automatic chunks (:func:`scoresde.generation.auto_batch_size`), and
   16 × 64, on MNIST-sized images; the target is auto ≤ 1.1 × (16 × 64);
3. the sampling inside ``evaluate`` (``scoresde evaluate``, ``compare-losses``): 500 MNIST-sized
   samples, ddim 50 steps, in one batch (before 2026-12-06) and in the automatic chunks (now).

    python benchmarks/sampling_throughput.py                  # ~18 CPU-minutes at --reps 2
    python benchmarks/sampling_throughput.py --num 256 --reps 1   # quick
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from scoresde.build import build_model, build_sde
from scoresde.config import from_dict
from scoresde.diffusion_model import DiffusionModel, Provenance
from scoresde.generation import auto_batch_size, generate
from scoresde.samplers import sample

SHAPES = {"digits 1×8×8": (1, 8, 8), "MNIST 1×28×28": (1, 28, 28), "3×32×32": (3, 32, 32)}


def model_of(shape: tuple[int, ...]) -> DiffusionModel:
    config = from_dict({"data": {"name": "mnist"}})
    sde = build_sde(config)
    torch.manual_seed(0)
    net = build_model(config, shape, "images", sde).eval().requires_grad_(False)
    return DiffusionModel(net, sde, shape, "images", Provenance("training", "untrained"), clip_x0=1.0)


def forward_ms(dm: DiffusionModel, batch: int, reps: int) -> float:
    x, t = torch.randn(batch, *dm.data_shape), torch.full((batch,), 0.5)
    with torch.inference_mode():
        dm.model(x, t)
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            dm.model(x, t)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times) / batch


def generate_s(dm: DiffusionModel, num: int, batch: int | None, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        generate(dm, num, steps=20, batch_size=batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def evaluate_draw_s(dm: DiffusionModel, num: int, batch: int, reps: int) -> float:
    """Seconds of evaluate's draw: ``num`` samples, ddim 50 steps, solved ``batch`` at a time."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        sample(dm.model, dm.sde, (num, *dm.data_shape), "ddim", 50, generator=torch.Generator().manual_seed(1),
               batch_size=batch, **dm.sample_options("ddim"))  # fmt: skip
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sampling_throughput.md")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the CLI's default --threads 1
    lines = ["# Sampling throughput on the CPU", "", "One forward pass, ms per image (median of "
             f"{args.reps}; torch threads 1):", "", "| data | 16 | 32 | 64 | 128 | 256 | 512 | auto chunk |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, shape in SHAPES.items():
        dm = model_of(shape)
        cells = [f"{forward_ms(dm, b, args.reps):.2f}" for b in (16, 32, 64, 128, 256, 512)]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {auto_batch_size(dm, 10**6)} |")
        print(lines[-1], flush=True)
    dm = model_of(SHAPES["MNIST 1×28×28"])
    one = generate_s(dm, args.num, args.num, args.reps)
    auto = generate_s(dm, args.num, None, args.reps)
    s64 = generate_s(dm, 64, 64, args.reps) * args.num / 64
    lines += ["", f"`generate`, MNIST-sized UNet, sde-dpm-solver++ 20 steps (NFE 21), {args.num} samples, "
              f"median of {args.reps}:", "", "| chunks | seconds | images/s | vs 64 at a time |", "|---|---|---|---|",
              f"| one chunk of {args.num} | {one:.1f} | {args.num / one:.1f} | {one / s64:.2f}× |",
              f"| auto ({auto_batch_size(dm, args.num)}) | {auto:.1f} | {args.num / auto:.1f} | {auto / s64:.2f}× |",
              f"| 64 at a time (64 × {args.num / 64:g}) | {s64:.1f} | {args.num / s64:.1f} | 1.00× |"]  # fmt: skip
    whole, chunked = (evaluate_draw_s(dm, 500, b, args.reps) for b in (500, auto_batch_size(dm, 500)))
    lines += ["", f"`evaluate`'s samples, MNIST-sized UNet, ddim 50 steps, 500 samples, median of {args.reps}:", "",
              "| chunks | seconds | vs one batch |", "|---|---|---|",
              f"| one batch of 500 (before) | {whole:.1f} | 1.00× |",
              f"| auto ({auto_batch_size(dm, 500)}, now) | {chunked:.1f} | {chunked / whole:.2f}× |"]  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
