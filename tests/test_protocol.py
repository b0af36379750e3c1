"""The model protocol: a model carries its prediction kind; one place converts any output."""

import pytest
import torch

import scoresde as sd
from scoresde.param import eps_and_x0, resolve_prediction, score

pytestmark = pytest.mark.usefixtures("float64")

SDES = {"vp": sd.VPSDE(), "subvp": sd.SubVPSDE(), "ve": sd.VESDE()}


def _truth(sde, t, gen):
    """x0, ε, x_t = α x0 + σ ε and every kind's exact output by its definition."""
    x0 = torch.randn(64, 3, generator=gen)
    eps = torch.randn(64, 3, generator=gen)
    alpha, sigma = (v[:, None] for v in sde.marginal(t))
    x = alpha * x0 + sigma * eps
    outputs = {"eps": eps, "score": -eps / sigma, "x0": x0, "v": alpha * eps - sigma * x0}
    return x0, eps, x, alpha, sigma, outputs


@pytest.mark.parametrize("name", list(SDES))
def test_one_conversion_recovers_eps_x0_and_score_for_every_kind(name):
    sde, gen = SDES[name], torch.Generator().manual_seed(0)
    t = torch.rand(64, generator=gen, dtype=torch.float64) * 0.98 + 0.01
    x0, eps, x, alpha, sigma, outputs = _truth(sde, t, gen)
    for kind, pred in outputs.items():
        e, z = eps_and_x0(kind, pred, x, alpha, sigma)
        torch.testing.assert_close(e, eps, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(z, x0, rtol=1e-9, atol=1e-7)
        torch.testing.assert_close(score(kind, pred, x, alpha, sigma), -eps / sigma, rtol=1e-9, atol=1e-7)
        for target, expected in outputs.items():  # convert agrees with the definitions of all 16 pairs
            got = sd.convert(pred, kind, target, x, alpha, sigma)
            torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-6)


def test_float_coefficients_match_tensor_ones_and_x0_at_sigma_zero_gives_zero_eps():
    sde, gen = sd.VPSDE(), torch.Generator().manual_seed(1)
    t = torch.full((64,), 0.3, dtype=torch.float64)
    _, _, x, alpha, sigma, outputs = _truth(sde, t, gen)
    a, s = alpha[0, 0].item(), sigma[0, 0].item()
    for kind, pred in outputs.items():
        for u, v in zip(eps_and_x0(kind, pred, x, a, s), eps_and_x0(kind, pred, x, alpha, sigma), strict=True):
            torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12)
    e, z = eps_and_x0("x0", x, x, 1.0, 0.0)
    assert torch.equal(e, torch.zeros_like(x)) and torch.equal(z, x)


def test_resolve_prediction_rules():
    data = sd.analytic.gmm()
    model = data.model(sd.VPSDE(), "x0")
    assert resolve_prediction(model) == "x0"
    assert resolve_prediction(model, "x0") == "x0"
    with pytest.raises(ValueError, match="model says it predicts 'x0'"):
        resolve_prediction(model, "eps")
    with pytest.raises(ValueError, match="model says it predicts 'x0'"):
        sd.sample(model, sd.VPSDE(), (4, 2), "ddim", 3, "eps")

    def fn(x, t):
        return x

    assert resolve_prediction(fn) == "eps"  # a bare callable: today's default
    assert resolve_prediction(fn, "v") == "v"
    with pytest.raises(ValueError, match="unknown prediction 'noise'"):
        resolve_prediction(fn, "noise")


def test_as_model_wraps_callables_once_and_keeps_models():
    sde = sd.VPSDE()
    data = sd.analytic.gmm()
    exact = data.model(sde, "v")
    assert sd.as_model(exact) is exact and sd.as_model(exact, "v") is exact
    with pytest.raises(ValueError, match="already predicts 'v'"):
        sd.as_model(exact, "eps")
    wrapped = sd.as_model(lambda x, t: exact(x, t), prediction="v")
    assert wrapped.prediction == "v" and sd.as_model(wrapped) is wrapped
    # the wrapped function samples exactly as the model it calls, without passing prediction=
    a = sd.sample(wrapped, sde, (16, 2), "dpm-solver++", 8, generator=torch.Generator().manual_seed(3))
    b = sd.sample(exact, sde, (16, 2), "dpm-solver++", 8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert sd.as_model(lambda x, t: x).prediction == "eps"


def test_model_passes_conditioning_to_the_network_only_when_given():
    class Net(torch.nn.Module):
        def forward(self, x, label, y=None):
            return x * label[:, None] + (0 if y is None else y[:, None])

    model = sd.as_model(Net(), prediction="eps")
    x, t = torch.ones(3, 2), torch.full((3,), 0.5)
    torch.testing.assert_close(model(x, t), 0.5 * x)
    torch.testing.assert_close(model(x, t, y=torch.arange(3.0)), 0.5 * x + torch.arange(3.0)[:, None])


def test_log_likelihood_dispatches_to_ode_nll_and_vlb_nll_with_the_same_numbers():
    sde, data = sd.VPSDE(), sd.analytic.gmm()
    model = data.model(sde, "v")
    x = data.sample(6, torch.Generator().manual_seed(4))
    a = sd.log_likelihood(model, sde, x, "ode", t_min=1e-3, rtol=1e-4, atol=1e-4, generator=torch.Generator())
    b = sd.ode_nll(model, sde, x, t_min=1e-3, rtol=1e-4, atol=1e-4, generator=torch.Generator())
    assert torch.equal(a, b)
    kw = {"steps": 50, "grid": "log-snr", "t_min": 1e-4}
    c = sd.log_likelihood(model, sde, x, "vlb", **kw, generator=torch.Generator().manual_seed(5))
    d = sd.vlb_nll(model, sde, x, **kw, generator=torch.Generator().manual_seed(5))
    assert torch.equal(c, d)
    # both estimate −log p_0(x) of the exact model: within the VLB's gap of the exact value
    exact = -data.log_prob(x).double()
    torch.testing.assert_close(b, exact, rtol=0, atol=0.05)
    with pytest.raises(ValueError, match="model says it predicts 'v'"):
        sd.vlb_nll(model, sde, x, "eps", steps=5)


def test_info_lists_every_solver_with_its_declared_order_and_noise():
    from typer.testing import CliRunner

    from scoresde.cli import app

    result = CliRunner().invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["solver", "order", "stochastic"])
    rows = {line.split()[0]: line.split() for line in lines[header + 1 : header + 1 + len(sd.SOLVERS)]}
    assert set(rows) == set(sd.SOLVERS)
    for name, row in rows.items():
        spec = sd.SOLVERS[name]
        assert float(row[1]) == spec.order and row[2] == ("yes" if spec.stochastic else "no")
        assert " ".join(row[3:]) == spec.summary
