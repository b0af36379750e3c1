"""Training loops with snapshots, shared by ``peers.py --fair`` and ``recipe.py``.

Both loops train once for the largest step count asked for and keep a copy of the averaged
weights at every smaller count: a run stopped at step S is bit for bit the first S steps of a
longer run (constant learning rate after warm-up, no schedule that depends on the total), so one
run serves the equal-examples and the equal-wall-clock comparison. Time is process CPU time of
the training steps alone (snapshots and evaluation are not counted).
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F

N_TRAIN = 1000

# diffusers' examples/unconditional_image_generation/train_unconditional.py defaults:
# --ema_max_decay 0.9999, --ema_inv_gamma 1.0, --ema_power 3/4, EMAModel(use_ema_warmup=True),
# clip_grad_norm_(..., 1.0)
DIFFUSERS_EMA = {"decay": 0.9999, "use_ema_warmup": True, "inv_gamma": 1.0, "power": 3 / 4}


def ours_train(config, dataset, snapshots, *, extra_emas=(), budget=None):
    """``Trainer.train_step`` to ``max(snapshots)``; returns ({S: {name: model}}, {S: cpu seconds}).

    The model under name ``"ema"`` is the trainer's own EMA; ``extra_emas`` are further decays
    (``ema_0.999`` ...) or power-function EMAs (``"power6.94"``: γ), and ``"raw"`` (the weights
    themselves), averaged on the side from the same run (they do not change the training). With
    ``budget`` (CPU seconds) training also stops when it is spent: the snapshot is then keyed by
    the step reached (as :func:`diffusers_train_ema`).
    """
    from scoresde.ema import EMA
    from scoresde.trainer import Trainer

    trainer = Trainer(config, None, progress=False, dataset=dataset)
    extras = {}
    for d in extra_emas:  # a decay (with the config's warm-up) or "power γ" (Karras et al. 2024)
        if isinstance(d, str) and d.startswith("power"):
            extras[f"ema_{d}"] = EMA(trainer.model, 0.0, gamma=float(d.removeprefix("power")))
        else:
            extras[f"ema_{d}"] = EMA(trainer.model, float(d), config.optim.ema_warmup)
    out, seconds, spent = {}, {}, 0.0
    for target in sorted(set(snapshots)):
        start = time.process_time()
        while trainer.step < target and (budget is None or spent + time.process_time() - start < budget):
            step = trainer.step
            trainer.train_step(trainer.batch(step))
            for e in extras.values():
                e.update(step)
        spent += time.process_time() - start
        models = {"ema": copy.deepcopy(trainer.ema)}
        models.update({k: copy.deepcopy(e.module) for k, e in extras.items()})
        if extra_emas:
            models["raw"] = copy.deepcopy(trainer.model).eval().requires_grad_(False)
        out[trainer.step], seconds[trainer.step] = models, spent
        if budget is not None and spent >= budget:
            break
    trainer.close()
    return out, seconds


def diffusers_train_ema(net, data, snapshots, batch, *, lr=1e-3, seed=0, budget=None):
    """The diffusers example's loop with its EMAModel and gradient clipping, AdamW at ``lr`` (constant).

    Returns ({S: EMA copy of ``net``}, {S: cpu seconds}). With ``budget`` (CPU seconds) the loop also
    stops when the budget is spent: the snapshot is then keyed by the step reached.
    """
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    scheduler = DDPMScheduler(num_train_timesteps=N_TRAIN, beta_schedule="linear")
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    ema = EMAModel(net.parameters(), **DIFFUSERS_EMA)
    g = torch.Generator().manual_seed(seed)
    net.train()
    out, seconds, spent, step = {}, {}, 0.0, 0
    for target in sorted(set(snapshots)):
        start = time.process_time()
        while step < target and (budget is None or spent + time.process_time() - start < budget):
            x0 = data[torch.randint(0, len(data), (batch,), generator=g)]
            noise = torch.randn(x0.shape, generator=g)
            timesteps = torch.randint(0, N_TRAIN, (batch,), generator=g)
            noisy = scheduler.add_noise(x0, noise, timesteps)
            loss = F.mse_loss(net(noisy, timesteps.to(noisy.dtype)), noise)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            ema.step(net.parameters())
            step += 1
        spent += time.process_time() - start
        snap = copy.deepcopy(net).eval().requires_grad_(False)
        ema.copy_to(snap.parameters())
        out[step], seconds[step] = snap, spent
        if budget is not None and spent >= budget:
            break
    return out, seconds


def mean_sd(values) -> tuple[float, float]:
    import statistics

    values = list(values)
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else float("nan"))
