"""Training-recipe ablation on digits (or MNIST-5k, ``--data mnist``): which defaults does the evidence support?

One command writes ``benchmarks/results/recipe.md`` (and ``recipe.json``, every number)::

    python benchmarks/recipe.py                    # 1200 steps × batch 64, 3 seeds: ~30 CPU-minutes
    python benchmarks/recipe.py --steps 300 --seeds 1 --num 200   # a smoke run
    python benchmarks/recipe.py --budget 180 --recipes "default,batch 32,batch 128,channels 16,channels 48" \
        --out benchmarks/results/recipe_budget.md           # equal CPU time: batch and width, ~50 CPU-minutes
    python benchmarks/recipe.py --data mnist --budget 900 --recipes "channels 16,channels 16+lr 2e-3" \
        --side-emas 0.999,power6.94 --out benchmarks/results/recipe_mnist.md   # ~90 CPU-minutes

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
    "channels 24": {"model": {"channels": 24}},
    "ema 0.999": {"optim": {"ema_decay": 0.999}},
    # the training times (EDM's log-normal ln σ/α ~ N(P_mean, P_std²); default -1.2, 1.2)
    "pmean -0.6": {"loss": {"lognormal_p_mean": -0.6}},
    "pmean -1.8": {"loss": {"lognormal_p_mean": -1.8}},
    "pmean 0": {"loss": {"lognormal_p_mean": 0.0}},
    "pstd 1.6": {"loss": {"lognormal_p_std": 1.6}},
    # how UNet blocks take the time embedding: before the norm (Ho et al.; erased at 1 channel per group)
    "embed add": {"model": {"embedding": "add"}},
}
# --data NAME: the network every recipe starts from (digits: the tiny UNet, train's default;
# mnist: examples/mnist.py's narrow 3-level UNet, 28 -> 14 -> 7, the net the peers benchmark uses)
DATA_BASE = {
    "digits": {},
    "mnist": {"model": {"channels": 32, "channel_mult": (1, 2, 2), "num_res_blocks": 1,
                        "attention_resolutions": (7,), "dropout": 0.0}},
}  # fmt: skip
STEP_RECIPES = ("default", "ddpm", "min-snr", "lr 2e-3", "lr 5e-4")
SIDE_EMAS = ("0.999", "power6.94", "power16.97")
NFES = (10, 20)


def config(recipe: str, steps: int, batch: int, seed: int, data: str = "digits"):
    """The config of ``recipe`` ("+" joins changes: ``channels 16+lr 2e-3``) on ``data``'s base network."""
    from scoresde.config import merge

    base = {"steps": steps, "batch_size": batch, "seed": seed, "checkpoint_every": 0, "log_every": 50, "threads": 0,
            "data": {"name": data}}  # fmt: skip
    base = merge(base, DATA_BASE[data])
    for part in recipe.split("+"):
        base = merge(base, RECIPES[part.strip()])
    return from_dict(base)


