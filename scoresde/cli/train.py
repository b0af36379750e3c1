"""``scoresde train``: train a score model; every flag mirrors a field of :class:`~scoresde.config.TrainConfig`.

Precedence: built-in defaults < ``--config run.toml`` < flags. With ``--resume`` the run's own
config is used and only the run-length and logging settings may change.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ..data import DATASETS
from ..losses import TIME_SAMPLERS, WEIGHTINGS
from ..nets import NETWORKS, UNET_SIZES
from ..param import PREDICTIONS, TIME_LABELS
from ..schedules import SCHEDULES
from ..sde import SDES
from .app import app, fail

# flags that may differ from the saved config when resuming
RESUMABLE = {
    "steps",
    "log_every",
    "checkpoint_every",
    "keep",
    "sample_every",
    "sample_num",
    "sample_solver",
    "sample_steps",
    "compile",
    "bf16",
    "device",
    "threads",
}


def _one_of(names) -> str:
    return "one of: " + ", ".join(names)


def _ints(text: str | None, flag: str) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        fail(f"{flag} must be comma-separated integers like 1,2,2, got {text!r}")
    if not values:
        fail(f"{flag} needs at least one integer, got {text!r}")
    return values


@app.command()
def train(
    out: Annotated[Path | None, typer.Option("--out", help="Run folder (default: runs/<data>-<date>-<time>).")] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", help="TOML file with the config (sections as in config.json).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its newest checkpoint.")
    ] = False,
    sde: Annotated[str | None, typer.Option(help=f"Forward SDE, {_one_of(SDES)}.")] = None,
    schedule: Annotated[str | None, typer.Option(help=f"β schedule for vp/subvp, {_one_of(SCHEDULES)}.")] = None,
    data: Annotated[
        str | None, typer.Option(help=f"Dataset, {_one_of(DATASETS)}, or a folder / .npy / .npz path.")
    ] = None,
    data_path: Annotated[str | None, typer.Option(help="Path for --data folder / array.")] = None,
    n_points: Annotated[int | None, typer.Option(help="Size of a toy 2-D set.")] = None,
    resize: Annotated[int | None, typer.Option(help="Resize images to this square side.")] = None,
    heldout: Annotated[float | None, typer.Option(help="Held-out fraction of the data.")] = None,
    net: Annotated[str | None, typer.Option(help=f"Network, auto or {_one_of(NETWORKS)}.")] = None,
    prediction: Annotated[str | None, typer.Option(help=f"What the network predicts, {_one_of(PREDICTIONS)}.")] = None,
    time_label: Annotated[
        str | None, typer.Option(help=f"How t is shown to the network, {_one_of(TIME_LABELS)}.")
    ] = None,
    unet_size: Annotated[str | None, typer.Option(help=f"UNet size, {_one_of(UNET_SIZES)}.")] = None,
    channels: Annotated[int | None, typer.Option(help="UNet base channels (overrides the size).")] = None,
    channel_mult: Annotated[str | None, typer.Option(help="UNet channel multipliers, e.g. 1,2,2,2.")] = None,
    res_blocks: Annotated[int | None, typer.Option(help="UNet residual blocks per level.")] = None,
    attention: Annotated[str | None, typer.Option(help="UNet attention resolutions, e.g. 16 or 8,16.")] = None,
    dropout: Annotated[float | None, typer.Option(help="Dropout probability.")] = None,
    width: Annotated[int | None, typer.Option(help="MLP hidden width.")] = None,
    depth: Annotated[int | None, typer.Option(help="MLP residual blocks.")] = None,
    weighting: Annotated[str | None, typer.Option(help=f"Loss weighting λ(t), {_one_of(WEIGHTINGS)}.")] = None,
    time: Annotated[str | None, typer.Option(help=f"Training times, {_one_of(TIME_SAMPLERS)}.")] = None,
    discrete_steps: Annotated[int | None, typer.Option(help="N, the number of steps of the discrete chain.")] = None,
    eps: Annotated[float | None, typer.Option(help="Smallest continuous training time.")] = None,
    importance: Annotated[
        bool | None, typer.Option("--importance/--no-importance", help="Importance-sample t ∝ w(t).")
    ] = None,
    elbo_variance: Annotated[
        str | None, typer.Option(help="Reverse variance of the elbo weighting: large (β) or small (β̃).")
    ] = None,
    min_snr_gamma: Annotated[float | None, typer.Option(help="γ of the min-snr weighting.")] = None,
    reduce: Annotated[str | None, typer.Option(help="Loss over dimensions: mean or sum.")] = None,
    lr: Annotated[float | None, typer.Option(help="AdamW learning rate.")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="AdamW weight decay.")] = None,
    warmup: Annotated[int | None, typer.Option(help="Linear learning-rate warm-up steps.")] = None,
    grad_clip: Annotated[float | None, typer.Option(help="Clip the gradient norm (0 = off).")] = None,
    ema_decay: Annotated[float | None, typer.Option(help="EMA decay of the weights.")] = None,
    steps: Annotated[int | None, typer.Option(help="Total optimizer steps.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Global batch size (split across ranks).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    log_every: Annotated[int | None, typer.Option(help="Write metrics every this many steps.")] = None,
    checkpoint_every: Annotated[
        int | None, typer.Option(help="Checkpoint every this many steps (and at the end).")
    ] = None,
    keep: Annotated[int | None, typer.Option(help="Keep this many newest checkpoints.")] = None,
    sample_every: Annotated[
        int | None, typer.Option(help="Save a sample picture every this many steps (0 = never).")
    ] = None,
    sample_num: Annotated[int | None, typer.Option(help="Samples in each picture.")] = None,
    sample_solver: Annotated[str | None, typer.Option(help="Solver for the sample pictures.")] = None,
    sample_steps: Annotated[int | None, typer.Option(help="Solver steps for the sample pictures.")] = None,
    compile: Annotated[bool | None, typer.Option("--compile/--no-compile", help="torch.compile the network.")] = None,
    bf16: Annotated[bool | None, typer.Option("--bf16/--no-bf16", help="bf16 autocast on CUDA.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads for torch (default 1; 0 = torch's default, all cores).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Train a score model: `scoresde train` alone trains a small UNet on 8x8 digits in a few minutes."""
    flags = {
        "sde.name": sde,
        "sde.schedule": schedule,
        "data.name": data,
        "data.path": data_path,
        "data.n": n_points,
        "data.resize": resize,
        "data.heldout": heldout,
        "model.net": net,
        "model.prediction": prediction,
        "model.time_label": time_label,
        "model.size": unet_size,
        "model.channels": channels,
        "model.channel_mult": _ints(channel_mult, "--channel-mult"),
        "model.num_res_blocks": res_blocks,
        "model.attention_resolutions": _ints(attention, "--attention"),
        "model.dropout": dropout,
        "model.width": width,
        "model.depth": depth,
        "loss.weighting": weighting,
        "loss.time": time,
        "loss.N": discrete_steps,
        "loss.eps": eps,
        "loss.importance": importance,
        "loss.elbo_variance": elbo_variance,
        "loss.min_snr_gamma": min_snr_gamma,
        "loss.reduce": reduce,
        "optim.lr": lr,
        "optim.weight_decay": weight_decay,
        "optim.warmup": warmup,
        "optim.grad_clip": grad_clip,
        "optim.ema_decay": ema_decay,
        "steps": steps,
        "batch_size": batch_size,
        "seed": seed,
        "log_every": log_every,
        "checkpoint_every": checkpoint_every,
        "keep": keep,
        "sample_every": sample_every,
        "sample_num": sample_num,
        "sample_solver": sample_solver,
        "sample_steps": sample_steps,
        "compile": compile,
        "bf16": bf16,
        "device": device,
        "threads": threads,
    }
    from .. import config as cfg
    from ..train import Trainer, TrainingDiverged, _checkpoint_files, _read_checkpoint

    overrides: dict[str, Any] = {}
    try:
        if config_file is not None:
            overrides = cfg.load_toml(config_file)
        for dotted, value in flags.items():
            if value is not None:
                cfg.replace_path(overrides, dotted, value)
        if resume:
            if out is None:
                fail("--resume needs --out, the run folder to continue")
            files = _checkpoint_files(out)
            if not out.is_dir() or not files:
                fail(f"nothing to resume: {out} has no checkpoint")
            saved = _read_checkpoint(files[-1])[0]["config"]
            config = cfg.from_dict(saved)
            _refuse_changes(saved, overrides)
            config = cfg.from_dict(cfg.merge(saved, overrides))
        else:
            config = cfg.from_dict(overrides)
            if out is None:
                stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
                out = Path("runs") / f"{Path(config.data.name).stem}-{stamp}"
            if _checkpoint_files(out):
                fail(
                    f"run folder {out} already holds checkpoints; pass --resume to continue it or choose another --out"
                )
        trainer = Trainer(config, out, resume=resume, progress=not quiet, log=lambda m: typer.echo(m, err=True))
        if not quiet and trainer.rank == 0:
            typer.echo(f"training {config.steps} steps into {out} on {trainer.device} ({trainer.world} rank(s))")
        try:
            result = trainer.run()
        finally:
            trainer.close()
    except KeyboardInterrupt:
        fail("aborted by a second Ctrl-C; the newest complete checkpoint is kept", code=130)
    except TrainingDiverged as err:
        fail(str(err))
    except (ValueError, TypeError, OSError) as err:
        fail(str(err))
    if result.interrupted:
        typer.echo(
            f"interrupted at step {result.step}; checkpoint saved: {result.checkpoint}\n"
            f"continue with: scoresde train --out {out} --resume",
            err=True,
        )
        raise typer.Exit(130)
    if trainer.rank == 0:
        loss = f", final loss {result.loss:.4f}" if result.loss is not None else ""
        typer.echo(f"done: step {result.step}{loss}; run folder {out}")


def _refuse_changes(saved: dict[str, Any], overrides: dict[str, Any], prefix: str = "") -> None:
    for key, value in overrides.items():
        if isinstance(value, dict):
            _refuse_changes(saved.get(key, {}), value, f"{prefix}{key}.")
            continue
        old = saved.get(key)
        if isinstance(value, tuple):
            value = list(value)
        if prefix == "" and key in RESUMABLE:
            continue
        if json.dumps(old) != json.dumps(value):
            raise ValueError(
                f"cannot change {prefix}{key} when resuming (the run has {old!r}, got {value!r}); "
                f"only {', '.join(sorted(RESUMABLE))} may change"
            )
