"""Foreign models as scoresde models: diffusers UNet2DModel + scheduler, EDM / k-diffusion denoisers.

The diffusers checks compare our code paths against diffusers' own schedulers step for step on a
tiny random UNet (saved with ``save_pretrained`` and loaded back): the SDE's ᾱ against
``alphas_cumprod``, the time label against the UNet called at timestep i − 1, our ``ancestral``
against ``DDPMScheduler.step`` given the same noise, our ``ddim`` against ``DDIMScheduler``.
The denoiser checks sample the analytic mixture through its exact EDM denoiser (Tweedie's
posterior mean, written here independently of scoresde) with every deterministic solver.
"""

import copy
import math

import pytest
import torch

import scoresde as sd
from scoresde.metrics import sliced_wasserstein

diffusers = pytest.importorskip("diffusers")


def sw(x, y):
    return sliced_wasserstein(x, y, generator=torch.Generator().manual_seed(9))


N = 1000
SHAPE = (2, 1, 8, 8)


def tiny_unet(num_class_embeds=None):
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        layers_per_block=1,
        block_out_channels=(4,),
        norm_num_groups=2,
        add_attention=False,
        down_block_types=("DownBlock2D",),
        up_block_types=("UpBlock2D",),
        num_class_embeds=num_class_embeds,
    )


SETTINGS = [("linear", "epsilon"), ("squaredcos_cap_v2", "v_prediction")]


@pytest.fixture(scope="module", params=SETTINGS, ids=["-".join(s) for s in SETTINGS])
def saved(request, tmp_path_factory):
    """A pipeline folder (unet/ + scheduler/) written by save_pretrained, and its DiffusionModel."""
    schedule, kind = request.param
    folder = tmp_path_factory.mktemp("pipe")
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=N, beta_schedule=schedule, prediction_type=kind)
    diffusers.DDPMPipeline(unet=tiny_unet(), scheduler=scheduler).save_pretrained(folder)
    return folder, sd.from_diffusers(folder)


def test_alpha_bars_equal_alphas_cumprod(saved):
    _, pre = saved
    chain = pre.sde.discretize(pre.N)
    ref = pre.provenance.origin.alphas_cumprod.double()
    assert pre.N == N and chain.alpha_bars[0] == 1
    assert (chain.alpha_bars[1:] - ref).abs().max() <= 1e-6
    kind = pre.provenance.origin.config.prediction_type
    assert pre.prediction == pre.model.prediction == {"epsilon": "eps", "v_prediction": "v"}[kind]
    assert pre.data_shape == (1, 8, 8) and pre.num_classes is None
    # DDPMScheduler's defaults: clip_sample=True (range 1) and variance_type="fixed_small"
    assert pre.clip_x0 == 1.0 and pre.sample_options("ancestral") == {"clip_x0": 1.0, "variance": "small"}
    assert pre.sample_options("heun") == {"clip_x0": 1.0}


def test_time_label_is_the_ddpm_timestep(saved):
    _, pre = saved
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 1, 8, 8, generator=g)
    i = torch.tensor([1, 2, 500, 1000])
    t = (i.double() / N).float()  # float32 times, as the samplers pass them
    with torch.no_grad():
        ours = pre.model(x, t)
        ref = pre.model.unet(x, i - 1).sample
        shifted = pre.model.unet(x, i - 2).sample
    assert torch.equal(ours, ref)
    assert (ours - shifted).abs().max() > 1e-4  # the label matters: a one-step shift is seen
    # the fractional label tN − 1: the same at the grid times, interpolated between them
    frac = sd.from_diffusers(pre.model.unet, pre.provenance.origin, time_label="fractional").model
    with torch.no_grad():
        assert (frac(x, t) - ref).abs().max() < 1e-5
        k = torch.tensor([2, 3, 500, 1000])
        t_mid = ((k.double() - 0.5) / N).float()  # between the grid times: label k − 1.5
        mid = frac(x, t_mid)
        assert torch.allclose(mid, pre.model.unet(x, k.double() - 1.5).sample, atol=1e-5)
        assert (mid - pre.model(x, t_mid)).abs().max() > 1e-4  # `index` rounds to a grid label instead


