"""2-D data: the old default run length (1,200 steps) against a 1-minute time budget.

Evidence for the 2-D entries of ``scoresde.data_defaults.DATA_DEFAULTS``. Each run is what
``scoresde train --data NAME`` does with only the run length set (``--steps 1200``, or
``--minutes 1 --clock cpu``), trained in memory with one torch thread: the MLP, the EDM recipe,
logging included (no preview pictures: there is no run folder). Samples are drawn as ``scoresde
sample`` does (``generate`` defaults: the ``auto`` solver, 20 steps, 2,000 points) and scored against
2,000 fresh points of the data (another seed) with the repository's 2-D metrics
(``scoresde.metrics.sliced_wasserstein``, 256 directions, and ``mmd``); mean ± sd over training
seeds. The floor is the score of 2,000 other fresh points::

    nice python benchmarks/budget_2d.py                       # moons, checkerboard; 3 seeds (~8 CPU-minutes)
    nice python benchmarks/budget_2d.py --data moons --seeds 1 --minutes 0.2 --out /tmp/x.md
"""

from __future__ import annotations

import argparse
import datetime
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

NUM = 2000


def score(samples: torch.Tensor, fresh: torch.Tensor) -> dict[str, float]:
    from scoresde.metrics import mmd, sliced_wasserstein

    g = torch.Generator().manual_seed(7)
    return {"sw2": sliced_wasserstein(samples, fresh, generator=g), "mmd": mmd(samples, fresh)}


def fresh_points(data: str, seed: int) -> torch.Tensor:
    """``NUM`` points of ``data`` drawn with ``seed``, in the space the model is trained in."""
    from scoresde.data import load_dataset

    return load_dataset(data, n=NUM, seed=seed, heldout=0.0).train[:NUM]


def one_run(data: str, seed: int, length: dict) -> dict:
    from scoresde.generation import generate
    from scoresde.trainer import train

    overrides = {"data": {"name": data}, "seed": seed, "clock": "cpu", "threads": 1, **length}
    start = time.process_time()
    dm = train(overrides, progress=False)
    cpu = time.process_time() - start
    x = generate(dm, NUM, seed=1).samples
    return {"steps": dm.provenance.step, "cpu_s": cpu, **score(x, fresh_points(data, 10_000 + seed))}


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.fmean(values):.4f} ± {sd:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["moons", "checkerboard"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "budget_2d.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    lengths = {f"{args.steps} steps": {"steps": args.steps}, f"{args.minutes:g} CPU-min": {"minutes": args.minutes}}
    lines = [
        f"# 2-D data: {args.steps} steps against a {args.minutes:g}-minute budget (benchmarks/budget_2d.py)",
        "",
        f"Regenerate: `{shlex.join(['nice', 'python', 'benchmarks/budget_2d.py', *sys.argv[1:]])}`. Measured "
        f"{datetime.date.today().isoformat()} on the shared 2-core CPU machine (process CPU time, one torch thread; "
        f"torch {torch.__version__}, Python {platform.python_version()}). Training as `scoresde train --data NAME` "
        "with only the run length set (the MLP, the EDM recipe); samples as `scoresde sample` (auto solver, 20 steps, "
        f"{NUM} points) scored against {NUM} fresh points: SW₂ (256 directions) and MMD (lower is better); "
        f"mean ± sd over {args.seeds} training seeds. Floor: {NUM} other fresh points.",
        "",
        "| data | run length | steps | train CPU s | SW₂ | MMD | SW₂ per seed |",
        "|---|---|---|---|---|---|---|",
    ]
    for data in args.data:
        floor = score(fresh_points(data, 20_000), fresh_points(data, 10_000))
        for label, length in lengths.items():
            runs = []
            for seed in range(args.seeds):
                runs.append(one_run(data, seed, length))
                print(f"[{time.strftime('%H:%M:%S')}] {data} {label} seed {seed}: {runs[-1]}", flush=True)
            per_seed = ", ".join(f"{r['sw2']:.4f}" for r in runs)
            lines.append(
                f"| {data} | {label} | {'/'.join(str(r['steps']) for r in runs)} | "
                f"{statistics.fmean(r['cpu_s'] for r in runs):.0f} | {mean_sd([r['sw2'] for r in runs])} | "
                f"{mean_sd([r['mmd'] for r in runs])} | {per_seed} |"
            )
        lines.append(f"| {data} | floor (fresh points) | | | {floor['sw2']:.4f} | {floor['mmd']:.4f} | |")
    args.out.write_text("\n".join(lines) + "\n")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
