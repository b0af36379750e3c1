"""encode / decode (scoresde.encoding): decode is sample from a given x_T, encode inverts it.

Checked on the exact Gaussian mixture (``sd.analytic.gmm()``, its exact ε*) and the exact
Gaussian, in float64:

* decode equals ``sd.sample`` bitwise for every deterministic solver (same x_T from the generator);
* decode(encode(x)) = x: ``ode`` to its tolerances, ``ddim``/``heun`` with the fixed-point inverse
  to ~1e-10 (each step solved exactly), the explicit inversions converging at their order;
* the latents of data drawn from the model are N(0, I) (KS per coordinate, mean, variance), and a
  wrong model's latents are not;
* for Gaussian data the probability-flow map is affine and known in closed form, under VP,
  sub-VP and VE: encode, decode and interpolate are checked against it;
* bad input is refused with one sentence naming the argument.
"""

import math
import warnings

import pytest
import torch
from scipy import stats

import scoresde as sd
from scoresde.encoding import ENCODERS, decode, encode, interpolate, round_trip

SDE = sd.VPSDE()
GMM = sd.analytic.gmm()
MODEL = GMM.model(SDE, "eps")
F64 = torch.float64
TIGHT = {"rtol": 1e-9, "atol": 1e-9}  # solve_ivp tolerances for closed-form comparisons


def data(n: int, seed: int = 0, dtype: torch.dtype = F64) -> torch.Tensor:
    return GMM.sample(n, torch.Generator().manual_seed(seed), dtype=dtype)


# ---- decode is sample started from a given x_T ------------------------------------------------
DETERMINISTIC = [name for name, spec in sd.SOLVERS.items() if not spec.stochastic]


@pytest.mark.parametrize("solver", DETERMINISTIC)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_decode_of_a_prior_draw_equals_sample_bitwise(solver, dtype):
    # sample draws x_T = sde.prior_sample(shape, generator) first and nothing else (deterministic
    # solvers), and decode runs the same solver function on the same grid with the same Denoiser
    shape, steps = (64, 2), 12
    x = sd.sample(MODEL, SDE, shape, solver, steps, generator=torch.Generator().manual_seed(5), dtype=dtype)
    xT = SDE.prior_sample(shape, torch.Generator().manual_seed(5), dtype=dtype)
    assert torch.equal(decode(MODEL, SDE, xT, solver, steps), x)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"solver": "ddim", "grid": "uniform", "t_min": 1e-3},  # a denoising step at the end
        {"solver": "heun", "denoise": False},
        {"solver": "dpm-solver++", "grid": torch.tensor([0.002, 0.01, 0.1, 0.5, 1.0], dtype=F64)},
        {"solver": "ode", "rtol": 1e-6, "atol": 1e-6, "method": "DOP853"},
        {"solver": "ddim", "y": 2, "guidance": 2.0},  # class-conditional, guided
        {"solver": "unipc", "y": torch.arange(64) % 7, "guidance": 0.5},  # one label per row (6 = null)
    ],
)
def test_decode_equals_sample_with_every_argument(kwargs):
    shape, g = (64, 2), lambda: torch.Generator().manual_seed(9)
    x = sd.sample(MODEL, SDE, shape, steps=15, generator=g(), dtype=F64, **kwargs)
    xT = SDE.prior_sample(shape, g(), dtype=F64)
    x_dec, info = decode(MODEL, SDE, xT, steps=15, return_info=True, **kwargs)
    assert torch.equal(x_dec, x)
    _, sample_info = sd.sample(MODEL, SDE, shape, steps=15, generator=g(), dtype=F64, return_info=True, **kwargs)
    assert (info.nfe, info.denoised, info.options) == (sample_info.nfe, sample_info.denoised, sample_info.options)
    assert torch.equal(info.times, sample_info.times)


