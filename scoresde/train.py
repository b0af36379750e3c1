"""The trainer: AdamW + warm-up, clipping, EMA, exact resume, checkpoints, metrics, DDP.

A run folder holds::

    config.json                 the resolved TrainConfig
    reference.safetensors       up to 2,048 held-out samples (metrics and plots compare to them)
    metrics.jsonl               one JSON line per log interval: loss overall and per t-bin
    samples/step_00001000.png   sample grids (images) or scatter plots (points) from the EMA model
    checkpoints/step_00001000.safetensors + .json

A checkpoint is the pair: the safetensors file holds every tensor (weights, EMA weights,
optimizer moments), the JSON file the rest (step, config, optimizer hyper-parameters, the RNG
states of every rank, the weights' SHA-256). Both are written atomically, weights first, so a
JSON file marks a complete checkpoint. Resuming restores all of it; the data order is a pure
function of (seed, step), so a resumed run is bitwise identical to an uninterrupted one.

Under ``torchrun`` the same code runs with DistributedDataParallel (gloo on CPU, NCCL on GPU):
each rank draws its own slice of every global batch and its own noise; rank 0 writes.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime
import hashlib
import json
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor, nn

from .config import TrainConfig, from_dict, to_dict
from .data import Dataset, load_dataset
from .imageio import atomic_write_bytes, image_grid, save_png, scatter_image
from .losses import denoising_loss, make_time_sampler, make_weighting
from .nets import make_network
from .param import Model
from .sde import SDE, make_sde

__all__ = ["LoadedRun", "TrainResult", "Trainer", "TrainingDiverged", "latest_run", "load_run", "train"]

CHECKPOINT_FORMAT = 1
T_BINS = 10
REFERENCE_MAX = 2048


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    step: int
    loss: float | None
    interrupted: bool
    checkpoint: Path | None


# --------------------------------------------------------------------------- building blocks


def build_sde(config: TrainConfig) -> SDE:
    return make_sde(config.sde.name, config.sde.schedule)


def build_model(config: TrainConfig, data_shape: tuple[int, ...], kind: str, sde: SDE) -> Model:
    """The network from the config wrapped as ``model(x, t)`` (scoresde.param.Model)."""
    m = config.model
    net_name = m.net if m.net != "auto" else ("unet" if kind == "images" else "mlp")
    if net_name == "unet":
        options: dict[str, Any] = {"size": m.size}
        for key in ("channels", "channel_mult", "num_res_blocks", "attention_resolutions", "dropout"):
            if getattr(m, key) is not None:
                options[key] = getattr(m, key)
    elif net_name == "mlp":
        options = {"width": m.width, "depth": m.depth, "dropout": m.dropout or 0.0}
    else:
        options = {}
    net = make_network(net_name, data_shape, **options)
    return Model(net, m.prediction, m.time_label, T=sde.T, N=config.loss.N)


def _loss_parts(config: TrainConfig):
    c = config.loss
    options = {"variance": c.elbo_variance} if c.weighting == "elbo" else {}
    if c.weighting == "min-snr":
        options = {"gamma": c.min_snr_gamma}
    weighting = make_weighting(c.weighting, **options)
    if c.time == "discrete":
        time = make_time_sampler("discrete", N=c.N, importance=c.importance)
    else:
        time = make_time_sampler(c.time, eps=c.eps, importance=c.importance)
    return weighting, time


def validate(config: TrainConfig) -> None:
    """Check the settings that are cheap to check before any work; ValueError names the field."""
    from .nets import NETWORKS, UNET_SIZES
    from .param import PREDICTIONS, TIME_LABELS
    from .schedules import SCHEDULES
    from .sde import SDES

    SDES.get(config.sde.name)
    if config.sde.schedule is not None:
        SCHEDULES.get(config.sde.schedule)
    if config.model.net != "auto":
        NETWORKS.get(config.model.net)
    UNET_SIZES.get(config.model.size)
    TIME_LABELS.get(config.model.time_label)
    if config.model.prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {config.model.prediction!r}; choose one of: {', '.join(PREDICTIONS)}")
    _loss_parts(config)
    if config.loss.weighting == "elbo" and config.loss.time != "discrete":
        raise ValueError("the 'elbo' weighting needs --time discrete; use 'likelihood' for continuous time")
    if config.loss.reduce not in ("sum", "mean"):
        raise ValueError(f"loss reduce must be 'sum' or 'mean', got {config.loss.reduce!r}")
    for name in ("steps", "batch_size", "log_every", "keep", "sample_num", "sample_steps"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be a positive integer, got {getattr(config, name)}")
    for name in ("checkpoint_every", "sample_every", "threads"):
        if getattr(config, name) < 0:
            raise ValueError(f"{name} must be >= 0 (0 = only at the end / never), got {getattr(config, name)}")
    o = config.optim
    if not (o.lr > 0 and math.isfinite(o.lr)):
        raise ValueError(f"lr must be a positive number, got {o.lr}")
    if not 0 <= o.ema_decay < 1:
        raise ValueError(f"ema_decay must lie in [0, 1), got {o.ema_decay}")
    if o.grad_clip < 0 or o.warmup < 0 or o.weight_decay < 0:
        raise ValueError("grad_clip, warmup and weight_decay must be >= 0")
    if config.device not in ("auto", "cpu") and not config.device.startswith(("cuda", "mps")):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {config.device!r}")


# --------------------------------------------------------------------------- checkpoint files


def _b64(t: Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode()


def _unb64(s: str) -> Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)


def _checkpoint_files(run_dir: Path) -> list[Path]:
    """The checkpoint JSON files of a run, oldest first."""
    folder = run_dir / "checkpoints"
    return sorted(folder.glob("step_*.json")) if folder.is_dir() else []


def _read_checkpoint(meta_path: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(metadata, tensors) of one checkpoint; ValueError if it is unreadable or corrupt."""
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"checkpoint {meta_path} is corrupt (unreadable JSON: {err})") from None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT or "step" not in meta:
        raise ValueError(f"checkpoint {meta_path} is not a scoresde checkpoint (format {CHECKPOINT_FORMAT})")
    weights_path = meta_path.with_suffix(".safetensors")
    try:
        blob = weights_path.read_bytes()
    except OSError:
        raise ValueError(f"checkpoint {meta_path} has no weights file {weights_path.name}") from None
    if hashlib.sha256(blob).hexdigest() != meta.get("weights_sha256"):
        raise ValueError(f"checkpoint weights {weights_path} are corrupt (SHA-256 does not match its JSON)")
    try:
        tensors = load_safetensors(blob)
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"checkpoint weights {weights_path} are corrupt: {err}") from None
    return meta, tensors


