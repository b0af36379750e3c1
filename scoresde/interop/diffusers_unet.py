"""A diffusers ``UNet2DModel`` and its scheduler as a scoresde model, offline and exactly.

The scheduler's betas β_1..β_N become ``VPSDE.from_betas(betas)``, the continuous VP SDE that is
exact on the grid t_i = iT/N (ᾱ(t_i) = ``alphas_cumprod[i − 1]``), and the UNet is shown the DDPM
timestep i − 1 at t = t_i (the ``index`` time label). Its ``prediction_type`` becomes
``.prediction``: epsilon → eps, v_prediction → v, sample → x0. :func:`from_diffusers` returns a
:class:`~scoresde.diffusion_model.DiffusionModel` whose sampling defaults are the scheduler's:
``clip_sample`` → ``clip_x0`` (on by default in diffusers' DDPM and DDIM schedulers) and, for
``ancestral``, ``variance_type`` fixed_small / fixed_large → ``variance`` small / large. scoresde's
solvers keep ε̂ consistent with the clipped x̂_0 (DDIM's ``use_clipped_model_output=True``). The time
grid is scoresde's; :func:`scheduler_grid` gives the exact times a diffusers scheduler visits, to
reproduce it step for step.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..diffusion_model import DiffusionModel, Provenance
from ..param import PREDICTIONS, TIME_LABELS
from ..sde import VPSDE

__all__ = [
    "DIFFUSERS_PREDICTIONS",
    "SUPPORTED_SCHEDULERS",
    "DiffusersModel",
    "from_diffusers",
    "scheduler_grid",
]

DIFFUSERS_PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
"""diffusers ``prediction_type`` → scoresde ``prediction`` (Salimans & Ho 2022 for v)."""

SUPPORTED_SCHEDULERS = (
    "DDPMScheduler",
    "DDIMScheduler",
    "PNDMScheduler",
    "LMSDiscreteScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "HeunDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler",
    "DPMSolverSDEScheduler",
    "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "DEISMultistepScheduler",
    "UniPCMultistepScheduler",
)
"""Schedulers of one discrete VP chain (betas + ``alphas_cumprod`` on N training timesteps): the
UNet they drive is an ε/v/x_0 network on DDPM's chain, whatever the scheduler's sampling rule."""

DIFFUSERS_TIME_LABELS = ("index", "fractional")

_NEED_DIFFUSERS = 'from_diffusers needs the diffusers package: pip install "diffusers>=0.30"'


# --------------------------------------------------------------------------- diffusers


class DiffusersModel(nn.Module):
    """A diffusers ``UNet2DModel`` called as a scoresde model ``model(x, t, y=None)``.

    The continuous time t is shown to the UNet as a DDPM timestep: with ``time_label="index"``
    (default) label = round(tN/T) − 1 clamped to {0..N−1}, so t_i = iT/N ↦ i − 1 exactly (also for
    float32 t, whose rounding error tN·2⁻²⁴ ≪ ½); with ``"fractional"`` label = tN/T − 1 clamped to
    [0, N − 1], the interpolated timesteps diffusers' Euler/k-diffusion schedulers feed the same
    UNets (equal at the grid times, smooth between them — kinder to adaptive ODE solvers).

    ``y`` (or ``class_labels``) is passed to the UNet as ``class_labels`` for a class-embedding UNet.
    A UNet with learned variance (2C output channels) returns its first C channels (the mean part).
    """

    def __init__(self, unet: nn.Module, prediction: str, *, N: int, T: float = 1.0, time_label: str = "index"):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; choose one of: {', '.join(PREDICTIONS)}")
        if time_label not in DIFFUSERS_TIME_LABELS:
            raise ValueError(f"unknown time_label {time_label!r}; choose one of: {', '.join(DIFFUSERS_TIME_LABELS)}")
        self.unet = unet
        self.prediction = prediction
        self.N, self.T, self.time_label_name = int(N), float(T), time_label
        if time_label == "index":
            self.time_label = TIME_LABELS.get("index")(T=self.T, N=self.N)
        else:
            self.time_label = lambda t: (t * (self.N / self.T) - 1).clamp(0, self.N - 1)
        config = unet.config
        self.in_channels = int(config.in_channels)
        self.num_classes = _num_classes(config)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None, class_labels: Tensor | None = None) -> Tensor:
        if y is not None and class_labels is not None:
            raise ValueError("give the class labels once, as y or as class_labels, not both")
        labels = y if y is not None else class_labels
        if self.num_classes is not None and labels is None:
            raise ValueError(
                f"this UNet is class-conditional ({self.num_classes} classes): call model(x, t, y=labels) "
                "with integer labels of shape (batch,)"
            )
        if self.num_classes is None and labels is not None:
            raise ValueError("this UNet has no class embedding (num_class_embeds is None); do not pass y")
        if not isinstance(t, Tensor):
            t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        # the label in float64: t·N/T is then exact to ~1e-13, whatever t's dtype
        label = self.time_label(t.to(torch.float64)).to(device=x.device, dtype=torch.float32)
        out = self.unet(x, label, class_labels=labels).sample
        if out.shape[1] == 2 * x.shape[1]:  # learned variance (Nichol & Dhariwal 2021): keep the mean part
            out = out[:, : x.shape[1]]
        return out


def _num_classes(config) -> int | None:
    n = getattr(config, "num_class_embeds", None)
    return int(n) if n is not None else None


def _diffusers():
    try:
        import diffusers
    except ImportError:
        raise ValueError(_NEED_DIFFUSERS) from None
    return diffusers


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {path}: {err}") from None


def _resolve_folder(source: str | Path) -> Path:
    """A local folder; a hub id is looked up in the local Hugging Face cache only (never downloaded)."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{path} is a file; from_diffusers needs a folder written by save_pretrained")
        return path
    text = str(source)
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(text, local_files_only=True))
        except Exception:  # LocalEntryNotFoundError, offline errors, a missing huggingface_hub
            pass
        raise ValueError(
            f"{text!r} is not a local folder and has no local copy in the Hugging Face cache; scoresde never "
            "downloads: fetch it yourself (e.g. `huggingface-cli download ...` or save_pretrained) and pass the folder"
        )
    raise ValueError(f"the diffusers folder {path} does not exist")


