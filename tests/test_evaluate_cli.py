"""``scoresde likelihood / evaluate / compare-losses``: round trips on tiny runs and clear errors."""

import dataclasses
import json

import pytest
from typer.testing import CliRunner

from scoresde.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def tiny_config(**loss):
    from scoresde.config import DataConfig, OptimConfig, TrainConfig

    base = TrainConfig()
    return dataclasses.replace(
        base,
        data=DataConfig(name="moons", n=600),
        model=dataclasses.replace(base.model, net="mlp", width=32, depth=1),
        loss=dataclasses.replace(base.loss, N=50, **loss),
        optim=dataclasses.replace(OptimConfig(), lr=1e-3, warmup=0),
        steps=20,
        batch_size=64,
        sample_every=0,
        checkpoint_every=0,
        device="cpu",
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from scoresde.trainer import train

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    train(tiny_config(), run_dir, progress=False)
    return run_dir


def test_likelihood_unknown_method_is_refused(tiny_run):
    result = invoke("likelihood", "--run", tiny_run, "--method", "exact")
    assert result.exit_code == 2
    assert "unknown likelihood method 'exact'; choose one of: ode, vlb" in result.output


def test_likelihood_run_without_checkpoint_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    result = invoke("likelihood", "--run", tmp_path / "empty")
    assert result.exit_code == 2 and "has no checkpoint" in result.output
    result = invoke("evaluate", "--run", tmp_path / "missing")
    assert result.exit_code == 2 and "does not exist" in result.output
    assert "Traceback" not in result.output


def test_likelihood_both_methods_round_trip(tiny_run, tmp_path):
    out = tmp_path / "nll.json"
    result = invoke("likelihood", "--run", tiny_run, "--method", "vlb", "--num", 20, "--json", out)
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert (
        record["method"] == "vlb"
        and record["nfe"] == 50
        and set(record["terms_nats_per_dim"])
        == {
            "prior",
            "diffusion",
            "decoder",
        }
    )
    result = invoke("likelihood", "--run", tiny_run, "--method", "vlb", "--num", 20, "--grid", "log-snr")
    assert result.exit_code == 0, result.output
    bad = invoke("likelihood", "--run", tiny_run, "--method", "vlb", "--grid", "cubic")
    assert bad.exit_code == 2 and "unknown time grid 'cubic'" in bad.output
    result = invoke("likelihood", "--run", tiny_run, "--num", 10, "--rtol", 1e-3, "--atol", 1e-3)
    assert result.exit_code == 0, result.output
    assert "nats/dim" in result.output and "NFE" in result.output


def test_evaluate_writes_metrics(tiny_run):
    pytest.importorskip("scoresde.samplers")
    bad = invoke("evaluate", "--run", tiny_run, "--solver", "rk4")
    assert bad.exit_code == 2 and "unknown solver 'rk4'" in bad.output
    result = invoke(
        "evaluate",
        "--run",
        tiny_run,
        "--solver",
        "ancestral",
        "--steps",
        10,
        "--num",
        100,
        "--method",
        "vlb",
        "--nll-num",
        10,
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tiny_run / "eval_ancestral_10.json").read_text())
    assert {"sw2", "mmd", "nfe"} <= set(record["quality"]["ancestral"]) and "vlb" in record["nll"]
    assert len(record["loss_by_t"]) == 10
    vlb = record["nll"]["vlb"]
    assert sum(vlb["by_t_bin_nats_per_dim"]) == pytest.approx(
        vlb["terms_nats_per_dim"]["diffusion"] + vlb["terms_nats_per_dim"]["decoder"], rel=1e-9, abs=1e-12
    )


def test_compare_losses_bad_names_are_refused(tmp_path):
    result = invoke("compare-losses", "--data", "moons", "--weightings", "simple,lambda1", "--out", tmp_path)
    assert result.exit_code == 2 and "unknown weighting 'lambda1'" in result.output
    result = invoke("compare-losses", "--weightings", "elbo", "--time", "continuous", "--out", tmp_path)
    assert result.exit_code == 2 and "'elbo' needs time 'discrete'" in result.output


def test_compare_losses_python_api(tmp_path):
    pytest.importorskip("scoresde.samplers")
    from scoresde.loss_study import compare_losses

    compare_losses(
        "moons",
        weightings=("simple", "elbo"),
        times=("discrete", "continuous"),
        budget=20,
        out=tmp_path,
        batch_size=64,
        solvers=("ancestral",),
        sample_steps=5,
        num_samples=100,
        nll_num=10,
        vlb_steps=20,
        config=tiny_config(),
        log=None,
    )
    data = json.loads((tmp_path / "results.json").read_text())
    assert [r["setting"] for r in data["rows"]] == ["simple-discrete", "simple-continuous", "elbo-discrete"]
    assert data["skipped"] and "elbo × continuous" in data["skipped"][0]
    assert data["settings"]["budget_steps"] == 20
    md = (tmp_path / "results.md").read_text()
    assert "| simple-discrete |" in md and "NLL ODE (nats/dim)" in md
    for row in data["rows"]:
        assert row["nll"]["ode"]["nfe"] > 0 and row["quality"]["ancestral"]["sw2"] > 0
