"""Data larger than memory: image folders and ``.npy`` arrays read lazily, batch by batch.

The in-memory path (:func:`scoresde.data.load_dataset`) decodes the whole set once and moves it to
the device: the fastest for small sets. For large ones, :func:`load_training_data` keeps only the
file list (image folders: PNG/JPEG decoded per item) or a memory map (``np.load(mmap_mode="r")``,
rows read on demand), and :class:`StreamingBatches` reads each batch in ``DataLoader`` worker
processes. Which path: ``data.stream`` = ``on``, ``off`` or ``auto`` (stream when the decoded
float32 set would exceed :data:`STREAM_ABOVE` = 1 GiB).

The order is the same on both paths: the held-out split is :func:`scoresde.data.split_indices` and
batch ``step`` is :func:`scoresde.batches.batch_indices` of (seed, step), whose indices the loader's
sampler hands to the workers, starting at the resume step. Items are decoded with the same
operations as the in-memory loaders, so the batches are bitwise equal and a resumed streaming run
is bitwise identical to an uninterrupted one. ``--hflip`` flips the rows of
:func:`scoresde.batches.hflip_mask` (seed, step) on both paths. The held-out part (up to 2,048 samples,
what the run folder's reference set keeps) is read into memory.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from .batches import batch_indices, hflip, hflip_mask
from .data import (
    DATASETS,
    IMAGE_SUFFIXES,
    INSTALL_DATA,
    Dataset,
    Labels,
    folder_labels,
    load_dataset,
    read_images,
    split_indices,
)

__all__ = [
    "STREAM_ABOVE",
    "ArrayRows",
    "ImageFiles",
    "Samples",
    "StreamingBatches",
    "load_training_data",
    "open_source",
]

STREAM_ABOVE = 1 << 30
"""``data.stream = "auto"`` streams when the decoded float32 data would exceed this many bytes (1 GiB)."""
HELDOUT_IN_MEMORY = 2048
"""Held-out samples read into memory when streaming (the run folder's reference set keeps as many)."""


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise ValueError(f"image folders need the optional package pillow; install it with: {INSTALL_DATA}") from None
    return Image


class Samples(Protocol):
    """A lazily read training set: ``len``, ``shape`` (n, *data_shape) and ``read(indices)`` → float32;
    ``kind`` (points or images), ``labels`` (:class:`~scoresde.data.Labels` or None) and ``name``."""

    kind: str
    labels: Labels | None
    name: str

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __len__(self) -> int: ...

    def read(self, indices: Sequence[int] | Tensor) -> Tensor: ...

    def subset(self, indices: Tensor) -> Samples: ...


class ImageFiles:
    """Image files decoded on demand exactly as :func:`scoresde.data.image_folder` decodes them:
    ``convert(mode)``, optional bicubic resize, uint8 → float32 / 127.5 − 1, (C, H, W)."""

    kind = "images"

    def __init__(
        self,
        files: Sequence[Path],
        mode: str,
        side: tuple[int, int],
        resize: int | None,
        labels: Labels | None = None,
        name: str = "",
    ) -> None:
        self.files, self.mode, self.side, self.resize = list(files), mode, side, resize
        self.labels, self.name = labels, name

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.files), 1 if self.mode == "L" else 3, self.side[1], self.side[0])

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, indices: Tensor) -> ImageFiles:
        files = [self.files[i] for i in indices.tolist()]
        labels = None if self.labels is None else Labels(self.labels.y[indices], self.labels.names)
        return ImageFiles(files, self.mode, self.side, self.resize, labels, self.name)

    def read(self, indices: Sequence[int] | Tensor) -> Tensor:
        image = _pillow()
        arrays = []
        for i in torch.as_tensor(indices).tolist():
            try:
                with image.open(self.files[i]) as im:
                    im = im.convert(self.mode)
                    if self.resize is not None:
                        im = im.resize((self.resize, self.resize), image.Resampling.BICUBIC)
                    arrays.append(np.asarray(im, dtype=np.uint8))
            except Exception as err:  # Pillow raises several types for unreadable files
                raise ValueError(f"cannot read image {self.files[i]}: {err}") from None
            if arrays[-1].shape[:2] != (self.side[1], self.side[0]):
                size = f"{arrays[-1].shape[1]}x{arrays[-1].shape[0]}"
                raise ValueError(
                    f"image {self.files[i]} is {size}, the others {self.side[0]}x{self.side[1]}; pass --resize SIDE"
                )
        x = np.stack(arrays)
        if self.mode == "L":
            x = x[..., None]
        return (torch.as_tensor(x).permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1).contiguous()


