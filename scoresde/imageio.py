"""Pictures without heavy dependencies: a PNG writer, image grids and plots of vectors (any d).

The core package writes PNG with ``zlib`` alone (PNG spec, ISO/IEC 15948), so sample grids
and scatter plots work without matplotlib or Pillow. Reading images (folders of PNG/JPEG)
needs Pillow, in the ``data`` extra.
"""

from __future__ import annotations

import math
import os
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["atomic_write_bytes", "fsync_folder", "image_grid", "save_png", "scatter_image"]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temp file in the same folder, flushed to disk, renamed
    over ``path``, then the folder flushed too, so that after a crash or power cut ``path`` holds
    either the old or the new bytes, and a completed rename is not lost."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def fsync_folder(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (renames, new and deleted files) to disk; a no-op where folders cannot
    be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder; the rename is then as durable as they make it
        pass
    finally:
        os.close(fd)


def _png_bytes(pixels: np.ndarray) -> bytes:
    if pixels.dtype != np.uint8:
        raise TypeError(f"PNG pixels must be uint8, got {pixels.dtype}")
    if pixels.ndim == 2:
        color_type, channels = 0, 1
    elif pixels.ndim == 3 and pixels.shape[2] in (1, 3):
        color_type, channels = (0, 1) if pixels.shape[2] == 1 else (2, 3)
    else:
        raise ValueError(f"PNG pixels must have shape (H, W), (H, W, 1) or (H, W, 3), got {pixels.shape}")
    h, w = pixels.shape[:2]
    rows = np.ascontiguousarray(pixels).reshape(h, w * channels)
    raw = b"".join(b"\x00" + rows[i].tobytes() for i in range(h))  # filter type 0 per row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def save_png(path: str | os.PathLike, pixels: np.ndarray) -> Path:
    """Write a uint8 image of shape (H, W) or (H, W, 3) as PNG, atomically."""
    atomic_write_bytes(path, _png_bytes(np.asarray(pixels)))
    return Path(path)


