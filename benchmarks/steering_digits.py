"""Steering a trained digits model: completion rates per solver, and the pictures of docs/steering_digits.png.

Completion: the held-out digits with their top half hidden (``--mask keep-bottom``) are completed by
every solver (replacement; ``scoresde.samplers`` ``known``/``mask``), one completion per image, and
the dataset classifier (``scoresde.metrics.load_or_train_classifier``, trained apart from the model on
the labelled set) judges whether the completed digit keeps the original class. References: the same
classifier on the original images (the ceiling) and on the images with the top half replaced by
the model's unconditional samples' top halves (what a completion that ignores the bottom scores).
Also the seconds per image.

    python benchmarks/steering_digits.py RUN [--num 180] [--figure docs/steering_digits.png]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import scoresde as sd
from scoresde.encoding import interpolate
from scoresde.generation import generate
from scoresde.imageio import image_grid, save_png
from scoresde.metrics import load_or_train_classifier
from scoresde.observations import load_mask, measurement_guided

SOLVERS = {"ancestral": 20, "euler-maruyama": 20, "sde-dpm-solver++": 20, "ddim": 20, "dpm-solver++": 20, "unipc": 20,
           "heun": 10}  # steps for NFE ~20  # fmt: skip


@torch.no_grad()
def rate(classifier, x: torch.Tensor, labels: torch.Tensor) -> float:
    return (classifier(x.clamp(-1, 1)).argmax(1) == labels).double().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--num", type=int, default=180)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "steering_digits.md")
    parser.add_argument("--figure", type=Path, default=Path(__file__).parent.parent / "docs" / "steering_digits.png")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dm = sd.load_run(args.run)
    x0, labels = dm.reference[: args.num].float(), dm.reference_labels[: args.num]
    classifier, info = load_or_train_classifier("digits", args.run)
    mask = load_mask("keep-bottom", dm.data_shape)
    lines = ["# Completing digits with the top half hidden", "",
             f"Run `{args.run}` (step {dm.provenance.step}); {len(x0)} held-out digits, one completion each, "
             f"{args.seeds} seeds; judged by the dataset classifier (test accuracy {info['test_accuracy']:.3f}), "
             "which was trained apart from the model. `python benchmarks/steering_digits.py RUN`.", "",
             "| solver | NFE | replacement (mean ± sd) | + resample 2 | guided by the mask (ΠGDM, σ_y 0.05) | "
             "s per image (replacement / guided) |", "|---|---|---|---|---|---|"]  # fmt: skip
    free = generate(dm, len(x0), steps=20, seed=99).samples
    floor = rate(classifier, mask * x0 + (1 - mask) * free, labels)
    for solver, steps in SOLVERS.items():
        rates, seconds, again = [], [], []
        for seed in range(args.seeds):
            done = generate(dm, len(x0), solver=solver, steps=steps, seed=seed, known=x0, mask=mask)
            rates.append(rate(classifier, done.samples, labels))
            seconds.append(done.seconds / len(x0))
            assert torch.allclose(done.samples * mask, x0 * mask, atol=1e-5)  # the kept half is the image
        twice = generate(dm, len(x0), solver=solver, steps=steps, seed=0, known=x0, mask=mask, resample=2)
        again.append(rate(classifier, twice.samples, labels))
        guided_rates, guided_seconds = [], []
        for seed in range(args.seeds):
            guided, _ = measurement_guided(dm, "mask", x0, 0.05, seed=seed, mask=mask)
            done_guided = generate(guided, len(x0), solver=solver, steps=steps, seed=seed)
            guided_rates.append(rate(classifier, done_guided.samples, labels))
            guided_seconds.append(done_guided.seconds / len(x0))
        r, g = torch.tensor(rates), torch.tensor(guided_rates)
        lines.append(f"| {solver} | {done.nfe} | {r.mean():.3f} ± {r.std():.3f} | {again[0]:.3f} | "
                     f"{g.mean():.3f} ± {g.std():.3f} | {sum(seconds) / len(seconds) * 1000:.1f} / "
                     f"{sum(guided_seconds) / len(guided_seconds) * 1000:.1f} ms |")  # fmt: skip
        print(lines[-1], flush=True)
    lines += ["", f"Ceiling (the original images): {rate(classifier, x0, labels):.3f}. Floor (the kept bottom half "
              f"with the top half of unconditional samples): {floor:.3f}.", ""]  # fmt: skip
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-3:]))
    figure(dm, x0[:8], mask, args.figure)


def figure(dm, x0: torch.Tensor, mask: torch.Tensor, path: Path) -> None:
    """Rows: originals; the kept half; completions; a blurred, noisy measurement; posterior samples given
    it; SDEdit at strength 0.5; a latent interpolation between the first two digits (probability-flow ODE)."""
    t0 = time.perf_counter()
    hidden = mask * x0 + (1 - mask) * -1.0
    completed = generate(dm, len(x0), solver="sde-dpm-solver++", steps=20, known=x0, mask=mask).samples
    guided, blurred = measurement_guided(dm, "blur", x0, 0.05, kernel=5, width=1.5)
    deblurred = generate(guided, len(x0), solver="sde-dpm-solver++", steps=20).samples
    edited = generate(dm, len(x0), solver="sde-dpm-solver++", steps=20, init=x0, strength=0.5).samples
    path_x = interpolate(dm.model, dm.sde, x0[:1], x0[1:2], n=8, solver="ode", steps=50,
                         rtol=1e-5, atol=1e-5)[:, 0]  # fmt: skip
    rows = torch.cat([x0, hidden, completed, blurred, deblurred, edited, path_x.clamp(-1, 1)])
    zoom = 4
    pixels = image_grid(rows.clamp(-1, 1).repeat_interleave(zoom, -1).repeat_interleave(zoom, -2), nrow=8)
    save_png(path, pixels)
    print(f"wrote {path} ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
