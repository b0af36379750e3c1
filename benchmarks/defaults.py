"""Plain ``scoresde train`` then plain ``scoresde sample`` against the diffusers loop with EMAModel.

Issue 21's target, measured the way a user meets it: ours is exactly what ``scoresde train --data
NAME`` does (``train_in_folder`` with no overrides but the seed and ``--clock cpu``: the data's
defaults, its time budget, preview pictures and checkpoints included in the budget), sampled as
``scoresde sample`` does (``generate`` with its defaults: ``auto`` solver, 20 steps) and with the
deterministic solvers at 20 steps. Theirs is the loop of diffusers' ``train_unconditional.py`` with
its default ``EMAModel`` and gradient clipping (``fair.diffusers_train_ema``, AdamW at lr 1e-3, which
beats the example's 1e-4 + cosine at this budget: peers.md) for the same CPU seconds, with three
networks: the UNet2DModel with the parameter count of our old default (channels 32) and with
ours now (channels 16, 16 GroupNorm groups), both with diffusers' default time embedding (added
before the norm: ``resnet_time_scale_shift="default"``), and at 16 channels with ours
(``"scale_shift"``, after the norm); sampled by DPMSolverMultistep, UniPCMultistep and DDIM
with their default settings at 20 steps. The clock is process CPU time of one torch thread (fair on
a shared machine); the budget is the data's own default (digits: 3 minutes).

Judge: Fréchet distance of ``--num`` samples to every image of the data in the features of the data's
small classifier (``scoresde.metrics``), one sampling seed; mean ± sd over training seeds::

    python benchmarks/defaults.py --data digits --seeds 3          # ~30 CPU-minutes
    python benchmarks/defaults.py --seeds 1 --first-seed K --save sK.json   # one seed per process
    python benchmarks/defaults.py --merge s0.json s1.json s2.json  # then the report
    python benchmarks/defaults.py --theirs-from results/defaults_digits.json   # ours, theirs reused

The rows go to the report's ``.json`` too. ``--theirs-from`` reruns our side and takes each seed's
diffusers cells from an earlier run's rows (their side does not depend on our defaults; the report
says which run they came from), training only the diffusers nets those rows lack.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from peers import FAIR_THEIRS as THEIRS

THEIR_NETS = {  # label: our UNet's layout at this width, with diffusers' default time embedding or ADM's
    "channels 32": {"channels": 32, "embedding": "add"},
    "channels 16": {"channels": 16, "embedding": "add"},
    "channels 16, scale-shift": {"channels": 16, "embedding": "scale-shift"},
}
OURS = {  # label: generate() options (20 steps, the CLI's default)
    "scoresde sample (default)": {},
    "unipc": {"solver": "unipc"},
    "dpm-solver++": {"solver": "dpm-solver++"},
    "unipc, uniform grid": {"solver": "unipc", "grid": "uniform"},
}
STEPS = 20


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_seed(data: str, seed: int, num: int, classifier, ref, minutes: float | None = None, theirs=None) -> dict:
    """One training seed: ours (the defaults) and theirs (both nets) for the same CPU seconds.

    ``theirs``: an earlier run's row of this seed, whose diffusers cells are reused (nets it lacks are run)."""
    from fair import diffusers_train_ema
    from peers import DiffusersNet, diffusers_unet, fair_cells_theirs, frechet

    from scoresde.data import load_dataset
    from scoresde.generation import generate
    from scoresde.trainer import train_in_folder

    row: dict = {"seed": seed, "ours": {}, "theirs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.process_time()
        overrides = {"data": {"name": data}, "seed": seed, "clock": "cpu", **({"minutes": minutes} if minutes else {})}
        dm = train_in_folder(Path(tmp) / "run", overrides, progress=False)
        row["ours_cpu_s"], row["ours_steps"] = time.process_time() - start, dm.provenance.step
        config = dm.provenance.config
    budget = 60 * config.minutes
    row["budget_s"], row["ours_model"] = budget, {k: getattr(config.model, k) for k in ("channels", "size")}
    for label, options in OURS.items():
        x = generate(dm, num, steps=STEPS, seed=1, **options).samples
        row["ours"][label] = frechet(x, classifier, ref)
    log(f"seed {seed} ours ({row['ours_steps']} steps, {row['ours_cpu_s']:.0f} CPU s): {row['ours']}")
    if theirs is not None:
        if theirs["budget_s"] != budget:
            raise SystemExit(
                f"--theirs-from: seed {seed} ran {theirs['budget_s']:.0f} CPU-s, this budget is {budget:.0f}"
            )
        row["theirs"] = dict(theirs["theirs"])
    images = load_dataset(data, seed=0).train
    shape = tuple(images.shape[1:])
    for net_label, net_options in THEIR_NETS.items():
        if net_label in row["theirs"]:
            continue
        torch.manual_seed(seed)
        net = DiffusersNet(diffusers_unet(net_options, shape))  # the tiny UNet's layout at this width
        snaps, secs = diffusers_train_ema(net, images, [10**9], 64, lr=1e-3, seed=seed, budget=budget)
        ((steps, snap),) = snaps.items()
        cells = {"steps": steps, "cpu_s": secs[steps]}  # their schedulers with their defaults, STEPS steps
        cells |= {name: fd for (name, _), fd in fair_cells_theirs(snap, shape, num, classifier, ref, (STEPS,)).items()}
        row["theirs"][net_label] = cells
        log(f"seed {seed} theirs {net_label}: {cells}")
    return row


def report(rows: list[dict], args, cinfo, floor: float) -> str:
    from fair import mean_sd

    first = rows[0]
    best_theirs = None
    lines = [
        "# Plain `scoresde train` + `scoresde sample` vs the diffusers loop with EMAModel (benchmarks/defaults.py)",
        "",
        f"Regenerate: `python benchmarks/defaults.py {shlex.join(sys.argv[1:])}`. Measured "
        f"{datetime.date.today().isoformat()} on the shared 2-core CPU machine (process CPU time of one torch thread; "
        f"torch {torch.__version__}, Python {platform.python_version()}). Data {args.data}; budget "
        f"{first['budget_s']:.0f} CPU-s for every side (the data's default `--minutes`); ours: the data's default "
        f"network ({first['ours_model']}); FD of {args.num} samples to every image of the data in its classifier's "
        f"features (test accuracy {cinfo['test_accuracy']:.3f}); {len(rows)} training seeds, one sampling seed; "
        f"{args.num} training images score {floor:.2f} (the floor).",
        "",
        "| side | network | sampler (20 steps) | steps | FD mean ± sd | per seed |",
        "|---|---|---|---|---|---|",
    ]
    steps = "/".join(str(r["ours_steps"]) for r in rows)
    ours = {}
    for label in OURS:
        values = [r["ours"][label] for r in rows]
        ours[label] = (*mean_sd(values), values)
        m, s, _ = ours[label]
        lines.append(
            f"| ours | default | {label} | {steps} | {m:.2f} ± {s:.2f} | {', '.join(f'{v:.2f}' for v in values)} |"
        )
    for net in THEIR_NETS:
        for name in THEIRS:
            key = name.removesuffix("Scheduler")
            values = [r["theirs"][net][key] for r in rows]
            m, s = mean_sd(values)
            if best_theirs is None or m < best_theirs[0]:
                best_theirs = (m, s, f"{key} ({net})")
            st = "/".join(str(r["theirs"][net]["steps"]) for r in rows)
            lines.append(f"| diffusers + EMAModel | {net} | {key} | {st} | {m:.2f} ± {s:.2f} | "
                         f"{', '.join(f'{v:.2f}' for v in values)} |")  # fmt: skip
    lines += ["", f"Best diffusers side: {best_theirs[2]}, FD {best_theirs[0]:.2f} ± {best_theirs[1]:.2f}.", ""]
    if getattr(args, "reused", None):
        lines += [f"The diffusers rows of {', '.join(args.reused)} are {args.theirs_from}'s (same seeds, budget and "
                  "judge; not rerun).", ""]  # fmt: skip
    for label, target in (("scoresde sample (default)", 0.6), ("unipc", 0.75), ("dpm-solver++", 0.75)):
        m, s, _ = ours[label]
        gap, two_sd = best_theirs[0] - m, 2 * max(s, best_theirs[1])
        ok = m / best_theirs[0] <= target and gap > two_sd
        lines.append(f"- {label}: {m:.2f} / {best_theirs[0]:.2f} = **{m / best_theirs[0]:.2f}×** (target ≤ {target}×), "
                     f"gap {gap:.2f} vs 2 sd {two_sd:.2f}: {'met' if ok else 'not met'}.")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits", choices=("digits", "mnist"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--num", type=int, default=500)
    parser.add_argument("--minutes", type=float, default=None, help="another budget than the data's (smoke runs)")
    parser.add_argument("--work", default="runs/recipe", help="classifier cache")
    parser.add_argument("--save", type=Path, help="also write the rows as JSON here (for --merge)")
    parser.add_argument("--merge", type=Path, nargs="+", help="only render the rows --save'd by other processes")
    parser.add_argument(
        "--theirs-from", type=Path, help="rerun ours; reuse the diffusers cells of these rows (nets they lack run)"
    )
    parser.add_argument("--out", type=Path, default=None, help="report (default results/defaults_DATA.md)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from peers import frechet

    from scoresde.data import load_dataset
    from scoresde.metrics import labelled_images, load_or_train_classifier

    out = args.out or Path(__file__).parent / "results" / f"defaults_{args.data}.md"
    cache = Path(args.work) / ("classifier" if args.data == "digits" else f"classifier-{args.data}")
    classifier, cinfo = load_or_train_classifier(args.data, cache)
    ref = classifier.embed(labelled_images(args.data)[0])
    data = load_dataset(args.data, seed=0).train
    g = torch.Generator().manual_seed(123)
    floor = frechet(data[torch.randperm(len(data), generator=g)[: min(args.num, len(data))]], classifier, ref)
    if args.theirs_from:  # read before the report's JSON (which may be that file) is rewritten
        earlier_rows = json.loads(args.theirs_from.read_text())
        args.reused = sorted(set(THEIR_NETS).intersection(*(r["theirs"] for r in earlier_rows)))
    if args.merge:
        rows = sorted((r for p in args.merge for r in json.loads(p.read_text())), key=lambda r: r["seed"])
    else:
        rows = []
        earlier = {r["seed"]: r for r in json.loads(args.theirs_from.read_text())} if args.theirs_from else None
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            theirs = None if earlier is None else earlier[seed]
            rows.append(run_seed(args.data, seed, args.num, classifier, ref, args.minutes, theirs))
            if args.save:
                args.save.write_text(json.dumps(rows, indent=1))
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    out.write_text(report(rows, args, cinfo, floor))
    print(out.read_text())


if __name__ == "__main__":
    main()