@pytest.mark.parametrize("scheduler_cls", ["DDPMScheduler", "DDIMScheduler"])
def test_objects_and_unet_folder_with_scheduler(saved, tmp_path, scheduler_cls):
    folder, pre = saved
    scheduler = getattr(diffusers, scheduler_cls).from_config(pre.provenance.origin.config)
    from_objects = sd.from_diffusers(pre.model.unet, scheduler)
    from_folders = sd.from_diffusers(folder / "unet", scheduler=folder / "scheduler")
    from_pipeline = sd.from_diffusers(diffusers.DDPMPipeline(unet=pre.model.unet, scheduler=scheduler))
    t = torch.tensor([0.3, 0.7])
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(from_objects.model(x, t), pre.model(x, t))
        assert torch.equal(from_folders.model(x, t), pre.model(x, t))
        assert torch.equal(from_pipeline.model(x, t), pre.model(x, t))
    assert torch.equal(from_objects.sde.discretize(N).alpha_bars, pre.sde.discretize(N).alpha_bars)


def diffusers_loop(pre, scheduler_cls, steps, seed, dtype, **step_kwargs):
    """diffusers' sampling loop (DDPMPipeline / DDIMPipeline): x_T ~ randn, then ``step`` at every timestep,
    drawing z from the same generator (for t > 0) in the same order as scoresde's ancestral sampler.

    In float64 the scheduler is given our ᾱ (float64) instead of its float32 ``alphas_cumprod``, so
    that the comparison checks the algorithm alone, to rounding.
    """
    scheduler = getattr(diffusers, scheduler_cls).from_config(pre.provenance.origin.config)
    unet = copy.deepcopy(pre.model.unet).to(dtype)
    if dtype == torch.float64:
        for name in ("betas", "alphas", "one", "final_alpha_cumprod"):
            if hasattr(scheduler, name):
                setattr(scheduler, name, torch.as_tensor(getattr(scheduler, name), dtype=dtype))
        scheduler.alphas_cumprod = pre.sde.discretize(N).alpha_bars[1:].clone()
    scheduler.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(SHAPE, generator=g, dtype=dtype)
    with torch.inference_mode():
        for k in scheduler.timesteps:
            x = scheduler.step(unet(x, k).sample, k, x, generator=g, **step_kwargs).prev_sample
    return x, unet


def ours(pre, unet, solver, seed, dtype, **kwargs):
    model = sd.from_diffusers(unet, pre.provenance.origin).model
    g = torch.Generator().manual_seed(seed)
    return sd.sample(model, pre.sde, SHAPE, solver, prediction=model.prediction, generator=g, dtype=dtype, **kwargs)


def test_ancestral_equals_ddpm_scheduler_step(saved):
    _, pre = saved
    # float64: the same algorithm to rounding; float32: diffusers' float32 ᾱ (≤ 3e-7 off ours) and float32
    # arithmetic through 1000 steps whose mean factors 1/√α_i reach 1.01 (linear) and 32 (cosine); measured
    # 1e-4 (linear) and 3e-4 (cosine)
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-3)):
        x, unet = diffusers_loop(pre, "DDPMScheduler", N, seed=3, dtype=dtype)
        x_ours = ours(pre, unet, "ancestral", 3, dtype, steps=N, **pre.sample_options("ancestral"))
        assert x.abs().max() > 0.1  # not a trivial output
        assert (x_ours - x).abs().max() <= tol, dtype