# ---- round trips -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("solver", "steps", "kwargs", "bound"),
    [
        # tolerances 1e-7 -> measured max 4e-6 (benchmarks/results/encoding.md); mean ~3e-8
        ("ode", 1, {"rtol": 1e-7, "atol": 1e-7}, 1e-4),
        # each step solved for its start: exact up to the fixed-point residual (measured 4e-13)
        ("ddim", 20, {}, 1e-9),
        ("heun", 10, {}, 1e-9),
        ("heun", 20, {"t_min": 0.0, "grid": "quadratic"}, 1e-9),  # the last step is then Euler's (x̂_0 at t_1)
        # with the denoising step inverted; the uniform grid needs 60 steps (at 40 one step near t = 0.05
        # is still too large for the fixed point: benchmarks/results/encoding.md)
        ("ddim", 60, {"grid": "uniform", "t_min": 1e-3}, 1e-9),
    ],
)
def test_decode_of_encode_is_the_identity(solver, steps, kwargs, bound):
    x0 = data(200)
    rt = round_trip(MODEL, SDE, x0, solver, steps, **kwargs)
    assert rt.max_abs <= bound, (solver, rt.max_abs)
    assert rt.error.shape == (200,) and rt.mean_abs <= rt.max_abs
    assert rt.encode_info.unconverged == 0
    assert rt.encode_info.denoised == rt.decode_info.denoised == (rt.encode_info.times[0] > 0)


@pytest.mark.parametrize("prediction", ["x0", "v", "score"])
def test_round_trip_with_every_prediction_kind(prediction):
    model = GMM.model(SDE, prediction)
    rt = round_trip(model, SDE, data(100), "heun", 10, t_min=1e-3)  # the denoising step uses x̂_0
    assert rt.max_abs <= 1e-9


@pytest.mark.parametrize("sde", [sd.SubVPSDE(), sd.VESDE()], ids=["subvp", "ve"])
def test_round_trip_under_other_sdes(sde):
    model = GMM.model(sde, "eps")
    assert round_trip(model, sde, data(100), "ddim", 30).max_abs <= 1e-9
    assert round_trip(model, sde, data(100), "ode", rtol=1e-8, atol=1e-8).max_abs <= 1e-4


def test_round_trip_conditional():
    # each row drawn from the component its label names (the classes of the analytic model)
    y = torch.arange(100) % 6
    x0 = GMM.means[y] + GMM.stds[y] * torch.randn(100, 2, generator=torch.Generator().manual_seed(6), dtype=F64)
    rt = round_trip(MODEL, SDE, x0, "ddim", 40, y=y, guidance=1.5)  # guidance sharpens: 20 steps leave 6 unsolved
    assert rt.max_abs <= 1e-9 and rt.encode_info.options["guidance"] == 1.5


def test_the_ode_round_trip_shrinks_with_the_tolerance():
    x0 = data(200)
    errors = [round_trip(MODEL, SDE, x0, "ode", rtol=tol, atol=tol).mean_abs for tol in (1e-5, 1e-7, 1e-9)]
    assert errors[0] > 30 * errors[1] > 900 * errors[2], errors
    assert errors[2] < 1e-8


def test_explicit_inversion_converges_at_the_solvers_order():
    # the classic DDIM inversion (ε̂ at the lower time) is first order: the median per-sample error
    # halves when the steps double (measured 0.0147, 0.0074, 0.0037, 0.0019 at 50 ... 400 steps);
    # explicit Heun is at least second order. The mean and max are dominated by the few samples
    # between modes, where the decoder separates them and amplifies any error in the latent.
    x0 = data(200)

    def slope(solver, steps):
        med = [float(round_trip(MODEL, SDE, x0, solver, n, inversion="explicit").error.median()) for n in steps]
        return -(math.log(med[-1]) - math.log(med[0])) / (math.log(steps[-1]) - math.log(steps[0]))

    assert 0.9 <= slope("ddim", (50, 100, 200, 400)) <= 1.1
    assert slope("heun", (100, 200, 400)) >= 1.9


def test_unconverged_fixed_point_warns_and_reports():
    with pytest.warns(RuntimeWarning, match="fixed-point inversion stopped above its tolerance"):
        _, info = encode(MODEL, SDE, data(200), "ddim", 4, return_info=True)
    assert info.unconverged > 0 and info.residual > 1e-6


