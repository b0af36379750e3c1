"""The training configuration's schema: one frozen dataclass per concern, nested in :class:`TrainConfig`.

The one source of truth the CLI and TOML files mirror: every field carries its :func:`option`
metadata (help text, flag, allowed names, bounds, whether it may change on resume), from which
:mod:`scoresde.config` lists, checks, reads and writes configs and the CLI builds its flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["DataConfig", "LossConfig", "ModelConfig", "OptimConfig", "SDEConfig", "TrainConfig", "option"]


def option(
    help: str,
    *,
    flag: str | None = None,
    choices: str | tuple[str, ...] | None = None,
    also: tuple[str, ...] = (),
    check: bool = True,
    resumable: bool = False,
    ge: float | None = None,
    gt: float | None = None,
    lt: float | None = None,
) -> dict[str, Any]:
    """The metadata of a config field: everything the CLI and :func:`scoresde.config.check` need to know.

    Args:
        help: the ``--help`` text; ``{choices}`` in it becomes "one of: a, b, c".
        flag: the CLI flag (default: ``--`` and the field name with dashes).
        choices: the allowed names: a registry given as ``"module.NAME"`` inside scoresde
            (``"losses.WEIGHTINGS"``, read when needed) or a tuple of names.
        also: further allowed names (``auto`` for the network).
        check: :func:`scoresde.config.check` refuses a value that is not a choice (off for the data,
            a path is allowed too).
        resumable: the field may change when a run is resumed.
        ge, gt, lt: bounds checked by :func:`scoresde.config.check` (``>=``, ``>``, ``<``).
    """
    return {
        "help": help,
        "flag": flag,
        "choices": choices,
        "also": also,
        "check": check,
        "resumable": resumable,
        "bounds": {k: v for k, v in (("ge", ge), ("gt", gt), ("lt", lt)) if v is not None},
    }


def _f(default: Any, help: str, **kwargs) -> Any:
    """A dataclass field with :func:`option` metadata (mutable defaults are not used)."""
    return field(default=default, metadata=option(help, **kwargs))


@dataclass(frozen=True)
class SDEConfig:
    """The forward SDE: a name from ``SDES`` and, for VP/sub-VP, a schedule from ``SCHEDULES``."""

    name: str = _f("vp", "Forward SDE, {choices}.", flag="--sde", choices="sde.SDES")
    schedule: str | None = _f(None, "β schedule for vp/subvp, {choices}.", choices="schedules.SCHEDULES")


@dataclass(frozen=True)
class DataConfig:
    """The data: a name from ``DATASETS`` or a path; ``n`` sizes toy sets; ``heldout`` fraction."""

    name: str = _f(
        "digits",
        "Dataset, {choices}, or a folder / .npy / .npz path.",
        flag="--data",
        choices="data.DATASETS",
        check=False,  # a path is allowed too; load_dataset checks it
    )
    path: str | None = _f(None, "Path for --data folder / array.", flag="--data-path")
    n: int = _f(10_000, "Size of a toy 2-D set.", flag="--n-points")
    resize: int | None = _f(None, "Resize images to this square side.", ge=1)
    heldout: float = _f(0.1, "Held-out fraction of the data.")
    stream: str = _f(
        "auto",
        "Read a folder / .npy lazily with DataLoader workers: on, off, or auto (when the decoded set exceeds 1 GiB).",
        choices=("auto", "on", "off"),
        resumable=True,  # the batches are the same either way
    )
    workers: int = _f(
        2, "DataLoader worker processes when streaming (0 = read in the training process).", resumable=True, ge=0
    )
    hflip: bool = _f(False, "Random horizontal flips of training images (deterministic in seed and step).")
    strict: bool = _f(False, "Refuse an image folder with an unreadable file (else it is skipped with one warning).")


@dataclass(frozen=True)
class ModelConfig:
    """The network and what it predicts.

    ``net = "auto"`` picks ``mlp`` for points and ``unet`` for images. UNet fields left ``None``
    come from the named ``size`` (``UNET_SIZES``); ``width``/``depth`` size the MLP.
    """

    net: str = _f("auto", "Network, auto or {choices}.", choices="nets.NETWORKS", also=("auto",))
    prediction: str = _f("eps", "What the network predicts, {choices}.", choices="param.PREDICTIONS")
    time_label: str = _f("scaled", "How t is shown to the network, {choices}.", choices="param.TIME_LABELS")
    size: str = _f("tiny", "UNet size, {choices}.", flag="--unet-size", choices="nets.UNET_SIZES")
    channels: int | None = _f(None, "UNet base channels (overrides the size).", ge=1)
    channel_mult: tuple[int, ...] | None = _f(None, "UNet channel multipliers, e.g. 1,2,2,2.", ge=1)
    num_res_blocks: int | None = _f(None, "UNet residual blocks per level.", flag="--res-blocks", ge=1)
    attention_resolutions: tuple[int, ...] | None = _f(
        None, "UNet attention resolutions, e.g. 16 or 8,16.", flag="--attention", ge=1
    )
    dropout: float | None = _f(None, "Dropout probability.", ge=0, lt=1)
    embedding: str = _f(
        "scale-shift",
        "How UNet blocks take the time and class embedding, {choices} (scale-shift: after the norm, as "
        "ADM; add: before it, as Ho et al., which the norm erases at one channel per group).",
        choices="nets.EMBEDDINGS",
    )
    conditional: bool = _f(
        False, "Class-conditional model on the data's labels, for classifier-free guidance (scoresde.guidance)."
    )
    width: int = _f(128, "MLP hidden width.", ge=1)
    depth: int = _f(3, "MLP residual blocks.", ge=0)
    precondition: str = _f(
        "edm",
        "Preconditioning, {choices} (edm: Karras et al. 2022; the model then predicts x0).",
        choices="param.PRECONDITIONS",
    )
    sigma_data: float = _f(0.5, "σ_data of the edm preconditioning and weighting.", gt=0)


@dataclass(frozen=True)
class LossConfig:
    """The denoising loss (scoresde.losses): weighting, time sampling and reduction over dimensions.

    A weighting's or time sampler's options are the fields named after its factory's parameters,
    prefixed by the entry's name when specific to it (``elbo_variance``, ``min_snr_gamma``; see
    :func:`scoresde.config.registry_options`).
    """

    weighting: str = _f("edm", "Loss weighting λ(t), {choices}.", choices="losses.WEIGHTINGS")
    time: str = _f(
        "auto",
        "Training times, {choices}, or auto: lognormal for the edm weighting (EDM's pairing), else discrete.",
        choices="losses.TIME_SAMPLERS",
        also=("auto",),
    )
    N: int = _f(1000, "N, the number of steps of the discrete chain.", flag="--discrete-steps")
    t_min: float = _f(1e-5, "Smallest continuous training time.", gt=0, lt=1)
    importance: bool = _f(False, "Importance-sample t ∝ w(t).")
    elbo_variance: str = _f("large", "Reverse variance of the elbo weighting: large (β) or small (β̃).")
    min_snr_gamma: float = _f(5.0, "γ of the min-snr weighting.", gt=0)
    lognormal_p_mean: float = _f(-1.2, "Mean of ln(σ/α) for --time lognormal (EDM's P_mean).")
    lognormal_p_std: float = _f(1.2, "Standard deviation of ln(σ/α) for --time lognormal (EDM's P_std).", gt=0)
    reduce: str = _f("mean", "Loss over dimensions: mean or sum.", choices=("mean", "sum"))
    cond_drop: float = _f(
        0.1, "Label dropout of a --conditional run (p_uncond of classifier-free guidance).", ge=0, lt=1
    )

    @property
    def time_sampler(self) -> str:
        """``time`` with ``auto`` resolved: ``lognormal`` for the ``edm`` weighting, else ``discrete``.

        So ``--weighting likelihood`` alone keeps drawing t uniformly (an unbiased ELBO), as before
        the EDM recipe became the default; only the edm weighting gets EDM's log-normal times.
        """
        if self.time != "auto":
            return self.time
        return "lognormal" if self.weighting == "edm" else "discrete"


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up, gradient clipping and an EMA of the weights.

    The defaults suit the few-minute CPU demo; Ho et al. 2020 (App. B) use lr 2e-4, warm-up 5000,
    clipping at 1 and EMA decay 0.9999 for CIFAR-10.
    """

    lr: float = _f(1e-3, "AdamW learning rate.", gt=0)
    weight_decay: float = _f(0.0, "AdamW weight decay.", ge=0)
    beta1: float = _f(0.9, "AdamW β₁.")
    beta2: float = _f(0.999, "AdamW β₂.")
    warmup: int = _f(100, "Linear learning-rate warm-up steps.", ge=0)
    grad_clip: float = _f(1.0, "Clip the gradient norm (0 = off).", ge=0)
    ema_decay: float = _f(0.995, "EMA decay of the weights.", ge=0, lt=1)
    ema_warmup: bool = _f(True, "EMA decay warm-up min(decay, (1+n)/(10+n)).")
    ema_gamma: float = _f(
        0.0,
        "Power-function EMA exponent γ (Karras et al. 2024), replacing --ema-decay and its warm-up: "
        "d_n = (1 − 1/(n+1))^(γ+1); 0 = off; γ 6.94 ↔ σ_rel 0.10, 16.97 ↔ 0.05.",
        ge=0,
    )


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs; saved as JSON beside each checkpoint.

    The field defaults train a tiny UNet for 1,200 steps of batch 64; a new run named by its data
    (``scoresde train``, :func:`scoresde.data_defaults.resolve`) starts from that data's defaults
    instead (:data:`scoresde.data_defaults.DATA_DEFAULTS`: the demo trains a 16-channel tiny UNet on
    8×8 digits for 3 minutes). The run length is ``steps``, ``minutes`` (:mod:`scoresde.budget`) or
    both, whichever ends first; at least one must be set. ``checkpoint_every = 0`` checkpoints only at the end;
    ``sample_every = 0`` never draws sample pictures. ``threads`` sets torch's CPU threads: 1 (the
    default) is the fastest for small CPU models on a shared machine (OpenMP threads that wait for
    a busy core make every step many times slower) and costs nothing on GPU; 0 keeps torch's default.
    Fields marked ``resumable`` may change when a run is resumed (:func:`scoresde.config.resumable`).
    """

    sde: SDEConfig = field(default_factory=SDEConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    steps: int | None = _f(1200, "Total optimizer steps (with --minutes: whichever comes first).", resumable=True, ge=1)
    minutes: float | None = _f(
        None,
        "Stop after this many minutes of training (summed over resumes); with a step count too, whichever comes first.",
        resumable=True,
        gt=0,
    )
    clock: str = _f(
        "wall",
        "How --minutes is counted, {choices}: wall-clock, or this process's CPU time (fair on a shared machine).",
        choices="budget.CLOCKS",
        resumable=True,
    )
    batch_size: int = _f(64, "Global batch size (split across ranks).", ge=1)
    seed: int = _f(0, "Random seed.")
    log_every: int = _f(50, "Write metrics every this many steps.", resumable=True, ge=1)
    loggers: tuple[str, ...] = _f(
        ("jsonl",),
        "Where metrics and pictures go, {choices} (repeat or comma-separate; jsonl is always on).",
        flag="--logger",
        choices="reporting.LOGGERS",
        resumable=True,
    )
    checkpoint_every: int = _f(500, "Checkpoint every this many steps (and at the end).", resumable=True, ge=0)
    keep: int = _f(3, "Keep this many newest checkpoints.", resumable=True, ge=1)
    guide_at: float = _f(
        0.4,
        "Keep the EMA weights at this fraction of the run (of --steps or --minutes, whichever ends first) as "
        "guide.safetensors, the weak model of autoguidance (scoresde sample --autoguidance); 0 = none.",
        resumable=True,
        ge=0,
        lt=1,
    )
    guide_scale: float = _f(
        1.0,
        "The autoguidance scale scoresde sample and evaluate use on this run by default (1 = the model alone).",
        resumable=True,
        gt=0,
    )
    class_guidance: float = _f(
        1.0,
        "The classifier-free guidance scale scoresde sample and evaluate use on a --conditional run by default, "
        "with classes drawn from the data's class frequencies (1 = the conditional model).",
        resumable=True,
        ge=0,
    )
    sample_every: int = _f(400, "Save a sample picture every this many steps (0 = never).", resumable=True, ge=0)
    sample_num: int = _f(64, "Samples in each picture.", resumable=True, ge=1)
    sample_solver: str = _f(
        "ancestral", "Solver for the sample pictures, {choices}.", choices="samplers.SOLVERS", resumable=True
    )
    sample_steps: int = _f(100, "Solver steps for the sample pictures.", resumable=True, ge=1)
    compile: bool = _f(False, "torch.compile the network.", resumable=True)
    bf16: bool = _f(True, "bf16 autocast on CUDA.", resumable=True)
    device: str = _f("auto", "auto, cpu, cuda or cuda:N.", resumable=True)
    threads: int = _f(1, "CPU threads for torch (default 1; 0 = torch's default, all cores).", resumable=True, ge=0)