def test_ddim_equals_ddim_scheduler(saved):
    _, pre = saved
    steps, seed = 50, 4
    pre_ddim = sd.from_diffusers(pre.model.unet, diffusers.DDIMScheduler.from_config(pre.provenance.origin.config))
    grid = sd.interop.scheduler_grid(
        pre_ddim, steps
    )  # 'leading' spacing: timesteps 980, 960, …, 0 → t = (k + 1)/N, and 0
    assert grid.numel() == steps + 1 and grid[0] == 0 and math.isclose(grid[-1].item(), 981 / N)
    assert pre_ddim.sample_options("ddim") == {"clip_x0": 1.0}  # DDIMScheduler's clip_sample=True default
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        # scoresde keeps ε̂ consistent with the clipped x̂_0: DDIM's use_clipped_model_output=True
        x, unet = diffusers_loop(pre_ddim, "DDIMScheduler", steps, 4, dtype, eta=0.0, use_clipped_model_output=True)
        x_ours = ours(pre_ddim, unet, "ddim", seed, dtype, grid=grid, **pre_ddim.sample_options("ddim"))
        assert x.abs().max() > 0.1
        assert (x_ours - x).abs().max() <= tol, dtype


def test_class_embedding_unet_takes_y(tmp_path):
    unet = tiny_unet(num_class_embeds=3)
    pre = sd.from_diffusers(unet, diffusers.DDPMScheduler(num_train_timesteps=N))
    assert pre.num_classes == 3
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    y = torch.tensor([0, 2])
    t = torch.tensor([0.5, 0.5])
    with torch.no_grad():
        assert torch.equal(pre.model(x, t, y=y), unet(x, torch.tensor([499, 499]), class_labels=y).sample)
        assert not torch.allclose(pre.model(x, t, y=y), pre.model(x, t, y=torch.tensor([1, 1])))
    with pytest.raises(ValueError, match=r"class-conditional \(3 classes\): call model"):
        pre.model(x, t)


def test_trained_betas_and_scaled_linear():
    betas = torch.linspace(1e-4, 0.03, N, dtype=torch.float64) ** 1.5
    for scheduler in (
        diffusers.DDPMScheduler(num_train_timesteps=N, trained_betas=betas.numpy()),
        diffusers.DDPMScheduler(num_train_timesteps=N, beta_schedule="scaled_linear", clip_sample=False),
    ):
        pre = sd.from_diffusers(tiny_unet(), scheduler)
        ab = pre.sde.discretize(N).alpha_bars[1:]
        assert (ab - scheduler.alphas_cumprod.double()).abs().max() <= 1e-6
    assert pre.clip_x0 is None


def test_bad_input_is_refused_with_one_line(tmp_path):
    unet = tiny_unet()
    with pytest.raises(ValueError, match="unsupported diffusers scheduler 'ScoreSdeVeScheduler'; supported"):
        sd.from_diffusers(unet, diffusers.ScoreSdeVeScheduler())
    with pytest.raises(ValueError, match="prediction_type 'flow' cannot be converted; supported: epsilon"):
        sd.from_diffusers(unet, diffusers.DDPMScheduler(prediction_type="flow"))
    with pytest.raises(ValueError, match="zero terminal SNR"):
        sd.from_diffusers(unet, diffusers.DDIMScheduler(rescale_betas_zero_snr=True))
    with pytest.raises(ValueError, match="needs the scheduler"):
        sd.from_diffusers(unet)
    unet.save_pretrained(tmp_path / "unet_only")
    with pytest.raises(ValueError, match="holds no scheduler"):
        sd.from_diffusers(tmp_path / "unet_only")
    diffusers.DDPMScheduler().save_pretrained(tmp_path / "sched_only")
    with pytest.raises(ValueError, match="holds no UNet"):
        sd.from_diffusers(tmp_path / "sched_only")
    with pytest.raises(ValueError, match="does not exist"):
        sd.from_diffusers(tmp_path / "missing")
    with pytest.raises(ValueError, match="no local copy in the Hugging Face cache; scoresde never downloads"):
        sd.from_diffusers("no-such-user/no-such-model-xyz")
    with pytest.warns(UserWarning, match="dynamic thresholding"):
        pre = sd.from_diffusers(unet, diffusers.DDPMScheduler(thresholding=True))
    assert pre.clip_x0 is None and "dynamic thresholding" in pre.provenance.notes[0]