def test_encode_info():
    xT, info = encode(MODEL, SDE, data(50), "heun", 12, return_info=True)
    assert (info.solver, info.inversion, info.denoised) == ("heun", "fixed-point", True)
    assert info.nfe > 2 * 12 and info.iterations > 0 and info.residual < 1e-12 and info.unconverged == 0
    assert info.times.dtype == F64 and info.times.numel() == 13 and xT.shape == (50, 2) and xT.dtype == F64
    _, info = encode(MODEL, SDE, data(50), "ddim", 8, inversion="explicit", return_info=True)
    assert (info.nfe, info.iterations, info.residual, info.denoised) == (8, 0, None, False)


# ---- the latents -----------------------------------------------------------------------------
def test_latents_of_model_samples_are_standard_normal():
    n = 2000
    z = encode(MODEL, SDE, data(n, seed=1), "ode", rtol=1e-6, atol=1e-6)
    for d in range(2):
        assert stats.kstest(z[:, d].numpy(), "norm").pvalue > 0.01
    # Monte Carlo: sd(mean) = 1/√n = 0.022, sd(var) = √(2/n) = 0.032; 4 sd
    assert z.mean(0).abs().max() < 4 / math.sqrt(n)
    assert (z.var(0) - 1).abs().max() < 4 * math.sqrt(2 / n)
    # the same test sees a wrong model: the Gaussian's exact flow maps the mixture to a non-normal law
    wrong = sd.analytic.gaussian().model(SDE, "eps")
    z_wrong = encode(wrong, SDE, data(n, seed=1), "ode")
    assert min(stats.kstest(z_wrong[:, d].numpy(), "norm").pvalue for d in range(2)) < 1e-6


# ---- the Gaussian: the flow is affine and known ----------------------------------------------
def gaussian_flow(g, sde, x, t_from, t_to):
    """The exact probability-flow map of N(μ, diag s²) data from t_from to t_to (0 = the data):
    x_t − α_t μ = (x_s − α_s μ) √(α_t² s² + σ_t²) / √(α_s² s² + σ_s²), since the flow is the affine
    map between the Gaussian marginals that keeps each coordinate's standardized value."""
    mu, s = g.means[0], g.stds[0]
    (a0, s0), (a1, s1) = (sde.marginal(torch.tensor(t, dtype=F64)) for t in (t_from, t_to))
    return a1 * mu + (x - a0 * mu) * torch.sqrt(a1**2 * s**2 + s1**2) / torch.sqrt(a0**2 * s**2 + s0**2)


def tweedie_inverse(g, sde, x0, t):
    """x with E[x_0 | x_t = x] = x0 for Gaussian data: x0 = μ + α s²/(α² s² + σ²) (x − α μ)."""
    mu, s = g.means[0], g.stds[0]
    a, sig = sde.marginal(torch.tensor(t, dtype=F64))
    return a * mu + (x0 - mu) * (a**2 * s**2 + sig**2) / (a * s**2)


@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.SubVPSDE(), sd.VESDE()], ids=["vp", "subvp", "ve"])
@pytest.mark.parametrize("denoise", [False, True])
def test_ode_encode_is_the_closed_form_flow_of_a_gaussian(sde, denoise):
    g = sd.analytic.gaussian()
    model, x0, t_min = g.model(sde, "eps"), g.sample(100, torch.Generator().manual_seed(2), dtype=F64), 1e-3
    xT = encode(model, sde, x0, "ode", t_min=t_min, denoise=denoise, **TIGHT)
    start = tweedie_inverse(g, sde, x0, t_min) if denoise else x0
    expected = gaussian_flow(g, sde, start, t_min, sde.T)
    scale = expected.abs().max()  # VE: x_T ~ σ_max = 50
    torch.testing.assert_close(xT, expected, rtol=0, atol=1e-7 * scale)
    torch.testing.assert_close(decode(model, sde, expected, "ode", t_min=t_min, denoise=denoise, **TIGHT), x0,
                               rtol=0, atol=1e-6)  # fmt: skip


