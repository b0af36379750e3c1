"""The command line of steering: sample --inpaint/--mask, --measure/--observe, edit, encode and decode,
with the one-line errors for bad input (wrong shapes, masks that hide nothing or everything, strength
outside (0, 1])."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import scoresde as sd
from scoresde.cli import app

TINY = ["--channels", "8", "--channel-mult", "1,2", "--batch-size", "8", "--sample-every", "0", "--quiet"]


def invoke(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(pattern: str, *args) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, (args, result.exit_code, result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert re.search(pattern, lines[0]), lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("steer")
    result = invoke("train", "--out", root / "run", "--steps", "4", *TINY)
    assert result.exit_code == 0, result.stderr
    digits = sd.load_run(root / "run").reference[:3].numpy()
    out = {"run": root / "run", "digits": root / "digits.npy", "point": root / "point.npy", "pmask": root / "m.npy"}
    np.save(out["digits"], digits)
    np.save(out["point"], np.array([-1.1, np.nan], np.float32))  # the hidden value may be anything, NaN too
    np.save(out["pmask"], np.array([1.0, 0.0], np.float32))
    np.save(root / "full.npy", np.ones(2, np.float32))
    np.save(root / "empty.npy", np.zeros(2, np.float32))
    np.save(root / "wrong.npy", np.zeros((3, 5, 5), np.float32))
    return {**out, "full": root / "full.npy", "empty": root / "empty.npy", "wrong": root / "wrong.npy", "root": root}


def test_inpainting_keeps_the_observed_part_exactly(files, tmp_path):
    out = tmp_path / "x.npz"
    result = invoke("sample", "--run", files["run"], "--inpaint", files["digits"], "--mask", "keep-bottom",
                    "--steps", "3", "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    x, known = np.load(out)["samples"], np.load(files["digits"])
    assert x.shape == known.shape  # one completion per image
    np.testing.assert_allclose(x[:, :, 4:], known[:, :, 4:], atol=1e-6)  # the bottom half is the image
    assert np.abs(x[:, :, :4] - known[:, :, :4]).max() > 0.1  # the top half is sampled
    # one point of the exact mixture: x_1 observed, x_2 sampled (its conditional is bimodal)
    result = invoke("sample", "--model", "gmm", "--inpaint", files["point"], "--mask", files["pmask"], "--num", "500",
                    "--out", tmp_path / "p.npz")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    p = np.load(tmp_path / "p.npz")["samples"]
    assert np.allclose(p[:, 0], -1.1) and p[:, 1].std() > 0.05 and np.isfinite(p).all()


def test_measurement_posterior_and_edit_and_encode_decode(files, tmp_path):
    result = invoke("sample", "--run", files["run"], "--measure", "blur", "--observe", files["digits"],
                    "--steps", "3", "--out", tmp_path / "b.npz")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert np.load(tmp_path / "b.npz")["samples"].shape == (3, 1, 8, 8)
    result = invoke("sample", "--run", files["run"], "--measure", "mask", "--mask", "keep-left", "--observe",
                    files["digits"], "--steps", "3", "--out", tmp_path / "m.npz")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert np.load(tmp_path / "m.npz")["samples"].shape == (3, 1, 8, 8)
    result = invoke("edit", "--from", files["digits"], "--strength", "0.3", "--run", files["run"], "--steps", "4",
                    "--out", tmp_path / "e.npz")  # fmt: skip
    assert result.exit_code == 0 and "(strength 0.3)" in result.output, result.stderr
    assert np.load(tmp_path / "e.npz")["samples"].shape == (3, 1, 8, 8)
    result = invoke("edit", "--from", "held-out:2", "--run", files["run"], "--steps", "2", "--out", tmp_path / "h.npz")
    assert result.exit_code == 0, result.stderr  # the run's own held-out digits
    assert np.load(tmp_path / "h.npz")["samples"].shape == (2, 1, 8, 8)
    result = invoke("encode", "--from", files["digits"], "--run", files["run"], "--out", tmp_path / "z.npz")
    assert result.exit_code == 0, result.stderr
    error = float(re.search(r"round trip max \|error\| ([0-9.e-]+)", result.output).group(1))
    assert error < 1e-3, result.output
    result = invoke("decode", "--from", tmp_path / "z.npz", "--run", files["run"], "--out", tmp_path / "d.npz")
    assert result.exit_code == 0, result.stderr
    back = torch.as_tensor(np.load(tmp_path / "d.npz")["samples"])
    assert (back - torch.as_tensor(np.load(files["digits"]))).abs().max() < 1e-3


def test_bad_observations_are_one_line(files, tmp_path):
    run, out = files["run"], tmp_path / "x.png"
    sample = ["sample", "--run", run, "--steps", "2", "--out", out]
    one_line_error(r"--inpaint IMG and --mask MASK go together", *sample, "--inpaint", files["digits"])
    one_line_error(r"--measure NAME and --observe IMG go together", *sample, "--measure", "blur")
    one_line_error(r"--measure mask needs --mask MASK", *sample, "--measure", "mask", "--observe", files["digits"])
    one_line_error(r"--resample needs --inpaint", *sample, "--resample", "2")
    one_line_error(r"--inpaint .*wrong.npy holds shape \(3, 5, 5\), but the model's samples have shape \(1, 8, 8\)",
                   *sample, "--inpaint", files["wrong"], "--mask", "keep-top")  # fmt: skip
    gmm = ["sample", "--model", "gmm", "--inpaint", files["point"], "--out", out]
    one_line_error(r"--mask .*full.npy observes every value: nothing is left to sample", *gmm, "--mask", files["full"])
    one_line_error(r"--mask .*empty.npy observes nothing", *gmm, "--mask", files["empty"])
    one_line_error(r"--mask keep-top halves an image", "sample", "--model", "gmm", "--inpaint", files["point"],
                   "--mask", "keep-top", "--out", out)  # fmt: skip
    one_line_error(r"--inpaint .*missing.npy: no such file", *sample, "--inpaint", tmp_path / "missing.npy",
                   "--mask", "keep-top")  # fmt: skip
    one_line_error(r"--inpaint held-out:x: give held-out:N", *sample, "--inpaint", "held-out:x", "--mask", "keep-top")
    one_line_error(r"unknown measurement 'smear'", *sample, "--measure", "smear", "--observe", files["digits"])
    for strength in ("0", "1.5", "nan"):
        one_line_error(r"--strength must lie in \(0, 1\]", "edit", "--from", files["digits"], "--strength", strength,
                       "--run", run, "--out", out)  # fmt: skip
    one_line_error(r"--from .*wrong.npy holds shape", "edit", "--from", files["wrong"], "--run", run, "--out", out)
    one_line_error(r"solver 'ancestral'", "encode", "--from", files["digits"], "--run", run, "--solver", "ancestral",
                   "--out", tmp_path / "z.npz")  # fmt: skip
    assert not out.exists()


def test_classifier_guidance_from_the_command_line(files, tmp_path):
    result = invoke("train-classifier", "--run", files["run"], "--steps", "20", "--quiet")
    assert result.exit_code == 0, result.stderr
    result = invoke("sample", "--run", files["run"], "--class", "3", "--classifier-scale", "2", "--steps", "3",
                    "--num", "4", "--out", tmp_path / "g.npz")  # fmt: skip
    assert result.exit_code == 0 and "classifier guidance, scale 2" in result.output, result.stderr
    result = invoke("sample", "--run", files["run"], "--class", "all", "--classifier-scale", "1", "--steps", "2",
                    "--num", "2", "--out", tmp_path / "a.npz")  # fmt: skip
    assert result.exit_code == 0 and np.load(tmp_path / "a.npz")["samples"].shape == (20, 1, 8, 8), result.stderr
    sample = ["sample", "--run", files["run"], "--steps", "2", "--out", tmp_path / "x.png"]
    one_line_error(r"--classifier-scale needs --class", *sample, "--classifier-scale", "2")
    one_line_error(r"--class 10 is out of range: the classifier .* knows 10 classes", *sample, "--class", "10",
                   "--classifier-scale", "2")  # fmt: skip
    one_line_error(r"no noisy_classifier|does not exist|no such", *sample, "--class", "1", "--classifier-scale", "2",
                   "--classifier", tmp_path / "nowhere")  # fmt: skip


def test_steering_is_a_library_function(files):
    """What the flags mean lives in scoresde.observations.steering; the command only reports its errors."""
    from scoresde.observations import steering

    dm = sd.open_model(model="gmm")
    assert steering(dm) == (dm, {}, None)
    same, options, count = steering(dm, inpaint=files["point"], mask=files["pmask"], resample=3)
    assert same is dm and count == 1 and options["resample"] == 3
    assert torch.equal(options["mask"], torch.tensor([1.0, 0.0]))
    assert options["known"][0] == pytest.approx(-1.1)
    for bad, flags in (
        ("go together", {"inpaint": files["point"]}),
        ("go together", {"measure": "blur"}),
        ("--resample needs", {"resample": 2}),
        ("either --inpaint or --measure", {"inpaint": files["point"], "mask": files["pmask"], "measure": "blur",
                                           "observe": files["point"]}),
    ):  # fmt: skip
        with pytest.raises(ValueError, match=bad):
            steering(dm, **flags)
