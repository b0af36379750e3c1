"""compare-losses over seeds: n per setting, mean ± sd against numpy, the importance settings, the
computed reading on constructed numbers, the recipes and the CLI's seeds and importance flags."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from scoresde.cli import app
from scoresde.loss_study import _settings, read_metric, recipe_config, summarize
from scoresde.loss_study_report import markdown

pytest.importorskip("scoresde.samplers")


def tiny(**overrides):
    base = recipe_config("seed", net="mlp", width=32, lr=1e-3, batch_size=64)
    return dataclasses.replace(
        base,
        data=dataclasses.replace(base.data, name="moons", n=600),
        model=dataclasses.replace(base.model, depth=1),
        loss=dataclasses.replace(base.loss, N=50),
        optim=dataclasses.replace(base.optim, warmup=0),
        device="cpu",
        **overrides,
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from scoresde.loss_study import compare_losses

    out = tmp_path_factory.mktemp("study")
    compare_losses(
        "moons",
        weightings=("simple", "likelihood"),
        times=("continuous",),
        budget=15,
        out=out,
        seed=5,
        seeds=3,
        batch_size=None,
        solvers=("ancestral",),
        sample_steps=5,
        num_samples=60,
        nll_num=8,
        vlb_steps=20,
        ode_tol=1e-3,
        importance="both",
        config=tiny(),
        log=None,
    )
    return out, json.loads((out / "results.json").read_text())


def test_every_setting_runs_for_every_seed_seed_major(study):
    _, data = study
    names = ["simple-continuous", "likelihood-continuous", "likelihood-continuous-is"]
    assert data["settings"]["settings"] == names and data["settings"]["seeds"] == [5, 6, 7]
    assert [(r["seed"], r["setting"]) for r in data["rows"]] == [(k, n) for k in (5, 6, 7) for n in names]
    assert [r["importance"] for r in data["rows"][:3]] == [False, False, True]
    assert [e["n"] for e in data["summary"]] == [3, 3, 3]
    assert any("importance sampling of simple" in note for note in data["skipped"])


def test_mean_and_sd_over_seeds_match_numpy_on_the_per_seed_values(study):
    _, data = study
    for entry in data["summary"]:
        rows = [r for r in data["rows"] if r["setting"] == entry["setting"]]
        ode = [r["nll"]["ode"]["nats_per_dim"] for r in rows]
        sw2 = [r["quality"]["ancestral"]["sw2"] for r in rows]
        for key, values in (("nll_ode", ode), ("ancestral_sw2", sw2)):
            m = entry["metrics"][key]
            assert m["values"] == values and m["seeds"] == [5, 6, 7] and m["n"] == 3
            assert m["mean"] == pytest.approx(np.mean(values), rel=1e-12)
            assert m["sd"] == pytest.approx(np.std(values, ddof=1), rel=1e-12)
        assert len(set(ode)) == 3  # the seeds are different trainings, not copies
    assert "nll_vlb" in data["summary"][0]["metrics"] and data["settings"]["ode_tol"] == 1e-3


def test_the_report_gives_n_mean_sd_and_a_reading_per_metric(study):
    out, data = study
    md = (out / "results.md").read_text()
    e = data["summary"][0]["metrics"]["nll_ode"]
    assert "| simple-continuous | 3 |" in md and f"{e['mean']:.4g} ± {e['sd']:.2g}" in md
    reading = md.split("## Reading (computed)")[1]
    for label in ("NLL ODE (nats/dim)", "NLL VLB (nats/dim)", "ancestral SW2", "ancestral MMD"):
        assert f"- {label}: best " in reading
    assert "Models done: 9 of 9." in md


def test_importance_lists_the_right_settings():
    names = lambda *a: [s.name for s in _settings(*a)[0]]  # noqa: E731
    w, t = ("simple", "elbo", "likelihood"), ("discrete", "continuous")
    assert names(w, t, "off") == [
        "simple-discrete", "simple-continuous", "elbo-discrete", "likelihood-discrete", "likelihood-continuous"
    ]  # fmt: skip
    assert names(w, t, "on") == names(w, t, "off")
    assert all(s.importance for s in _settings(w, t, "on")[0])
    assert names(w, t, "both") == [
        "simple-discrete", "simple-continuous", "elbo-discrete", "elbo-discrete-is",
        "likelihood-discrete", "likelihood-discrete-is", "likelihood-continuous", "likelihood-continuous-is",
    ]  # fmt: skip
    assert [s.importance for s in _settings(w, t, "both")[0]] == [False, False, False, True, False, True, False, True]
    with pytest.raises(ValueError, match="importance must be one of: off, on, both; got 'maybe'"):
        _settings(w, t, "maybe")


def test_the_reading_picks_the_best_and_flags_noise():
    clear = read_metric({"a": (1.0, 0.1, 3), "b": (2.0, 0.2, 3), "c": (3.0, 0.1, 3)})
    assert clear["best"] == "a" and clear["runner_up"] == "b" and clear["verdict"] == "exceeds 2 sd"
    assert clear["gap"] == pytest.approx(1.0) and clear["threshold"] == pytest.approx(0.4)  # the larger sd
    close = read_metric({"a": (1.0, 0.3, 3), "b": (0.5, 0.3, 3)})
    assert close["best"] == "b" and close["runner_up"] == "a" and close["verdict"] == "within noise"
    edge = read_metric({"a": (1.0, 0.25, 3), "b": (1.5, 0.1, 3)})  # gap 0.5 = 2 sd: not more than 2 sd
    assert edge["verdict"] == "within noise"
    assert read_metric({"a": (1.0, float("nan"), 1), "b": (9.0, 0.1, 3)})["verdict"] == "spread unknown"
    assert read_metric({"a": (1.0, 0.1, 3)})["runner_up"] is None
    assert read_metric({"a": (1.0, 0.1, 3), "b": (2.0, 0.1, 3)}, lower_is_better=False)["best"] == "b"


def fake_row(setting, seed, ode, fd):
    return {
        "setting": setting, "seed": seed, "levels": 17, "kind": "images", "final_loss": 0.1,
        "nll": {"ode": {"bits_per_dim": ode, "nats_per_dim": ode * math.log(2)}},
        "quality": {"ancestral": {"fd": fd, "kid": 0.0}}, "loss_by_t": [0.5, 0.1],
    }  # fmt: skip


def test_the_report_reading_on_constructed_rows():
    from types import SimpleNamespace

    rows = [fake_row("x", k, ode, fd) for k, (ode, fd) in enumerate([(3.0, 5.0), (3.1, 5.2), (2.9, 4.8)])]
    rows += [fake_row("y", k, ode, fd) for k, (ode, fd) in enumerate([(2.0, 5.1), (2.1, 5.3), (1.9, 4.9)])]
    summary = summarize(rows)
    assert [e["setting"] for e in summary] == ["x", "y"]
    settings = {"data": "d", "budget_steps": 1, "batch_size": 1, "seeds": [0, 1, 2], "settings": ["x", "y"],
                "importance": "off", "nll_num": 1, "vlb_steps": 2, "num_samples": 2, "sample_steps": 1}  # fmt: skip
    md = markdown(SimpleNamespace(rows=rows, settings=settings, summary=summary, skipped=[]))
    assert "- NLL ODE (bits/dim): best y (2 ± 0.1), runner-up x (3 ± 0.1); gap 1 vs 2 sd = 0.2: exceeds 2 sd." in md
    assert "- ancestral FD: best x (5 ± 0.2), runner-up y (5.1 ± 0.2); gap 0.1 vs 2 sd = 0.4: within noise." in md
    assert "Models done: 6 of 6." in md and "| x | 3 |" in md


def test_recipes():
    from scoresde.config import TrainConfig

    default = TrainConfig()
    train = recipe_config("train", precondition="none")
    assert train.model == dataclasses.replace(default.model, precondition="none")
    assert train.optim == default.optim and train.batch_size == default.batch_size
    assert recipe_config("train").model.precondition == default.model.precondition
    mnist = recipe_config("train", data="mnist", precondition="none")  # the data's defaults, as `scoresde train`
    assert (mnist.model.channels, mnist.model.channel_mult, mnist.model.precondition) == (16, (1, 2, 2), "none")
    assert recipe_config("seed", data="mnist").model == recipe_config("seed").model  # the seed study's own setup
    seed = recipe_config("seed")
    assert (seed.model.precondition, seed.model.width, seed.batch_size, seed.optim.lr) == ("none", 256, 128, 1e-3)
    assert recipe_config("seed", width=64, batch_size=8).model.width == 64
    with pytest.raises(ValueError, match="unknown recipe 'nope'; choose one of: seed, train"):
        recipe_config("nope")


def test_cli_seeds_and_importance(tmp_path):
    args = "compare-losses --data moons --weightings simple,likelihood --time continuous --budget 3 --net mlp "
    args += "--width 16 --batch-size 16 --seed 2 --seeds 2 --importance on --solver ancestral --sample-steps 3 "
    args += "--num 20 --nll-num 4 --vlb-steps 4 --ode-tol 1e-2"
    result = CliRunner().invoke(app, [*args.split(), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["settings"]["seeds"] == [2, 3] and data["settings"]["importance"] == "on"
    assert [r["setting"] for r in data["rows"]] == ["simple-continuous", "likelihood-continuous"] * 2
    assert all(r["importance"] for r in data["rows"]) and data["settings"]["batch_size"] == 16
    assert data["settings"]["config"]["model"]["precondition"] == "none"  # the seed recipe


def test_merge_joins_studies_run_apart_into_the_study_run_at_once(tmp_path):
    """Seeds and settings run in separate studies, then --merge: the same rows and table as one run."""
    args = "compare-losses --data moons --time continuous --budget 3 --net mlp --width 16 --batch-size 16 "
    args += "--importance off --solver ancestral --sample-steps 3 --num 20 --nll-num 4 --vlb-steps 4 --ode-tol 1e-2"
    runner = CliRunner()

    def run(out, *extra):
        result = runner.invoke(app, [*args.split(), *extra, "--out", str(tmp_path / out)])
        assert result.exit_code == 0, result.output
        return result

    run("whole", "--weightings", "simple,likelihood", "--seed", "2", "--seeds", "2")
    run("a", "--weightings", "simple,likelihood", "--seed", "3")
    run("b", "--weightings", "likelihood", "--seed", "2")
    run("c", "--weightings", "simple", "--seed", "2")
    merged = runner.invoke(app, ["compare-losses", "--merge", ",".join(str(tmp_path / f) for f in "abc"),
                                 "--out", str(tmp_path / "merged")])  # fmt: skip
    assert merged.exit_code == 0, merged.output
    whole, joined = (json.loads((tmp_path / f / "results.json").read_text()) for f in ("whole", "merged"))
    assert joined["settings"]["seeds"] == [2, 3] and joined["settings"]["settings"] == whole["settings"]["settings"]
    assert [(r["setting"], r["seed"]) for r in joined["rows"]] == [(r["setting"], r["seed"]) for r in whole["rows"]]
    assert joined["summary"] == whole["summary"]
    assert "Models done: 4 of 4." in (tmp_path / "merged" / "results.md").read_text()

    def refused(folders, message):
        result = runner.invoke(app, ["compare-losses", "--merge", ",".join(str(tmp_path / f) for f in folders),
                                     "--out", str(tmp_path / "bad")])  # fmt: skip
        assert result.exit_code == 2 and message in result.output, result.output

    refused(["a", "whole"], "simple-continuous, seed 3 appears twice")
    run("other", "--weightings", "simple", "--seed", "4", "--budget", "4")
    refused(["a", "other"], "differ in 'budget_steps'")
    refused(["a", "nowhere"], "results.json not found: not a compare-losses output folder")
    refused(["a"], "at least two study folders")
    record = json.loads((tmp_path / "c" / "results.json").read_text())
    record["rows"][0]["classifier"] = {"dataset": "moons", "test_accuracy": 0.5}  # another judge's features
    (tmp_path / "c" / "results.json").write_text(json.dumps(record))
    refused(["a", "b", "c"], "measured FD/KID with different classifiers")
