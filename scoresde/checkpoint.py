"""The checkpoint format of a run folder: one place that writes, finds, reads and checks checkpoints.

A checkpoint is a pair of files under ``<run>/checkpoints/``::

    step_00001000.safetensors   every tensor: weights (``model.*``), EMA weights (``ema.*``),
                                optimizer moments (``optim.<param index>.<name>``)
    step_00001000.json          the rest: ``format``, ``step``, ``config``, ``data_shape``, ``kind``,
                                ``world_size``, the optimizer's scalars and hyper-parameters, the RNG
                                states of every rank (base64) and the weights' SHA-256

Both are written atomically (temp file, fsync, rename, fsync of the folder), weights first, so a
JSON file marks a complete checkpoint; the SHA-256 catches a weights file changed or cut short
afterwards. :func:`save_checkpoint` writes one and then prunes the folder to the newest ``keep``;
:func:`read_checkpoint` reads and checks one; :func:`load_latest` is what every reader (the
trainer's resume, ``load_run``, the CLI) calls: it walks back from the newest checkpoint to the
newest valid one, warning about each one it skips.

Testing hook: the environment variable ``SCORESDE_FAULT_DELAY_BETWEEN_WEIGHTS_AND_JSON=SECONDS``
makes :func:`save_checkpoint` sleep that long between writing the weights and the JSON file, so a
test can kill a trainer there (tests/test_faults.py). Never set it otherwise.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor, nn

from .imageio import atomic_write_bytes

__all__ = [
    "FORMAT",
    "Checkpoint",
    "checkpoint_files",
    "checkpoint_path",
    "decode_rng",
    "encode_rng",
    "latest_checkpoint",
    "load_latest",
    "load_training_state",
    "load_weights",
    "optimizer_state",
    "pack_optimizer",
    "prune",
    "read_checkpoint",
    "read_verified",
    "rng_states",
    "save_checkpoint",
    "section",
    "set_rng_states",
    "training_tensors",
    "write_verified",
]

FORMAT = 1
"""The checkpoint format version this code writes and reads."""


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint read from disk: its JSON path, the metadata and the tensors."""

    path: Path
    meta: dict[str, Any]
    tensors: dict[str, Tensor]

    @property
    def step(self) -> int:
        return int(self.meta["step"])

    @property
    def config(self) -> dict[str, Any]:
        """The run's config as saved (a nested dict; :func:`scoresde.config.from_dict` builds it)."""
        return self.meta["config"]


# --------------------------------------------------------------------------- finding


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    """The JSON path of the checkpoint of ``step`` in ``run_dir``."""
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}.json"


def checkpoint_files(run_dir: str | os.PathLike) -> list[Path]:
    """The checkpoint JSON files of a run, oldest first (empty if there is no checkpoint folder)."""
    folder = Path(run_dir) / "checkpoints"
    return sorted(folder.glob("step_*.json")) if folder.is_dir() else []


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint JSON file of a run, or ``None``."""
    files = checkpoint_files(run_dir)
    return files[-1] if files else None


# --------------------------------------------------------------------------- reading


def read_verified(
    path: str | os.PathLike, what: str, valid: Callable[[dict[str, Any]], bool], refusal: str
) -> tuple[dict[str, Any], bytes]:
    """(metadata, weights bytes) of a pair written by :func:`write_verified`, ``path`` its JSON file.

    ValueError naming the file (``what`` says what it is) for unreadable JSON, metadata ``valid``
    rejects (the message ``refusal``), a missing weights file, or weights whose SHA-256 does not match.
    """
    meta_path = Path(path)
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{what} {meta_path} is corrupt (unreadable JSON: {err})") from None
    if not isinstance(meta, dict) or not valid(meta):
        raise ValueError(refusal)
    weights_path = meta_path.with_suffix(".safetensors")
    try:
        blob = weights_path.read_bytes()
    except OSError:
        raise ValueError(f"{what} {meta_path} has no weights file {weights_path.name}") from None
    if hashlib.sha256(blob).hexdigest() != meta.get("weights_sha256"):
        raise ValueError(f"{what} weights {weights_path} are corrupt (SHA-256 does not match its JSON)")
    return meta, blob


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(metadata, tensors) of the checkpoint whose JSON file is ``path``.

    Raises ValueError, naming the file, if it is unreadable, not a scoresde checkpoint of this
    format, lacks its weights file, or its weights do not match their SHA-256.
    """
    meta_path = Path(path)
    meta, blob = read_verified(
        meta_path,
        "checkpoint",
        lambda m: m.get("format") == FORMAT and "step" in m,
        f"checkpoint {meta_path} is not a scoresde checkpoint (format {FORMAT})",
    )
    weights_path = meta_path.with_suffix(".safetensors")
    try:
        tensors = load_safetensors(blob)
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"checkpoint weights {weights_path} are corrupt: {err}") from None
    return meta, tensors