def _load_unet(folder: Path):
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{folder} holds no UNet (no config.json); expected a UNet2DModel saved with save_pretrained")
    name = _read_json(config_path).get("_class_name")
    if name != "UNet2DModel":
        raise ValueError(
            f"{folder} holds a {name or 'model without _class_name'}; from_diffusers supports pixel-space "
            "UNet2DModel networks (DDPM-style pipelines), not latent or text-conditional ones"
        )
    try:
        return _diffusers().UNet2DModel.from_pretrained(folder, local_files_only=True, low_cpu_mem_usage=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot load the UNet in {folder}: {str(err).splitlines()[0]}") from None


def _load_scheduler(folder: Path):
    config_path = folder / "scheduler_config.json"
    if not config_path.is_file():
        raise ValueError(f"{folder} holds no scheduler (no scheduler_config.json)")
    name = _read_json(config_path).get("_class_name")
    _check_scheduler_name(name)
    try:
        return getattr(_diffusers(), name).from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, AttributeError) as err:
        raise ValueError(f"cannot load the scheduler in {folder}: {str(err).splitlines()[0]}") from None


def _check_scheduler_name(name: str | None) -> None:
    if name not in SUPPORTED_SCHEDULERS:
        raise ValueError(
            f"unsupported diffusers scheduler {name!r}; supported (discrete VP/DDPM chains): "
            f"{', '.join(SUPPORTED_SCHEDULERS)}"
        )


def _split_folder(folder: Path) -> tuple[Path | None, Path | None]:
    """(UNet folder, scheduler folder) inside a pipeline folder, a UNet folder or a scheduler folder."""
    if (folder / "model_index.json").is_file() or (folder / "unet").is_dir() or (folder / "scheduler").is_dir():
        unet = folder / "unet" if (folder / "unet").is_dir() else None
        scheduler = folder / "scheduler" if (folder / "scheduler").is_dir() else None
        return unet, scheduler
    unet = folder if (folder / "config.json").is_file() else None
    scheduler = folder if (folder / "scheduler_config.json").is_file() else None
    return unet, scheduler


