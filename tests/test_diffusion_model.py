"""One record for a model ready to use (scoresde.diffusion_model), made by every source, and the library
functions that take it: generate (chunked sampling to memory, .npz or .png), evaluation.likelihood."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import scoresde as sd
from scoresde.config import from_dict
from scoresde.diffusion_model import DiffusionModel, Provenance
from scoresde.generation import auto_solver, generate

TINY_2D = {"data": {"name": "moons"}, "steps": 4, "batch_size": 16, "sample_every": 0, "log_every": 2}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dm") / "run"
    return sd.train(from_dict(TINY_2D), folder, progress=False), folder


def test_every_source_gives_the_same_record_type(trained):
    in_memory, folder = trained
    loaded = sd.load_run(folder)
    analytic = sd.analytic.gmm().diffusion_model(name="gmm")
    denoiser = sd.from_denoiser(lambda x, s: x / (1 + s[:, None] ** 2), data_shape=(2,))
    for dm, source in [(in_memory, "training"), (loaded, "run"), (analytic, "analytic"), (denoiser, "denoiser")]:
        assert type(dm) is DiffusionModel and dm.provenance.source == source
        assert dm.prediction == dm.model.prediction and dm.data_shape == (2,) and dm.kind == "points"
    assert in_memory.provenance.step == loaded.provenance.step == 4 and loaded.provenance.run_dir == folder
    assert in_memory.provenance.loss == in_memory.provenance.metrics[-1]["loss"]
    assert loaded.dataset == "moons" and loaded.N == in_memory.N == 1000 and loaded.clip_x0 is None
    assert torch.equal(in_memory.reference, loaded.reference)
    assert analytic.num_classes == 6 and analytic.provenance.origin.K == 6 and analytic.reference.shape == (4000, 2)
    with pytest.raises(TypeError, match=r"must carry \.prediction"):
        DiffusionModel(lambda x, t: x, sd.VPSDE(), (2,), "points", Provenance("denoiser", "f"))
    with pytest.raises(ValueError, match="unknown source 'nowhere'"):
        Provenance("nowhere", "f")
    with pytest.raises(ValueError, match="kind must be 'points' or 'images'"):
        DiffusionModel(analytic.model, sd.VPSDE(), (2,), "voxels", analytic.provenance)


def test_open_model_resolves_the_command_line_sources(trained, tmp_path, monkeypatch):
    _, folder = trained
    assert sd.open_model(run=folder).provenance.checkpoint == sd.load_run(folder).provenance.checkpoint
    assert sd.open_model(model="gmm-hard").description == "analytic gmm-hard"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"no trained run under \./runs: run `scoresde train` first"):
        sd.open_model()
    with pytest.raises(ValueError, match="give either --model, --run or --diffusers, not --model and --run"):
        sd.open_model(model="gmm", run=folder)
    with pytest.raises(ValueError, match="unknown analytic model 'gnn'; choose one of: gmm, gmm-hard, gaussian"):
        sd.open_model(model="gnn")
    with pytest.raises(ValueError, match=r"--data digits has samples of shape \(1, 8, 8\), but the model takes \(2,\)"):
        sd.open_model(run=folder, data="digits")


def test_class_ids_names_and_refusals():
    dm = sd.analytic.gmm().diffusion_model(name="gmm")
    assert dm.class_id("3") == 3 and dm.class_id(4) == 4 and dm.class_id(" all ") == "all"
    for bad, message in [("9", "--class 9 is out of range: analytic gmm has 6 classes"), ("x", "'x' is not a class")]:
        with pytest.raises(ValueError, match=message):
            dm.class_id(bad)
    plain = sd.from_denoiser(lambda x, s: x, data_shape=(2,))
    with pytest.raises(ValueError, match=r"needs a class-conditional model, but denoiser .* is unconditional"):
        plain.class_id(0)


def test_generate_in_chunks_equals_one_sample_call_and_writes_the_same_npz(tmp_path):
    dm = sd.analytic.gmm().diffusion_model(name="gmm")
    whole = sd.sample(dm.model, dm.sde, (50, 2), "unipc", 6, generator=torch.Generator().manual_seed(3), batch_size=16)
    kept = generate(dm, 50, solver="auto", steps=6, seed=3, batch_size=16)
    assert kept.solver == auto_solver(dm) == "unipc" and kept.num == 50 and kept.nfe == 7  # per sample
    assert torch.equal(kept.samples, whole)
    written = generate(dm, 50, steps=6, seed=3, batch_size=16, out=tmp_path / "x.npz")
    with np.load(tmp_path / "x.npz") as f:
        assert np.array_equal(f["samples"], whole.numpy()) and str(f["solver"]) == "unipc" and int(f["nfe"]) == 7
    assert written.samples is None and written.out == tmp_path / "x.npz"
    # ground truth known: the statistics of the exact mixture's own samples
    assert abs(kept.stats["mode_error"]) < 0.2 and kept.stats["mean_log_prob"] > kept.stats["data_log_prob"] - 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npz"]  # no temporary file left


def test_generate_conditional_and_its_refusals(tmp_path):
    dm = sd.analytic.gmm().diffusion_model(name="gmm")
    per_class = generate(dm, 20, classes="all", guidance=2.0, steps=8, out=tmp_path / "g.png")
    assert (
        per_class.num == 120 and per_class.per_class == 20 and per_class.samples.shape == (120, 2)
    )  # the picture of vectors shows them all
    assert per_class.stats["class_hit_rate"] > 0.9
    one = generate(dm, 30, classes=2, steps=8)
    assert torch.equal(one.labels, torch.full((30,), 2)) and one.guidance == 1.0
    for kwargs, message in [
        ({"guidance": 2.0}, "guidance needs classes"),
        ({"num": 0}, "num must be a positive integer, got 0"),
        ({"out": tmp_path / "x.jpg"}, r"out must end in .png or .npz"),
        ({"solver": "euler"}, "unknown solver 'euler'"),
    ]:
        with pytest.raises(ValueError, match=message):
            generate(dm, **kwargs)
    with pytest.raises(ValueError, match="data_shape is unknown"):
        generate(sd.from_denoiser(lambda x, s: x), 4)


def test_likelihood_of_the_reference_matches_log_likelihood(trained):
    _, folder = trained
    dm = sd.load_run(folder)
    from scoresde.evaluation import likelihood

    record = likelihood(dm, "vlb", 8, steps=20, seed=1)
    nll = sd.log_likelihood(dm.model, dm.sde, dm.reference[:8].float(), "vlb", steps=20,
                            generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert record["n"] == 8 and record["nats_per_dim"] == pytest.approx((nll / 2).mean().item(), rel=1e-12)
    with pytest.raises(ValueError, match="--class all draws a grid"):
        likelihood(sd.analytic.gmm().diffusion_model(), "vlb", 4, classes="all")
    with pytest.raises(ValueError, match="unknown likelihood method 'exact'"):
        likelihood(dm, "exact")