def _prefixed(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    n = len(prefix)
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix)}


def _load_weights(module: nn.Module, state: dict[str, Tensor], where: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])[:300]
        raise ValueError(f"checkpoint {where} does not match the network its config describes: {detail}") from None


# --------------------------------------------------------------------------- loading a run


@dataclass(frozen=True)
class LoadedRun:
    """A trained run ready to sample: the EMA model in eval mode and what describes it.

    Attributes:
        model: ``model(x, t) -> prediction`` (EMA weights, eval mode, on the CPU unless moved).
        sde: the forward SDE it was trained with.
        prediction: what ``model`` returns (``eps``, ``x0``, ``v`` or ``score``).
        data_shape: the shape of one sample, without the batch dimension.
        kind: ``points`` or ``images``.
        config: the run's :class:`~scoresde.config.TrainConfig`.
        reference: held-out data (up to 2,048 samples) or ``None``.
        step: the training step of the checkpoint.
        checkpoint: the checkpoint's JSON path.
        run_dir: the run folder.
    """

    model: Model
    sde: SDE
    prediction: str
    data_shape: tuple[int, ...]
    kind: str
    config: TrainConfig
    reference: Tensor | None
    step: int
    checkpoint: Path
    run_dir: Path


def load_run(run_dir: str | os.PathLike, *, device: str | torch.device = "cpu") -> LoadedRun:
    """Load the newest checkpoint of a run folder with its EMA weights.

    Raises ValueError for a missing folder, a folder without checkpoints, and a corrupt or
    mismatched checkpoint (the message names the file).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"run folder {run_dir} does not exist")
    files = _checkpoint_files(run_dir)
    if not files:
        raise ValueError(f"run folder {run_dir} has no checkpoint (expected {run_dir}/checkpoints/step_*.json)")
    meta, tensors = _read_checkpoint(files[-1])
    try:
        config = from_dict(meta["config"])
        data_shape, kind = tuple(int(n) for n in meta["data_shape"]), str(meta["kind"])
        sde = build_sde(config)
        model = build_model(config, data_shape, kind, sde)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"checkpoint {files[-1]} has an unusable config: {err}") from None
    _load_weights(model, _prefixed(tensors, "ema."), str(files[-1]))
    model.requires_grad_(False).eval().to(device)
    reference = None
    ref_path = run_dir / "reference.safetensors"
    if ref_path.is_file():
        with contextlib.suppress(Exception):
            reference = load_safetensors(ref_path.read_bytes())["x"]
    return LoadedRun(
        model, sde, config.model.prediction, data_shape, kind, config, reference, int(meta["step"]), files[-1], run_dir
    )


def latest_run(root: str | os.PathLike = "runs") -> Path | None:
    """The run folder under ``root`` whose newest checkpoint is the most recent, or ``None``."""
    root = Path(root)
    if not root.is_dir():
        return None
    best, best_time = None, -math.inf
    for run in root.iterdir():
        files = _checkpoint_files(run) if run.is_dir() else []
        if files:
            mtime = files[-1].stat().st_mtime
            if mtime > best_time:
                best, best_time = run, mtime
    return best


# --------------------------------------------------------------------------- the trainer


def _data_indices(step: int, n: int, batch: int, seed: int, cache: dict[int, Tensor]) -> Tensor:
    """Indices of global batch ``step``: epochs are seeded permutations, so this is a pure function of step."""

    def permutation(e: int) -> Tensor:
        if e not in cache:
            if len(cache) > 4:
                cache.clear()
            cache[e] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + e))
        return cache[e]

    first, last = step * batch, (step + 1) * batch - 1
    if first // n == last // n:  # the usual case: the batch lies inside one epoch
        start = first % n
        return permutation(first // n)[start : start + batch]
    k = torch.arange(first, last + 1)
    epochs, pos = k // n, k % n
    out = torch.empty(batch, dtype=torch.long)
    for e in range(first // n, last // n + 1):
        mask = epochs == e
        out[mask] = permutation(e)[pos[mask]]
    return out


class Trainer:
    """Train a denoising model as ``config`` says, writing into ``run_dir``.

    Args:
        config: the resolved :class:`~scoresde.config.TrainConfig`.
        run_dir: the run folder (created; with ``resume`` it must hold a checkpoint).
        resume: continue from the newest checkpoint (its config is used; ``steps`` may grow).
        progress: show a rich progress bar (rank 0 only).
        dataset: a preloaded :class:`~scoresde.data.Dataset` instead of ``config.data``.
    """

    def __init__(
        self,
        config: TrainConfig,
        run_dir: str | os.PathLike,
        *,
        resume: bool = False,
        progress: bool = True,
        dataset: Dataset | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        validate(config)
        if config.threads > 0:  # on a busy machine one thread per process is often much faster
            torch.set_num_threads(config.threads)
        self.config, self.run_dir, self.progress = config, Path(run_dir), progress
        self.log = log or (lambda msg: None)
        self._setup_distributed()
        c = config
        self.dataset = dataset or load_dataset(
            c.data.name, path=c.data.path, n=c.data.n, resize=c.data.resize, heldout=c.data.heldout, seed=c.seed
        )
        if c.batch_size % self.world:
            raise ValueError(f"batch_size {c.batch_size} must be divisible by the number of ranks {self.world}")
        self.sde = build_sde(c)
        torch.manual_seed(c.seed)  # the initial weights: the same on every rank
        self.model = build_model(c, self.dataset.data_shape, self.dataset.kind, self.sde).to(self.device)
        torch.manual_seed(c.seed + 1 + self.rank)  # dropout: each rank its own stream
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        # listed once: walking the module tree every step costs more than the EMA update itself
        self._ema_pairs = (list(self.ema.parameters()), list(self.model.parameters()))
        self._ema_buffers = list(zip(self.ema.buffers(), self.model.buffers(), strict=True))
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # fused AdamW: one kernel over all parameters (CPU and CUDA); on the CPU ~6x cheaper than the default
        # per-tensor loop, ~4% of a tiny-UNet step (benchmarks/peers.py)
        self.optimizer = torch.optim.AdamW(
            self.params,
            lr=c.optim.lr,
            betas=(c.optim.beta1, c.optim.beta2),
            weight_decay=c.optim.weight_decay,
            fused=self.device.type in ("cpu", "cuda"),
        )
        self.weighting, self.time_sampler = _loss_parts(c)
        self.generator = torch.Generator(self.device).manual_seed(c.seed * 7919 + 101 + self.rank)
        self.train_x = self.dataset.train.to(self.device)
        self._perm_cache: dict[int, Tensor] = {}
        self.step = 0
        self.last_checkpoint: Path | None = None
        if resume:
            self._resume()
        self.net = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        if c.compile:
            self.net = torch.compile(self.net)
        self._stop = False

    # ---- setup --------------------------------------------------------------------------
    def _setup_distributed(self) -> None:
        """Join the process group torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK), if any."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        cuda = torch.cuda.is_available() and self.config.device != "cpu"
        if self.config.device == "auto":
            device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu")
        else:
            device = torch.device(self.config.device)
        if device.type == "cuda":
            torch.cuda.set_device(device)  # before NCCL starts, so each rank talks from its own GPU
        self._owns_group = world > 1 and not dist.is_initialized()
        if self._owns_group:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.device = device

    def close(self) -> None:
        """Leave the process group if this trainer created it."""
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self._owns_group = False

    def _resume(self) -> None:
        files = _checkpoint_files(self.run_dir)
        if not files:
            raise ValueError(f"nothing to resume: {self.run_dir} has no checkpoint")
        meta, tensors = _read_checkpoint(files[-1])
        try:
            self._restore(meta, tensors, files[-1])
        except (KeyError, TypeError, IndexError) as err:
            raise ValueError(f"checkpoint {files[-1]} is incomplete or corrupt (bad field {err})") from None

    def _restore(self, meta: dict[str, Any], tensors: dict[str, Tensor], path: Path) -> None:
        if tuple(meta["data_shape"]) != self.dataset.data_shape:
            raise ValueError(
                f"checkpoint {path} was trained on data of shape {tuple(meta['data_shape'])}, "
                f"the data now has shape {self.dataset.data_shape}"
            )
        _load_weights(self.model, _prefixed(tensors, "model."), str(path))
        _load_weights(self.ema, _prefixed(tensors, "ema."), str(path))
        optim_state = meta["optimizer"]
        state = {}
        for idx, scalars in optim_state["state"].items():
            entry = dict(scalars)
            entry.update(_prefixed(tensors, f"optim.{idx}."))
            state[int(idx)] = {k: v.to(self.device) if k != "step" else v for k, v in entry.items()}
        self.optimizer.load_state_dict({"state": state, "param_groups": optim_state["param_groups"]})
        rng = meta["rng"]
        if len(rng) != self.world:
            self.log(
                f"warning: checkpoint was written by {len(rng)} ranks, now {self.world}: resume is not bitwise exact"
            )
        mine = rng[self.rank % len(rng)]
        torch.set_rng_state(_unb64(mine["torch"]))
        if mine.get("cuda") and self.device.type == "cuda":
            torch.cuda.set_rng_state(_unb64(mine["cuda"]), self.device)
        self.generator.set_state(_unb64(mine["noise"]))
        self.step = int(meta["step"])
        self.last_checkpoint = path

    # ---- one step ------------------------------------------------------------------------
    def _lr(self, step: int) -> float:
        warmup = self.config.optim.warmup
        return self.config.optim.lr * min(1.0, (step + 1) / warmup) if warmup else self.config.optim.lr

    def _batch(self, step: int) -> Tensor:
        c = self.config
        idx = _data_indices(step, len(self.train_x), c.batch_size, c.seed, self._perm_cache)
        per_rank = c.batch_size // self.world
        return self.train_x[idx[self.rank * per_rank : (self.rank + 1) * per_rank].to(self.device)]

    def train_step(self, x0: Tensor) -> tuple[Tensor, Tensor]:
        """One optimizer step on batch ``x0``; returns (per-sample loss, times) detached."""
        c = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr(self.step)
        autocast = torch.autocast("cuda", torch.bfloat16, enabled=c.bf16 and self.device.type == "cuda")
        with autocast:
            loss, draw = denoising_loss(
                self.net,
                self.sde,
                x0,
                weighting=self.weighting,
                time=self.time_sampler,
                prediction=c.model.prediction,
                generator=self.generator,
                reduce=c.loss.reduce,
                return_draw=True,
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.mean().backward()
        if c.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, c.optim.grad_clip)
        self.optimizer.step()
        self._update_ema()
        self.step += 1
        return loss.detach(), draw.t

    @torch.no_grad()
    def _update_ema(self) -> None:
        o = self.config.optim
        # warm-up as TensorFlow's ExponentialMovingAverage(num_updates): decay = min(d, (1+n)/(10+n))
        decay = min(o.ema_decay, (1 + self.step) / (10 + self.step)) if o.ema_warmup else o.ema_decay
        torch._foreach_lerp_(*self._ema_pairs, 1 - decay)
        for b_ema, b in self._ema_buffers:
            b_ema.copy_(b)

    # ---- the loop ------------------------------------------------------------------------
    def run(self) -> TrainResult:
        c = self.config
        if self.rank == 0:
            self._write_run_files()
        bins = torch.zeros(T_BINS, device=self.device, dtype=torch.float64)
        counts = torch.zeros(T_BINS, device=self.device, dtype=torch.float64)
        running = torch.zeros((), device=self.device, dtype=torch.float64)
        n_running, last_loss, t_log = 0, None, time.perf_counter()
        start_step = self.step
        previous_handler = self._install_sigint()
        bar = self._progress_bar(start_step)
        try:
            while self.step < c.steps:
                loss, t = self.train_step(self._batch(self.step))
                running += loss.sum()
                n_running += loss.numel()
                k = (t / self.sde.T * T_BINS).long().clamp_(0, T_BINS - 1).to(self.device)
                bins.index_add_(0, k, loss.to(bins.dtype))
                counts.index_add_(0, k, torch.ones_like(bins[k]))
                if bar is not None:
                    bar[0].update(bar[1], advance=1)
                at_end = self.step == c.steps
                if self.step % c.log_every == 0 or at_end:
                    now = time.perf_counter()
                    last_loss = self._log_metrics(running, n_running, bins, counts, (now - t_log), bar)
                    t_log = now
                    running.zero_(), bins.zero_(), counts.zero_()
                    n_running = 0
                if c.checkpoint_every and self.step % c.checkpoint_every == 0 and not at_end:
                    self._check_finite(running, n_running)
                    self.save_checkpoint()
                if c.sample_every and self.step % c.sample_every == 0 and self.rank == 0:
                    self.preview()
                if self._stop_requested():
                    self._check_finite(running, n_running)
                    self.save_checkpoint()
                    return TrainResult(self.run_dir, self.step, last_loss, True, self.last_checkpoint)
            if self.step > start_step or self.last_checkpoint is None:
                self._check_finite(running, n_running)
                self.save_checkpoint()
                if c.sample_every and self.step % c.sample_every and self.rank == 0:
                    self.preview()
            return TrainResult(self.run_dir, self.step, last_loss, False, self.last_checkpoint)
        finally:
            if bar is not None:
                bar[0].stop()
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)

    def _check_finite(self, running: Tensor, n: int) -> None:
        if n and not torch.isfinite(running).item():
            self._diverged()

    def _diverged(self) -> None:
        kept = (
            f"the last good checkpoint is {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint was saved"
        )
        raise TrainingDiverged(
            f"the loss became non-finite by step {self.step}; training stopped and {kept} "
            "(try a lower --lr, a smaller --grad-clip or another --weighting)"
        )

    def _log_metrics(self, running, n, bins, counts, seconds, bar) -> float:
        totals = torch.cat([running.reshape(1), torch.tensor([float(n)], device=self.device, dtype=running.dtype)])
        if self.world > 1:
            for t in (totals, bins, counts):
                dist.all_reduce(t)
        loss = (totals[0] / totals[1]).item()
        if not math.isfinite(loss):
            self._diverged()
        steps = self.config.log_every if self.step % self.config.log_every == 0 else self.step % self.config.log_every
        by_t = [b / k if k > 0 else None for b, k in zip(bins.tolist(), counts.tolist(), strict=True)]
        record = {
            "step": self.step,
            "loss": loss,
            "loss_by_t": by_t,
            "t_bins": [i * self.sde.T / T_BINS for i in range(T_BINS + 1)],
            "lr": self._lr(self.step - 1),
            "steps_per_s": steps / seconds if seconds > 0 else None,
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        if self.rank == 0:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            if bar is not None:
                speed = f"{record['steps_per_s']:.1f} steps/s" if record["steps_per_s"] else ""
                bar[0].update(bar[1], loss=f"{loss:.4f}", speed=speed)
        return loss

    # ---- checkpoints ---------------------------------------------------------------------
    def _write_run_files(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.run_dir / "config.json", json.dumps(to_dict(self.config), indent=2).encode())
        ref = self.run_dir / "reference.safetensors"
        if not ref.exists():
            x = self.dataset.heldout[:REFERENCE_MAX].contiguous().cpu()
            atomic_write_bytes(ref, save_safetensors({"x": x}, metadata={"kind": self.dataset.kind}))

    def _rng_state(self) -> dict[str, str | None]:
        cuda = _b64(torch.cuda.get_rng_state(self.device)) if self.device.type == "cuda" else None
        return {"torch": _b64(torch.get_rng_state()), "cuda": cuda, "noise": _b64(self.generator.get_state())}

    def save_checkpoint(self) -> Path:
        """Write the checkpoint of the current step (rank 0) and prune to the newest ``keep``."""
        rng = [self._rng_state()]
        if self.world > 1:
            gathered: list[Any] = [None] * self.world
            dist.all_gather_object(gathered, rng[0])
            rng = gathered
        path = self.run_dir / "checkpoints" / f"step_{self.step:08d}.json"
        if self.rank == 0:
            tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
            tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in self.ema.state_dict().items()})
            optim = self.optimizer.state_dict()
            scalars: dict[str, dict[str, Any]] = {}
            for idx, entry in optim["state"].items():
                scalars[str(idx)] = {}
                for key, value in entry.items():
                    if isinstance(value, Tensor):
                        tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
                    else:
                        scalars[str(idx)][key] = value
            blob = save_safetensors(tensors)
            meta = {
                "format": CHECKPOINT_FORMAT,
                "step": self.step,
                "config": to_dict(self.config),
                "data_shape": list(self.dataset.data_shape),
                "kind": self.dataset.kind,
                "world_size": self.world,
                "optimizer": {"state": scalars, "param_groups": optim["param_groups"]},
                "rng": rng,
                "weights_sha256": hashlib.sha256(blob).hexdigest(),
                "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            }
            atomic_write_bytes(path.with_suffix(".safetensors"), blob)  # weights first: the JSON marks completion
            atomic_write_bytes(path, json.dumps(meta).encode())
            for old in _checkpoint_files(self.run_dir)[: -self.config.keep]:
                old.unlink(missing_ok=True)
                old.with_suffix(".safetensors").unlink(missing_ok=True)
        if self.world > 1:
            dist.barrier()
        self.last_checkpoint = path
        return path

    # ---- samples -------------------------------------------------------------------------
    @torch.no_grad()
    def preview(self) -> Path | None:
        """Sample the EMA model and save a grid (images) or scatter plot (points) under samples/."""
        try:
            from .samplers import sample
        except ImportError:  # the samplers land separately; previews wait for them
            return None
        c = self.config
        g = torch.Generator(self.device).manual_seed(c.seed + 12345)  # same noise every time: comparable pictures
        shape = (c.sample_num, *self.dataset.data_shape)
        clip = {"clip_x0": 1.0} if self.dataset.kind == "images" else {}
        x = sample(
            self.ema,
            self.sde,
            shape,
            solver=c.sample_solver,
            steps=c.sample_steps,
            prediction=c.model.prediction,
            generator=g,
            **clip,
        )
        if self.dataset.kind == "images":
            zoom = max(1, math.ceil(32 / x.shape[-1]))  # small images (8×8 digits) enlarged to be seen
            pixels = image_grid(x.clamp(-1, 1).repeat_interleave(zoom, -1).repeat_interleave(zoom, -2))
        else:
            pixels = scatter_image(x, self.dataset.heldout)
        return save_png(self.run_dir / "samples" / f"step_{self.step:08d}.png", pixels)

    # ---- Ctrl-C and progress ---------------------------------------------------------------
    def _install_sigint(self):
        if not _main_thread():
            return None

        def handler(signum, frame):
            if self._stop:  # second Ctrl-C: stop now
                raise KeyboardInterrupt
            self._stop = True
            self.log("interrupt: finishing this step, saving a checkpoint (Ctrl-C again to abort)")

        return signal.signal(signal.SIGINT, handler)

    def _stop_requested(self) -> bool:
        if self.world == 1:
            return self._stop
        flag = torch.tensor([1.0 if self._stop else 0.0], device=self.device)
        dist.all_reduce(flag)
        return bool(flag.item() > 0)

    def _progress_bar(self, start: int):
        if not self.progress or self.rank != 0:
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[speed]}"),
            TimeRemainingColumn(),
        )
        task = bar.add_task("train", total=self.config.steps, completed=start, loss="…", speed="")
        bar.start()
        return bar, task


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def train(
    config: TrainConfig, run_dir: str | os.PathLike, *, resume: bool = False, progress: bool = True, **kwargs
) -> TrainResult:
    """Train as ``config`` says into ``run_dir`` (see :class:`Trainer`)."""
    trainer = Trainer(config, run_dir, resume=resume, progress=progress, **kwargs)
    try:
        return trainer.run()
    finally:
        trainer.close()
