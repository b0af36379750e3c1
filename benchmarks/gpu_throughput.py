"""Training and sampling throughput of scoresde on one device (no diffusers needed): the GPU check's numbers.

    python benchmarks/gpu_throughput.py                       # CUDA: CIFAR-10 UNet (35.7M), bf16, batch 128
    python benchmarks/gpu_throughput.py --compile             # also with torch.compile (slow first step)
    python benchmarks/gpu_throughput.py --device cpu --tiny   # the CPU fallback: tiny UNet, seconds

Training: ``Trainer.train_step`` (the step ``Trainer.run`` repeats: default recipe, bf16 autocast
on CUDA, fused AdamW, clipping, EMA) on random 3×32×32 images, images/s after warm-up steps.
Sampling: ``sd.sample`` with ``ddim`` and ``dpm-solver++`` at NFE 20 on the same UNet in float32
and under bf16 autocast, samples/s; and the per-step overhead with the trivial model x ↦ x.
Prints a markdown table and writes it to ``--out`` when given.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import scoresde as sd
from scoresde.config import from_dict
from scoresde.data import Dataset
from scoresde.nets import make_network
from scoresde.param import Model
from scoresde.trainer import Trainer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_throughput(size, shape, batch, steps, warmup, device, compile_, bf16) -> float:
    """Images per second of ``Trainer.train_step`` (median over 3 timed blocks of ``steps``)."""
    x = torch.rand(max(4 * batch, 256), *shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    dataset = Dataset("random", x, x[:8], "images")
    config = from_dict(
        {
            "model": {"size": size},
            "batch_size": batch,
            "steps": 10**9,
            "checkpoint_every": 0,
            "sample_every": 0,
            "device": str(device),
            "bf16": bf16,
            "compile": compile_,
            "threads": 0,
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, tmp, progress=False, dataset=dataset)
        for _ in range(warmup):
            trainer.train_step(trainer.batch(trainer.step))
        rates = []
        for _ in range(3):
            sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                trainer.train_step(trainer.batch(trainer.step))
            sync(device)
            rates.append(steps * batch / (time.perf_counter() - start))
    return statistics.median(rates)


def sample_throughput(size, shape, batch, nfe, device, bf16) -> dict[str, float]:
    torch.manual_seed(0)
    net = make_network("unet", shape, size=size)
    model = Model(net, "eps", "scaled").to(device).eval().requires_grad_(False)

    def autocast_model(x, t):
        with torch.autocast(device.type, torch.bfloat16):
            return model(x, t).float()

    out = {}
    sde = sd.VPSDE()
    variants = [("float32", model)] + ([("bf16 autocast", autocast_model)] if bf16 else [])
    for label, m in variants:
        for solver, steps in (("ddim", nfe), ("dpm-solver++", nfe - 1)):
            g = torch.Generator(device).manual_seed(0)
            sd.sample(m, sde, (batch, *shape), solver, 2, generator=g)  # warm-up
            times = []
            for _ in range(3):
                sync(device)
                start = time.perf_counter()
                sd.sample(m, sde, (batch, *shape), solver, steps, generator=g)
                sync(device)
                times.append(time.perf_counter() - start)
            out[f"{solver}, NFE {nfe}, {label}"] = batch / statistics.median(times)
    return out


def overhead(shape, batch, device) -> dict[str, float]:
    """µs per step of a 200-step loop with the trivial model x ↦ x."""
    sde = sd.VPSDE()

    def trivial(x, t):
        return x

    out = {}
    for solver in ("ancestral", "ddim", "dpm-solver++"):
        g = torch.Generator(device).manual_seed(0)
        sd.sample(trivial, sde, (batch, *shape), solver, 10, generator=g)
        times = []
        for _ in range(3):
            sync(device)
            start = time.perf_counter()
            sd.sample(trivial, sde, (batch, *shape), solver, 200, generator=g)
            sync(device)
            times.append((time.perf_counter() - start) / 200)
        out[solver] = statistics.median(times) * 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny UNet on 1x8x8, small batches (CPU fallback)")
    parser.add_argument("--batch", type=int, default=None, help="training batch (default 128; tiny: 16)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per block (default 20; tiny: 3)")
    parser.add_argument("--sample-batch", type=int, default=None, help="default 256; tiny: 16")
    parser.add_argument("--compile", action="store_true", help="also measure training with torch.compile")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    size, shape = ("tiny", (1, 8, 8)) if args.tiny else ("cifar10", (3, 32, 32))
    batch = args.batch or (16 if args.tiny else 128)
    steps = args.steps or (3 if args.tiny else 20)
    sample_batch = args.sample_batch or (16 if args.tiny else 256)
    bf16 = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (1 thread)"
    lines = [
        f"## scoresde throughput on {name} — torch {torch.__version__}, UNet `{size}` on {shape}",
        "",
        "| what | setting | value |",
        "|---|---|---|",
    ]

    def add(what, setting, value):
        lines.append(f"| {what} | {setting} | {value} |")
        print(lines[-1], flush=True)

    print("\n".join(lines), flush=True)
    precision = "bf16 autocast" if bf16 else "float32"
    rate = train_throughput(size, shape, batch, steps, 3, device, False, bf16)
    add("training (Trainer.train_step)", f"batch {batch}, {precision}, eager", f"{rate:,.0f} images/s")
    if args.compile:
        rate = train_throughput(size, shape, batch, steps, 5, device, True, bf16)
        add("training (Trainer.train_step)", f"batch {batch}, {precision}, torch.compile", f"{rate:,.0f} images/s")
    for label, value in sample_throughput(size, shape, sample_batch, 20, device, bf16).items():
        add("sampling", f"batch {sample_batch}, {label}", f"{value:,.1f} samples/s")
    for solver, us in overhead(shape, sample_batch, device).items():
        add("sampler overhead (model x ↦ x)", f"{solver}, batch {sample_batch}", f"{us:,.0f} µs/step")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
