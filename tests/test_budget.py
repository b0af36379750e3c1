"""Time budgets (``--minutes``, ``--clock``: scoresde.budget) and per-dataset defaults
(scoresde.data_defaults): the exact stop step under a fake clock, resume sums, ranks agreeing, and
the precedence field defaults < data defaults < TOML < flags with the run-length rule."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from scoresde import checkpoint as ckpt
from scoresde.budget import CLOCKS, TimeBudget, run_length_text
from scoresde.cli import app
from scoresde.config import check, from_dict
from scoresde.data_defaults import DATA_DEFAULTS, resolve, run_length, with_data_defaults
from scoresde.run_folder import prepare_run, read_metrics
from scoresde.trainer import Trainer, train

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def points(**overrides) -> dict:
    """A tiny 2-D run: 500 moons points, a small MLP, no pictures, one checkpoint at the end."""
    base = {
        "data": {"name": "moons", "n": 500},
        "model": {"width": 16, "depth": 1},
        "batch_size": 16,
        "log_every": 2,
        "checkpoint_every": 0,
        "sample_every": 0,
    }
    return {**base, **overrides}


def ticking(seconds: float = 1.0):
    """A fake clock: 0, 1, 2, … seconds, one tick per call."""
    counter = itertools.count()
    return lambda: seconds * next(counter)


def checkpoint_meta(run: Path, step: int) -> dict:
    return json.loads(ckpt.checkpoint_path(run, step).read_text())


def test_a_fake_clock_stops_at_the_step_the_budget_is_used_and_records_it(tmp_path):
    # the clock is read at start (0 s) and once after each step (1 s, 2 s, …): 0.1 min = 6 s ends step 6
    config = from_dict(points(steps=None, minutes=0.1))
    dm = train(config, tmp_path / "run", progress=False, clock=ticking())
    run = dm.provenance
    assert run.step == 6 and not run.interrupted
    assert "time budget 0.1 min used" in run.description
    assert [r["step"] for r in run.metrics] == [2, 4, 6]
    assert [r["train_s"] for r in run.metrics] == [2.0, 4.0, 6.0]
    assert run.metrics[-1]["stopped"] == "time budget" and "stopped" not in run.metrics[0]
    assert read_metrics(tmp_path / "run")[-1]["stopped"] == "time budget"
    meta = checkpoint_meta(tmp_path / "run", 6)
    assert meta["train_seconds"] == 6.0 and meta["stopped"] == "time budget"
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "step_00000006.json",
        "step_00000006.safetensors",
    ]
    # a budget only decides where training ends: the weights are those of a 6-step run
    same = train(from_dict(points(steps=6)), None, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(dm.model.parameters(), same.model.parameters(), strict=True))


def test_with_steps_and_minutes_whichever_comes_first_ends_the_run(tmp_path):
    by_steps = train(from_dict(points(steps=4, minutes=0.1)), tmp_path / "a", progress=False, clock=ticking())
    assert by_steps.provenance.step == 4 and "stopped" not in by_steps.provenance.metrics[-1]
    assert checkpoint_meta(tmp_path / "a", 4)["train_seconds"] == 4.0
    by_time = train(from_dict(points(steps=40, minutes=0.05)), None, progress=False, clock=ticking())
    assert by_time.provenance.step == 3 and by_time.provenance.metrics[-1]["stopped"] == "time budget"


def test_resume_continues_the_count_and_a_larger_budget_trains_on(tmp_path):
    run_dir = tmp_path / "run"
    train(from_dict(points(steps=None, minutes=0.1)), run_dir, progress=False, clock=ticking())
    # the same budget again: already used, nothing is trained and no checkpoint is added
    messages: list[str] = []
    again = train(
        from_dict(points(steps=None, minutes=0.1)),
        run_dir,
        resume=True,
        progress=False,
        clock=ticking(),
        log=messages.append,
    )
    assert again.provenance.step == 6 and again.provenance.metrics == ()
    assert any("is used: nothing to train" in m for m in messages)
    # 9 s in all: 6 s before, 3 more ticks now
    more = train(from_dict(points(steps=None, minutes=0.15)), run_dir, resume=True, progress=False, clock=ticking())
    assert more.provenance.step == 9 and more.provenance.metrics[-1]["train_s"] == 9.0
    assert checkpoint_meta(run_dir, 9)["train_seconds"] == 9.0
    assert [r["train_s"] for r in read_metrics(run_dir)] == [2.0, 4.0, 6.0, 8.0, 9.0]


def test_an_old_checkpoint_without_seconds_counts_zero(tmp_path):
    run_dir = tmp_path / "run"
    train(from_dict(points(steps=4)), run_dir, progress=False, clock=ticking())
    path = ckpt.checkpoint_path(run_dir, 4)
    meta = json.loads(path.read_text())
    del meta["train_seconds"]  # as written before time budgets (the JSON's hash covers the weights only)
    path.write_text(json.dumps(meta))
    dm = train(from_dict(points(steps=None, minutes=0.05)), run_dir, resume=True, progress=False, clock=ticking())
    assert dm.provenance.step == 7 and checkpoint_meta(run_dir, 7)["train_seconds"] == 3.0


def test_a_run_needs_steps_or_minutes():
    config = from_dict({"steps": None})
    with pytest.raises(ValueError, match="set --steps N or --minutes M"):
        check(config)
    with pytest.raises(ValueError, match="--steps N or --minutes M"):
        Trainer(from_dict(points(steps=None)), None, progress=False)
    with pytest.raises(ValueError, match="minutes must be a positive number"):
        check(from_dict({"minutes": 0}))
    with pytest.raises(ValueError, match="unknown clock 'sundial'"):
        check(from_dict({"clock": "sundial"}))


def test_time_budget_counts_on_top_of_earlier_segments():
    budget = TimeBudget(0.05, ticking(0.5), earlier=2.0)
    assert not budget.used
    budget.start()
    assert [budget.tick() for _ in range(2)] == [2.5, 3.0] and budget.used
    assert not TimeBudget(None, ticking()).used
    assert set(CLOCKS) == {"wall", "cpu"}
    assert run_length_text(from_dict({"steps": 500, "minutes": 2, "clock": "cpu"})) == (
        "500 steps or 2 min (cpu clock), whichever comes first"
    )
    assert run_length_text(from_dict({})) == "1200 steps"


def test_the_progress_bar_shows_time_when_there_is_a_budget():
    from scoresde.reporting import ProgressReporter

    budget = TimeBudget(1.0, ticking(), earlier=30.0)
    bar = ProgressReporter(None, 7, budget)
    try:
        bar.advance(45.0)
        task = bar.bar.tasks[0]
        assert task.total == 60.0 and task.completed == 45.0
        assert task.fields["clock"] == "0:45/1:00" and task.fields["step"] == "8"
    finally:
        bar.close()


# --------------------------------------------------------------------------- the data's defaults


def test_data_defaults_come_between_field_defaults_and_the_users_settings():
    digits = resolve({})
    assert digits.data.name == "digits" and digits.model.channels == 16
    assert digits.minutes == DATA_DEFAULTS["digits"]["minutes"] and digits.steps is None
    mnist = resolve({"data": {"name": "mnist"}, "model": {"dropout": 0.1}})
    assert mnist.model.channel_mult == (1, 2, 2) and mnist.model.attention_resolutions == (7,)
    assert mnist.model.dropout == 0.1  # the user's setting wins
    assert digits.loss.lognormal_p_mean == mnist.loss.lognormal_p_mean == -0.6
    assert digits.loss.time_sampler == "lognormal"
    user = resolve({"loss": {"lognormal_p_mean": -1.2}})  # a loss field of the user's beside the data's
    assert user.loss.lognormal_p_mean == -1.2 and user.model.channels == 16
    # a named UNet size is whole: the data's UNet shape is dropped
    small = resolve({"data": {"name": "mnist"}, "model": {"size": "small"}})
    assert small.model.channels is None and small.model.channel_mult is None
    # a folder or an array file has no entry: the field defaults
    folder = resolve({"data": {"name": "some/folder"}})
    assert folder.steps == 1200 and folder.minutes is None and folder.model.channels is None
    for name in DATA_DEFAULTS:  # every entry is a valid config
        check(resolve({"data": {"name": name}}))


def test_setting_steps_or_minutes_replaces_the_datas_run_length_whole():
    assert resolve({"steps": 500}).steps == 500 and resolve({"steps": 500}).minutes is None
    assert resolve({"minutes": 1}).minutes == 1 and resolve({"minutes": 1}).steps is None
    both = resolve({"steps": 500, "minutes": 2})
    assert (both.steps, both.minutes) == (500, 2)
    assert resolve({"steps": 500}).model.channels == 16  # the rest of the data's defaults stays
    assert run_length({"seed": 1}) == {"seed": 1}
    assert with_data_defaults({"data": {"name": "moons"}, "minutes": 0.5})["steps"] is None


def test_cli_precedence_data_defaults_then_toml_then_flags(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text("steps = 2\nbatch_size = 8\nsample_every = 0\n[model]\nchannels = 12\nchannel_mult = [1, 2]\n")
    result = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "a"), "--config", str(toml), "--quiet"])
    assert result.exit_code == 0, result.output + result.stderr
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["model"]["channels"] == 12 and saved["steps"] == 2 and saved["minutes"] is None  # TOML > data
    flags = ["--config", str(toml), "--channels", "8", "--quiet"]
    result = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "b"), *flags])
    assert result.exit_code == 0, result.output + result.stderr
    assert json.loads((tmp_path / "b" / "config.json").read_text())["model"]["channels"] == 8  # flags > TOML
    # resuming keeps the run's own config; a run length given replaces the saved one whole
    resumed = prepare_run(tmp_path / "b", {"minutes": 5.0}, resume=True)
    resumed.lock.release()
    assert resumed.config.model.channels == 8 and resumed.config.steps is None and resumed.config.minutes == 5.0


def test_cli_minutes_on_the_wall_clock_stops_by_itself(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["train", "--data", "moons", "--n-points", "500", "--minutes", "0.02", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output + result.stderr
    assert result.output.splitlines()[0].endswith("(1 rank(s)): 0.02 min (wall clock)")
    assert "(time budget 0.02 min used)" in result.output.splitlines()[-1]
    config = json.loads((out / "config.json").read_text())
    assert config["steps"] is None and config["minutes"] == 0.02 and config["clock"] == "wall"
    record = read_metrics(out)[-1]
    assert record["stopped"] == "time budget" and record["train_s"] >= 1.2
    step = record["step"]
    assert step > 0 and checkpoint_meta(out, step)["train_seconds"] >= 1.2


DDP_DRIVER = textwrap.dedent(
    """
    import itertools, json, os, sys
    from scoresde.config import from_dict
    from scoresde.trainer import Trainer

    # rank 0's clock ticks 1 s per read; rank 1's never moves: only rank 0's can end the run
    rank = int(os.environ["RANK"])
    ticks = itertools.count()
    clock = (lambda: float(next(ticks))) if rank == 0 else (lambda: 0.0)
    trainer = Trainer(from_dict(json.loads(sys.argv[1])), sys.argv[2], progress=False, clock=clock)
    dm = trainer.run()
    with open(os.path.join(sys.argv[2], f"rank{rank}.json"), "w") as f:
        json.dump({"step": trainer.step}, f)
    trainer.close()
    # Leave without interpreter finalization: torch 2.13's gloo can abort ("terminate called without
    # an active exception", SIGABRT) while tearing down after a successful run, a few runs in a hundred,
    # even after destroy_process_group (pytorch/pytorch#190489, #179291); the run is done and written.
    sys.stdout.flush(); sys.stderr.flush(); os._exit(0)
    """
)


def test_torchrun_ranks_stop_at_the_step_rank_0_decides(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    driver = tmp_path / "driver.py"
    driver.write_text(DDP_DRIVER)
    config = points(steps=None, minutes=0.05)
    command = [torchrun, "--nproc_per_node", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", "localhost:0"]
    done = subprocess.run(
        [*command, str(driver), json.dumps(config), str(tmp_path / "run")], env=ENV, capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    steps = [json.loads((tmp_path / "run" / f"rank{r}.json").read_text())["step"] for r in (0, 1)]
    assert steps == [3, 3]
    assert checkpoint_meta(tmp_path / "run", 3)["train_seconds"] == 3.0
