"""Observations that steer sampling, read from files: images to complete, edit or encode, masks, latents.

:func:`load_images` reads what the command line's ``--inpaint``, ``--from`` and ``--observe`` name, in
the model's scaling: an ``.npy``/``.npz`` array (one sample or a batch, as ``scoresde sample --out
x.npz`` writes them: the array ``samples``, else ``x``, else the only one) or a PNG/JPEG picture of one
image (Pillow, the ``data`` extra; 8-bit values mapped to [−1, 1], converted to the model's channels).
:func:`load_mask` reads a mask (1 = observed, 0 = to fill) or makes a named one (:data:`MASKS`).
Every shape is checked against the model's; the errors name the file, the expected and the received shape.
:func:`measurement_guided` turns clean images into a simulated measurement y = A(x) + n and the model
into one guided towards it (:func:`scoresde.gradient_guidance.dps`). :func:`steering` is what
``scoresde sample``'s steering flags mean: the model to sample and the options for ``generate``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .diffusion_model import DiffusionModel

__all__ = ["MASKS", "load_images", "load_mask", "measurement_guided", "steering"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")

MASKS = ("keep-top", "keep-bottom", "keep-left", "keep-right")
"""Named masks for images (C, H, W): keep that half of the picture, fill the other."""


def _array(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    with np.load(path, allow_pickle=False) as arrays:
        names = list(arrays.files)
        for name in ("samples", "x", "z"):
            if name in names:
                return arrays[name]
        if len(names) == 1:
            return arrays[names[0]]
    raise ValueError(f"{path} holds arrays {', '.join(names)}; expected one named samples, x or z")


def _picture(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise ValueError(f'reading {path} needs Pillow: pip install -c constraints.txt -e ".[data]"') from None
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise ValueError(f"{path} is a picture, but the model's samples have shape {shape}; give an .npy array")
    with Image.open(path) as im:
        pixels = np.asarray(im.convert("L" if shape[0] == 1 else "RGB"), dtype=np.float32)
    pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    return pixels[None] / 127.5 - 1.0


HELD_OUT = "held-out"
"""``held-out:N`` names the first N (default 8) samples of the model's reference data instead of a file."""


def load_images(
    path: str | os.PathLike,
    shape: tuple[int, ...],
    what: str = "--inpaint",
    *,
    finite: bool = True,
    reference: Tensor | None = None,
) -> Tensor:
    """The samples stored at ``path`` as a float32 batch (n, *shape) in the model's scaling, or with
    ``path`` = ``held-out:N`` the first N samples of ``reference`` (a run's held-out data).

    ValueError (naming ``what`` and the file) for a missing or unreadable file, values that are not
    finite (unless ``finite=False``: an image to inpaint may hold NaN where it is hidden), or a shape
    other than ``shape`` or (n, *shape).
    """
    if str(path).split(":")[0] == HELD_OUT:
        return _held_out(str(path), reference, what)
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} {path}: no such file (or {HELD_OUT}:N, the model's held-out data)")
    suffix = path.suffix.lower()
    try:
        if suffix in (".npy", ".npz"):
            x = _array(path)
        elif suffix in IMAGE_SUFFIXES:
            x = _picture(path, shape)
        else:
            raise ValueError(f"{what} {path}: expected a .npy/.npz array or a {'/'.join(IMAGE_SUFFIXES)} picture")
    except (OSError, ValueError) as err:
        message = str(err)
        raise ValueError(message if message.startswith(what) else f"{what} {path}: {message}") from None
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{what} {path} holds {x.dtype} values; expected numbers")
    x = torch.as_tensor(np.asarray(x, dtype=np.float32))
    if tuple(x.shape) == tuple(shape):
        x = x[None]
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != tuple(shape) or len(x) == 0:
        raise ValueError(f"{what} {path} holds shape {tuple(x.shape)}, but the model's samples have shape {shape}")
    if finite and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{what} {path} holds NaN or infinite values")
    return x


def _held_out(spec: str, reference: Tensor | None, what: str) -> Tensor:
    count = spec.partition(":")[2] or "8"
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"{what} {spec}: give {HELD_OUT}:N with N a positive number of samples")
    if reference is None:
        raise ValueError(f"{what} {spec}: the model has no held-out data (give a file)")
    return reference[: int(count)].float().clone()