def test_encode_from_t0_approaches_the_closed_form_at_first_order():
    # ddim from t_min = 0 inverts the DDIM decoder exactly, and the DDIM decoder converges to the
    # flow at first order: x_T − α_T μ = (x_0 − μ) √(α_T² s² + σ_T²)/s (the brief's formula at t = 0)
    g = sd.analytic.gaussian()
    model, x0 = g.model(SDE, "eps"), g.sample(100, torch.Generator().manual_seed(3), dtype=F64)
    expected = gaussian_flow(g, SDE, x0, 0.0, SDE.T)
    err = [float((encode(model, SDE, x0, "ddim", n) - expected).abs().max()) for n in (100, 200, 400)]
    assert err[0] / err[1] == pytest.approx(2, rel=0.1) and err[1] / err[2] == pytest.approx(2, rel=0.1), err
    assert err[2] < 0.02  # measured 0.011 (s = 0.3 and 1.5: the DDIM decoder's own first-order error)


def test_interpolate_is_the_decoded_slerp():
    g = sd.analytic.gaussian()
    model, t_min = g.model(SDE, "eps"), 1e-3
    x = g.sample(6, torch.Generator().manual_seed(4), dtype=F64)
    x_a, x_b = x[:3], x[3:]
    path = interpolate(model, SDE, x_a, x_b, 5, "ode", t_min=t_min, **TIGHT)
    assert path.shape == (5, 3, 2)
    torch.testing.assert_close(path[0], x_a, rtol=0, atol=1e-6)
    torch.testing.assert_close(path[-1], x_b, rtol=0, atol=1e-6)
    # closed form: slerp the exact latents, map them back through the exact (affine) decoder
    z_a, z_b = (gaussian_flow(g, SDE, tweedie_inverse(g, SDE, v, t_min), t_min, 1.0) for v in (x_a, x_b))
    theta = torch.arccos((z_a * z_b).sum(1) / (z_a.norm(dim=1) * z_b.norm(dim=1)))[:, None]
    mu, s = g.means[0], g.stds[0]
    a, sig = SDE.marginal(torch.tensor(t_min, dtype=F64))
    for k, lam in enumerate(torch.linspace(0, 1, 5, dtype=F64)):
        z = (torch.sin((1 - lam) * theta) * z_a + torch.sin(lam * theta) * z_b) / torch.sin(theta)
        x_t = gaussian_flow(g, SDE, z, 1.0, t_min)
        expected = mu + a * s**2 / (a**2 * s**2 + sig**2) * (x_t - a * mu)  # the final x̂_0 step
        torch.testing.assert_close(path[k], expected, rtol=0, atol=1e-6)
    # equal ends: a constant path (θ = 0 falls back to the straight line)
    same = interpolate(model, SDE, x_a, x_a, 3, "ddim", 20)
    torch.testing.assert_close(same[1], same[0], rtol=0, atol=1e-12)


def test_interpolate_conditional_labels_per_row():
    x = data(4)
    y = torch.tensor([0, 3])
    path = interpolate(MODEL, SDE, x[:2], x[2:], 3, "ddim", 20, y=y)
    torch.testing.assert_close(path[0], x[:2], rtol=0, atol=1e-9)
    assert path.shape == (3, 2, 2)