def load_latest(
    run_dir: str | os.PathLike,
    *,
    check: Callable[[Checkpoint], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> Checkpoint:
    """The newest valid checkpoint of ``run_dir``, read and checked.

    Walks back from the newest checkpoint: one whose JSON does not parse, whose weights file is
    missing or does not match its SHA-256, whose tensors do not load, or that ``check`` rejects
    (a ValueError, e.g. weights that do not fit the network) is skipped with a warning naming it,
    through ``warn`` (else :func:`warnings.warn`). Raises ValueError for a missing folder, a folder
    without checkpoints, and one without a valid checkpoint (the message lists what was tried).
    The one place that picks "the" checkpoint of a run.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"run folder {run_dir} does not exist")
    files = checkpoint_files(run_dir)
    if not files:
        raise ValueError(f"run folder {run_dir} has no checkpoint (expected {run_dir}/checkpoints/step_*.json)")
    tried = []
    for path in reversed(files):
        try:
            checkpoint = Checkpoint(path, *read_checkpoint(path))
            if check is not None:
                check(checkpoint)
        except ValueError as err:
            tried.append(str(err))
            continue
        for reason in tried:
            message = f"{reason}; skipped it, using the older {path}"
            warn(message) if warn is not None else warnings.warn(message, stacklevel=2)
        return checkpoint
    raise ValueError(f"run folder {run_dir} has no valid checkpoint; tried: {'; '.join(tried)}")


def section(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The tensors whose names start with ``prefix``, with the prefix removed (``section(t, "ema.")``)."""
    n = len(prefix)
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_weights(module: nn.Module, state: dict[str, Tensor], where: str | os.PathLike) -> None:
    """``module.load_state_dict(state, strict=True)``; a mismatch is a ValueError naming ``where``."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])[:300]
        raise ValueError(f"checkpoint {where} does not match the network its config describes: {detail}") from None


# --------------------------------------------------------------------------- writing


def write_verified(
    path: str | os.PathLike, tensors: dict[str, Tensor], meta: dict[str, Any], *, indent: int | None = None
) -> Path:
    """Write ``tensors`` to ``path``'s ``.safetensors``, then ``meta`` with their SHA-256 and the time
    to the JSON ``path``, each atomically: the JSON marks a complete pair (:func:`read_verified`)."""
    path = Path(path)
    blob = save_safetensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    meta = {**meta, "weights_sha256": hashlib.sha256(blob).hexdigest(),
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}  # fmt: skip
    atomic_write_bytes(path.with_suffix(".safetensors"), blob)  # weights first: the JSON marks completion
    delay = os.environ.get("SCORESDE_FAULT_DELAY_BETWEEN_WEIGHTS_AND_JSON")
    if delay:  # testing hook (see the module docstring): a window to kill the process in
        time.sleep(float(delay))
    atomic_write_bytes(path, json.dumps(meta, indent=indent).encode())
    return path


def save_checkpoint(
    path: str | os.PathLike, tensors: dict[str, Tensor], meta: dict[str, Any], *, keep: int | None = None
) -> Path:
    """Write the checkpoint ``path`` (its JSON file) atomically, weights first, then prune to ``keep``.

    ``meta`` must hold ``step``; ``format``, ``weights_sha256`` and ``time`` are added. Tensors are
    moved to the CPU. With ``keep`` only the newest ``keep`` checkpoints of the folder remain.
    """
    path = write_verified(path, tensors, {"format": FORMAT, **meta})
    if keep is not None:
        prune(path, keep)
    return path


def prune(newest: Path, keep: int) -> None:
    """After ``newest`` (a JSON path) is completely written: delete the checkpoints of its folder
    other than the ``keep`` newest up to and including it, and every file of a later step.

    Later steps are left over from a history that was abandoned (a run resumed from an older
    checkpoint because the later ones were corrupt or cut short); so are weights files without a
    JSON (a write killed between the two) and temp files of killed writes. ``newest`` itself, the
    one checkpoint known to be valid, is never deleted.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    folder = newest.parent
    files = checkpoint_files(folder.parent)
    older = [p for p in files if p.name <= newest.name]
    for old in older[:-keep] + [p for p in files if p.name > newest.name]:
        old.unlink(missing_ok=True)  # the JSON first: a weights file without its JSON is no checkpoint
        old.with_suffix(".safetensors").unlink(missing_ok=True)
    for weights in folder.glob("step_*.safetensors"):
        if not weights.with_suffix(".json").exists():
            weights.unlink(missing_ok=True)
    for partial in folder.glob(".step_*.tmp"):
        partial.unlink(missing_ok=True)


# --------------------------------------------------------------------------- optimizer and RNG states


def pack_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (``optim.<i>.<name>``) and the JSON-ready rest."""
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in state_dict["state"].items():
        scalars[str(idx)] = {}
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                scalars[str(idx)][key] = value
    return tensors, {"state": scalars, "param_groups": state_dict["param_groups"]}


def optimizer_state(meta: dict[str, Any], tensors: dict[str, Tensor], device: torch.device) -> dict[str, Any]:
    """The ``optimizer.load_state_dict`` argument from a checkpoint (inverse of :func:`pack_optimizer`)."""
    saved = meta["optimizer"]
    state = {}
    for idx, scalars in saved["state"].items():
        entry = dict(scalars)
        entry.update(section(tensors, f"optim.{idx}."))
        state[int(idx)] = {k: v.to(device) if k != "step" else v for k, v in entry.items()}
    return {"state": state, "param_groups": saved["param_groups"]}


def encode_rng(state: Tensor) -> str:
    """A generator state (a uint8 tensor) as base64 text for the JSON file."""
    return base64.b64encode(state.cpu().numpy().tobytes()).decode()


def decode_rng(text: str) -> Tensor:
    """The uint8 generator state from :func:`encode_rng`'s text."""
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def rng_states(generator: torch.Generator, device: torch.device) -> dict[str, str | None]:
    """One rank's random streams as text: torch's global CPU state (dropout), CUDA's, the noise ``generator``."""
    cuda = encode_rng(torch.cuda.get_rng_state(device)) if device.type == "cuda" else None
    return {"torch": encode_rng(torch.get_rng_state()), "cuda": cuda, "noise": encode_rng(generator.get_state())}


def set_rng_states(states: dict[str, str | None], generator: torch.Generator, device: torch.device) -> None:
    """Restore what :func:`rng_states` saved."""
    torch.set_rng_state(decode_rng(states["torch"]))
    if states.get("cuda") and device.type == "cuda":
        torch.cuda.set_rng_state(decode_rng(states["cuda"]), device)
    generator.set_state(decode_rng(states["noise"]))


# --------------------------------------------------------------------------- a training state


def training_tensors(
    model: nn.Module, ema: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(tensors, the optimizer's JSON part) of a training state in the checkpoint layout."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    optim_tensors, optim_meta = pack_optimizer(optimizer.state_dict())
    return {**tensors, **optim_tensors}, optim_meta


def load_training_state(
    checkpoint: Checkpoint, model: nn.Module, ema: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
) -> None:
    """Load weights, EMA weights and optimizer state saved by :func:`training_tensors`."""
    load_weights(model, section(checkpoint.tensors, "model."), checkpoint.path)
    load_weights(ema, section(checkpoint.tensors, "ema."), checkpoint.path)
    optimizer.load_state_dict(optimizer_state(checkpoint.meta, checkpoint.tensors, device))
