"""Training-recipe ablation on 8×8 digits at equal examples seen: which defaults does the evidence support?

One command writes ``benchmarks/results/recipe.md`` (and ``recipe.json``, every number)::

    python benchmarks/recipe.py                    # 1200 steps × batch 64, 3 seeds: ~30 CPU-minutes
    python benchmarks/recipe.py --steps 300 --seeds 1 --num 200   # a smoke run
    python benchmarks/recipe.py --budget 180 --recipes "default,batch 32,batch 128,channels 16,channels 48" \
        --out benchmarks/results/recipe_budget.md           # equal CPU time: batch and width, ~50 CPU-minutes

Recipes (each the ``scoresde train`` default with one change; the same steps, batch and data order
per seed, so each row sees the same examples):

* ``default``: since 2026-11-29 EDM's recipe (Karras et al. 2022): EDM preconditioning
  (``--precondition edm``, σ_data 0.5), ``lognormal`` times (P_mean −1.2, P_std 1.2), the ``edm``
  weighting; AdamW lr 1e-3, EMA 0.995 with warm-up;
* ``ddpm``: the previous default: ε-prediction, discrete t, ``simple`` weighting (Ho et al. 2020);
* ``min-snr``: ε-prediction, discrete t, the ``min-snr`` weighting, γ = 5 (Hang et al. 2023);
* ``lr 2e-3`` and ``lr 5e-4``: the default at another learning rate;
* ``batch 32`` / ``batch 128`` and ``channels 16`` / ``channels 48`` (the tiny UNet's base width is
  32): with ``--budget SECONDS`` every recipe trains for the same process CPU time instead of the
  same steps (the 3-CPU-minute question: fewer, larger steps or more, smaller ones?);
* EMA length: ``ema 0.999``, the power-function EMAs ``ema power6.94`` and
  ``ema power16.97`` (σ_rel 0.10 and 0.05, Karras et al. 2024) and ``no EMA`` (the raw weights)
  are averaged on the side of the *default* run (the EMA does not change the training), so they
  share its weights.

Judge: Fréchet distance of ``--num`` samples to all 1,797 digits in the features of the digits
classifier, at NFE 10 and 20 with ``unipc`` (``grid="auto"``, clip_x0 = 1, one sampling seed).
Mean ± sd over training seeds. The report is rewritten after every run (a long job on a shared
machine may be stopped early: it says how many seeds each row has).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import scoresde as sd
from scoresde.config import from_dict

EPS_DISCRETE = {"model": {"precondition": "none"}, "loss": {"weighting": "simple", "time": "discrete"}}
RECIPES = {
    "default": {},
    "ddpm": EPS_DISCRETE,
    "min-snr": {**EPS_DISCRETE, "loss": {"weighting": "min-snr", "time": "discrete"}},
    "lr 2e-3": {"optim": {"lr": 2e-3}},
    "lr 5e-4": {"optim": {"lr": 5e-4}},
    # batch and width matter at equal *time*, not equal steps: meant for --budget
    "batch 32": {"batch_size": 32},
    "batch 128": {"batch_size": 128},
    "channels 16": {"model": {"channels": 16}},
    "channels 48": {"model": {"channels": 48}},
}
STEP_RECIPES = ("default", "ddpm", "min-snr", "lr 2e-3", "lr 5e-4")
SIDE_EMAS = ("0.999", "power6.94", "power16.97")
NFES = (10, 20)


def config(recipe: str, steps: int, batch: int, seed: int):
    base = {"steps": steps, "batch_size": batch, "seed": seed, "checkpoint_every": 0, "log_every": 50, "threads": 0}
    for key, value in RECIPES[recipe].items():
        base[key] = value
    return from_dict(base)


def score(model, sde, num, classifier, ref):
    from samplers import steps_for

    from scoresde.metrics import frechet_distance

    out = {}
    for nfe in NFES:
        x, info = sd.sample(
            model, sde, (num, 1, 8, 8), "unipc", steps_for("unipc", nfe, {}),
            generator=torch.Generator().manual_seed(1), clip_x0=1.0, return_info=True,
        )  # fmt: skip
        assert info.nfe == nfe, info.nfe
        out[nfe] = frechet_distance(classifier.embed(x.clamp(-1, 1).float()), ref)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--num", type=int, default=500, help="samples per Fréchet distance")
    parser.add_argument("--recipes", default=",".join(STEP_RECIPES))
    parser.add_argument("--budget", type=float, default=None, help="train each recipe for this many CPU seconds")
    parser.add_argument(
        "--side-emas", default=",".join(SIDE_EMAS), help="EMAs averaged on the side: decays or powerγ (Karras 2024)"
    )
    parser.add_argument("--work", default="runs/recipe", help="classifier cache")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "recipe.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from fair import ours_train

    from scoresde.data import load_dataset
    from scoresde.metrics import labelled_images, load_or_train_classifier

    classifier, cinfo = load_or_train_classifier("digits", Path(args.work) / "classifier")
    ref = classifier.embed(labelled_images("digits")[0])
    dataset = load_dataset("digits", seed=0)
    sde = sd.VPSDE()
    rows: dict[str, list] = {}
    for seed in range(args.seeds):
        for recipe in args.recipes.split(","):
            extra = tuple(d for d in args.side_emas.split(",") if d) if recipe == "default" else ()
            if args.budget:
                cfg = config(recipe, 10**6, args.batch, seed)  # stopped by the clock
                model, steps, cpu = budget_train(cfg, dataset, args.budget)
                fd = score(model, sde, args.num, classifier, ref)
                rows.setdefault(recipe, []).append({"seed": seed, "fd": fd, "train_cpu_s": cpu, "steps": steps})
                print(f"[{time.strftime('%H:%M:%S')}] seed {seed} {recipe} ({steps} steps): {fd}", flush=True)
                write(args, rows, cinfo)
                continue
            snaps, secs = ours_train(config(recipe, args.steps, args.batch, seed), dataset, [args.steps],
                                     extra_emas=extra)  # fmt: skip
            for name, model in snaps[args.steps].items():
                label = recipe if name == "ema" else {"raw": "no EMA"}.get(name, name.replace("ema_", "ema "))
                label = label if name == "ema" else f"default, {label}"
                fd = score(model, sde, args.num, classifier, ref)
                rows.setdefault(label, []).append({"seed": seed, "fd": fd, "train_cpu_s": secs[args.steps]})
                print(f"[{time.strftime('%H:%M:%S')}] seed {seed} {label}: {fd}", flush=True)
            write(args, rows, cinfo)


def budget_train(config, dataset, budget: float):
    """Train until ``budget`` seconds of process CPU time are spent; returns (EMA model, steps, CPU seconds)."""
    import copy

    from scoresde.trainer import Trainer

    trainer = Trainer(config, None, progress=False, dataset=dataset)
    start = time.process_time()
    while time.process_time() - start < budget and trainer.step < config.steps:
        trainer.train_step(trainer.batch(trainer.step))
    spent = time.process_time() - start
    model = copy.deepcopy(trainer.ema)
    trainer.close()
    return model, trainer.step, spent


def write(args, rows, cinfo) -> None:
    from fair import mean_sd

    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    command = "python benchmarks/recipe.py " + shlex.join(sys.argv[1:])
    L = [
        "# Training-recipe ablation (benchmarks/recipe.py)",
        "",
        f"Regenerate: `{command.strip()}`. Measured {datetime.date.today().isoformat()} on the shared 2-core CPU "
        f"machine (one torch thread; torch {torch.__version__}, Python {platform.python_version()}). Digits 8×8, tiny "
        + (
            f"UNet, {args.budget:.0f} s of process CPU time per recipe (equal time: steps differ, see the table). "
            if args.budget
            else f"UNet, {args.steps} steps × batch {args.batch} per recipe (equal examples seen; deterministic work, "
            "so the clock does not enter). "
        )
        + "FD: Fréchet distance of "
        f"{args.num} samples to all 1,797 digits in the digits classifier's features (test accuracy "
        f"{cinfo['test_accuracy']:.3f}), `unipc` with its default grid, one sampling seed; mean ± sd over "
        "training seeds (n per row). Rows `default, …` re-average the default run's weights (EMA does not change "
        "training).",
        "",
        "| recipe | n | FD @ NFE 10 | FD @ NFE 20 | per seed @ NFE 20 | train CPU s | steps |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, runs in rows.items():
        s = {nfe: mean_sd(r["fd"][nfe] for r in runs) for nfe in NFES}
        per = ", ".join(f"{r['fd'][20]:.2f}" for r in runs)
        cpu = mean_sd(r["train_cpu_s"] for r in runs)[0]
        L.append(
            f"| {label} | {len(runs)} | {s[10][0]:.2f} ± {s[10][1]:.2f} | {s[20][0]:.2f} ± {s[20][1]:.2f} | {per} | "
            f"{cpu:.0f} | {'/'.join(str(r.get('steps', args.steps)) for r in runs)} |"
        )
    L.append("")
    args.out.write_text("\n".join(L) + "\n")


if __name__ == "__main__":
    main()
