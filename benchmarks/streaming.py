"""In-memory vs streaming training data: peak memory and images/s on a 20,000-image folder.

The benchmark writes its own folder of 32×32 RGB PNGs (random smooth colour fields, Pillow) in a
temporary directory, then trains the same small UNet on it in child processes, one per run:

* ``memory``: ``--stream off``, the whole set decoded once and kept as one float32 tensor;
* ``stream``: ``--stream on --workers W``, PNGs decoded per batch by DataLoader workers.

Each child reports its peak resident memory (``ru_maxrss`` of itself and, separately, of its
worker processes), the time to get ready (listing/decoding the data, building the model) and the
training images/s. Runs alternate between the modes, ``--repeats`` times; the table gives medians.

    python benchmarks/streaming.py                         # 20,000 images, 200 steps, 3 repeats
    python benchmarks/streaming.py --images 2000 --steps 50 --repeats 1   # a quick look
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_folder(folder: Path, n: int, side: int = 32) -> None:
    """``n`` PNGs: random low-frequency colour fields (bilinear upsampling of 4×4 noise), so they
    compress like photos rather than like white noise."""
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        small = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
        small.resize((side, side), Image.Resampling.BILINEAR).save(folder / f"{i:05d}.png")


def child(mode: str, folder: str, steps: int, batch: int, workers: int) -> dict:
    """One training run in this process; returns what the parent tabulates."""
    import torch

    from scoresde.config import from_dict
    from scoresde.trainer import Trainer

    torch.set_num_threads(1)
    config = from_dict(
        {
            "data": {"name": folder, "stream": "on" if mode == "stream" else "off", "workers": workers},
            "model": {"channels": 16, "channel_mult": [1, 2]},
            "steps": steps,
            "batch_size": batch,
            "log_every": steps,
            "checkpoint_every": 0,
            "sample_every": 0,
        }
    )
    start = time.perf_counter()
    trainer = Trainer(config, None, progress=False)
    ready = time.perf_counter() - start
    start = time.perf_counter()
    trainer.run()
    seconds = time.perf_counter() - start
    trainer.close()
    kib = 1024  # ru_maxrss is in KiB on Linux
    return {
        "mode": mode,
        "ready_s": ready,
        "train_s": seconds,
        "images_per_s": steps * batch / seconds,
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kib,
        "workers_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / kib,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.steps, args.batch_size, args.workers)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        start = time.perf_counter()
        make_folder(folder, args.images)
        size = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
        print(f"wrote {args.images} PNGs ({size:.0f} MiB) in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        runs: dict[str, list[dict]] = {"memory": [], "stream": []}
        for r in range(args.repeats):
            for mode in runs:
                cmd = [sys.executable, __file__, "--child", mode, str(folder)]
                cmd += [
                    "--steps",
                    str(args.steps),
                    "--batch-size",
                    str(args.batch_size),
                    "--workers",
                    str(args.workers),
                ]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                runs[mode].append(json.loads(out.strip().splitlines()[-1]))
                print(f"repeat {r + 1} {mode}: {runs[mode][-1]}", file=sys.stderr)
    setup = f"UNet 16 channels ×(1, 2), batch {args.batch_size}, {args.steps} steps, {args.workers} workers"
    print(f"\n{args.images} PNGs of 32×32 RGB ({size:.0f} MiB on disk), {setup}; medians of {args.repeats}\n")
    print("| data | peak RSS, trainer | peak RSS, one worker | ready (s) | images/s (training) |")
    print("|---|---|---|---|---|")
    for mode, rows in runs.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "mode"}
        worker = f"{med['workers_rss_mib']:.0f} MiB" if mode == "stream" and args.workers else "–"
        print(f"| {mode} | {med['rss_mib']:.0f} MiB | {worker} | {med['ready_s']:.1f} | {med['images_per_s']:.0f} |")


if __name__ == "__main__":
    main()