def image_grid(images: Tensor, nrow: int | None = None, padding: int = 1, value_range=(-1.0, 1.0)) -> np.ndarray:
    """Tile a batch (B, C, H, W) (C = 1 or 3) into one uint8 picture, values clipped to ``value_range``."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"image_grid expects (batch, 1 or 3, H, W), got {tuple(images.shape)}")
    lo, hi = value_range
    x = ((images.detach().float().cpu().clamp(lo, hi) - lo) / (hi - lo) * 255).round().to(torch.uint8).numpy()
    b, c, h, w = x.shape
    nrow = nrow or math.ceil(math.sqrt(b))
    ncol = math.ceil(b / nrow)
    canvas = np.full((ncol * (h + padding) + padding, nrow * (w + padding) + padding, c), 255, np.uint8)
    for k in range(b):
        r, q = divmod(k, nrow)
        y0, x0 = padding + r * (h + padding), padding + q * (w + padding)
        canvas[y0 : y0 + h, x0 : x0 + w] = x[k].transpose(1, 2, 0)
    return canvas[..., 0] if c == 1 else canvas


def scatter_image(
    points: Tensor | np.ndarray,
    reference: Tensor | np.ndarray | None = None,
    size: int = 512,
    limits: tuple[float, float, float, float] | None = None,
) -> np.ndarray:
    """Picture vectors (n, d) (blue) over optional reference vectors (grey) as an RGB uint8 image.

    * d = 2: a scatter plot. ``limits`` = (xmin, xmax, ymin, ymax); by default the padded bounding
      box of the reference (or of the points). Points outside the box are dropped from the picture.
    * d = 1: histograms on a shared axis: the reference as grey bars, the points as a blue outline.
    * d ≥ 3: a pair grid of 2-D scatter plots of the first min(d, 4) coordinates, in the order
      (0, 1), (0, 2), (1, 2) for d = 3, then (0, 3), (1, 3), (2, 3) (a 3 × 2 grid) for d ≥ 4;
      each panel is ``size`` / 2 wide. ``limits`` applies to d = 2 only.
    """
    pts = _vectors(points, "points")
    ref = None if reference is None else _vectors(reference, "reference")
    if ref is not None and ref.shape[1] != pts.shape[1]:
        raise ValueError(f"scatter_image: points have {pts.shape[1]} coordinates but the reference has {ref.shape[1]}")
    d = pts.shape[1]
    if d == 1:
        return _histogram_image(pts[:, 0], None if ref is None else ref[:, 0], size)
    if d == 2:
        return _scatter2d(pts, ref, size, limits)
    pairs = [(0, 1), (0, 2), (1, 2)] + ([(0, 3), (1, 3), (2, 3)] if d >= 4 else [])
    side = max(size // 2, 16)
    panels = [_scatter2d(pts[:, [i, j]], None if ref is None else ref[:, [i, j]], side, None) for i, j in pairs]
    rows = [np.concatenate(panels[k : k + 3], axis=1) for k in range(0, len(panels), 3)]
    return np.concatenate(rows, axis=0)


def _vectors(x: Tensor | np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"scatter_image needs {name} of shape (n, d), got {x.shape}")
    return x


def _histogram_image(pts: np.ndarray, ref: np.ndarray | None, size: int) -> np.ndarray:
    box = ref if ref is not None and len(ref) else pts
    finite = box[np.isfinite(box)]
    lo, hi = (finite.min(), finite.max()) if len(finite) else (-1.0, 1.0)
    pad = 0.08 * (hi - lo) + 1e-9
    edges = np.linspace(lo - pad, hi + pad, max(size // 8, 2) + 1)
    canvas = np.full((size, size, 3), 255, np.uint8)
    canvas[[0, -1], :] = canvas[:, [0, -1]] = 0  # frame
    counts = [np.histogram(v[np.isfinite(v)], edges, density=True)[0] for v in (pts, ref) if v is not None]
    top = max(c.max() for c in counts) or 1.0
    width = (size - 2) / (len(edges) - 1)

    def height(c: float) -> int:
        return round(c / top * (size - 12))

    if ref is not None:
        for k, c in enumerate(counts[1]):
            u0, u1 = 1 + int(k * width), 1 + int((k + 1) * width)
            canvas[size - 1 - height(c) : size - 1, u0:u1] = (190, 190, 190)
    for k, c in enumerate(counts[0]):  # the points' histogram as a step outline
        u0, u1 = 1 + int(k * width), min(1 + int((k + 1) * width), size - 2)
        v = size - 1 - height(c)
        canvas[max(v - 1, 1) : v + 1, u0 : u1 + 1] = (31, 94, 204)
        if k + 1 < len(counts[0]):
            v_next = size - 1 - height(counts[0][k + 1])
            canvas[max(min(v, v_next) - 1, 1) : max(v, v_next) + 1, max(u1 - 1, 1) : u1 + 1] = (31, 94, 204)
    return canvas


def _scatter2d(
    pts: np.ndarray, ref: np.ndarray | None, size: int, limits: tuple[float, float, float, float] | None
) -> np.ndarray:
    if limits is None:
        box = ref if ref is not None and len(ref) else pts
        finite = box[np.isfinite(box).all(1)]
        lo, hi = (finite.min(0), finite.max(0)) if len(finite) else (np.array([-1.0, -1]), np.array([1.0, 1]))
        pad = 0.08 * (hi - lo).max() + 1e-9
        limits = (lo[0] - pad, hi[0] + pad, lo[1] - pad, hi[1] + pad)
    canvas = np.full((size, size, 3), 255, np.uint8)
    canvas[[0, -1], :] = canvas[:, [0, -1]] = 0  # frame

    def splat(p: np.ndarray, color: tuple[int, int, int], radius: int) -> None:
        p = p[np.isfinite(p).all(1)]
        u = ((p[:, 0] - limits[0]) / (limits[1] - limits[0]) * (size - 1)).round().astype(int)
        v = ((limits[3] - p[:, 1]) / (limits[3] - limits[2]) * (size - 1)).round().astype(int)
        for du in range(-radius, radius + 1):
            for dv in range(-radius, radius + 1):
                uu, vv = u + du, v + dv
                keep = (uu >= 1) & (uu < size - 1) & (vv >= 1) & (vv < size - 1)
                canvas[vv[keep], uu[keep]] = color

    if ref is not None:
        splat(ref, (190, 190, 190), 1)
    splat(pts, (31, 94, 204), 1)
    return canvas
