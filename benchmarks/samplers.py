"""Samplers on a 2-D Gaussian mixture with exact score: accuracy per NFE and per-step overhead.

The problem: ``scoresde.analytic.gmm()`` (six tight, unequal, anisotropic modes) under the VP
SDE (β 0.1..20). Its exact ε*(x, t) is the model, so every error below is the sampler's. For each
solver, time grid and NFE ∈ {10, 20, 50, 100, 1000} we report

* SW2 — sliced Wasserstein-2 (256 fixed directions) between the samples and *fresh* ground-truth
  samples of the same size; the row "ground truth vs ground truth" is the Monte Carlo floor;
* mode error — total variation between the fraction of samples assigned to each mode (largest
  responsibility) and the true weights;
* seconds per step (process CPU time, one torch thread) for the exact model at the given batch.

When diffusers is installed (extra ``bench``), its DDPM, DDIM, DPMSolverMultistep (2M) and UniPC
schedulers run on the same problem with the same exact model (``trained_betas`` = our chain of
the same SDE, timestep j ↔ t = (j + 1)/1000), each with its default ``timestep_spacing`` and
with ``trailing``; their best is compared with ours. The overhead section times complete
sampling loops with a trivial model (x ↦ x) at batch 10000 × 2: median of several runs.

    python benchmarks/samplers.py                 # n = 10000, writes benchmarks/results/samplers.md
    python benchmarks/samplers.py --n 2000 --quick
    python benchmarks/samplers.py --defaults      # grid study + defaults vs diffusers' defaults, 5 seeds,
                                                  # writes benchmarks/results/samplers_defaults.{md,json}

``--defaults`` runs every fixed-step solver on every time grid at NFE 5, 10, 20, 50 on two exact
mixtures (``gmm()`` and the nine tight modes of ``gmm_hard()``), 5 seeds each (seed s: x_T, noise
and the ground-truth sample all change), and picks per solver the grid with the smallest mean
log-ratio to the best grid of each cell (mixture × NFE × metric): that is ``grid="auto"``. It then
compares ``sd.sample(model, sde, shape, solver, steps)`` with *default* options against diffusers'
DPMSolverMultistep and UniPCMultistep with *their* defaults (and the best of their other settings),
at equal model evaluations.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch

import scoresde as sd
from scoresde.analytic import gmm, gmm_hard
from scoresde.metrics import SlicedReference, sliced_wasserstein

NFES = (10, 20, 50, 100, 1000)
N_TRAIN = 1000  # diffusers' num_train_timesteps; our chain of the same SDE


def sliced_w2(x: torch.Tensor, y: torch.Tensor, projections: int = 256, seed: int = 0) -> float:
    """scoresde.metrics.sliced_wasserstein with fixed directions, reporting NaN (not raising) for diverged runs."""
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        return math.nan
    return sliced_wasserstein(x, y, projections, generator=torch.Generator().manual_seed(seed))


def mode_error(data, x: torch.Tensor) -> float:
    x = x[torch.isfinite(x).all(1)]
    counts = data.responsibilities(x.double()).argmax(1).bincount(minlength=data.K).double()
    return 0.5 * (counts / max(len(x), 1) - data.weights).abs().sum().item()


# ------------------------------------------------------------------------------ our solvers


def steps_for(solver: str, nfe: int, options: dict) -> int | None:
    """Steps giving (at most) ``nfe`` model evaluations, counting the final denoising step."""
    if solver in ("ancestral", "ddim"):
        return nfe  # t_min = 0: no denoising step
    if solver in ("heun", "pc"):
        return (nfe - 1) // 2
    if solver == "torchsde" and options.get("method") == "srk":
        return None
    return nfe - 1


OURS = [
    ("ancestral", {}, ("uniform", "quadratic")),
    ("ddim", {}, ("uniform", "quadratic", "log-snr")),
    ("dpm-solver++", {}, ("uniform", "quadratic", "log-snr")),
    ("dpm-solver++", {"order": 3}, ("uniform", "quadratic", "log-snr")),
    ("heun", {}, ("uniform", "quadratic", "log-snr")),
    ("euler-maruyama", {}, ("uniform", "quadratic")),
    ("reverse-diffusion", {}, ("uniform",)),
    ("pc", {}, ("uniform",)),
    ("torchsde", {"method": "euler"}, ("uniform",)),
]


def run_ours(data, sde, model, n: int, nfes, seed: int, quick: bool):
    rows = []
    for solver, options, grids in OURS:
        for grid in grids[:1] if quick else grids:
            cells = {}
            for nfe in nfes:
                steps = steps_for(solver, nfe, options)
                if steps is None or steps < 1:
                    continue
                g = torch.Generator().manual_seed(seed)
                cpu = time.process_time()
                x, info = sd.sample(
                    model, sde, (n, 2), solver, steps, generator=g, grid=grid, return_info=True, **options
                )
                seconds = time.process_time() - cpu
                cells[nfe] = (info.nfe, x, seconds / steps)
            label = solver + ("" if not options else " " + ",".join(f"{k}={v}" for k, v in options.items()))
            rows.append(("scoresde", label, grid, cells))
    # the adaptive ODE solver: NFE is the solver's choice
    for rtol in (1e-2, 1e-3, 1e-5):
        g = torch.Generator().manual_seed(seed)
        cpu = time.process_time()
        x, info = sd.sample(model, sde, (n, 2), "ode", 1, generator=g, return_info=True, rtol=rtol, atol=rtol)
        rows.append(("scoresde", f"ode RK45 rtol={rtol:g}", "adaptive", {info.nfe: (info.nfe, x, None)}))
        _ = time.process_time() - cpu
    return rows


# ------------------------------------------------------------------------------ diffusers


def diffusers_schedulers(betas):
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

    common = {"num_train_timesteps": N_TRAIN, "trained_betas": betas.tolist()}
    yield "DDPMScheduler", lambda sp: DDPMScheduler(**common, clip_sample=False, timestep_spacing=sp), "leading"
    yield "DDIMScheduler", lambda sp: DDIMScheduler(**common, clip_sample=False, timestep_spacing=sp), "leading"
    yield "DPMSolverMultistep", lambda sp: DPMSolverMultistepScheduler(**common, timestep_spacing=sp), "linspace"
    yield "UniPCMultistep", lambda sp: UniPCMultistepScheduler(**common, timestep_spacing=sp), "linspace"


def diffusers_loop(scheduler, model, n: int, steps: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    scheduler.set_timesteps(steps)
    x = torch.randn((n, 2), generator=g) * scheduler.init_noise_sigma
    for j in scheduler.timesteps:
        t = torch.full((n,), (int(j) + 1) / N_TRAIN)
        eps = model(x, t)
        kwargs = {"generator": g} if "generator" in scheduler.step.__code__.co_varnames else {}
        x = scheduler.step(eps, j, x, **kwargs).prev_sample
    return x


def run_diffusers(sde, model, n: int, nfes, seed: int, quick: bool):
    betas = sde.discretize(N_TRAIN).betas
    rows = []
    for name, make, default in diffusers_schedulers(betas):
        for spacing in (default,) if quick else (default, "trailing"):
            cells = {}
            for nfe in nfes:
                sched = make(spacing)
                cpu = time.process_time()
                x = diffusers_loop(sched, model, n, nfe, seed)
                cells[nfe] = (nfe, x, (time.process_time() - cpu) / nfe)
            rows.append(("diffusers", name, f"{spacing} spacing", cells))
    return rows


# ------------------------------------------------------------------------------ overhead


def overhead(batch: int, steps: int, repeats: int):
    """Median CPU seconds per step of complete loops with a trivial model, ours vs diffusers."""
    sde = sd.VPSDE()

    def trivial(x, t):
        return x

    def ours(solver, **options):
        g = torch.Generator().manual_seed(0)
        t0 = time.process_time()
        sd.sample(trivial, sde, (batch, 2), solver, steps, generator=g, **options)
        return (time.process_time() - t0) / steps

    results = {}
    for label, fn in [
        ("scoresde ancestral", lambda: ours("ancestral")),
        ("scoresde ddim", lambda: ours("ddim")),
        ("scoresde dpm-solver++", lambda: ours("dpm-solver++")),
        ("scoresde unipc", lambda: ours("unipc")),
        ("scoresde euler-maruyama", lambda: ours("euler-maruyama")),
    ]:
        results[label] = statistics.median(fn() for _ in range(repeats))
    try:
        betas = sde.discretize(N_TRAIN).betas
        for name, make, default in diffusers_schedulers(betas):

            def run(make=make, default=default):
                sched = make(default)
                t0 = time.process_time()
                diffusers_loop(sched, trivial, batch, steps, 0)
                return (time.process_time() - t0) / steps

            results[f"diffusers {name}"] = statistics.median(run() for _ in range(repeats))
    except ImportError:
        pass
    return results


# ------------------------------------------------------------------------------ defaults study (--defaults)

GRID_SOLVERS = ("ancestral", "ddim", "euler-maruyama", "reverse-diffusion", "pc", "heun", "dpm-solver++", "unipc")
STUDY_NFES = (5, 10, 20, 50)
TARGET_NFES = (5, 10, 20)
MIXTURES = {"gmm": gmm, "gmm-hard": gmm_hard}


def steps_at_budget(sde, solver: str, nfe: int, **kwargs) -> tuple[int, int] | None:
    """(steps, actual NFE): the most steps whose model evaluations, denoising step included, fit ``nfe``."""

    def zero(x, t):
        return torch.zeros_like(x)

    for steps in range(nfe, 0, -1):
        _, info = sd.sample(zero, sde, (1, 2), solver, steps, return_info=True, **kwargs)
        if info.nfe <= nfe:
            return steps, info.nfe
    return None


def _metrics(data, x, truth) -> tuple[float, float]:
    return sliced_w2(x, truth), mode_error(data, x)


def _mean_sd(values) -> tuple[float, float]:
    t = torch.tensor(values, dtype=torch.float64)
    return t.mean().item(), (t.std().item() if len(values) > 1 else 0.0)


def grid_study(n: int, seeds: int, nfes=STUDY_NFES):
    """cells[(solver, grid, mixture, nfe)] = {"nfe": used, "sw2": [per seed], "mode": [per seed]}."""
    from scoresde.grids import TIME_GRIDS

    sde, cells = sd.VPSDE(), {}
    for mix, make in MIXTURES.items():
        data = make()
        model = data.model(sde, "eps")
        truths = [data.sample(n, torch.Generator().manual_seed(10_000 + s)) for s in range(seeds)]
        for solver in GRID_SOLVERS:
            for grid in TIME_GRIDS:
                for nfe in nfes:
                    budget = steps_at_budget(sde, solver, nfe, grid=grid)
                    if budget is None:
                        continue
                    steps, used = budget
                    sw, mo = [], []
                    for s in range(seeds):
                        g = torch.Generator().manual_seed(s)
                        x = sd.sample(model, sde, (n, 2), solver, steps, generator=g, grid=grid)
                        a, b = _metrics(data, x, truths[s])
                        sw.append(a)
                        mo.append(b)
                    cells[(solver, grid, mix, nfe)] = {"nfe": used, "steps": steps, "sw2": sw, "mode": mo}
    return cells


def choose_grids(cells) -> dict[str, tuple[str, dict[str, float]]]:
    """Per solver: the grid with the smallest mean log(metric / best grid's metric) over mixture × NFE × metric."""
    solvers = sorted({k[0] for k in cells}, key=GRID_SOLVERS.index)
    out = {}
    for solver in solvers:
        grids = sorted({k[1] for k in cells if k[0] == solver})
        keys = sorted({(k[2], k[3]) for k in cells if k[0] == solver})
        score = dict.fromkeys(grids, 0.0)
        count = 0
        for mix, nfe in keys:
            for metric in ("sw2", "mode"):
                vals = {g: _mean_sd(cells[(solver, g, mix, nfe)][metric])[0] for g in grids}
                if any(not math.isfinite(v) for v in vals.values()):
                    for g, v in vals.items():
                        score[g] += 0.0 if math.isfinite(v) else math.inf
                    continue
                best = max(min(vals.values()), 1e-12)
                for g, v in vals.items():
                    score[g] += math.log(max(v, 1e-12) / best)
                count += 1
        score = {g: v / max(count, 1) for g, v in score.items()}
        out[solver] = (min(score, key=score.get), score)
    return out


DIFFUSERS_SETTINGS = {
    "DPMSolverMultistep": [
        ("defaults", {}),
        ("trailing", {"timestep_spacing": "trailing"}),
        ("karras", {"use_karras_sigmas": True}),
        ("lu lambdas", {"use_lu_lambdas": True}),
        ("3M trailing", {"solver_order": 3, "timestep_spacing": "trailing"}),
        ("3M karras", {"solver_order": 3, "use_karras_sigmas": True}),
    ],
    "UniPCMultistep": [
        ("defaults", {}),
        ("trailing", {"timestep_spacing": "trailing"}),
        ("karras", {"use_karras_sigmas": True}),
        ("order 3 trailing", {"solver_order": 3, "timestep_spacing": "trailing"}),
        ("order 3 karras", {"solver_order": 3, "use_karras_sigmas": True}),
    ],
}


def our_budgets(sde, ours, nfes) -> dict[tuple[str, int], tuple[int, int]]:
    """(solver, NFE) → (steps, actual NFE) of each of ``ours`` with default options (grid "auto", t_min, denoising)."""
    return {(solver, nfe): steps_at_budget(sde, solver, nfe) for solver in ours for nfe in nfes}


def contenders(sde, model, n: int, nfe: int, seed: int, budgets):
    """((impl, label), actual NFE, samples) of every sampler of the defaults comparison at one NFE and seed:
    ours with default options (``budgets``, from :func:`our_budgets`), then each of diffusers' settings."""
    from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

    for (solver, b), (steps, used) in budgets.items():
        if b == nfe:
            x = sd.sample(model, sde, (n, 2), solver, steps, generator=torch.Generator().manual_seed(seed))
            yield ("scoresde", f"{solver} (defaults, steps={steps})"), used, x
    betas = sde.discretize(N_TRAIN).betas.tolist()
    classes = {"DPMSolverMultistep": DPMSolverMultistepScheduler, "UniPCMultistep": UniPCMultistepScheduler}
    for name, cls in classes.items():
        for label, config in DIFFUSERS_SETTINGS[name]:
            scheduler = cls(num_train_timesteps=N_TRAIN, trained_betas=betas, **config)
            # one model call per step: NFE = steps; x_T from the same seed as ours
            yield ("diffusers", f"{name} ({label})"), nfe, diffusers_loop(scheduler, model, n, nfe, seed)


def defaults_comparison(n: int, seeds: int, ours=("unipc", "dpm-solver++"), nfes=TARGET_NFES):
    """rows[(impl, label, mixture, nfe)] = {"nfe", "sw2", "mode", "flow": [per seed]}: our defaults vs diffusers'.

    "flow" is the RMS distance to the exact probability-flow map of the same x_T (a 400-step order-3
    UniPC solve in log-SNR to t = 1e-5 plus the denoising step): every deterministic sampler here
    approximates that one map, so it measures solver error without the Monte Carlo noise of SW2.
    """
    sde, rows = sd.VPSDE(), {}
    budgets = our_budgets(sde, ours, nfes)
    for mix, make in MIXTURES.items():
        data = make()
        model = data.model(sde, "eps")
        truths = [data.sample(n, torch.Generator().manual_seed(10_000 + s)) for s in range(seeds)]
        flows = [
            sd.sample(
                model, sde, (n, 2), "unipc", 400, generator=torch.Generator().manual_seed(s), grid="log-snr",
                t_min=1e-5, order=3,
            )
            for s in range(seeds)
        ]  # fmt: skip
        for nfe in nfes:
            for s in range(seeds):
                for (impl, label), used, x in contenders(sde, model, n, nfe, s, budgets):
                    a, b = _metrics(data, x, truths[s])
                    flow = (x.double() - flows[s].double()).pow(2).sum(1).mean().sqrt().item()
                    cell = rows.setdefault((impl, label, mix, nfe), {"nfe": used, "sw2": [], "mode": [], "flow": []})
                    cell["sw2"].append(a)
                    cell["mode"].append(b)
                    cell["flow"].append(flow)
    return rows


def _fmt(values) -> str:
    m, sd_ = _mean_sd(values)
    return "nan" if not math.isfinite(m) else f"{m:.4f} ± {sd_:.4f}"


def comparison_tables(rows, metrics) -> list[str]:
    """One table per (metric, title) × mixture: every sampler of ``rows`` (impl, label) against the target NFEs."""
    lines = []
    for metric, title in metrics:
        for mix in MIXTURES:
            lines += [
                f"### {title}, {mix}",
                "",
                "| impl | sampler | " + " | ".join(f"NFE {b}" for b in TARGET_NFES) + " |",
                "|" + "---|" * (len(TARGET_NFES) + 2),
            ]
            labels = list(dict.fromkeys((k[0], k[1]) for k in rows if k[2] == mix))
            for impl, label in labels:
                vals = [
                    _fmt(rows[(impl, label, mix, b)][metric]) if (impl, label, mix, b) in rows else "—"
                    for b in TARGET_NFES
                ]
                lines.append(f"| {impl} | {label} | " + " | ".join(vals) + " |")
            lines.append("")
    return lines


def _win(a, c) -> tuple[bool, bool]:
    """(unpaired, paired): ``a`` below ``c`` by more than the larger sd; by more than the paired differences' sd."""
    if not all(math.isfinite(v) for v in c):
        return True, True
    (ma, sa), (mc, sc) = _mean_sd(a), _mean_sd(c)
    md, sdd = _mean_sd([y - x for x, y in zip(a, c, strict=True)])
    return (mc - ma) > max(sa, sc), md > sdd


def targets_section(rows, nfes) -> list[str]:
    """The verdict table: our better default solver per cell vs diffusers' two defaults and their best setting."""
    lines = [
        "## Targets",
        "",
        "Ours = the better of our two solvers with default options (per cell). *Unpaired*: our mean lower by more "
        "than the larger seed-to-seed sd. *Paired* (same x_T, noise and ground truth per seed): the mean of the "
        "per-seed differences larger than their sd. Verdicts: vs diffusers' DPMSolverMultistep *and* UniPC "
        "defaults; vs their best setting of the cell (chosen after the fact).",
        "",
        "| mixture | NFE | metric | ours | DPMSolverMultistep defaults | UniPC defaults | diffusers best setting "
        "| vs defaults (unpaired / paired) | vs their best (unpaired / paired) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = {"unpaired": [], "paired": []}
    for mix in MIXTURES:
        for b in nfes:
            for metric in ("sw2", "mode"):
                mine = {k[1]: v[metric] for k, v in rows.items() if k[0] == "scoresde" and k[2:] == (mix, b)}
                theirs = {k[1]: v[metric] for k, v in rows.items() if k[0] == "diffusers" and k[2:] == (mix, b)}
                o_label = min(mine, key=lambda k: _mean_sd(mine[k])[0])
                o = mine[o_label]
                d_dpm, d_uni = theirs["DPMSolverMultistep (defaults)"], theirs["UniPCMultistep (defaults)"]
                finite = {k: v for k, v in theirs.items() if math.isfinite(_mean_sd(v)[0])}
                best_label = min(finite, key=lambda k: _mean_sd(finite[k])[0])
                w1, w2 = _win(o, d_dpm), _win(o, d_uni)
                w_def = (w1[0] and w2[0], w1[1] and w2[1])
                w_best = _win(o, finite[best_label])
                verdicts["unpaired"].append(w_def[0])
                verdicts["paired"].append(w_def[1])

                def yn(w):
                    return " / ".join("**win**" if v else "no" for v in w)

                lines.append(
                    f"| {mix} | {b} | {metric} | {_fmt(o)} ({o_label.split(' (')[0]}) | {_fmt(d_dpm)} | "
                    f"{_fmt(d_uni)} | {_fmt(finite[best_label])} ({best_label}) | {yn(w_def)} | {yn(w_best)} |"
                )
    verdicts = {k: f"{sum(v)} of {len(v)}" for k, v in verdicts.items()}
    lines += [
        "",
        f"Defaults target (beat both diffusers defaults) met in {verdicts['unpaired']} cells unpaired, "
        f"{verdicts['paired']} paired.",
        "",
    ]
    return lines


def defaults_report(args) -> None:
    import json

    import diffusers

    t0 = time.time()
    out = args.out.parent / "samplers_defaults.md"
    if args.reuse_study:  # the grid study of the last run (it takes most of the time)
        old = json.loads(out.with_suffix(".json").read_text())
        cells = {(c["solver"], c["grid"], c["mixture"], c["nfe_budget"]): c for c in old["grid_study"]}
    else:
        cells = grid_study(args.n, args.seeds)
    choice = choose_grids(cells)
    rows = defaults_comparison(args.n, args.seeds)
    ovh = overhead(10_000, 200, args.repeats)
    lines = [
        "# Default grids and defaults vs diffusers (python benchmarks/samplers.py --defaults)",
        "",
        f"Exact ε models of `gmm()` (6 modes) and `gmm_hard()` (9 tight modes, std 0.015–0.05) under `VPSDE()`; "
        f"n = {args.n} samples per run against {args.n} fresh ground-truth samples; {args.seeds} seeds (seed s "
        "changes x_T, the noise and the ground truth); cells are mean ± sd over seeds. NFE counts every model "
        "call, our final denoising step included (a cell's solver runs the most steps that fit the budget). "
        f"torch {torch.__version__}, diffusers {diffusers.__version__}, one thread; {time.time() - t0:.0f} s"
        + (" (the grid study reused from the previous run's JSON)." if args.reuse_study else "."),
        "",
        "## Grid study: SW2 / mode error per solver × grid × NFE",
        "",
    ]
    from scoresde.grids import TIME_GRIDS

    for mix in MIXTURES:
        lines += [f"### {mix}", "", "| solver | grid | " + " | ".join(f"NFE {b}" for b in STUDY_NFES) + " |"]
        lines.append("|" + "---|" * (len(STUDY_NFES) + 2))
        for solver in GRID_SOLVERS:
            for grid in TIME_GRIDS:
                vals = []
                for b in STUDY_NFES:
                    c = cells.get((solver, grid, mix, b))
                    if c is None:
                        vals.append("—")
                        continue
                    sw, mo = _mean_sd(c["sw2"])[0], _mean_sd(c["mode"])[0]
                    vals.append(f"{sw:.4f} / {mo:.4f}" + ("" if c["nfe"] == b else f" ({c['nfe']})"))
                mark = " **auto**" if choice[solver][0] == grid else ""
                lines.append(f"| {solver} | {grid}{mark} | " + " | ".join(vals) + " |")
        lines.append("")
    lines += [
        "## The grid `auto` picks",
        "",
        "Score: mean over mixture × NFE × metric of log(value / best grid's value), 0 = best everywhere.",
        "",
        "| solver | " + " | ".join(TIME_GRIDS) + " | auto |",
        "|" + "---|" * (len(TIME_GRIDS) + 2),
    ]
    for solver, (best, score) in choice.items():
        lines.append(
            f"| {solver} | " + " | ".join(f"{score.get(g, math.nan):.3f}" for g in TIME_GRIDS) + f" | {best} |"
        )
    lines += ["", "## Defaults vs diffusers' defaults (and their best other setting), equal NFE", ""]
    lines += comparison_tables(
        rows, (("sw2", "SW2"), ("mode", "mode error"), ("flow", "RMS distance to the exact flow map"))
    )
    lines += targets_section(rows, TARGET_NFES)
    lines += ["## Per-step overhead, trivial model x ↦ x, batch 10000 × 2, 200 steps", ""]
    lines += ["| loop | CPU µs / step | ratio to diffusers' own scheduler of the same method |", "|---|---|---|"]
    ref = {
        "scoresde dpm-solver++": "diffusers DPMSolverMultistep",
        "scoresde unipc": "diffusers UniPCMultistep",
        "scoresde ancestral": "diffusers DDPMScheduler",
        "scoresde ddim": "diffusers DDIMScheduler",
    }
    for label, sec in ovh.items():
        r = ovh.get(ref.get(label, ""))
        lines.append(f"| {label} | {sec * 1e6:.0f} | {f'{sec / r:.2f}×' if r else '—'} |")
    lines.append("")
    text = "\n".join(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    blob = {
        "n": args.n,
        "seeds": args.seeds,
        "grid_study": [
            {**v, "solver": k[0], "grid": k[1], "mixture": k[2], "nfe_budget": k[3]} for k, v in cells.items()
        ],
        "auto": {s: {"grid": g, "score": sc} for s, (g, sc) in choice.items()},
        "defaults": [
            {"impl": k[0], "sampler": k[1], "mixture": k[2], "nfe_budget": k[3], **v} for k, v in rows.items()
        ],
        "overhead_s_per_step": ovh,
    }
    out.with_suffix(".json").write_text(json.dumps(blob, indent=1))
    print(text)


# ------------------------------------------------------------------------------ precise defaults (--precise)


def precise_comparison(n: int, reference_factor: int, seeds: int, ours=("unipc", "dpm-solver++"), nfes=TARGET_NFES):
    """(rows, floors): ``defaults_comparison``'s cells at large n against a reference reference_factor × n.

    rows[(impl, label, mixture, nfe)] = {"nfe", "sw2", "mode": [per seed]}; floors[mixture] = the
    same metrics for a fresh exact sample of size n (what a perfect sampler scores).
    """
    sde, rows, floors = sd.VPSDE(), {}, {}
    budgets = our_budgets(sde, ours, nfes)
    for mix, make in MIXTURES.items():
        data = make()
        model = data.model(sde, "eps")
        cells: dict = {}
        floors[mix] = {"sw2": [], "mode": []}
        for s in range(seeds):
            reference = data.sample(reference_factor * n, torch.Generator().manual_seed(10_000 + s))
            sliced = SlicedReference(reference, n, generator=torch.Generator().manual_seed(0))  # sliced_w2's directions

            def judge(x, sliced=sliced):
                return sliced(x) if torch.isfinite(x).all() else math.nan

            exact = data.sample(n, torch.Generator().manual_seed(20_000 + s))
            floors[mix]["sw2"].append(judge(exact))
            floors[mix]["mode"].append(mode_error(data, exact))
            for nfe in nfes:
                for (impl, label), used, x in contenders(sde, model, n, nfe, s, budgets):
                    cell = cells.setdefault((impl, label, mix, nfe), {"nfe": used, "sw2": [], "mode": []})
                    cell["sw2"].append(judge(x))
                    cell["mode"].append(mode_error(data, x))
            print(f"{mix} seed {s} done", flush=True)
        rows.update(cells)
    return rows, floors


def precise_report(args) -> None:
    import json

    import diffusers

    t0 = time.time()
    rows, floors = precise_comparison(args.n, args.reference_factor, args.seeds)
    lines = [
        "# Defaults vs diffusers at large n (python benchmarks/samplers.py --precise)",
        "",
        f"The cells of `samplers_defaults.md`'s comparison with the Monte Carlo floor lowered: n = {args.n} samples "
        f"per run against a reference of {args.reference_factor * args.n} exact samples (256 fixed directions; "
        f"the reference's projections sorted once per seed); {args.seeds} seeds (seed s changes x_T, the noise and "
        "the reference); mean ± sd over seeds. Mode error is against the exact weights. Same exact ε models, "
        f"defaults and diffusers settings as `--defaults`. torch {torch.__version__}, diffusers "
        f"{diffusers.__version__}, one thread; {time.time() - t0:.0f} s.",
        "",
        "Floor (a fresh exact sample of size n scored the same way): "
        + "; ".join(f"{mix} SW2 {_fmt(f['sw2'])}, mode error {_fmt(f['mode'])}" for mix, f in floors.items())
        + ".",
        "",
    ]
    lines += comparison_tables(rows, (("sw2", "SW2 to the exact reference"), ("mode", "mode error")))
    lines += targets_section(rows, TARGET_NFES)
    text = "\n".join(lines)
    out = args.out.parent / "samplers_precise.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    blob = {
        "n": args.n,
        "reference": args.reference_factor * args.n,
        "seeds": args.seeds,
        "floors": floors,
        "rows": [{"impl": k[0], "sampler": k[1], "mixture": k[2], "nfe_budget": k[3], **v} for k, v in rows.items()],
    }
    out.with_suffix(".json").write_text(json.dumps(blob, indent=1))
    print(text)


# ------------------------------------------------------------------------------ report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="samples per run (and fresh ground-truth samples)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nfe", type=str, default=",".join(map(str, NFES)))
    parser.add_argument("--quick", action="store_true", help="one grid per solver, default spacing only")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the overhead loops")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "samplers.md")
    parser.add_argument("--defaults", action="store_true", help="grid study and defaults vs diffusers (see above)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per cell with --defaults")
    parser.add_argument("--reuse-study", action="store_true", help="--defaults: reuse the grid study in the JSON")
    parser.add_argument(
        "--precise", action="store_true", help="--defaults' comparison at n = 10⁵ against a 4× reference, 3 seeds"
    )
    parser.add_argument("--reference-factor", type=int, default=4, help="--precise: reference size / n")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.precise:
        if args.n == parser.get_default("n"):
            args.n = 100_000
        if args.seeds == parser.get_default("seeds"):
            args.seeds = 3
        precise_report(args)
        return
    if args.defaults:
        if args.n == parser.get_default("n"):
            args.n = 4000
        defaults_report(args)
        return
    nfes = tuple(int(v) for v in args.nfe.split(","))

    data, sde = gmm(), sd.VPSDE()
    model = data.model(sde, "eps")
    truth = data.sample(args.n, torch.Generator().manual_seed(10_000 + args.seed))
    floor = data.sample(args.n, torch.Generator().manual_seed(20_000 + args.seed))
    # Monte Carlo noise of the metrics: fresh ground truth against fresh ground truth, 5 pairs
    pairs = [
        (
            data.sample(args.n, torch.Generator().manual_seed(30_000 + k)),
            data.sample(args.n, torch.Generator().manual_seed(40_000 + k)),
        )
        for k in range(5)
    ]
    sw_noise = torch.tensor([sliced_w2(a, b) for a, b in pairs])
    mode_noise = torch.tensor([mode_error(data, a) for a, _ in pairs])
    rows = run_ours(data, sde, model, args.n, nfes, args.seed, args.quick)
    try:
        import diffusers

        rows += run_diffusers(sde, model, args.n, nfes, args.seed, args.quick)
        have_diffusers = f"diffusers {diffusers.__version__}"
    except ImportError:
        have_diffusers = None
    ovh = overhead(10_000, 200, args.repeats)

    lines = ["# Samplers benchmark (benchmarks/samplers.py)", ""]
    lines += [
        f"Problem: `scoresde.analytic.gmm()` (6 modes, std 0.04–0.15, weights 0.30–0.05) under `VPSDE()`; "
        f"exact ε model; n = {args.n} samples per run vs {args.n} fresh ground-truth samples; seed {args.seed}; "
        f"torch {torch.__version__}, one thread, CPU; {have_diffusers or 'diffusers not installed'}. "
        "Our runs use each solver's default t_min (0 for ancestral/ddim, 1e-3 otherwise) and the final "
        "denoising step, counted in NFE. Columns are the NFE budget; a cell shows the actual NFE when it differs.",
        "",
        f"Monte Carlo floor (ground truth vs ground truth): SW2 = {sliced_w2(floor, truth):.4f}, "
        f"mode error = {mode_error(data, floor):.4f}. Over 5 independent pairs: SW2 {sw_noise.mean():.4f} ± "
        f"{sw_noise.std():.4f}, mode error {mode_noise.mean():.4f} ± {mode_noise.std():.4f} (mean ± std): "
        "differences smaller than these are noise. Deterministic solvers (ddim, dpm-solver++, heun, ode, and "
        "diffusers' DDIM/DPMSolver/UniPC) all start from the same x_T, so their comparison is paired; as NFE grows "
        "they converge to the same exact flow map, whose values (the ode rtol=1e-05 row) are the limit for "
        "every deterministic sampler on this x_T.",
        "",
    ]
    budget = list(nfes)
    header = "| impl | solver | grid | " + " | ".join(f"NFE {b}" for b in budget) + " | s/step @1000 |"
    sep = "|" + "---|" * (len(budget) + 4)
    metrics = {}
    for title, fn in (
        ("SW2 to fresh ground truth (lower is better)", lambda x: sliced_w2(x, truth)),
        ("Mode-weight error, total variation (lower is better)", lambda x: mode_error(data, x)),
    ):
        lines += [f"## {title}", "", header, sep]
        for impl, solver, grid, cells in rows:
            if grid == "adaptive":
                continue
            vals = []
            for b in budget:
                if b not in cells:
                    vals.append("—")
                    continue
                used, x, _ = cells[b]
                v = fn(x) if torch.isfinite(x).all() else float("nan")
                metrics[(impl, solver, grid, b, title[:3])] = v
                vals.append(f"{v:.4f}" + ("" if used == b else f" ({used})"))
            sps = cells.get(1000, (None, None, None))[2]
            lines.append(
                f"| {impl} | {solver} | {grid} | " + " | ".join(vals) + f" | {sps * 1e3:.2f} ms |"
                if sps
                else f"| {impl} | {solver} | {grid} | " + " | ".join(vals) + " | — |"
            )
        lines.append("")
    lines += [
        "## Adaptive probability-flow ODE (scipy solve_ivp)",
        "",
        "| solver | NFE | SW2 | mode error |",
        "|---|---|---|---|",
    ]
    for _impl, solver, grid, cells in rows:
        if grid == "adaptive":
            for used, x, _ in cells.values():
                lines.append(f"| {solver} | {used} | {sliced_w2(x, truth):.4f} | {mode_error(data, x):.4f} |")
    lines.append("")

    # targets
    def best(impl, b, key):
        cands = [(v, s, g) for (i, s, g, bb, k), v in metrics.items() if i == impl and bb == b and k == key]
        return min(cands) if cands else None

    lines += ["## Targets", ""]
    for b in (10, 20):
        for key, name in (("SW2", "SW2"), ("Mod", "mode error")):
            ours_best, theirs_best = best("scoresde", b, key), best("diffusers", b, key)
            if ours_best and theirs_best:
                verdict = "met" if ours_best[0] < theirs_best[0] else "NOT met"
                lines.append(
                    f"- NFE {b}, {name}: ours best {ours_best[0]:.4f} ({ours_best[1]}, {ours_best[2]}) vs "
                    f"diffusers best {theirs_best[0]:.4f} ({theirs_best[1]}, {theirs_best[2]}): **{verdict}**"
                )
    anc = [metrics.get(("scoresde", "ancestral", "uniform", 1000, k)) for k in ("SW2", "Mod")]
    ddpm = [
        min(
            v
            for (i, s, _, b, kk), v in metrics.items()
            if i == "diffusers" and s == "DDPMScheduler" and b == 1000 and kk == k
        )
        for k in ("SW2", "Mod")
        if any(i == "diffusers" and b == 1000 for (i, _, _, b, _) in metrics)
    ]
    if None not in anc and len(ddpm) == 2:
        lines.append(
            f"- NFE 1000: our ancestral (uniform) SW2 {anc[0]:.4f}, mode error {anc[1]:.4f} vs diffusers DDPM "
            f"SW2 {ddpm[0]:.4f}, mode error {ddpm[1]:.4f} (MC floor {sliced_w2(floor, truth):.4f})"
        )
    lines += ["", "## Per-step overhead, trivial model x ↦ x, batch 10000 × 2, 200 steps", ""]
    lines += ["| loop | CPU µs / step | ratio to diffusers DDPMScheduler |", "|---|---|---|"]
    ref = ovh.get("diffusers DDPMScheduler")
    for label, sec in ovh.items():
        ratio = f"{sec / ref:.2f}×" if ref else "—"
        lines.append(f"| {label} | {sec * 1e6:.0f} | {ratio} |")
    lines.append("")
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
