"""The CUDA path: sampling with several solvers, a bf16 training step, autocast — skipped without CUDA.

Run by ``benchmarks/gpu_check.sh`` on a GPU machine; on a CPU-only machine every test here is skipped.
"""

from __future__ import annotations

import pytest
import torch

import scoresde as sd
from scoresde.analytic import Gaussian
from scoresde.config import from_dict
from scoresde.data import Dataset
from scoresde.losses import denoising_loss
from scoresde.nets import make_network
from scoresde.param import Model
from scoresde.run_folder import load_run
from scoresde.trainer import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")


@pytest.mark.parametrize(
    ("solver", "steps", "grid"),
    [
        ("ancestral", 1000, "uniform"),
        ("ddim", 100, "uniform"),
        ("dpm-solver++", 30, "log-snr"),
        ("heun", 50, "uniform"),
        ("euler-maruyama", 1000, "uniform"),
        ("pc", 500, "uniform"),
    ],
)
def test_sampling_on_cuda_reaches_the_gaussian_target(solver, steps, grid):
    """Samples of the exact model of N(μ, diag s²) drawn on the GPU have the target's mean and std.

    n = 20,000: the Monte Carlo standard error of the mean is ≤ 0.011 and of the std ≤ 0.5%; the
    tolerances (0.06 absolute, 6% relative) add the solvers' discretization error at these steps.
    """
    data, sde = Gaussian([0.5, -1.0], [0.3, 1.5]), sd.VPSDE()
    g = torch.Generator(CUDA).manual_seed(0)
    x, info = sd.sample(data.model(sde), sde, (20_000, 2), solver, steps, generator=g, grid=grid, return_info=True)
    assert x.device.type == "cuda" and x.dtype == torch.float32 and torch.isfinite(x).all()
    mean, std = x.double().mean(0).cpu(), x.double().std(0).cpu()
    torch.testing.assert_close(mean, data.means[0], atol=0.06, rtol=0)
    torch.testing.assert_close(std, data.stds[0], atol=0, rtol=0.06)
    assert info.nfe >= steps


def test_a_cpu_generator_is_refused_for_cuda_sampling():
    data, sde = Gaussian([0.0], [1.0]), sd.VPSDE()
    with pytest.raises(ValueError, match="generator"):
        sd.sample(data.model(sde), sde, (8, 1), "ddim", 5, generator=torch.Generator().manual_seed(0), device="cuda")


def test_nonfinite_model_output_on_cuda_names_the_time():
    sde = sd.VPSDE()

    def broken(x, t):
        return torch.full_like(x, float("nan"))

    with pytest.raises(ValueError, match="not finite"):
        sd.sample(broken, sde, (4, 2), "ddim", 5, generator=torch.Generator(CUDA).manual_seed(0))


def test_bf16_autocast_unet_loss_and_gradients():
    """Under bf16 autocast the UNet computes in bf16, the loss comes out in float32, the gradients are finite,
    and the bf16 prediction agrees with the float32 one to bf16 precision."""
    torch.manual_seed(0)
    net = make_network("unet", (3, 16, 16), size="tiny", attention_resolutions=(8,)).to(CUDA)
    with torch.no_grad():  # give the zero-initialised output layers weights, so the check is not vacuous
        for p in net.parameters():
            if p.ndim > 1 and not p.any():
                p.normal_(std=0.05)
    model = Model(net, "eps", "scaled").to(CUDA)
    x0 = torch.rand(16, 3, 16, 16, device=CUDA) * 2 - 1
    g = torch.Generator(CUDA).manual_seed(0)
    t = torch.rand(16, device=CUDA, generator=g)
    with torch.autocast("cuda", torch.bfloat16):
        out = model(x0, t)
        loss = denoising_loss(model, sd.VPSDE(), x0, time="continuous", generator=g)
    assert out.dtype == torch.bfloat16
    assert loss.dtype == torch.float32 and torch.isfinite(loss).all()
    loss.mean().backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(gr.dtype == torch.float32 and torch.isfinite(gr).all() for gr in grads)
    with torch.no_grad():
        ref = model(x0, t)
    rel = (out.float() - ref).norm() / ref.norm()
    assert rel < 0.05, f"bf16 vs float32 relative error {rel:.3g}"


def test_trainer_steps_on_cuda_in_bf16_and_the_checkpoint_loads_on_cpu(tmp_path):
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    dataset = Dataset("random", x[:56], x[56:], "images")
    config = from_dict(
        {
            "model": {"channels": 16, "channel_mult": [1, 2]},
            "steps": 4,
            "batch_size": 8,
            "log_every": 2,
            "checkpoint_every": 0,
            "sample_every": 0,
            "device": "cuda",
            "bf16": True,
            "optim": {"warmup": 0},
        }
    )
    trainer = Trainer(config, tmp_path / "run", progress=False, dataset=dataset)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    result = trainer.run()
    assert trainer.device.type == "cuda" and all(p.is_cuda for p in trainer.model.parameters())
    assert (
        result.provenance.step == 4
        and result.provenance.loss is not None
        and result.provenance.loss == result.provenance.loss
    )  # finite, not NaN
    moved = sum(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))
    assert moved > len(before) // 2
    run = load_run(tmp_path / "run", device="cpu")
    y = sd.sample(run.model, run.sde, (4, 1, 8, 8), "ddim", 5, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(y).all()
    run_gpu = load_run(tmp_path / "run", device="cuda")
    y = sd.sample(run_gpu.model, run_gpu.sde, (4, 1, 8, 8), "dpm-solver++", 5, generator=torch.Generator(CUDA))
    assert y.is_cuda and torch.isfinite(y).all()


def test_guided_sampling_on_cuda_lands_in_each_class():
    """The analytic mixture as a conditional model, labels given on the CPU, sampled on the GPU."""
    from scoresde.analytic import gmm
    from scoresde.guidance import guided

    data, sde = gmm(), sd.VPSDE()
    labels = torch.arange(6000) % data.K
    model = guided(data.model(sde), labels, guidance=2.0)
    g = torch.Generator(CUDA).manual_seed(0)
    x = sd.sample(model, sde, (6000, 2), "dpm-solver++", 20, generator=g, grid="log-snr", batch_size=6000)
    assert x.device.type == "cuda"
    assert (data.responsibilities(x.double().cpu()).argmax(1) == labels).double().mean() >= 0.99


def test_conditional_unet_runs_on_cuda_with_labels():
    torch.manual_seed(0)
    net = make_network("unet", (1, 8, 8), size="tiny", num_classes=10).to(CUDA)
    x = torch.randn(4, 1, 8, 8, device=CUDA)
    out = net(x, torch.full((4,), 500.0, device=CUDA), torch.tensor([0, 3, 9, 10], device=CUDA))
    assert out.shape == x.shape and torch.isfinite(out).all()
