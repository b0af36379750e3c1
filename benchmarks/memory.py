"""Peak memory of ``scoresde sample`` under load: 100,000 samples in ``--batch-size`` chunks.

Each configuration runs ``python -m scoresde sample`` as a child process and reads the child's
peak resident set size (``ru_maxrss`` from ``os.wait4``, Linux: KiB). Two sources:

* ``digits`` — a tiny UNet trained for 20 steps on the 8×8 digits (``scoresde train``), sampled
  with DDIM in 2 steps (cheap: the network cost is not what is measured), written as ``.npz``;
* ``gmm`` — the analytic 2-D mixture (``--model gmm``), ancestral with 2 steps, ``.npz``.

Memory is flat when the peak does not grow with the number of samples beyond the output itself
(100,000 × 8 × 8 float32 = 25.6 MB) nor with the number of chunks.

    python benchmarks/memory.py            # writes benchmarks/results/memory.md (stdout too)
    python benchmarks/memory.py --quick    # 20,000 instead of 100,000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of ``python -m scoresde ARGS`` as a child process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "scoresde", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    out, err = child.stdout.read().decode(), child.stderr.read().decode()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise RuntimeError(f"scoresde {' '.join(args)} failed ({child.returncode}):\n{out}\n{err}")
    return usage.ru_maxrss / 1024, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 samples instead of 100,000")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "memory.md")
    args = parser.parse_args()
    big = 20_000 if args.quick else 100_000
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "digits"
        tiny = ["--channels", "8", "--channel-mult", "1,2", "--batch-size", "8", "--sample-every", "0", "--quiet"]
        run(["train", "--data", "digits", "--steps", "20", "--out", str(run_dir), *tiny])
        baseline = run(["info"])[0]  # the interpreter with torch imported, no sampling
        digits = ["sample", "--run", str(run_dir), "--solver", "ddim", "--steps", "2"]
        gmm = ["sample", "--model", "gmm", "--solver", "ancestral", "--steps", "2"]
        for name, base, configs in [
            ("digits 8×8", digits, [(10_000, 1000), (big, 1000), (big, 5000), (big, 10_000)]),
            ("gmm 2-D", gmm, [(10_000, 1000), (big, 1000), (big, 10_000)]),
        ]:
            for num, batch in configs:
                out = Path(tmp) / f"{name[:4]}_{num}_{batch}.npz"
                rss, seconds = run([*base, "--num", str(num), "--batch-size", str(batch), "--out", str(out)])
                rows.append((name, num, batch, rss, rss - baseline, seconds, out.stat().st_size / 1e6))
                print(rows[-1], flush=True)
    lines = [
        "# Peak memory of `scoresde sample` (child process ru_maxrss)",
        "",
        f"Made by `python benchmarks/memory.py{' --quick' if args.quick else ''}`. Baseline: `scoresde info` "
        f"(torch imported, nothing sampled) peaks at {baseline:.0f} MB.",
        "",
        "| source | samples | --batch-size | peak RSS (MB) | above baseline (MB) | seconds | .npz size (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {r[0]} | {r[1]:,} | {r[2]:,} | {r[3]:.0f} | {r[4]:.0f} | {r[5]:.1f} | {r[6]:.1f} |" for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
