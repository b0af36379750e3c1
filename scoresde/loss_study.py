"""The compare-losses study: loss weightings × time sampling on equal terms, over seeds.

The seed's claim: λ(t) = 1 (DDPM's L_simple) gives better samples, the ELBO weighting better
likelihood. :func:`compare_losses` trains one model per setting (weighting, time sampling, with or
without importance sampling of t) and seed with the same budget, network and data, and measures each
by :func:`scoresde.evaluation.evaluate` with the same held-out points and random numbers within a
seed: NLL by the probability-flow ODE and by the discrete VLB, sample quality per solver, the
unweighted denoising error per t-bin. The report (``results.md``, rewritten after every model, so a
stopped study leaves a partial table; ``results.json`` with the per-seed values; plots by
:func:`scoresde.plots.loss_study_plots` when matplotlib is installed) gives mean ± sd over seeds with
n per setting and ends with a computed reading per metric (:func:`read_metric`).

In a notebook::

    from scoresde.loss_study import compare_losses, recipe_config
    result = compare_losses("digits", budget=600, seeds=3, importance="both",
                            config=recipe_config("train", precondition="none"), out="compare/digits")
    print(result.markdown)

Studies run apart (seeds on separate cores or machines, or a seed's settings split between them) are
joined by :func:`merge_studies`; give each the same classifier folder (``OUT/classifier``) first, so
that every FD is measured in the same features.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .imageio import atomic_write_bytes
from .loss_study_report import markdown, read_metric, summarize

__all__ = ["IMPORTANCE", "RECIPES", "CompareResult", "Setting", "compare_losses", "read_metric", "recipe_config"]
__all__ += ["merge_studies", "summarize", "weighting_curves"]

IMPORTANCE = ("off", "on", "both")
"""``off``: t uniform; ``on``: t drawn ∝ w(t) in every setting; ``both``: each non-uniform weighting twice."""

RECIPES = {
    "seed": "the seed study's: ε-network (precondition none), MLP width 256 for points, batch 128, lr 1e-3",
    "train": "`scoresde train`'s network (UNet for images, the data's defaults), EMA, optimiser, warm-up and batch; "
    "precondition edm",
}


def recipe_config(
    recipe: str = "seed",
    *,
    data: str | None = None,
    net: str | None = None,
    width: int | None = None,
    precondition: str | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
):
    """The base :class:`~scoresde.config.TrainConfig` of a study: a recipe (:data:`RECIPES`), then the overrides.

    ``train`` is what plain ``scoresde train --data DATA`` starts from: ``TrainConfig()`` with the
    data's defaults (:mod:`scoresde.data_defaults`, e.g. MNIST's narrow 3-level UNet), so it follows
    the defaults as they change; the run length is the study's budget. ``seed`` is the setup of the
    seed's study. An argument left ``None`` keeps the recipe's value.
    """
    from .config import TrainConfig
    from .data_defaults import resolve

    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of: {', '.join(RECIPES)}")
    base = resolve({"data": {"name": data}}) if recipe == "train" and data is not None else TrainConfig()
    if recipe == "seed":
        base = dataclasses.replace(
            base,
            model=dataclasses.replace(base.model, width=256, precondition="none"),
            optim=dataclasses.replace(base.optim, lr=1e-3),
            batch_size=128,
        )
    model = {k: v for k, v in (("net", net), ("width", width), ("precondition", precondition)) if v is not None}
    return dataclasses.replace(
        base,
        model=dataclasses.replace(base.model, **model),
        optim=dataclasses.replace(base.optim, lr=base.optim.lr if lr is None else lr),
        batch_size=base.batch_size if batch_size is None else batch_size,
    )


@dataclass(frozen=True)
class Setting:
    """One trained objective: a weighting, a time sampler and whether t is importance-sampled ∝ w(t)."""

    weighting: str
    time: str
    importance: bool = False
    tag_importance: bool = False  # name it "-is" (only where the same weighting also runs without)

    @property
    def name(self) -> str:
        return f"{self.weighting}-{self.time}" + ("-is" if self.tag_importance else "")


@dataclass
class CompareResult:
    """What :func:`compare_losses` measured: ``rows`` one dict per (seed, setting), ``summary`` one per setting."""

    out: Path
    rows: list[dict[str, Any]]
    settings: dict[str, Any]
    skipped: list[str] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)

    @property
    def markdown(self) -> str:
        return (self.out / "results.md").read_text()


def _settings(
    weightings: Sequence[str], times: Sequence[str], importance: str = "off", uniform: Sequence[str] = ("simple",)
) -> tuple[list[Setting], list[str]]:
    """The settings to train, in order, and the notes on those skipped. ``uniform``: weightings with
    constant w(t), for which importance sampling is a no-op (listed once under ``both``)."""
    from .losses import TIME_SAMPLERS, WEIGHTINGS

    for w in weightings:
        WEIGHTINGS.get(w)
    for t in times:
        TIME_SAMPLERS.get(t)
    if importance not in IMPORTANCE:
        raise ValueError(f"importance must be one of: {', '.join(IMPORTANCE)}; got {importance!r}")
    keep, skipped = [], []
    for w in weightings:
        for t in times:
            if w == "elbo" and t != "discrete":
                skipped.append(f"elbo × {t}: the discrete ELBO weighting is defined on the chain only")
            elif importance == "both" and w not in uniform:
                keep += [Setting(w, t, False), Setting(w, t, True, tag_importance=True)]
            else:
                keep.append(Setting(w, t, importance == "on"))
    if importance == "both" and any(w in uniform for w in weightings):
        skipped.append(
            "importance sampling of " + ", ".join(w for w in weightings if w in uniform) + ": w(t) is constant, "
            "so it is a no-op; listed once"
        )
    if not keep:
        raise ValueError("no valid (weighting, time) setting to compare; 'elbo' needs time 'discrete'")
    return keep, skipped


def compare_losses(
    data: str = "digits",
    *,
    weightings: Sequence[str] = ("simple", "elbo", "likelihood"),
    times: Sequence[str] = ("discrete", "continuous"),
    budget: int = 2000,
    out: str | Path = "compare",
    seed: int = 0,
    seeds: int = 1,
    batch_size: int | None = 128,
    solvers: Sequence[str] = ("ancestral", "ode"),
    sample_steps: int = 100,
    num_samples: int = 500,
    nll_num: int = 200,
    vlb_steps: int | None = None,
    ode_tol: float | None = None,
    importance: bool | str = False,
    config=None,
    progress: bool = False,
    log: Callable[[str], None] | None = print,
) -> CompareResult:
    """Train one model per setting and seed with equal ``budget`` (training steps); evaluate; report over seeds.

    Args:
        data: a dataset name from ``DATASETS`` or a path.
        weightings, times: the settings; ``elbo`` with continuous time is skipped (noted).
        budget: training steps per model (same batch size, learning rate and network for all).
        out: output folder for the results, the plots and the dataset classifier (images); the
            models are trained and evaluated in memory, no run folder is written.
        seed, seeds: every setting is trained for seeds ``seed … seed + seeds − 1``; a seed sets the
            initial weights, the data order, the train/held-out split and the evaluation's random
            numbers (shared by every setting of that seed). The report gives mean ± sd over seeds.
        batch_size: training batch size; ``None`` keeps the config's.
        solvers, sample_steps, num_samples: sample quality per solver at this many steps.
        nll_num: held-out samples for the likelihoods; vlb_steps: VLB chain length (default N).
        ode_tol: rtol = atol of the ODE likelihood (default: the estimator's, 1e-5); looser is cheaper.
        importance: ``"off"`` / ``False``: t uniform; ``"on"`` / ``True``: t drawn with density ∝ w(t)
            in every setting (unbiased; reduces the variance of the ELBO/likelihood weightings, Song et
            al. 2021b); ``"both"``: each weighting with non-constant w(t) with and without (``-is``).
        config: a base :class:`~scoresde.config.TrainConfig` (network, preconditioning, lr, …) to start
            from, e.g. :func:`recipe_config`; default ``TrainConfig()``, whose model is EDM-preconditioned.
    """
    from .build import build_sde, validate
    from .config import DataConfig, LossConfig, TrainConfig
    from .evaluation import evaluate, likelihood
    from .plots import loss_study_plots
    from .samplers import SOLVERS
    from .trainer import train

    log = log or (lambda msg: None)
    importance = {False: "off", True: "on"}.get(importance, importance) if isinstance(importance, bool) else importance
    _settings(weightings, times, importance)  # names checked before anything else
    for s in solvers:
        SOLVERS.get(s)
    for name, value, least in (("budget", budget, 1), ("seeds", seeds, 1), ("sample_steps", sample_steps, 1),
                               ("num_samples", num_samples, 2), ("nll_num", nll_num, 1)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    if vlb_steps is not None and vlb_steps < 2:
        raise ValueError(f"vlb_steps must be >= 2 (the VLB chain length) or None for the training N, got {vlb_steps}")
    if ode_tol is not None and not 0 < ode_tol < 1:
        raise ValueError(f"ode_tol must lie in (0, 1) or be None for the estimator's default, got {ode_tol}")
    out = Path(out)
    base = config or TrainConfig()
    base = dataclasses.replace(
        base,
        data=dataclasses.replace(base.data, name=data) if not Path(data).exists() else DataConfig(name=data),
        steps=budget,
        minutes=None,  # an equal step budget: no time limit that would cut a slow setting short
        batch_size=batch_size or base.batch_size,
        seed=seed,
        sample_every=0,
        checkpoint_every=0,
        keep=1,
    )
    sde = build_sde(base)
    curves = weighting_curves(sde, list(dict.fromkeys(weightings)), (base.loss or LossConfig()).N)
    uniform = [w for w, (_, c) in curves.items() if torch.allclose(c, torch.ones_like(c))]
    settings, skipped = _settings(weightings, times, importance, uniform)
    configs = {}
    for s in settings:  # every setting checked before the first one trains
        loss = dataclasses.replace(
            base.loss or LossConfig(), weighting=s.weighting, time=s.time, importance=s.importance
        )
        configs[s] = dataclasses.replace(base, loss=loss)
        validate(configs[s])
    settings_record = {
        "data": data,
        "budget_steps": budget,
        "batch_size": base.batch_size,
        "seed": seed,
        "seeds": list(range(seed, seed + seeds)),
        "settings": [s.name for s in settings],
        "solvers": list(solvers),
        "sample_steps": sample_steps,
        "num_samples": num_samples,
        "nll_num": nll_num,
        "vlb_steps": vlb_steps or base.loss.N,
        "ode_tol": ode_tol,
        "importance": importance,
        "config": _jsonable(dataclasses.asdict(base)),
    }
    result = CompareResult(out, [], settings_record, skipped)
    out.mkdir(parents=True, exist_ok=True)
    for k in range(seed, seed + seeds):  # seed-major: a stopped study has whole seeds of every setting
        for s in settings:
            name, cfg = s.name, dataclasses.replace(configs[s], seed=k)
            tag = f"[{name}, seed {k}]"
            log(f"{tag} training {budget} steps")
            dm = train(cfg, None, progress=progress)
            log(f"{tag} evaluating")
            row = evaluate(
                dm,
                solvers=solvers,
                sample_steps=sample_steps,
                num_samples=num_samples,
                nll_num=nll_num,
                methods=("ode", "vlb") if ode_tol is None else ("vlb",),
                vlb_steps=vlb_steps,
                classifier_dir=out / "classifier",
                seed=k,
                log=lambda msg, tag=tag: log(f"{tag} {msg}"),
                autoguidance=1.0,  # the weightings' own models, not steered by their early selves
            )
            if ode_tol is not None:
                row["nll"] = {"ode": likelihood(dm, "ode", nll_num, seed=k, rtol=ode_tol, atol=ode_tol), **row["nll"]}
            metrics = dm.provenance.metrics
            row.update({"setting": name, "seed": k, "weighting": s.weighting, "time": s.time})
            row.update({"importance": s.importance, "final_loss": dm.provenance.loss})
            row["train_loss_by_t"] = metrics[-1]["loss_by_t"] if metrics else None
            result.rows.append(row)
            _write(result)
        result.plots = loss_study_plots(result, curves, sde.T, log)
    return result


MERGE_FREE = ("seed", "seeds", "settings")
"""The settings-record keys in which studies being merged may differ (everything else must agree)."""


def merge_studies(folders: Sequence[str | Path], out: str | Path, log: Callable[[str], None] | None = print):
    """One study from studies run apart: the rows of each folder's ``results.json`` in one report in ``out``.

    The studies must agree on everything but their seeds and settings (data, budget, recipe, evaluation;
    :data:`MERGE_FREE`) and must have measured FD/KID with the same classifier; a (setting, seed) may
    appear once. The settings keep their first order of appearance. Writes ``results.json``,
    ``results.md`` and the plots in ``out`` like :func:`compare_losses`; returns the
    :class:`CompareResult`.
    """
    from .build import build_sde
    from .config import LossConfig, from_dict
    from .plots import loss_study_plots

    log = log or (lambda msg: None)
    if len(folders) < 2:
        raise ValueError(f"merging needs at least two study folders, got {len(folders)}")
    records = []
    for folder in map(Path, folders):
        path = folder / "results.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: not a compare-losses output folder")
        records.append((folder, json.loads(path.read_text())))

    def fixed(record):  # what must agree; the config's seed is the study's first seed
        out = {k: v for k, v in record["settings"].items() if k not in MERGE_FREE}
        return {**out, "config": {k: v for k, v in out.get("config", {}).items() if k != "seed"}}

    first_folder, first = records[0]
    want = fixed(first)
    rows, seen = [], set()
    for folder, record in records:
        have = fixed(record)
        for key, value in want.items():
            if have.get(key) != value:
                raise ValueError(f"cannot merge {folder} with {first_folder}: they differ in {key!r}")
        for row in record["rows"]:
            if (row["setting"], row["seed"]) in seen:
                raise ValueError(f"{row['setting']}, seed {row['seed']} appears twice (again in {folder})")
            seen.add((row["setting"], row["seed"]))
            rows.append(row)
    judges = {json.dumps(r.get("classifier"), sort_keys=True) for r in rows}
    if len(judges) > 1:
        raise ValueError(
            "the studies measured FD/KID with different classifiers; copy one OUT/classifier folder into "
            "every study's output folder before running them"
        )
    names = list(dict.fromkeys(n for _, r in records for n in r["settings"]["settings"]))
    seeds = sorted({k for _, r in records for k in r["settings"]["seeds"]})
    config = {**first["settings"]["config"], "seed": seeds[0]}
    settings = {**first["settings"], "seed": seeds[0], "seeds": seeds, "settings": names, "config": config}
    skipped = list(dict.fromkeys(n for _, r in records for n in r["skipped"]))
    rows.sort(key=lambda r: (r["seed"], names.index(r["setting"])))
    result = CompareResult(Path(out), rows, settings, skipped)
    result.out.mkdir(parents=True, exist_ok=True)
    _write(result)
    config = from_dict(config)
    sde = build_sde(config)
    weightings = list(dict.fromkeys(r["weighting"] for r in rows))
    curves = weighting_curves(sde, weightings, (config.loss or LossConfig()).N)
    result.plots = loss_study_plots(result, curves, sde.T, log)
    return result


def _write(result: CompareResult) -> None:
    """results.json and results.md from the rows so far (rewritten after every model)."""
    result.summary = summarize(result.rows, result.settings["settings"])
    record = {"settings": result.settings, "skipped": result.skipped, "summary": result.summary, "rows": result.rows}
    atomic_write_bytes(result.out / "results.json", json.dumps(record, indent=2).encode())
    atomic_write_bytes(result.out / "results.md", markdown(result).encode())


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def weighting_curves(sde, names: Sequence[str], N: int) -> dict[str, tuple[Tensor, Tensor]]:
    """w(t) of each weighting on a grid of t, normalized to mean 1 over the grid (discrete: N·w_i at t_i)."""
    from .losses import TimeDraw, make_weighting

    chain = sde.discretize(N)
    i = torch.arange(1, N + 1)
    t = chain.times[i]
    alpha, sigma = sde.marginal(t)
    draw = TimeDraw(t=t, alpha=alpha, sigma=sigma, importance=torch.ones_like(t), index=i, chain=chain)
    curves = {}
    for name in names:
        w = make_weighting(name)(sde, draw).double()
        curves[name] = (t, w / w.mean())
    return curves
