"""Loggers of ``scoresde train --logger``: jsonl always, TensorBoard event files that hold the same
numbers as metrics.jsonl, wandb in offline mode, and one clear line for a missing package."""

from __future__ import annotations

import importlib
import json
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scoresde import reporting
from scoresde.cli import app
from scoresde.config import from_dict
from scoresde.trainer import train

TINY = {
    "data": {"name": "digits"},
    "model": {"channels": 8, "channel_mult": [1, 2]},
    "steps": 4,
    "batch_size": 8,
    "log_every": 2,
    "checkpoint_every": 0,
    "sample_every": 2,
    "sample_num": 4,
    "sample_steps": 2,
}


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def read_events(folder: Path) -> list:
    """Every Event in the TFRecord files of ``folder`` (length, crc, data, crc per record), parsed with
    tensorboardX's own protobuf definition."""
    from tensorboardX.proto.event_pb2 import Event

    events = []
    for file in sorted(folder.glob("events.out.tfevents.*")):
        data, i = file.read_bytes(), 0
        while i < len(data):
            (length,) = struct.unpack("<Q", data[i : i + 8])
            events.append(Event.FromString(data[i + 12 : i + 12 + length]))
            i += 12 + length + 4
    return events


def test_jsonl_is_always_on_whatever_loggers_are_named(tmp_path):
    result = train(from_dict({**TINY, "loggers": []}), tmp_path / "run", progress=False)
    assert records(tmp_path / "run") == list(result.provenance.metrics) and [
        r["step"] for r in result.provenance.metrics
    ] == [2, 4]
    assert sorted(p.name for p in (tmp_path / "run" / "samples").iterdir()) == [
        "step_00000002.png",
        "step_00000004.png",
    ]
    assert from_dict({"loggers": ["jsonl", "tensorboard"]}).loggers == ("jsonl", "tensorboard")


def test_tensorboard_events_hold_the_jsonl_numbers_and_the_preview_grids(tmp_path):
    pytest.importorskip("tensorboardX")
    run = tmp_path / "run"
    train(from_dict({**TINY, "loggers": ["tensorboard"]}), run, progress=False)
    scalars: dict[str, dict[int, float]] = {}
    images = {}
    for event in read_events(run / "tensorboard"):
        for value in event.summary.value:
            if value.HasField("image"):
                images[event.step] = (value.image.height, value.image.width)
            elif value.HasField("simple_value"):
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    expected = records(run)
    for record in expected:
        step = record["step"]
        assert scalars["loss"][step] == pytest.approx(record["loss"], rel=1e-6)  # stored as float32
        assert scalars["lr"][step] == pytest.approx(record["lr"], rel=1e-6)
        assert scalars["steps_per_s"][step] == pytest.approx(record["steps_per_s"], rel=1e-6)
        bins = [v for v in record["loss_by_t"] if v is not None]
        got = [
            scalars[tag][step]
            for tag in sorted(t for t in scalars if t.startswith("loss_by_t/"))
            if step in scalars[tag]
        ]
        assert sorted(got) == pytest.approx(sorted(bins), rel=1e-6)
    first = sorted(t for t in scalars if t.startswith("loss_by_t/"))
    assert first and set(first) <= {f"loss_by_t/{k / 10:.2g}-{(k + 1) / 10:.2g}" for k in range(10)}
    pngs = sorted((run / "samples").iterdir())
    assert sorted(images) == [2, 4] and len(pngs) == 2
    from PIL import Image

    with Image.open(pngs[0]) as im:
        assert images[2] == (im.height, im.width)


def test_wandb_offline_run_is_written_in_the_run_folder_and_resumed_under_the_same_id(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    train(from_dict({**TINY, "loggers": ["wandb"]}), run, progress=False)
    run_id = (run / "wandb-id.txt").read_text().strip()
    offline = sorted((run / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline) == 1, list((run / "wandb").iterdir())
    train(from_dict({**TINY, "loggers": ["wandb"], "steps": 6}), run, resume=True, progress=False)
    assert (run / "wandb-id.txt").read_text().strip() == run_id
    assert len(sorted((run / "wandb").glob(f"offline-run-*-{run_id}"))) == 2


def test_missing_logger_package_and_unknown_logger_are_one_line_before_any_file(tmp_path, monkeypatch):
    real = importlib.import_module

    def without_tensorboardx(name, *args, **kwargs):
        if name == "tensorboardX":
            raise ImportError("No module named 'tensorboardX'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(reporting.importlib, "import_module", without_tensorboardx)
    for flags, message in (
        (["--logger", "jsonl,tensorboard"], 'install it with: pip install -c constraints.txt -e ".[log]"'),
        (["--logger", "jsonl", "--logger", "tensorboard"], "the tensorboard logger needs the optional package"),
        (["--logger", "bogus"], "unknown logger 'bogus'; choose one of: jsonl, tensorboard, wandb"),
    ):
        out = tmp_path / "run"
        result = CliRunner().invoke(app, ["train", "--out", str(out), "--steps", "2", "--quiet", *flags])
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
        assert not out.exists()


def test_scalars_name_every_non_empty_t_bin_by_its_edges():
    record = {"step": 3, "loss": 1.0, "loss_by_t": [0.5, None, 2.0], "t_bins": [0, 0.25, 0.5, 1.0], "lr": 0.1}
    record["steps_per_s"] = None
    assert reporting._scalars(record) == {"loss": 1.0, "loss_by_t/0-0.25": 0.5, "loss_by_t/0.5-1": 2.0, "lr": 0.1}


def test_sample_progress_bar_keeps_the_samples_and_the_callers_callback():
    import torch

    import scoresde as sd
    from scoresde.sde import make_sde

    sde = make_sde("vp")

    def model(x, t):  # the exact ε-prediction for N(0, I) data: x_t ~ N(0, I) under VP, so ε̂ = σ(t) x
        return sde.marginal(t)[1][:, None] * x

    states: dict[bool, list[float]] = {True: [], False: []}
    out = {}
    for progress in (False, True):
        g = torch.Generator().manual_seed(0)
        out[progress] = sd.sample(
            model, sde, (16, 2), "euler-maruyama", steps=7, generator=g, progress=progress,
            callback=lambda s, p=progress: states[p].append(s["progress"]),
        )  # fmt: skip
    assert torch.equal(out[False], out[True])
    assert states[True] == states[False] and len(states[True]) == 7 and states[True][-1] == pytest.approx(1.0)
    with reporting.progress_bar(False, print) as callback:
        assert callback is print
