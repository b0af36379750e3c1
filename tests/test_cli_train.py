"""``scoresde train`` from the command line: tiny runs, TOML configs, resume, and bad inputs that
must end in one clear error line, a non-zero exit and an untouched run folder."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from scoresde import checkpoint as ckpt
from scoresde.cli import app

TINY = ["--channels", "8", "--channel-mult", "1,2", "--batch-size", "8", "--sample-every", "0", "--quiet"]


def run(*args: str):
    return CliRunner().invoke(app, ["train", *args])


def snapshot(folder: Path) -> dict[str, str]:
    """Every file's SHA-256 but the lock file's (a refused command may take the lock of an existing folder)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file() and p.name != ".lock"
    }


def assert_one_line_error(result, pattern: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert pattern in lines[0], lines[0]
    assert "Traceback" not in result.output + result.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    result = run("--out", str(out), "--steps", "4", "--checkpoint-every", "2", "--log-every", "2", *TINY)
    assert result.exit_code == 0, result.output + result.stderr
    return out


def test_tiny_run_writes_a_complete_run_folder(trained):
    names = {p.name for p in trained.iterdir()}
    assert {"config.json", "metrics.jsonl", "reference.safetensors", "checkpoints"} <= names
    config = json.loads((trained / "config.json").read_text())
    assert config["model"]["channels"] == 8 and config["steps"] == 4 and config["model"]["channel_mult"] == [1, 2]
    assert len((trained / "metrics.jsonl").read_text().splitlines()) == 2


def test_resume_extends_the_run_and_toml_config_is_read(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    result = run("--out", str(copy), "--resume", "--steps", "6", "--quiet")
    assert result.exit_code == 0, result.output + result.stderr
    assert (copy / "checkpoints" / "step_00000006.json").is_file()

    toml = tmp_path / "run.toml"
    toml.write_text('steps = 2\nbatch_size = 4\n[data]\nname = "moons"\nn = 100\n[loss]\nweighting = "min-snr"\n')
    result = run(
        "--config", str(toml), "--out", str(tmp_path / "toml"), "--width", "16", "--quiet", "--sample-every", "0"
    )
    assert result.exit_code == 0, result.output + result.stderr
    saved = json.loads((tmp_path / "toml" / "config.json").read_text())
    assert (
        saved["loss"]["weighting"] == "min-snr" and saved["data"]["name"] == "moons" and saved["model"]["width"] == 16
    )


def test_bad_inputs_fail_with_one_line_and_leave_no_run_folder(tmp_path):
    out = tmp_path / "never"
    assert_one_line_error(
        run("--out", str(out), "--weighting", "nope", *TINY), "unknown weighting 'nope'; choose one of"
    )
    assert_one_line_error(
        run("--out", str(out), "--data", "folder", "--data-path", str(tmp_path / "x")), "does not exist"
    )
    assert_one_line_error(run("--out", str(out), "--data", str(tmp_path / "missing.npz")), "does not exist")
    assert_one_line_error(run("--out", str(out), "--sde", "ou"), "unknown SDE 'ou'")
    assert_one_line_error(run("--out", str(out), "--channel-mult", "1,x"), "--channel-mult")
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[loss]\nweigting = 'simple'\n")
    assert_one_line_error(run("--out", str(out), "--config", str(bad_toml)), "unknown config key 'loss.weigting'")

    image = pytest.importorskip("PIL.Image")
    folder = tmp_path / "mixed"
    folder.mkdir()
    image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "a.png")
    image.fromarray(np.zeros((16, 12), np.uint8)).save(folder / "b.png")
    assert_one_line_error(run("--out", str(out), "--data", str(folder), *TINY), "different sizes")
    assert not out.exists()


def test_resume_falls_back_past_a_corrupt_newest_checkpoint_and_refuses_when_none_is_valid(trained, tmp_path):
    def flip_a_byte(weights: Path) -> None:
        blob = bytearray(weights.read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        weights.write_bytes(bytes(blob))

    corrupt = tmp_path / "corrupt"
    shutil.copytree(trained, corrupt)
    newest, older = sorted((corrupt / "checkpoints").glob("*.json"))[::-1]
    flip_a_byte(newest.with_suffix(".safetensors"))
    result = run("--out", str(corrupt), "--resume", "--steps", "5", "--quiet")
    assert result.exit_code == 0, result.stderr
    warning = result.stderr.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("warning: ") and "Traceback" not in result.stderr
    assert newest.with_suffix(".safetensors").name in warning[0] and str(older) in warning[0]
    # resumed from step 2: the step-4 checkpoint is the resumed run's own again, and step 5 follows
    assert [ckpt.read_checkpoint(p)[0]["step"] for p in ckpt.checkpoint_files(corrupt)] == [2, 4, 5]

    for meta in ckpt.checkpoint_files(corrupt):
        flip_a_byte(meta.with_suffix(".safetensors"))
    before = snapshot(corrupt)
    assert_one_line_error(run("--out", str(corrupt), "--resume", "--steps", "8"), "has no valid checkpoint; tried:")
    assert snapshot(corrupt) == before

    mismatched = tmp_path / "mismatched"
    shutil.copytree(trained, mismatched)
    meta_path = sorted((mismatched / "checkpoints").glob("*.json"))[-1]
    meta = json.loads(meta_path.read_text())
    meta["config"]["model"]["channels"] = 16
    meta_path.write_text(json.dumps(meta))
    before = snapshot(mismatched)
    assert_one_line_error(run("--out", str(mismatched), "--resume", "--steps", "8"), "does not match")
    assert snapshot(mismatched) == before

    before = snapshot(trained)
    assert_one_line_error(
        run("--out", str(trained), "--resume", "--weighting", "score"), "cannot change loss.weighting"
    )
    assert_one_line_error(run("--out", str(trained), *TINY), "already holds checkpoints")
    assert_one_line_error(run("--out", str(tmp_path / "fresh"), "--resume"), "nothing to resume")
    assert snapshot(trained) == before


def test_ctrl_c_saves_a_checkpoint_and_the_run_resumes(tmp_path):
    exe = shutil.which("scoresde") or str(Path(sys.executable).parent / "scoresde")
    out = tmp_path / "run"
    args = ["--out", str(out), "--data", "moons", "--width", "16", "--steps", "100000", "--log-every", "5"]
    proc = subprocess.Popen([exe, "train", *args, "--sample-every", "0", "--quiet"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / "metrics.jsonl").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        stderr = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted at step" in stderr and "--resume" in stderr and "Traceback" not in stderr
    step = json.loads(sorted((out / "checkpoints").glob("*.json"))[-1].read_text())["step"]
    assert 5 <= step < 100000
    result = run("--out", str(out), "--resume", "--steps", str(step + 2), "--quiet")
    assert result.exit_code == 0, result.stderr
    assert (out / "checkpoints" / f"step_{step + 2:08d}.json").is_file()


def test_train_then_sample_round_trip(tmp_path, monkeypatch):
    """`scoresde train` writes runs/NAME; `scoresde sample` (no --run) finds and samples it."""
    monkeypatch.chdir(tmp_path)
    result = run("--data", "moons", "--width", "16", "--steps", "3", "--out", "runs/tiny", "--quiet")
    assert result.exit_code == 0, result.stderr
    for target in ("points.npz", "points.png"):
        sampled = CliRunner().invoke(
            app, ["sample", "--solver", "ancestral", "--steps", "10", "--num", "32", "--out", target]
        )
        assert sampled.exit_code == 0, sampled.output + sampled.stderr
    x = np.load(tmp_path / "points.npz")["samples"]
    assert x.shape == (32, 2) and np.isfinite(x).all()
    assert (tmp_path / "points.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    images = run("--out", "runs/img", "--steps", "2", *TINY)
    assert images.exit_code == 0, images.stderr
    sampled = CliRunner().invoke(
        app, ["sample", "--run", "runs/img", "--steps", "5", "--num", "4", "--out", "grid.png"]
    )
    assert sampled.exit_code == 0, sampled.output + sampled.stderr
    assert "solver sde-dpm-solver++, 5 steps" in sampled.output  # --solver auto with a trained network


def test_every_config_field_has_a_flag_whose_help_is_its_metadata():
    import typer.main

    from scoresde import config as cfg

    command = typer.main.get_command(app).commands["train"]
    options = {decl: p for p in command.params for decl in p.opts}
    infos = cfg.fields()
    assert len({f.flag for f in infos}) == len(infos)  # no two fields share a flag
    for info in infos:
        assert info.flag in options, info.path
        assert options[info.flag].help == info.help, info.path
        assert "{choices}" not in info.help
    # the flags the README and the tests name keep their names
    for flag in ("--weighting", "--time", "--importance", "--prediction", "--data", "--resize", "--unet-size"):
        assert flag in options
    for flag in ("--resume", "--threads", "--config", "--out", "--steps", "--batch-size", "--net", "--quiet"):
        assert flag in options
    # choices shown in the help come from the registries
    from scoresde.losses import WEIGHTINGS

    assert options["--weighting"].help.endswith(", ".join(WEIGHTINGS) + ".")


def test_resume_accepts_exactly_the_resumable_fields():
    import dataclasses

    from scoresde import config as cfg
    from scoresde.run_folder import refuse_changes

    saved = cfg.to_dict(cfg.TrainConfig())
    changed = {str: "other", int: 12345, float: 0.123, bool: None}
    for info in cfg.fields():
        if "tuple" in str(info.type):
            value = [3, 4]
        else:
            kind = next(t for t in changed if t in (info.type, *getattr(info.type, "__args__", ())))
            value = (not info.default) if kind is bool else changed[kind]
        override: dict = {}
        cfg.replace_path(override, info.path, value)
        if info.resumable:
            refuse_changes(saved, override)
        else:
            with pytest.raises(ValueError, match=rf"^cannot change {info.path} when resuming"):
                refuse_changes(saved, override)
    assert {f.path for f in cfg.fields() if f.resumable} >= {"steps", "threads", "sample_every"}
    assert not dataclasses.fields(cfg.TrainConfig)[0].metadata  # sections carry no flag of their own


def test_resume_refuses_a_new_flag_with_one_line(trained):
    before = snapshot(trained)
    assert_one_line_error(run("--out", str(trained), "--resume", "--beta1", "0.5"), "cannot change optim.beta1")
    assert_one_line_error(run("--out", str(trained), "--resume", "--no-ema-warmup"), "cannot change optim.ema_warmup")
    assert snapshot(trained) == before