# ---- refusals --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: encode(MODEL, SDE, [[0.0, 1.0]]), TypeError, "x0 must be a torch.Tensor"),
        (lambda: encode(MODEL, SDE, torch.zeros(3, 2, dtype=torch.long)), TypeError, "x0 must be a floating-point"),
        (lambda: encode(MODEL, SDE, torch.tensor([[0.0, math.nan]])), ValueError, "x0 contains NaN or inf"),
        (lambda: encode(MODEL, SDE, torch.zeros(0, 2)), ValueError, "x0 must have shape"),
        (lambda: decode(MODEL, SDE, torch.tensor([[math.inf, 0.0]])), ValueError, "xT contains NaN or inf"),
        (lambda: encode(MODEL, SDE, data(2), "ddim", 0), ValueError, "steps must be an integer >= 1"),
        (lambda: encode(MODEL, SDE, data(2), "ddim", 2.5), ValueError, "steps must be an integer"),
        (lambda: encode(MODEL, SDE, data(2), "ancestral"), ValueError, "'ancestral' is stochastic.*no deterministic"),
        (lambda: decode(MODEL, SDE, data(2), "pc"), ValueError, "'pc' is stochastic.*decode with one of: .*ode"),
        (lambda: encode(MODEL, SDE, data(2), "ddim", eta=0.5), ValueError, "eta=0.5 is stochastic"),
        (lambda: encode(MODEL, SDE, data(2), "dpm-solver++"), ValueError, "decodes but has no encoder.*ode, ddim"),
        (lambda: encode(MODEL, SDE, data(2), "rk4"), ValueError, "unknown encoder 'rk4'; choose one of: ode"),
        (lambda: encode(MODEL, SDE, data(2), "ddim", inversion="newton"), ValueError, "unknown inversion 'newton'"),
        (lambda: encode(MODEL, SDE, data(2), "ode", inversion="fixed-point"), ValueError, "takes inversion 'explicit'"),
        (lambda: encode(MODEL, SDE, data(2), "ddim", tol=-1.0), ValueError, "tol must be a positive finite"),
        (lambda: encode(MODEL, SDE, data(2), "ddim", max_iter=0), ValueError, "max_iter must be an integer >= 1"),
        (lambda: encode(MODEL, SDE, data(2), "ode", t_min=0.0), ValueError, "give t_min > 0"),
        (lambda: encode(MODEL, SDE, data(2), "heun", order=3), ValueError, "does not take option 'order'"),
        (lambda: encode(MODEL, SDE, data(2), "ddim", guidance=2.0), ValueError, "needs class labels y"),
        (lambda: encode(MODEL, SDE, data(2), "ddim", y=torch.tensor([1, 2, 3])), ValueError, "y holds 3 labels"),
        (lambda: encode(lambda x, t: x, SDE, data(2), "ddim", y=1), TypeError, "unconditional"),
        (lambda: interpolate(MODEL, SDE, data(2), data(3)), ValueError, "x_a and x_b must have the same shape"),
        (lambda: interpolate(MODEL, SDE, data(2), data(2), 1), ValueError, "n must be an integer >= 2"),
        (lambda: interpolate(MODEL, SDE, data(2), data(2), y=torch.tensor([1])), ValueError, "one label per row"),
    ],
)
def test_bad_input_is_refused_with_a_sentence(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_model_errors_pass_through_with_the_time():
    def bad(x, t):
        return x[:, :1]

    with pytest.raises(ValueError, match=r"the model returned shape \(4, 1\) at t="):
        encode(bad, SDE, data(4), "ddim", 5)


def test_registries_agree():
    assert set(ENCODERS) == {"ode", "ddim", "heun"}
    assert all(not sd.SOLVERS[name].stochastic for name in ENCODERS)
    assert sd.encode is encode and sd.decode is decode
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a converged encode does not warn
        encode(MODEL, SDE, data(10), "ddim", 20)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda():
    cuda = torch.device("cuda")
    x = sd.sample(MODEL, SDE, (64, 2), "ddim", 12, generator=torch.Generator(cuda).manual_seed(1), dtype=F64)
    xT = SDE.prior_sample((64, 2), torch.Generator(cuda).manual_seed(1), dtype=F64)
    assert torch.equal(decode(MODEL, SDE, xT, "ddim", 12), x)
    x0 = data(64).to(cuda)
    rt = round_trip(MODEL, SDE, x0, "heun", 10)
    assert rt.latent.device.type == "cuda" and rt.max_abs <= 1e-9
    path = interpolate(MODEL, SDE, x0[:2], x0[2:4], 3, "ddim", 20)
    assert path.device.type == "cuda" and path.shape == (3, 2, 2)