class ArrayRows:
    """Rows of a memory-mapped ``.npy`` converted exactly as :func:`scoresde.data.array_file` does:
    uint8 → /127.5 − 1, floats in [0, 1] → 2x − 1, floats in [−1, 1] and vectors as they are."""

    def __init__(self, file: Path, rows: np.ndarray, kind: str, channels_last: bool, scale: str) -> None:
        self.file, self.rows, self.kind, self.channels_last, self.scale = file, rows, kind, channels_last, scale
        self.labels, self.name = None, str(file)
        self.array: np.ndarray | None = None  # opened on first read (in each worker process)

    def _open(self) -> np.ndarray:
        if self.array is None:
            self.array = np.load(self.file, mmap_mode="r", allow_pickle=False)
        return self.array

    @property
    def shape(self) -> tuple[int, ...]:
        shape = self._open().shape
        if self.kind == "points":
            return (len(self.rows), *shape[1:])
        if len(shape) == 3:
            return (len(self.rows), 1, *shape[1:])
        c, h, w = (shape[3], shape[1], shape[2]) if self.channels_last else shape[1:]
        return (len(self.rows), c, h, w)

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict[str, Any]:  # a worker opens its own memory map
        return {**self.__dict__, "array": None}

    def subset(self, indices: Tensor) -> ArrayRows:
        return ArrayRows(self.file, self.rows[indices.numpy()], self.kind, self.channels_last, self.scale)

    def read(self, indices: Sequence[int] | Tensor) -> Tensor:
        rows = np.asarray(self._open()[self.rows[torch.as_tensor(indices).numpy()]])
        if self.kind == "points":
            return torch.as_tensor(rows, dtype=torch.float32).contiguous()
        if rows.ndim == 3:
            rows = rows[:, None]
        elif self.channels_last:
            rows = rows.transpose(0, 3, 1, 2)
        if self.scale == "uint8":
            return (torch.as_tensor(rows.astype(np.float32)) / 127.5 - 1).contiguous()
        x = torch.as_tensor(rows, dtype=torch.float32)
        return (2 * x - 1 if self.scale == "unit" else x).contiguous()


# --------------------------------------------------------------------------- opening a source


def _source_kind(name: str, path: str | Path | None) -> tuple[str | None, Path | None]:
    """("folder" | "array" | None, path) as :func:`scoresde.data.load_dataset` resolves ``name``."""
    if name in ("folder", "array"):
        return name, None if path is None else Path(path).expanduser()
    if name in DATASETS:
        return None, None
    candidate = Path(name).expanduser()
    if candidate.is_dir():
        return "folder", candidate
    if candidate.suffix.lower() in (".npy", ".npz"):
        return "array", candidate
    return None, None


def open_source(
    name: str,
    path: str | Path | None = None,
    resize: int | None = None,
    log: Callable[[str], None] | None = None,
    strict: bool = False,
) -> Samples | None:
    """A lazy source for an image folder or a ``.npy`` array (cheap: headers and a memory map only);
    ``None`` for the other datasets and for ``.npz`` files (compressed, they cannot be memory-mapped).

    Raises ValueError (one line) for a missing path, an empty folder, images of different sizes
    without ``resize``, and an array of the wrong dtype or shape; with ``strict``, for an image
    whose header cannot be read (else it is skipped with one warning).
    """
    kind, file = _source_kind(name, path)
    if kind is None or file is None or not file.exists():
        return None
    if kind == "folder":
        return _image_files(file, resize, log, strict)
    if file.suffix.lower() != ".npy":
        return None
    return _array_rows(file)