def load_mask(spec: str | os.PathLike, shape: tuple[int, ...]) -> Tensor:
    """A mask of ``shape`` (1 = observed, 0 = to fill): a named one (:data:`MASKS`) or a file read by
    :func:`load_images` (a picture's white is observed, its black filled; values are rounded to 0/1).

    ValueError for a mask that observes everything or nothing (there is nothing to sample, or nothing
    to condition on).
    """
    text = str(spec)
    if text in MASKS:
        if len(shape) != 3:
            raise ValueError(f"--mask {text} halves an image (C, H, W), but the model's samples have shape {shape}")
        m = torch.zeros(shape)
        h, w = shape[1], shape[2]
        region = {
            "keep-top": (slice(0, h // 2), slice(None)),
            "keep-bottom": (slice(h - h // 2, h), slice(None)),
            "keep-left": (slice(None), slice(0, w // 2)),
            "keep-right": (slice(None), slice(w - w // 2, w)),
        }
        m[(slice(None), *region[text])] = 1.0
    else:
        m = load_images(spec, shape, "--mask")
        if len(m) != 1:
            raise ValueError(f"--mask {spec} holds {len(m)} masks; give one, shaped like one sample {shape}")
        m = (m[0] > 0).float()  # pictures: white (1 in [-1, 1]) observed, black (−1) filled
    if bool((m == 1).all()):
        raise ValueError(f"--mask {spec} observes every value: nothing is left to sample")
    if bool((m == 0).all()):
        raise ValueError(f"--mask {spec} observes nothing: sample without --inpaint instead")
    return m


def measurement_guided(
    dm: DiffusionModel,
    name: str,
    images: Tensor,
    noise_std: float,
    *,
    seed: int = 0,
    scale: float = 1.0,
    x0_variance: str = "pigdm",
    **options,
) -> tuple[DiffusionModel, Tensor]:
    """``dm`` guided towards y = A(images) + n, n ~ N(0, noise_std² I) drawn from ``seed``, and y.

    A is the built-in measurement ``name`` with ``options`` (:mod:`scoresde.measurements`); one image
    gives one y shared by every sample, a batch one y per sample. σ_d of the ΠGDM variance is the run's
    ``sigma_data`` where the model was trained here, else 1.
    """
    import dataclasses

    from .gradient_guidance import dps
    from .measurements import make_measurement

    operator = make_measurement(name, **options)
    with torch.no_grad():
        clean = operator(images)
        noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed), dtype=clean.dtype)
        y = clean + noise_std * noise
    config = dm.provenance.config
    sigma_data = float(config.model.sigma_data) if config is not None else 1.0
    guided = dps(dm.model, dm.sde, operator, y, noise_std, scale, x0_variance=x0_variance, sigma_data=sigma_data)
    return dataclasses.replace(dm, model=guided, guide=None, sample_classes=None), y  # no autoguidance, no class


def steering(
    dm: DiffusionModel,
    *,
    inpaint: str | os.PathLike | None = None,
    mask: str | os.PathLike | None = None,
    resample: int | None = None,
    measure: str | None = None,
    observe: str | os.PathLike | None = None,
    noise_std: float = 0.05,
    seed: int = 0,
) -> tuple[DiffusionModel, dict, int | None]:
    """(the model to sample, the options for ``generate``, how many observations) from ``scoresde
    sample``'s steering flags: replacement inpainting (``inpaint`` + ``mask``, RePaint's ``resample``)
    or a simulated measurement ``measure`` of the images ``observe`` (:func:`measurement_guided`).

    Nothing asked: ``(dm, {}, None)``. Inconsistent flags raise ``ValueError`` naming them.
    """
    if (inpaint is None) != (mask is None) and measure != "mask":
        raise ValueError("--inpaint IMG and --mask MASK go together (the images, and which of their pixels are kept)")
    if (measure is None) != (observe is None):
        raise ValueError("--measure NAME and --observe IMG go together (the operator, and the image it measures)")
    if resample is not None and inpaint is None:
        raise ValueError("--resample needs --inpaint and --mask")
    if inpaint is not None and measure is not None:
        raise ValueError("give either --inpaint or --measure, not both")
    if inpaint is None and measure is None:
        return dm, {}, None
    if dm.data_shape is None:
        raise ValueError(f"{dm.description} has no known data shape to read images for")
    if inpaint is not None:
        known = load_images(inpaint, dm.data_shape, "--inpaint", finite=False, reference=dm.reference)
        options = {"known": known if len(known) > 1 else known[0], "mask": load_mask(mask, dm.data_shape)}
        return dm, {**options, **({"resample": resample} if resample is not None else {})}, len(known)
    if measure == "mask" and mask is None:
        raise ValueError("--measure mask needs --mask MASK (the pixels that are observed)")
    images = load_images(observe, dm.data_shape, "--observe", reference=dm.reference)
    options = {"mask": load_mask(mask, dm.data_shape)} if measure == "mask" else {}
    guided, _ = measurement_guided(dm, measure, images, noise_std, seed=seed, **options)
    return guided, {}, len(images)
