"""Streaming data: the batches read lazily by DataLoader workers equal the in-memory batches bitwise
(image folders and memory-mapped arrays, across epoch boundaries), training on them equals training
in memory, resume is bitwise exact, horizontal flips are a pure function of (seed, step), and bad
files end in one clear line."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from scoresde.batches import batch_indices, hflip, hflip_mask
from scoresde.cli import app
from scoresde.config import from_dict
from scoresde.streaming import STREAM_ABOVE, StreamingBatches, load_training_data
from scoresde.trainer import Trainer, train

Image = pytest.importorskip("PIL.Image")


def png_folder(folder: Path, n: int, mode: str = "RGB", classes: int = 0) -> Path:
    rng = np.random.default_rng(0)
    shape = (8, 8, 3) if mode == "RGB" else (8, 8)
    for i in range(n):
        sub = folder / f"class{i % classes}" if classes else folder
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(sub / f"{i:03d}.png")
    return folder


def tiny(path: Path, **extra) -> dict:
    base = {
        "data": {"name": str(path), "stream": "on", "workers": 0},
        "model": {"channels": 8, "channel_mult": [1, 2], "dropout": 0.1},
        "steps": 6,
        "batch_size": 8,
        "log_every": 2,
        "checkpoint_every": 0,
        "sample_every": 0,
    }
    return {**base, **extra, "data": {**base["data"], **extra.get("data", {})}}


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_folder_batches_equal_the_in_memory_batches_across_epochs(tmp_path, workers):
    folder = png_folder(tmp_path / "png", 37, classes=3)  # 37 − 4 held out = 33: batch 8 crosses epochs
    memory = load_training_data(str(folder), stream="off", seed=5)
    streamed = load_training_data(str(folder), stream="on", seed=5)
    assert isinstance(memory.train, torch.Tensor) and not isinstance(streamed.train, torch.Tensor)
    assert torch.equal(memory.heldout, streamed.heldout) and streamed.data_shape == memory.data_shape == (3, 8, 8)
    assert torch.equal(memory.train_labels, streamed.train.labels.y) and streamed.class_names == memory.class_names
    batches = StreamingBatches(streamed.train, 8, 5, workers=workers)
    try:
        steps = [*range(10), 3, 4, 12]  # in order, then a restart (as after a resume) and a jump
        for step in steps:
            expected = memory.train[batch_indices(step, len(memory.train), 8, 5)]
            assert torch.equal(batches(step), expected), step
    finally:
        batches.close()
    assert (10 * 8) // len(memory.train) >= 2  # the steps above covered two epoch boundaries


@pytest.mark.parametrize(
    "make",
    [
        lambda r: r.integers(0, 256, (30, 6, 6, 3), dtype=np.uint8),  # channels last, uint8
        lambda r: r.random((30, 1, 5, 5)).astype(np.float32),  # floats in [0, 1]
        lambda r: (2 * r.random((30, 4, 4)) - 1).astype(np.float64),  # (n, H, W) in [−1, 1]
        lambda r: r.standard_normal((30, 3)),  # vectors
    ],
)
def test_memory_mapped_rows_equal_the_in_memory_array(tmp_path, make):
    file = tmp_path / "x.npy"
    np.save(file, make(np.random.default_rng(1)))
    memory = load_training_data(str(file), stream="off", seed=2, heldout=0.2)
    streamed = load_training_data(str(file), stream="on", seed=2, heldout=0.2)
    assert memory.kind == streamed.kind and torch.equal(memory.heldout, streamed.heldout)
    batches = StreamingBatches(streamed.train, 7, 2, workers=0)
    for step in range(8):
        assert torch.equal(batches(step), memory.train[batch_indices(step, len(memory.train), 7, 2)]), step


def test_auto_streams_only_above_the_size_limit(tmp_path, monkeypatch):
    folder = png_folder(tmp_path / "png", 10)
    assert isinstance(load_training_data(str(folder), stream="auto").train, torch.Tensor)
    decoded = 10 * 3 * 8 * 8 * 4
    monkeypatch.setattr("scoresde.streaming.STREAM_ABOVE", decoded - 1)
    assert not isinstance(load_training_data(str(folder), stream="auto").train, torch.Tensor)
    assert STREAM_ABOVE == 2**30


def test_training_on_streamed_data_equals_training_in_memory_and_resumes_bitwise(tmp_path):
    folder = png_folder(tmp_path / "png", 21, mode="L")  # 19 training images: epochs end mid-batch
    flip = {"hflip": True}
    full = train(from_dict(tiny(folder, data=flip)), tmp_path / "full", progress=False)
    memory = train(from_dict(tiny(folder, data={**flip, "stream": "off"})), None, progress=False)
    assert [r["loss"] for r in full.provenance.metrics] == [r["loss"] for r in memory.provenance.metrics]
    for a, b in zip(full.model.state_dict().values(), memory.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    part = tmp_path / "part"
    train(from_dict(tiny(folder, steps=3, data={**flip, "workers": 2})), part, progress=False)
    train(from_dict(tiny(folder, data={**flip, "workers": 2})), part, resume=True, progress=False)
    a = load_file(tmp_path / "full" / "checkpoints" / "step_00000006.safetensors")
    b = load_file(part / "checkpoints" / "step_00000006.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_hflip_is_a_pure_function_of_seed_and_step_and_mirrors_the_chosen_rows():
    masks = torch.stack([hflip_mask(step, 64, seed=7) for step in range(50)])
    assert torch.equal(masks, torch.stack([hflip_mask(step, 64, seed=7) for step in range(50)]))
    assert not torch.equal(masks[0], hflip_mask(0, 64, seed=8)) and not torch.equal(masks[0], masks[1])
    # fair coin: 3,200 flips, mean 1/2 with standard deviation 1/(2·√3200) ≈ 0.0088; 5σ band
    assert abs(masks.float().mean().item() - 0.5) < 5 * 0.5 / math.sqrt(masks.numel())
    x = torch.randn(64, 2, 3, 5)
    y = hflip(x, masks[0])
    assert torch.equal(y[masks[0]], x[masks[0]].flip(-1)) and torch.equal(y[~masks[0]], x[~masks[0]])
    assert torch.equal(hflip(y, masks[0]), x)
    # rank slices of the same global batch agree with the whole batch
    assert torch.equal(torch.cat([hflip_mask(3, 64, 7)[:32], hflip_mask(3, 64, 7)[32:]]), hflip_mask(3, 64, 7))


def test_bad_streamed_data_ends_in_one_line(tmp_path):
    folder = png_folder(tmp_path / "png", 12)
    (folder / "zz_not_an_image.png").write_text("garbage")  # header unreadable: skipped with a warning
    good = (folder / "000.png").read_bytes()
    (folder / "zz_truncated.png").write_bytes(good[: len(good) // 2])  # header fine, pixels missing
    np.save(tmp_path / "complex.npy", np.zeros((10, 4, 4), np.complex64))
    np.savez(tmp_path / "x.npz", x=np.zeros((10, 4, 4), np.uint8))
    cases = [
        ([str(folder), "--batch-size", "16"], "cannot read image", "zz_truncated.png"),
        ([str(tmp_path / "complex.npy")], "must hold integers or floats, got dtype complex64", "complex.npy"),
        ([str(tmp_path / "x.npz")], "needs an image folder or a .npy file", "x.npz"),
        (["digits"], "needs an image folder or a .npy file", "digits"),
    ]
    for i, (data, message, name) in enumerate(cases):
        out = tmp_path / f"run{i}"
        args = ["train", "--data", *data, "--stream", "on", "--workers", "1", "--out", str(out), "--steps", "3"]
        result = CliRunner().invoke(app, [*args, "--channels", "8", "--channel-mult", "1,2", "--quiet"])
        assert result.exit_code == 2, (data, result.output)
        lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("warning:")]
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0] and name in lines[0], (
            result.stderr
        )
        assert "Traceback" not in result.output
        if i == 0:  # as the in-memory folder loader: a file without a readable header is skipped, said once
            assert "warning: skipped 1 unreadable image file(s) of 14" in result.stderr


def test_hflip_on_points_is_refused(tmp_path):
    file = tmp_path / "p.npy"
    np.save(file, np.random.default_rng(0).standard_normal((20, 2)))
    with pytest.raises(ValueError, match="--hflip flips images"):
        Trainer(from_dict(tiny(file, data={"hflip": True})), None, progress=False)