def score(model, sde, num, classifier, ref, shape=(1, 8, 8)):
    from samplers import steps_for

    from scoresde.metrics import frechet_distance

    out = {}
    for nfe in NFES:
        x, info = sd.sample(
            model, sde, (num, *shape), "unipc", steps_for("unipc", nfe, {}),
            generator=torch.Generator().manual_seed(1), clip_x0=1.0, return_info=True,
        )  # fmt: skip
        assert info.nfe == nfe, info.nfe
        out[nfe] = frechet_distance(classifier.embed(x.clamp(-1, 1).float()), ref)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits", choices=sorted(DATA_BASE))
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed … first-seed+seeds-1")
    parser.add_argument("--num", type=int, default=500, help="samples per Fréchet distance")
    parser.add_argument("--recipes", default=",".join(STEP_RECIPES), help="comma list; '+' joins changes")
    parser.add_argument("--budget", type=float, default=None, help="train each recipe for this many CPU seconds")
    parser.add_argument(
        "--side-emas", default=",".join(SIDE_EMAS), help="EMAs averaged on the side: decays or powerγ (Karras 2024)"
    )
    parser.add_argument(
        "--merge", nargs="+", type=Path, help="only merge these .json files (one per process) into --out"
    )
    parser.add_argument("--work", default="runs/recipe", help="classifier cache")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "recipe.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from fair import ours_train

    from scoresde.data import load_dataset
    from scoresde.metrics import labelled_images, load_or_train_classifier

    cache = Path(args.work) / ("classifier" if args.data == "digits" else f"classifier-{args.data}")
    classifier, cinfo = load_or_train_classifier(args.data, cache)
    if args.merge:
        rows: dict[str, list] = {}
        for path in args.merge:
            for label, runs in json.loads(path.read_text()).items():
                rows.setdefault(label, []).extend(runs)
        for runs in rows.values():
            runs.sort(key=lambda r: r["seed"])
        write(args, {k: [{**r, "fd": {int(n): v for n, v in r["fd"].items()}} for r in v] for k, v in rows.items()},
              cinfo)  # fmt: skip
        return
    images = labelled_images(args.data)[0]
    ref = classifier.embed(images)
    shape = tuple(images.shape[1:])
    dataset = load_dataset(args.data, seed=0)
    sde = sd.VPSDE()
    rows = {}
    side = tuple(d for d in args.side_emas.split(",") if d)
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for recipe in args.recipes.split(","):
            extra = side if recipe == "default" or args.budget else ()
            if args.budget:
                cfg = config(recipe, 10**6, args.batch, seed, args.data)  # stopped by the clock
                snaps, secs = ours_train(cfg, dataset, [cfg.steps], extra_emas=extra, budget=args.budget)
                ((steps, models),) = snaps.items()  # one snapshot, at the step the clock stopped
                cpu = secs[steps]
                for name, model in models.items():
                    label = recipe if name == "ema" else f"{recipe}, {name_of(name)}"
                    fd = score(model, sde, args.num, classifier, ref, shape)
                    rows.setdefault(label, []).append({"seed": seed, "fd": fd, "train_cpu_s": cpu, "steps": steps})
                    print(f"[{time.strftime('%H:%M:%S')}] seed {seed} {label} ({steps} steps): {fd}", flush=True)
                    write(args, rows, cinfo)
                continue
            snaps, secs = ours_train(config(recipe, args.steps, args.batch, seed, args.data), dataset, [args.steps],
                                     extra_emas=extra)  # fmt: skip
            for name, model in snaps[args.steps].items():
                label = recipe if name == "ema" else f"default, {name_of(name)}"
                fd = score(model, sde, args.num, classifier, ref, shape)
                rows.setdefault(label, []).append({"seed": seed, "fd": fd, "train_cpu_s": secs[args.steps]})
                print(f"[{time.strftime('%H:%M:%S')}] seed {seed} {label}: {fd}", flush=True)
            write(args, rows, cinfo)


def name_of(model_name: str) -> str:
    """``ema_0.999`` -> ``ema 0.999``, ``raw`` -> ``no EMA``."""
    return {"raw": "no EMA"}.get(model_name, model_name.replace("ema_", "ema "))


DATA_TEXT = {"digits": "Digits 8×8, tiny", "mnist": "MNIST-5k 28×28, the 3-level (1, 2, 2) attention-at-7"}
JUDGE_TEXT = {"digits": "1,797 digits in the digits classifier's features",
              "mnist": "5,000 MNIST images in the features of a small classifier trained on them"}  # fmt: skip


def write(args, rows, cinfo) -> None:
    from fair import mean_sd

    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    command = "python benchmarks/recipe.py " + shlex.join(sys.argv[1:])
    L = [
        "# Training-recipe ablation (benchmarks/recipe.py)",
        "",
        f"Regenerate: `{command.strip()}`. Measured {datetime.date.today().isoformat()} on the shared 2-core CPU "
        f"machine (one torch thread; torch {torch.__version__}, Python {platform.python_version()}). "
        f"{DATA_TEXT[args.data]} "
        + (
            f"UNet (channels 32 unless the recipe says), {args.budget:.0f} s of process CPU time per recipe "
            "(equal time: steps differ, see the table). "
            if args.budget
            else f"UNet, {args.steps} steps × batch {args.batch} per recipe (equal examples seen; deterministic work, "
            "so the clock does not enter). "
        )
        + "FD: Fréchet distance of "
        f"{args.num} samples to all {JUDGE_TEXT[args.data]} (test accuracy "
        f"{cinfo['test_accuracy']:.3f}), `unipc` with its default grid, one sampling seed; mean ± sd over "
        "training seeds (n per row). Rows `R, ema …` / `R, no EMA` re-average recipe R's run (EMA does not change "
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