def _image_files(
    folder: Path, resize: int | None, log: Callable[[str], None] | None, strict: bool = False
) -> ImageFiles:
    """Read every header (size and mode) once; files whose header cannot be read are skipped with
    one warning, like the in-memory folder loader skips unreadable files."""
    if not folder.is_dir():
        raise ValueError(f"the image folder {folder} is not a directory")
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not found:
        raise ValueError(f"no PNG or JPEG images found under {folder}")
    if resize is not None and resize < 1:
        raise ValueError(f"resize must be a positive image side, got {resize}")
    headers = read_images(found, folder, _pillow(), lambda im: (im.mode, im.size), strict=strict, log=log, stacklevel=4)
    files = [f for f, _ in headers]
    modes, sizes = [mode for _, (mode, _) in headers], [size for _, (_, size) in headers]
    mode = "L" if all(m in ("L", "1", "I", "I;16") for m in modes) else "RGB"
    if resize is None and len(set(sizes)) > 1:
        other = next(i for i, s in enumerate(sizes) if s != sizes[0])
        raise ValueError(
            f"images in {folder} have different sizes ({files[0].name} is {sizes[0][0]}x{sizes[0][1]}, "
            f"{files[other].name} is {sizes[other][0]}x{sizes[other][1]}); pass --resize SIDE"
        )
    side = (resize, resize) if resize is not None else sizes[0]
    return ImageFiles(files, mode, side, resize, folder_labels(files, folder), str(folder))