# --------------------------------------------------------------------------- EDM / k-diffusion


def mixture_denoiser(data):
    """Tweedie's E[x_0 | x_0 + σ̃ n = x̃] for Σ_k w_k N(μ_k, diag s_k²): Σ_k r_k(x̃) (μ_k + s_k²/(s_k² + σ̃²)(x̃ − μ_k))."""
    w = data.weights
    mu, var = data.means.reshape(data.K, -1), data.stds.reshape(data.K, -1).expand(data.K, data.dim) ** 2

    def D(x_tilde, sigma):
        x = x_tilde.double().flatten(1)[:, None, :]  # (B, 1, D)
        v = var[None] + sigma.double()[:, None, None] ** 2  # (B, K, D)
        log_r = torch.log(w) - 0.5 * (((x - mu) ** 2) / v + torch.log(2 * math.pi * v)).sum(-1)
        r = torch.softmax(log_r, dim=1)[..., None]
        post = mu + var / v * (x - mu)
        return (r * post).sum(1).reshape(x_tilde.shape).to(x_tilde.dtype)

    return D


@pytest.mark.parametrize("sde_name", ["vp", "subvp", "ve"])
def test_from_denoiser_is_the_exact_x0_model(sde_name):
    data = sd.analytic.gmm()
    sde = sd.make_sde(sde_name)
    model = sd.from_denoiser(mixture_denoiser(data), sde=sde).model
    exact = data.model(sde, "x0")
    g = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(64, 2, generator=g, dtype=torch.float64)
    t = torch.rand(64, generator=g, dtype=torch.float64) * 0.99 + 0.01
    assert model.prediction == "x0"
    assert torch.allclose(model(x, t), exact(x, t), atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize(
    "solver,steps,grid",
    [("ddim", 100, "log-snr"), ("dpm-solver++", 50, "log-snr"), ("heun", 50, "karras"), ("ode", 20, "uniform")],
)
def test_from_denoiser_samples_the_mixture(solver, steps, grid):
    data = sd.analytic.gmm()
    sde = sd.VPSDE()
    model = sd.from_denoiser(mixture_denoiser(data), sde=sde).model
    g = torch.Generator().manual_seed(0)
    x = sd.sample(
        model,
        sde,
        (2000, 2),
        solver,
        steps,
        prediction=model.prediction,
        generator=g,
        grid=grid,
        **({"t_min": 1e-3} if solver == "ddim" else {}),
    )
    truth = data.sample(2000, generator=torch.Generator().manual_seed(1))
    floor = sw(data.sample(2000, generator=torch.Generator().manual_seed(2)), truth)
    sw2 = sw(x, truth)
    assert sw2 < floor + 0.05, (solver, sw2, floor)  # two independent ground-truth draws sit at `floor`


def test_to_denoiser_round_trips_and_runs_a_karras_sampler():
    data = sd.analytic.gmm()
    sde = sd.VPSDE()
    D = mixture_denoiser(data)
    D2 = sd.to_denoiser(sd.from_denoiser(D, sde=sde).model, sde)
    g = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(64, 2, generator=g, dtype=torch.float64)
    sigma = torch.exp(torch.empty(64, dtype=torch.float64).uniform_(-4, 4, generator=g))
    assert torch.allclose(D2(x, sigma), D(x, sigma), atol=1e-9)
    # the other way: model -> D -> model, for an eps model
    eps_model = data.model(sde, "eps")
    back = sd.from_denoiser(sd.to_denoiser(eps_model, sde, "eps"), sde=sde).model
    t = torch.rand(64, generator=g, dtype=torch.float64) * 0.99 + 0.01
    alpha, sigma_t = sde.marginal(t)
    x0 = sd.convert(eps_model(x, t), "eps", "x0", x, alpha[:, None], sigma_t[:, None])
    assert torch.allclose(back(x, t), x0, atol=1e-8)

    # a k-diffusion-style Heun sampler (Karras et al. 2022, Alg. 1, dx̃/dσ̃ = (x̃ − D)/σ̃) on D of a scoresde eps
    # model, from the same x_T as scoresde's adaptive `ode` solver (x̃_T = x_T/α(T)) down to the same t_min = 1e-3,
    # then x̂_0 = D: both integrate one probability-flow ODE, so the samples agree pointwise
    den = sd.to_denoiser(eps_model, sde, "eps")
    rho, n, t_min = 7.0, 60, 1e-3
    s_min = (sde.marginal(torch.tensor(t_min))[1] / sde.marginal(torch.tensor(t_min))[0]).item()
    s_max = den.sigma_max
    i = torch.arange(n + 1, dtype=torch.float64)
    sigmas = (s_max ** (1 / rho) + i / n * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho  # eq. 5
    ref = sd.sample(
        eps_model,
        sde,
        (500, 2),
        "ode",
        10,
        prediction="eps",
        generator=torch.Generator().manual_seed(3),
        t_min=t_min,
        dtype=torch.float64,
        rtol=1e-7,
        atol=1e-7,
    )
    x_T = torch.randn(500, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x = x_T / sde.marginal(torch.tensor(sde.T))[0].item()
    for k in range(n):
        s, s_next = sigmas[k], sigmas[k + 1]
        d = (x - den(x, s)) / s
        x_next = x + (s_next - s) * d
        d2 = (x_next - den(x_next, s_next)) / s_next
        x = x + (s_next - s) * 0.5 * (d + d2)
    x = den(x, sigmas[-1])  # the final noise-free step
    err = (x - ref).norm(dim=1)
    assert err.median() < 3e-3 and err.mean() < 1e-2, (
        err.median(),
        err.mean(),
    )  # data spread ~4; measured 1.1e-3, 3.4e-3


def test_denoiser_errors_are_one_clear_line():
    sde = sd.VPSDE()
    x = torch.randn(4, 2)
    t = torch.full((4,), 0.5)
    wrong = sd.from_denoiser(lambda x, s: x[:, :1], sde=sde).model
    with pytest.raises(
        ValueError, match=r"the denoiser returned shape \(4, 1\) at sigma=.*shape of its input, \(4, 2\)"
    ):
        wrong(x, t)
    nan = sd.from_denoiser(lambda x, s: x * float("nan"), sde=sde).model
    with pytest.raises(ValueError, match="the denoiser returned non-finite values"):
        nan(x, t)
    with pytest.raises(ValueError, match="the denoiser returned non-finite"):
        sd.sample(nan, sde, (4, 2), "heun", 5, prediction="x0")
    den = sd.to_denoiser(sd.analytic.gmm().model(sde, "eps"), sde)
    with pytest.raises(ValueError, match="exceeds the SDE's largest noise level"):
        den(x, torch.full((4,), 1e6))
    with pytest.raises(ValueError, match="needs prediction"):
        sd.to_denoiser(lambda x, t: x, sde)


# --------------------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def pipe_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli") / "pipe"
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=N, variance_type="fixed_large")
    diffusers.DDPMPipeline(unet=tiny_unet(), scheduler=scheduler).save_pretrained(folder)
    return folder


def invoke(*args):
    from typer.testing import CliRunner

    from scoresde.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_sample_diffusers_equals_the_python_api(pipe_dir, tmp_path):
    np = pytest.importorskip("numpy")
    pre = sd.from_diffusers(pipe_dir)
    assert pre.sample_options("ancestral") == {"clip_x0": 1.0, "variance": "large"}  # fixed_large
    for solver, steps in (("ancestral", 20), ("euler-maruyama", 10), ("pc", 5), ("dpm-solver++", 10)):
        out = tmp_path / f"{solver}.npz"
        result = invoke(
            "sample",
            "--diffusers",
            pipe_dir,
            "--solver",
            solver,
            "--steps",
            steps,
            "--num",
            3,
            "--seed",
            7,
            "--out",
            out,
        )
        assert result.exit_code == 0, result.output
        assert f"diffusers {pipe_dir} (DDPMScheduler, eps-prediction, N=1000), solver {solver}" in result.output
        g = torch.Generator().manual_seed(7)
        x = sd.sample(
            pre.model,
            pre.sde,
            (3, 1, 8, 8),
            solver,
            steps,
            prediction=pre.model.prediction,
            generator=g,
            **pre.sample_options(solver),
        )
        with np.load(out) as f:
            assert np.array_equal(f["samples"], x.numpy()), solver  # same defaults (clip, variance), same draws


def test_cli_likelihood_diffusers_bits_per_dim(pipe_dir, tmp_path):
    pytest.importorskip("sklearn")
    from scoresde.data import load_dataset

    pre = sd.from_diffusers(pipe_dir)
    x = load_dataset("digits", heldout=0.0).train[:2]
    for method, extra in (("vlb", ["--steps", 50]), ("ode", ["--rtol", 1e-3, "--atol", 1e-3])):
        out = tmp_path / f"{method}.json"
        result = invoke(
            "likelihood",
            "--diffusers",
            pipe_dir,
            "--data",
            "digits",
            "--num",
            2,
            "--method",
            method,
            *extra,
            "--json",
            out,
        )
        assert result.exit_code == 0, result.output
        assert "bits/dim (17 levels)" in result.output
        record = __import__("json").loads(out.read_text())
        options = {"steps": 50} if method == "vlb" else {"rtol": 1e-3, "atol": 1e-3}
        nll = sd.log_likelihood(
            pre.model,
            pre.sde,
            x,
            method,
            pre.model.prediction,
            levels=17,
            generator=torch.Generator().manual_seed(0),
            **options,
        )
        assert math.isclose(record["bits_per_dim"], (nll / 64).mean().item() / math.log(2), rel_tol=1e-9)


def test_cli_diffusers_errors_are_one_line(pipe_dir, tmp_path):
    (tmp_path / "run").mkdir()
    diffusers.DDPMScheduler().save_pretrained(tmp_path / "sched")
    tiny_unet().save_pretrained(tmp_path / "unet")
    classy = tmp_path / "classy"
    diffusers.DDPMPipeline(unet=tiny_unet(3), scheduler=diffusers.DDPMScheduler()).save_pretrained(classy)
    ve = tmp_path / "ve"
    diffusers.DDPMPipeline(unet=tiny_unet(), scheduler=diffusers.ScoreSdeVeScheduler()).save_pretrained(ve)
    cases = [
        (
            ["sample", "--diffusers", pipe_dir, "--run", tmp_path / "run"],
            "give either --model, --run or --diffusers, not --run and --diffusers",
        ),
        (["sample", "--diffusers", tmp_path / "sched"], "holds no UNet"),
        (["likelihood", "--diffusers", tmp_path / "unet", "--data", "digits"], "holds no scheduler"),
        (["sample", "--diffusers", ve], "unsupported diffusers scheduler 'ScoreSdeVeScheduler'; supported"),
        (["sample", "--diffusers", classy], "class-conditional UNet (3 classes)"),
        (["likelihood", "--diffusers", pipe_dir], "a diffusers model has no held-out data"),
        (["evaluate", "--diffusers", pipe_dir], "a diffusers model has no held-out data"),
        (["likelihood", "--diffusers", pipe_dir, "--data", tmp_path / "missing.npy"], "does not exist"),
        (["sample", "--diffusers", "nobody/nothing-here"], "scoresde never downloads"),
    ]
    for args, message in cases:
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output
