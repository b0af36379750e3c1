"""A diffusers model trained by scoresde, saved as a diffusers folder, then used like any diffusers model.

A small ``UNet2DModel`` with a ``DDPMScheduler`` (linear betas, ε-prediction, N = 1000) is wrapped by
``sd.from_diffusers`` and trained on the 8x8 digits with scoresde's own loss (``sd.denoising_loss``,
DDPM's L_simple on the scheduler's exact VP SDE, EMA weights); ``save_pretrained`` writes a standard
pipeline folder (``unet/`` + ``scheduler/``) that ``DDPMPipeline.from_pretrained`` loads, and that
the scoresde CLI reads with ``--diffusers``:

    python examples/diffusers_digits.py --out digits-diffusers          # ~3-4 min on one CPU core
    scoresde sample --diffusers digits-diffusers --solver dpm-solver++ --steps 20 --out dpm.png
    scoresde likelihood --diffusers digits-diffusers --data digits --method vlb
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

import scoresde as sd
from scoresde.data import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="digits-diffusers", help="the pipeline folder to write")
    parser.add_argument("--steps", type=int, default=1500, help="training steps")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    try:
        import diffusers
    except ImportError:
        raise SystemExit('this example needs diffusers: pip install -e ".[bench]"') from None
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    unet = diffusers.UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        layers_per_block=1,
        block_out_channels=(32, 64),
        norm_num_groups=8,
        add_attention=False,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000)
    pre = sd.from_diffusers(unet, scheduler)  # pre.model(x, t) drives this very UNet
    unet.requires_grad_(True).train()
    ema = copy.deepcopy(unet).requires_grad_(False)

    x = load_dataset("digits").train  # (n, 1, 8, 8) in [-1, 1]
    opt = torch.optim.Adam(unet.parameters(), lr=args.lr)
    g = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = x[torch.randint(len(x), (args.batch_size,), generator=g)]
        # L_simple on the scheduler's own chain: t = i/N, i ~ U{1..N}, the UNet sees timestep i − 1
        loss = sd.denoising_loss(pre.model, pre.sde, batch, prediction=pre.prediction, generator=g, reduce="mean")
        opt.zero_grad(set_to_none=True)
        loss.mean().backward()
        for group in opt.param_groups:  # linear decay to 0
            group["lr"] = args.lr * (1 - step / args.steps)
        opt.step()
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), unet.parameters(), strict=True):
                p_ema.lerp_(p, 1 - 0.995)
        if step % 250 == 0 or step == args.steps:
            print(f"step {step}: loss {loss.mean().item():.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    diffusers.DDPMPipeline(unet=ema, scheduler=scheduler).save_pretrained(args.out)
    params = sum(p.numel() for p in ema.parameters())
    print(f"wrote {args.out} (UNet2DModel, {params} parameters, DDPMScheduler)")


if __name__ == "__main__":
    main()