def _array_rows(file: Path, chunk_bytes: int = 1 << 26) -> ArrayRows:
    """Memory-map ``file``, check its dtype and shape, and scan it once in chunks (≤ 64 MiB) for the
    value range (which decides the scaling, as in memory) and NaN/Inf."""
    try:
        array = np.load(file, mmap_mode="r", allow_pickle=False)
    except Exception as err:
        raise ValueError(f"cannot memory-map array file {file}: {err}") from None
    if array.dtype.kind not in "uif":
        raise ValueError(f"{file}: a memory-mapped array must hold integers or floats, got dtype {array.dtype}")
    if array.ndim < 2 or len(array) == 0:
        raise ValueError(f"{file} must hold a numeric array of shape (n, ...) with n >= 1, got shape {array.shape}")
    if array.ndim == 2:
        kind, channels_last = "points", False
    else:
        channels_last = array.ndim == 4 and array.shape[1] not in (1, 3) and array.shape[3] in (1, 3)
        channels = 1 if array.ndim == 3 else array.shape[3] if channels_last else array.shape[1]
        if array.ndim > 4 or channels not in (1, 3):
            raise ValueError(
                f"{file}: images must be (n, H, W), (n, C, H, W) or (n, H, W, C) with C = 1 or 3, got {array.shape}"
            )
        kind = "images"
    scale = "keep"
    if kind == "images" and array.dtype == np.uint8:
        scale = "uint8"
    elif kind == "images":
        rows = max(1, chunk_bytes // max(1, array[0].nbytes))
        lo, hi = math.inf, -math.inf
        for start in range(0, len(array), rows):
            part = np.asarray(array[start : start + rows], dtype=np.float32)
            if not np.isfinite(part).all():
                row = start + int(np.flatnonzero(~np.isfinite(part.reshape(len(part), -1)).all(1))[0])
                raise ValueError(f"{file} holds NaN/Inf values (first at row {row})")
            lo, hi = min(lo, float(part.min())), max(hi, float(part.max()))
        if lo >= 0 and hi <= 1:
            scale = "unit"
        elif lo < -1 - 1e-6 or hi > 1 + 1e-6:
            raise ValueError(f"{file}: float images must lie in [0, 1] or [-1, 1], got values in [{lo:.3g}, {hi:.3g}]")
    return ArrayRows(file, np.arange(len(array)), kind, channels_last, scale)


def load_training_data(
    name: str,
    *,
    path: str | Path | None = None,
    n: int = 10_000,
    resize: int | None = None,
    heldout: float = 0.1,
    seed: int = 0,
    stream: str = "auto",
    log: Callable[[str], None] | None = None,
    strict: bool = False,
) -> Dataset:
    """:func:`scoresde.data.load_dataset`, or its streaming twin when ``stream`` says so.

    ``stream``: ``off`` loads into memory; ``on`` streams (an image folder or a ``.npy`` file, else
    a ValueError); ``auto`` streams when the decoded float32 set would exceed :data:`STREAM_ABOVE`.
    A streamed :class:`~scoresde.data.Dataset` has a lazy ``train`` (:class:`Samples`) and the first
    2,048 held-out samples in memory; the split is the in-memory one.
    """
    if stream not in ("auto", "on", "off"):
        raise ValueError(f"stream must be 'auto', 'on' or 'off', got {stream!r}")
    source = open_source(name, path, resize, log, strict) if stream != "off" else None
    if stream == "on" and source is None:
        raise ValueError(
            f"streaming (--stream on) needs an image folder or a .npy file; {path or name!r} is neither "
            "(an .npz is compressed and cannot be memory-mapped: save the array with np.save)"
        )
    if source is None or (stream == "auto" and 4 * math.prod(source.shape) <= STREAM_ABOVE):
        return load_dataset(name, path=path, n=n, resize=resize, heldout=heldout, seed=seed, log=log, strict=strict)
    if not 0 <= heldout < 1:
        raise ValueError(f"the held-out fraction must lie in [0, 1), got {heldout}")
    if len(source) < 2:
        raise ValueError(f"the data {path or name!r} has {len(source)} sample(s); need at least 2")
    train, held = split_indices(len(source), heldout, seed)
    held = held[:HELDOUT_IN_MEMORY]
    x_held = source.read(held) if len(held) else torch.empty(0, *source.shape[1:])
    if source.labels is None:
        return Dataset(source.name, source.subset(train), x_held, source.kind)
    y, names = source.labels
    return Dataset(source.name, source.subset(train), x_held, source.kind, y[train], y[held], len(names), names)


# --------------------------------------------------------------------------- the loader


class _Steps(torch.utils.data.Sampler):
    """Global batches ``start, start + 1, ...`` (endless): (step, this rank's indices) for the workers."""

    def __init__(self, n: int, batch_size: int, seed: int, ranks: slice, start: int) -> None:
        self.n, self.batch_size, self.seed, self.ranks, self.start = n, batch_size, seed, ranks, start

    def __iter__(self) -> Iterator[tuple[int, Tensor]]:
        for step in itertools.count(self.start):
            yield step, batch_indices(step, self.n, self.batch_size, self.seed)[self.ranks].clone()


class _Reader(torch.utils.data.Dataset):
    """Reads one batch per key in a worker; a read error comes back as text (one line for the user)."""

    def __init__(self, source: Samples, flip: bool, batch_size: int, seed: int, ranks: slice) -> None:
        self.source, self.flip, self.batch_size, self.seed, self.ranks = source, flip, batch_size, seed, ranks

    def __getitem__(self, key: tuple[int, Tensor]) -> dict[str, Any]:
        step, indices = key
        try:
            x = self.source.read(indices)
        except ValueError as err:
            return {"step": step, "error": str(err)}
        if self.flip:
            x = hflip(x, hflip_mask(step, self.batch_size, self.seed)[self.ranks])
        return {"step": step, "x": x}

    def __len__(self) -> int:  # not used: the sampler is endless
        return 0


class StreamingBatches:
    """``batches(step)`` → this rank's slice of global batch ``step``, read ahead by ``workers`` processes.

    Equal to indexing the in-memory set with :func:`scoresde.batches.batch_indices` (and flipping the
    rows of :func:`scoresde.batches.hflip_mask` when ``flip``). Steps are expected in order; another
    step restarts the loader there (as after a resume). :meth:`close` stops the workers.
    """

    def __init__(
        self,
        source: Samples,
        batch_size: int,
        seed: int,
        *,
        rank: int = 0,
        world: int = 1,
        workers: int = 2,
        flip: bool = False,
        device: torch.device | str = "cpu",
    ) -> None:
        per_rank = batch_size // world
        self.ranks = slice(rank * per_rank, (rank + 1) * per_rank)
        self.source, self.batch_size, self.seed, self.workers = source, batch_size, seed, workers
        self.flip, self.device = flip, torch.device(device)
        self.iterator: Iterator[dict[str, Any]] | None = None
        self.next_step = -1

    def _start(self, step: int) -> None:
        self.close()
        reader = _Reader(self.source, self.flip, self.batch_size, self.seed, self.ranks)
        loader = torch.utils.data.DataLoader(
            reader,
            batch_size=None,
            sampler=_Steps(len(self.source), self.batch_size, self.seed, self.ranks, step),
            num_workers=self.workers,
            prefetch_factor=4 if self.workers else None,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator(),  # its own: the base seed must not come from the global RNG (dropout)
        )
        self.iterator, self.next_step = iter(loader), step

    def __call__(self, step: int) -> Tensor:
        if self.iterator is None or step != self.next_step:
            self._start(step)
        item = next(self.iterator)
        if "error" in item:
            self.close()
            raise ValueError(item["error"])
        self.next_step = step + 1
        return item["x"].to(self.device, non_blocking=True)

    def close(self) -> None:
        """Stop the worker processes (they are restarted by the next call)."""
        if self.iterator is not None:
            shutdown = getattr(self.iterator, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
            self.iterator = None
