"""Trainer overhead: steps/s of ``scoresde.trainer.Trainer.run`` vs a bare PyTorch loop.

The bare loop does the same work a user would write by hand: draw a batch, draw t and ε,
form x_t = α x_0 + σ ε, forward, MSE to ε, backward, AdamW step — on the same network, batch
size and data. The trainer adds what makes it trustworthy: LR warm-up, gradient clipping, the
EMA, the weighting, per-t-bin metrics, the progress bookkeeping and a final checkpoint. Both
run in the same process, interleaved, ``--repeats`` times; we report the medians of wall-clock
and of process CPU time (the CPU clock is the steadier one on a shared machine).

    python benchmarks/training.py                    # digits, tiny UNet, batch 64
    python benchmarks/training.py --case moons       # 2-D MLP: tiny steps, overhead at its worst
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from scoresde.build import build_model, build_sde
from scoresde.config import from_dict
from scoresde.trainer import Trainer

CASES = {
    "digits": {"data": {"name": "digits"}, "batch_size": 64},
    "moons": {"data": {"name": "moons"}, "batch_size": 256},
}


def bare_loop(config, dataset, steps: int) -> tuple[float, float]:
    """(wall, CPU) seconds for ``steps`` hand-written training steps (continuous t, ε-prediction, MSE)."""
    sde = build_sde(config)
    torch.manual_seed(config.seed)
    model = build_model(config, dataset.data_shape, dataset.kind, sde)
    opt = torch.optim.AdamW(model.parameters(), lr=config.optim.lr)
    x = dataset.train
    g = torch.Generator().manual_seed(0)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        x0 = x[torch.randint(0, len(x), (config.batch_size,), generator=g)]
        t = 1e-5 + (1 - 1e-5) * torch.rand(config.batch_size, generator=g)
        alpha, sigma = sde.marginal(t)
        eps = torch.randn(x0.shape, generator=g)
        shape = (-1,) + (1,) * (x0.ndim - 1)
        x_t = alpha.view(shape) * x0 + sigma.view(shape) * eps
        loss = (model(x_t, t) - eps).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start, time.process_time() - cpu


def torch_clip(grads, max_norm):
    """The clipping the trainer used before: torch.nn.utils.clip_grad_norm_ (the same numbers)."""
    return torch.nn.utils.clip_grad_norm_(grads, max_norm)


def trainer_loop(config, dataset, steps: int, clip=None) -> tuple[float, float]:
    import scoresde.trainer as train_module

    own = train_module.clip_grad_norm
    train_module.clip_grad_norm = clip or own  # "before": torch's clip_grad_norm_ on the same gradients
    try:
        return _trainer_loop(config, dataset, steps)
    finally:
        train_module.clip_grad_norm = own


def clip_micro(model, repeats: int, calls: int = 300) -> dict[str, float]:
    """µs per clipping call on ``model``'s parameter shapes (random gradients of norm > 1): median of ``repeats``."""
    from scoresde.optim import clip_grad_norm

    params = [p for p in model.parameters() if p.requires_grad]
    out = {}
    for name, fn in (("torch clip_grad_norm_", lambda: torch_clip(params, 1.0)),
                     ("scoresde clip_grad_norm", lambda: clip_grad_norm([p.grad for p in params], 1.0))):  # fmt: skip
        times = []
        for _ in range(repeats):
            for p in params:
                p.grad = torch.randn_like(p)
            start = time.process_time()
            for _ in range(calls):
                fn()
            times.append((time.process_time() - start) / calls)
        out[name] = statistics.median(times) * 1e6
    return out


def _trainer_loop(config, dataset, steps: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(from_dict({**_as_dict(config), "steps": steps}), folder, progress=False, dataset=dataset)
        start, cpu = time.perf_counter(), time.process_time()
        trainer.run()
        return time.perf_counter() - start, time.process_time() - cpu


def _as_dict(config):
    from scoresde.config import to_dict

    return to_dict(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES), default="digits")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--loss",
        choices=("simple", "default"),
        default="simple",
        help="the trainer's loss: the bare loop's ε-MSE on continuous t (simple) or the config default (EDM)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = {**CASES[args.case], "checkpoint_every": 0, "sample_every": 0, "log_every": 50}
    if args.loss == "simple":  # the bare loop's loss; "default" keeps the config's (EDM weighting, log-normal t)
        settings["loss"] = {"time": "continuous", "weighting": "simple"}
    config = from_dict(settings)
    from scoresde.data import load_dataset

    dataset = load_dataset(config.data.name, n=config.data.n, seed=config.seed)
    bare_loop(config, dataset, 3), trainer_loop(config, dataset, 3)  # warm-up
    runs: dict[str, list[tuple[float, float]]] = {"bare": [], "ours": [], "torch clip": []}
    for _ in range(args.repeats):
        runs["bare"].append(bare_loop(config, dataset, args.steps))
        runs["ours"].append(trainer_loop(config, dataset, args.steps))
        runs["torch clip"].append(trainer_loop(config, dataset, args.steps, clip=torch_clip))
    print(
        f"case {args.case}: batch {config.batch_size}, {args.steps} steps x {args.repeats} repeats, "
        f"threads {args.threads}, trainer loss {args.loss}, precondition {config.model.precondition}"
    )
    for clock, k in (("wall", 0), ("CPU", 1)):
        bare = [args.steps / r[k] for r in runs["bare"]]
        ours = [args.steps / r[k] for r in runs["ours"]]
        b, o = statistics.median(bare), statistics.median(ours)
        print(f"[{clock} clock] bare PyTorch loop: {b:7.2f} steps/s  ({', '.join(f'{v:.2f}' for v in bare)})")
        print(f"[{clock} clock] scoresde Trainer : {o:7.2f} steps/s  ({', '.join(f'{v:.2f}' for v in ours)})")
        print(f"[{clock} clock] overhead         : {100 * (b / o - 1):+.1f}%  (target <= 5%)")
        before = statistics.median(args.steps / r[k] for r in runs["torch clip"])
        print(f"[{clock} clock] Trainer, torch's clip_grad_norm_ (before): {before:7.2f} steps/s, "
              f"overhead {100 * (b / before - 1):+.1f}%")  # fmt: skip
    model = build_model(config, dataset.data_shape, dataset.kind, build_sde(config))
    micro = clip_micro(model, args.repeats)
    print("clipping alone, µs per call: " + ", ".join(f"{k} {v:.0f}" for k, v in micro.items()))


if __name__ == "__main__":
    main()