def from_diffusers(
    source: Any,
    scheduler: Any = None,
    *,
    time_label: str = "index",
    device: str | torch.device | None = None,
) -> DiffusionModel:
    """A diffusers UNet2DModel + scheduler as a scoresde model, its exact VP SDE and its defaults.

    Args:
        source: a local folder written by ``save_pretrained`` — a pipeline folder (``unet/`` and
            ``scheduler/``) or a UNet folder (then give ``scheduler``) — a hub id already in the
            local Hugging Face cache (nothing is ever downloaded), a pipeline object (``.unet`` and
            ``.scheduler``), or a ``UNet2DModel``.
        scheduler: the scheduler, when ``source`` is a UNet: a scheduler object or its folder.
        time_label: ``index`` (DDPM's i − 1 at t_i = iT/N, default) or ``fractional`` (tN/T − 1);
            see :class:`DiffusersModel`.
        device: move the UNet there (default: where it is).

    Returns:
        A :class:`~scoresde.diffusion_model.DiffusionModel`: ``.model`` (eval mode, no grad; the UNet
        is ``.model.unet``), ``.sde`` with ``sde.discretize(N).alpha_bars[1:] == scheduler.alphas_cumprod``
        (to float32 rounding), ``.N``, ``.data_shape``, ``.num_classes``, the sampling defaults
        ``.clip_x0`` and ``.variance``, and ``.provenance``: ``notes`` (scheduler settings scoresde does
        not reproduce, e.g. dynamic thresholding; also warned) and ``origin``, the scheduler.

    Raises:
        ValueError: a folder without a UNet or scheduler, a hub id with no local copy, an unsupported
            scheduler (the message lists the supported ones) or prediction type, zero terminal SNR.
    """
    where = "objects"
    if isinstance(source, (str, Path)):
        folder = _resolve_folder(source)
        where = str(folder)
        unet_dir, sched_dir = _split_folder(folder)
        if unet_dir is None:
            raise ValueError(f"{folder} holds no UNet: expected unet/config.json (a pipeline) or config.json")
        unet = _load_unet(unet_dir)
        if scheduler is None:
            if sched_dir is None:
                raise ValueError(
                    f"{folder} holds no scheduler: expected scheduler/scheduler_config.json, or pass scheduler="
                )
            scheduler = sched_dir
    elif hasattr(source, "unet") and hasattr(source, "scheduler") and not isinstance(source, nn.Module):
        unet = source.unet
        scheduler = source.scheduler if scheduler is None else scheduler
    else:
        unet = source
    if isinstance(scheduler, (str, Path)):
        scheduler = _load_scheduler(_resolve_folder(scheduler))
    if scheduler is None:
        raise ValueError("from_diffusers needs the scheduler of the UNet: pass scheduler=... (object or folder)")
    if type(unet).__name__ != "UNet2DModel":
        raise TypeError(f"from_diffusers needs a diffusers UNet2DModel, got {type(unet).__name__}")
    _check_scheduler_name(type(scheduler).__name__)
    config = scheduler.config

    kind = config.get("prediction_type", "epsilon")
    if kind not in DIFFUSERS_PREDICTIONS:
        raise ValueError(
            f"the scheduler's prediction_type {kind!r} cannot be converted; supported: "
            + ", ".join(f"{k} (→ {v})" for k, v in DIFFUSERS_PREDICTIONS.items())
        )
    prediction = DIFFUSERS_PREDICTIONS[kind]
    if config.get("rescale_betas_zero_snr", False):
        raise ValueError(
            "the scheduler has rescale_betas_zero_snr=True: ᾱ_N = 0 (zero terminal SNR) has no VP SDE with a "
            "finite β; not supported"
        )
    if config.get("timestep_type", "discrete") != "discrete":
        raise ValueError(
            f"the scheduler feeds the UNet timestep_type={config.get('timestep_type')!r}; only discrete "
            "DDPM timesteps are supported"
        )
    betas = torch.as_tensor(scheduler.betas).detach().to(torch.float64).cpu()
    N = int(config.num_train_timesteps)
    if betas.numel() != N:
        raise ValueError(f"the scheduler has {betas.numel()} betas for num_train_timesteps={N}")
    sde = VPSDE.from_betas(betas)  # exact on t_i = i/N: ᾱ(t_i) = ∏_{j≤i}(1 − β_j)

    notes = []
    clip_x0 = None
    if config.get("thresholding", False):
        notes.append(
            "the scheduler uses dynamic thresholding (Saharia et al. 2022), which scoresde does not implement: "
            "sampling without it"
        )
    elif config.get("clip_sample", False):
        clip_x0 = float(config.get("clip_sample_range", 1.0))
    variance_type = config.get("variance_type", "fixed_small") or "fixed_small"
    variance = "large" if str(variance_type).startswith("fixed_large") else "small"
    if variance_type in ("learned", "learned_range"):
        notes.append(f"variance_type={variance_type!r}: the learned variance is ignored; ancestral uses 'small'")
    for note in notes:
        warnings.warn(note, stacklevel=2)

    unet_config = unet.config
    size = unet_config.sample_size
    hw = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    data_shape = (int(unet_config.in_channels), *hw)
    model = DiffusersModel(unet, prediction, N=N, T=sde.T, time_label=time_label)
    model.requires_grad_(False).eval()
    if device is not None:
        model.to(device)
    description = f"diffusers {where} ({type(scheduler).__name__}, {prediction}-prediction, N={N})"
    return DiffusionModel(
        model,
        sde,
        data_shape,
        "images",
        Provenance("diffusers", description, notes=tuple(notes), origin=scheduler),
        num_classes=model.num_classes,
        N=N,
        clip_x0=clip_x0,
        variance=variance,
    )


def scheduler_grid(dm: DiffusionModel, steps: int) -> Tensor:
    """The float64 times t_0 = 0 < … of the timesteps ``scheduler.set_timesteps(steps)`` visits, for a
    model made by :func:`from_diffusers`.

    Timestep k is t = (k + 1)T/N (the inverse of the ``index`` label); t_0 = 0 is the clean end
    (DDIM's ``set_alpha_to_one``). Pass it as ``sd.sample(..., grid=scheduler_grid(dm, 50))``.
    """
    if dm.provenance.source != "diffusers":
        raise ValueError(f"scheduler_grid needs a model made by from_diffusers, got {dm.description}")
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    scheduler = copy.deepcopy(dm.provenance.origin)  # set_timesteps mutates the scheduler
    scheduler.set_timesteps(int(steps))
    k = torch.as_tensor(scheduler.timesteps, dtype=torch.float64).unique()  # sorted ascending
    times = (k + 1) * (dm.sde.T / dm.N)
    return torch.cat([times.new_zeros(1), times])
