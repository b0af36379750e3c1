"""Classifier-free guidance against closed forms: the analytic mixture as a conditional model."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import Counting

import scoresde as sd
from scoresde.analytic import Gaussian, gmm
from scoresde.guidance import Guided, for_rows, guided, num_classes_of
from scoresde.labels import class_rows, drop_labels
from scoresde.nets import make_network
from scoresde.param import convert

DATA = gmm()  # 6 tight, unequal modes in 2-D: the classes are its components
K = DATA.K


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _points(n: int = 8, seed: int = 0):
    g = _gen(seed)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    t = 0.05 + 0.9 * torch.rand(n, generator=g, dtype=torch.float64)
    return x, t


# --------------------------------------------------------------------------- the formula


@pytest.mark.parametrize("w", [0.0, 1.0, 2.5, -0.5])
def test_guided_is_the_cfg_combination_in_one_forward(w):
    model = Counting(DATA.model(sd.VPSDE(), "eps"))
    x, t = _points()
    y = torch.tensor([0, 1, 2, 3, 4, 5, 6, 2])  # 6 = the null label: that row stays unconditional
    out = guided(model, y, guidance=w)(x, t)
    # one call; both branches in it only when 0 < w != 1
    assert len(model.calls) == 1
    batch, labels = model.calls[0]
    if w in (0.0, 1.0):
        assert batch == 8
        assert labels.tolist() == ([K] * 8 if w == 0 else y.tolist())
    else:
        assert batch == 16 and labels.tolist() == [K] * 8 + y.tolist()
    base = DATA.model(sd.VPSDE(), "eps")
    uncond, cond = base(x, t), base(x, t, y=y)
    torch.testing.assert_close(out, uncond + w * (cond - uncond), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out[6], uncond[6], rtol=1e-12, atol=1e-12)  # null row: unconditional at any w


def test_w0_and_w1_are_exactly_the_unconditional_and_conditional_models():
    model = DATA.model(sd.VPSDE(), "eps")
    x, t = _points()
    torch.testing.assert_close(guided(model, 3, guidance=0.0)(x, t), model(x, t), rtol=0, atol=0)
    torch.testing.assert_close(guided(model, 3, guidance=1.0)(x, t), model(x, t, y=torch.full((8,), 3)), rtol=0, atol=0)


@pytest.mark.parametrize("prediction", ["score", "x0", "v"])
@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.SubVPSDE(), sd.VESDE()], ids=lambda s: type(s).__name__)
def test_guiding_any_prediction_kind_equals_guiding_eps(sde, prediction):
    """Every kind is affine in ε at fixed (x, t), so guidance commutes with the conversions."""
    x, t = _points(seed=2)
    y, w = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1]), 3.0
    eps = guided(DATA.model(sde, "eps"), y, guidance=w)
    other = guided(DATA.model(sde, prediction), y, guidance=w)
    assert other.prediction == prediction
    alpha, sigma = (v[:, None] for v in sde.marginal(t))
    torch.testing.assert_close(
        convert(other(x, t), prediction, "eps", x, alpha, sigma), eps(x, t), rtol=1e-9, atol=1e-9
    )


def test_select_slices_per_sample_labels_by_rows():
    model = DATA.model(sd.VPSDE(), "x0")
    x, t = _points(10, seed=4)
    y = torch.arange(10) % K
    whole = guided(model, y, guidance=2.0)
    parts = torch.cat([whole.select(0, 4)(x[:4], t[:4]), whole.select(4, 10)(x[4:], t[4:])])
    torch.testing.assert_close(parts, whole(x, t), rtol=0, atol=0)
    assert whole.rows == 10 and whole.select(4, 10).rows == 6
    # k stacked copies of the rows (as x.expand(k, *x.shape) flattened) see their own labels
    tiled = whole.tile(3)(x.repeat(3, 1), t.repeat(3))
    torch.testing.assert_close(tiled, whole(x, t).repeat(3, 1), rtol=0, atol=0)
    one_class = guided(model, 2, guidance=2.0)
    assert one_class.select(0, 3) is one_class and one_class.rows is None
    # a scalar t is broadcast to the batch in the doubled forward
    torch.testing.assert_close(one_class(x, torch.tensor(0.3)), one_class(x, torch.full((10,), 0.3)))


def test_guidance_refuses_bad_input_with_a_sentence():
    model = DATA.model(sd.VPSDE(), "eps")
    x, t = _points()
    with pytest.raises(TypeError, match=r"unconditional: it has no num_classes.*--conditional"):
        guided(lambda x, t: x, 0)
    with pytest.raises(ValueError, match=r"class y must lie in 0 … 5 \(or 6 = unconditional\), got 7"):
        guided(model, 7)
    with pytest.raises(ValueError, match=r"got values in \[-1, 2\]"):
        guided(model, torch.tensor([0, -1, 2]))
    with pytest.raises(TypeError, match=r"integer class labels, got dtype torch\.float32"):
        guided(model, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"y must have shape \(n,\), one class per sample, got \(2, 1\)"):
        guided(model, torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(TypeError, match="y must be a class id"):
        guided(model, True)
    with pytest.raises(ValueError, match="guidance must be a finite number"):
        guided(model, 1, guidance=math.inf)
    with pytest.raises(ValueError, match=r"holds labels for 3 samples but was called with a batch of 8.*select"):
        guided(model, torch.tensor([0, 1, 2]), guidance=2.0)(x, t)
    with pytest.raises(TypeError, match="already holds its labels"):
        guided(model, 1)(x, t, y=torch.zeros(8, dtype=torch.long))


def test_networks_and_model_wrappers_report_their_classes():
    net = make_network("mlp", (2,), num_classes=4)
    assert num_classes_of(net) == 4 and num_classes_of(sd.as_model(net)) == 4
    assert num_classes_of(make_network("mlp", (2,))) is None
    assert num_classes_of(DATA.model(sd.VPSDE())) == K
    g = Guided(lambda x, t, y=None: x, 1, guidance=2.0, num_classes=3)  # K given explicitly
    assert g.num_classes == 3 and g.null_label == 3
    seen = []
    own_null = Guided(lambda x, t, y=None: seen.append(y.tolist()) or x, 1, 2.0, num_classes=3, null_label=-1)
    own_null(torch.zeros(2, 2), torch.ones(2))
    assert seen == [[-1, -1, 1, 1]]  # the model's own null id in the unconditional branch


# --------------------------------------------------------------------------- guided sampling

N, STEPS = 420, 50
LABELS = torch.arange(N) % K  # every class, 70 samples each
STEP_OPTIONS = {"ode": {"rtol": 1e-4, "atol": 1e-4}, "dpm-solver++": {"grid": "log-snr"}}


def _component(x: torch.Tensor) -> torch.Tensor:
    """The component of highest responsibility under the data distribution p_0."""
    return DATA.responsibilities(x.double()).argmax(1)


@pytest.mark.parametrize("solver", list(sd.SOLVERS))
def test_sampling_class_k_lands_in_component_k_on_every_solver(solver):
    sde = sd.VPSDE()
    model = guided(DATA.model(sde, "eps"), LABELS, guidance=1.0)
    x = sd.sample(
        model,
        sde,
        (N, 2),
        solver,
        steps=STEPS,
        prediction=model.prediction,
        generator=_gen(1),
        **STEP_OPTIONS.get(solver, {}),
    )
    hits = (_component(x) == LABELS).double().mean().item()
    assert hits >= 0.99, f"{solver}: {hits:.3f} of the samples land in their class's component"


@pytest.mark.parametrize("solver", ["ancestral", "dpm-solver++", "heun"])
def test_guidance_above_one_still_samples_the_class(solver):
    sde = sd.VPSDE()
    model = guided(DATA.model(sde, "v"), LABELS, guidance=3.0)
    x = sd.sample(model, sde, (N, 2), solver, steps=STEPS, prediction=model.prediction, generator=_gen(2))
    assert (_component(x) == LABELS).double().mean().item() >= 0.99


def test_guidance_zero_reproduces_the_unconditional_mixture():
    sde, n = sd.VPSDE(), 4000
    model = guided(DATA.model(sde, "eps"), torch.arange(n) % K, guidance=0.0)
    x = sd.sample(model, sde, (n, 2), "dpm-solver++", steps=20, prediction="eps", generator=_gen(3), grid="log-snr")
    freq = torch.bincount(_component(x), minlength=K).double() / n
    # 5 binomial standard errors per mode (false-alarm rate ~1e-6 per mode) plus 0.01 for the solver
    tol = 5 * (DATA.weights * (1 - DATA.weights) / n).sqrt() + 0.01
    assert ((freq - DATA.weights).abs() <= tol).all(), f"mode frequencies {freq} vs weights {DATA.weights}"
    # the labels were ignored: the same draw as the unconditional model's
    plain = sd.sample(
        DATA.model(sde, "eps"),
        sde,
        (n, 2),
        "dpm-solver++",
        steps=20,
        prediction="eps",
        generator=_gen(3),
        grid="log-snr",
    )
    torch.testing.assert_close(x, plain, rtol=0, atol=0)


@pytest.mark.parametrize("solver", list(sd.SOLVERS))
def test_guidance_costs_one_forward_per_model_evaluation(solver):
    sde, n = sd.VPSDE(), 12
    kw = dict(steps=10, prediction="eps", return_info=True, **STEP_OPTIONS.get(solver, {}))
    base = Counting(DATA.model(sde, "eps"))
    _, info_plain = sd.sample(base, sde, (n, 2), solver, generator=_gen(4), **kw)
    counting = Counting(DATA.model(sde, "eps"))
    _, info = sd.sample(
        guided(counting, torch.arange(n) % K, guidance=2.0), sde, (n, 2), solver, generator=_gen(4), **kw
    )
    assert len(counting.calls) == info.nfe  # one forward of the network per evaluation the solver counts
    assert all(batch == 2 * n for batch, _ in counting.calls)  # both branches in that one forward
    if solver != "ode":  # the adaptive ODE solver picks its steps from the vector field itself
        assert info.nfe == info_plain.nfe == len(base.calls)


def test_for_rows_slices_guided_models_and_passes_others_through():
    model = DATA.model(sd.VPSDE(), "eps")
    g = guided(model, torch.arange(6), guidance=2.0)
    assert for_rows(model, 0, 3) is model
    assert torch.equal(for_rows(g, 2, 5).y, torch.tensor([2, 3, 4]))


# --------------------------------------------------------------------------- likelihood log p(x | y)


def test_conditional_likelihood_is_the_components_likelihood():
    """log p(x | y=k) by the probability-flow ODE of the guided (w = 1) model is that of N(μ_k, s_k²)."""
    sde = sd.VPSDE()
    y = torch.arange(K)
    x = (DATA.means + 0.5 * DATA.stds).double()  # one point near each component
    nll = sd.log_likelihood(guided(DATA.model(sde, "eps"), y, guidance=1.0), sde, x, "ode", prediction="eps")
    for k in range(K):
        single = Gaussian(DATA.means[k], DATA.stds[k])
        nll_k = sd.log_likelihood(single.model(sde, "eps"), sde, x[k : k + 1], "ode", prediction="eps")
        assert nll[k].item() == pytest.approx(nll_k.item(), abs=1e-4)  # the same ODE, one solve vs another
        # and both are the exact −log N(x; μ_k, s_k²) up to the ODE's start time and prior (~0.01 nats)
        assert nll[k].item() == pytest.approx(-single.log_prob(x[k : k + 1]).item(), abs=0.03)
    # w = 0: the unconditional mixture's log p(x)
    nll0 = sd.log_likelihood(guided(DATA.model(sde, "eps"), y, guidance=0.0), sde, x, "ode", prediction="eps")
    torch.testing.assert_close(nll0, -DATA.log_prob(x), rtol=0, atol=0.01)


# --------------------------------------------------------------------------- label dropout


def test_label_dropout_replaces_labels_by_null_at_rate_p():
    n, p = 20_000, 0.1
    y = torch.arange(n) % 10
    out = drop_labels(y, p, 10, torch.Generator().manual_seed(0))
    dropped = out == 10
    # a binomial count: within 5 standard errors of p
    assert abs(dropped.double().mean().item() - p) <= 5 * math.sqrt(p * (1 - p) / n)
    assert torch.equal(out[~dropped], y[~dropped])
    assert torch.equal(drop_labels(y, 0.0, 10), y) and (drop_labels(y, 1.0, 10) == 10).all()
    with pytest.raises(ValueError, match=r"label dropout probability must lie in \[0, 1\], got -0.1"):
        drop_labels(y, -0.1, 10)
    with pytest.raises(ValueError, match=r"labels must lie in 0 … 5"):
        drop_labels(y, 0.1, 5)
    assert class_rows(3, 2).tolist() == [0, 0, 1, 1, 2, 2]


# --------------------------------------------------------------------------- a trained conditional net


def test_a_conditional_mlp_trained_with_label_dropout_samples_its_classes():
    """End to end on 8gaussians: class embedding + label dropout + guidance, sampled with DPM-Solver++.

    The labels are the 8 components; a sample's class is the nearest of the 8 angles k·45°.
    Measured (this seed): w = 0 → 12% (labels ignored, chance 1/8), w = 1 → 99.0%, w = 4 → 99.75%.
    """
    from scoresde.data import load_dataset

    data = load_dataset("8gaussians", n=4000, seed=0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = make_network("mlp", (2,), width=64, depth=2, num_classes=8)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sde, g = sd.VPSDE(), _gen(0)
    for _ in range(1000):
        idx = torch.randint(0, len(data.train), (256,), generator=g)
        y = drop_labels(data.train_labels[idx], 0.1, 8, g)  # p_uncond = 0.1 (Ho & Salimans 2022, Alg. 1)
        loss = sd.denoising_loss(
            lambda xt, t, y=y: net(xt, 999 * t, y), sde, data.train[idx], time="continuous", generator=g
        )
        opt.zero_grad()
        loss.mean().backward()
        opt.step()
    net.eval()

    class Conditional:  # the protocol of scoresde.param.Model: model(x, t, y=...) with .prediction
        prediction, num_classes = "eps", 8

        def __call__(self, x, t, y=None):
            return net(x, 999 * t, y)

    labels = torch.arange(800) % 8
    accuracy = {}
    for w in (0.0, 1.0, 4.0):
        model = guided(Conditional(), labels, guidance=w)
        x = sd.sample(
            model, sde, (800, 2), "dpm-solver++", steps=20, grid="log-snr", prediction="eps", generator=_gen(1)
        )
        nearest = torch.round(torch.atan2(x[:, 1], x[:, 0]) / (math.pi / 4)).long() % 8
        accuracy[w] = (nearest == labels).double().mean().item()
    assert accuracy[0.0] < 0.3, accuracy  # unconditional: about 1/8 by chance
    assert accuracy[1.0] >= 0.95, accuracy
    assert accuracy[4.0] >= max(0.98, accuracy[1.0] - 0.005), accuracy  # guidance sharpens the classes
