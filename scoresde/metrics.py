"""Sample-quality metrics that work offline: vectors and images.

Vectors (2-D toy sets and any (n, d) data):

* :func:`sliced_wasserstein` — SW₂ (Bonneel et al. 2015): the root mean over random unit
  directions θ of the squared 1-D Wasserstein-2 distance of the projections θᵀx, θᵀy, each
  computed exactly from sorted samples (quantile functions).
* :class:`SlicedReference` — the same SW₂ against one large fixed reference sample whose
  projections are sorted once, for scoring many samplers at large n.
* :func:`mmd` — the unbiased estimate of MMD² (Gretton et al. 2012, eq. 3) with a sum of
  Gaussian kernels at bandwidths around the median pairwise distance.

Images, in the feature space of a small classifier trained on the dataset itself
(:class:`scoresde.nets.classifier.Classifier`, trained once and cached in the run folder; its
held-out accuracy is reported):

* :func:`frechet_distance` — ‖μ_x − μ_y‖² + Tr(Σ_x + Σ_y − 2(Σ_x Σ_y)^{1/2}) (Heusel et al. 2017,
  the FID formula, in any feature space).
* :func:`kernel_distance` — KID (Bińkowski et al. 2018, §3): unbiased MMD² with the cubic
  polynomial kernel k(a, b) = (aᵀb/d + 1)³, averaged over random subsets.

Inception FID (:func:`inception_features` + :func:`frechet_distance`) needs the FID Inception-v3
TorchScript file ``inception-2015-12-05.pt`` (NVIDIA's conversion of the TensorFlow graph used by
TTUR, StyleGAN2-ADA/StyleGAN3 and EDM; clean-fid loads the same file) on disk; nothing is ever
downloaded. Which numbers compare with which:

* **Inception FID is comparable with papers** that use the TensorFlow FID protocol: TTUR's
  ``fid.py``, StyleGAN2-ADA/StyleGAN3/EDM ``fid50k``, torch-fidelity, and clean-fid with
  ``mode="legacy_tensorflow"`` — given the same reference set and sample count (FID is biased in
  the number of samples; papers use 50,000). The preprocessing is theirs, step for step: samples
  in [−1, 1] are quantized to uint8 as StyleGAN/EDM do (``(x·127.5 + 128).clamp(0, 255)`` cast to
  uint8, i.e. round half up of (x + 1)·127.5), grey is repeated to 3 channels, and the uint8
  batch goes at its native size to the TorchScript's own forward (``return_features=True``),
  which resizes to 299×299 with its TensorFlow-1-compatible bilinear resize (the resize
  torch-fidelity reimplements as ``interpolate_bilinear_2d_like_tensorflow1x``), scales to
  [−1, 1] and returns the 2048-d pool3 features. The FID formula is TTUR's (covariances with
  n − 1, Tr (Σ_x Σ_y)^{1/2}); the tests check it against that computation (scipy ``sqrtm``) and
  against torch-fidelity's when it is installed.
* **It is not comparable with clean-fid's default** ``mode="clean"``, which resizes the uint8
  image with PIL bicubic in float before the network (bypassing the file's own resize); the two
  differ most for small images (8×8, 28×28, 32×32 are all upsampled to 299).
* **The classifier FD/KID are not comparable with any paper**: their feature space is a small
  network trained here on the dataset itself; use them to rank runs of one dataset only.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .imageio import atomic_write_bytes

__all__ = [
    "SlicedReference",
    "find_inception",
    "frechet_distance",
    "image_metrics",
    "inception_features",
    "kernel_distance",
    "labelled_images",
    "load_or_train_classifier",
    "mmd",
    "quantize_uint8",
    "sliced_wasserstein",
    "train_classifier",
    "vector_metrics",
]


# ----------------------------------------------------------------------------- vectors


def _as_2d(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        x = torch.as_tensor(np.asarray(x))
    if x.ndim < 2 or x.shape[0] < 2:
        raise ValueError(f"{name} must have shape (n, ...) with n >= 2 samples, got {tuple(x.shape)}")
    x = x.detach().flatten(1).to(torch.float64).cpu()
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _same_dim(x: Tensor, y: Tensor) -> None:
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"samples have {x.shape[1]} dimensions but the reference has {y.shape[1]}")


def sliced_wasserstein(x: Tensor, y: Tensor, projections: int = 256, generator: torch.Generator | None = None) -> float:
    """SW₂(x, y) = (E_θ W₂²(θᵀx, θᵀy))^{1/2} over ``projections`` random unit directions.

    Sample sizes may differ: both quantile functions are read at the midpoints of max(n, m) bins.
    """
    x, y = _as_2d(x, "x"), _as_2d(y, "y")
    _same_dim(x, y)
    theta = _directions(x.shape[1], projections, generator)
    px, py = torch.sort(x @ theta, dim=0).values, torch.sort(y @ theta, dim=0).values
    if len(px) != len(py):
        k = max(len(px), len(py))
        q = (torch.arange(k, dtype=torch.float64) + 0.5) / k
        px, py = _quantiles(px, q), _quantiles(py, q)
    return math.sqrt((px - py).pow(2).mean().item())


def _directions(d: int, projections: int, generator: torch.Generator | None) -> Tensor:
    """(d, projections) random unit directions, float64: the first ``torch.randn`` draw of ``generator``."""
    theta = torch.randn(d, projections, generator=generator, dtype=torch.float64)
    return theta / theta.norm(dim=0, keepdim=True)


class SlicedReference:
    """``sliced_wasserstein(x, reference)`` for many x of one size n, the reference's projections sorted once.

    The reference size m must be a multiple of n. Both quantile functions are read at m levels, as
    :func:`sliced_wasserstein` does: each of x's n quantile bins holds m/n reference quantiles,
    whose mean and variance give the bin's mean squared gap exactly, so the value is the same (to
    round-off) for the same ``generator`` (both draw their directions with ``_directions``).
    """

    def __init__(self, reference: Tensor, n: int, projections: int = 256, generator: torch.Generator | None = None):
        reference = _as_2d(reference, "reference")
        m = len(reference)
        if n < 1 or m % n:
            raise ValueError(f"the reference size {m} must be a positive multiple of the sample size n = {n}")
        self.theta, self.n = _directions(reference.shape[1], projections, generator), n
        bins = torch.sort(reference @ self.theta, dim=0).values.reshape(n, m // n, projections)
        self.mean, self.var = bins.mean(1), bins.var(1, unbiased=False)

    def __call__(self, x: Tensor) -> float:
        x = _as_2d(x, "x")
        if x.shape != (self.n, self.theta.shape[0]):
            raise ValueError(f"expected samples of shape ({self.n}, {self.theta.shape[0]}), got {tuple(x.shape)}")
        px = torch.sort(x @ self.theta, dim=0).values
        return math.sqrt(((px - self.mean).pow(2) + self.var).mean().item())


def _quantiles(sorted_values: Tensor, q: Tensor) -> Tensor:
    """Empirical quantile function (piecewise-constant) of each column at levels q."""
    n = sorted_values.shape[0]
    idx = torch.clamp((q * n).floor().long(), max=n - 1)
    return sorted_values[idx]


def mmd(x: Tensor, y: Tensor, bandwidths: tuple[float, ...] | None = None, max_samples: int = 2000) -> float:
    """Unbiased MMD² with k = Σ_h exp(−‖a − b‖²/(2h²)) (Gretton et al. 2012, eq. 3).

    ``bandwidths`` defaults to the median pairwise distance of the pooled samples times
    (0.25, 0.5, 1, 2, 4). At most ``max_samples`` of each set are used (the first ones).
    """
    x, y = _as_2d(x, "x")[:max_samples], _as_2d(y, "y")[:max_samples]
    _same_dim(x, y)
    if bandwidths is None:
        pooled = torch.cat([x, y])
        med = torch.cdist(pooled, pooled).median().item()
        med = med if med > 0 else 1.0
        bandwidths = tuple(med * f for f in (0.25, 0.5, 1.0, 2.0, 4.0))

    def kernel(a: Tensor, b: Tensor) -> Tensor:
        d2 = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths)

    return _unbiased_mmd2(kernel(x, x), kernel(y, y), kernel(x, y))


def _unbiased_mmd2(kxx: Tensor, kyy: Tensor, kxy: Tensor) -> float:
    n, m = kxx.shape[0], kyy.shape[0]
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return (sxx + syy - 2 * kxy.mean()).item()


def vector_metrics(samples: Tensor, reference: Tensor, generator: torch.Generator | None = None) -> dict[str, float]:
    """``{"sw2": …, "mmd": …}`` of samples against reference data (flattened to vectors)."""
    return {"sw2": sliced_wasserstein(samples, reference, generator=generator), "mmd": mmd(samples, reference)}


# ----------------------------------------------------------------------------- feature-space distances


def frechet_distance(fx: Tensor, fy: Tensor) -> float:
    """‖μ_x − μ_y‖² + Tr Σ_x + Tr Σ_y − 2 Tr (Σ_x^{1/2} Σ_y Σ_x^{1/2})^{1/2} (Heusel et al. 2017).

    Tr (Σ_x Σ_y)^{1/2} is computed from the symmetric PSD matrix Σ_x^{1/2} Σ_y Σ_x^{1/2}, which has the
    same eigenvalues, so no complex square roots appear.
    """
    fx, fy = _as_2d(fx, "features of x"), _as_2d(fy, "features of y")
    _same_dim(fx, fy)
    mx, my = fx.mean(0), fy.mean(0)
    cx, cy = torch.cov(fx.T).reshape(fx.shape[1], -1), torch.cov(fy.T).reshape(fy.shape[1], -1)
    w, v = torch.linalg.eigh(cx)
    root_x = (v * w.clamp(min=0).sqrt()) @ v.T
    middle = root_x @ cy @ root_x
    tr_root = torch.linalg.eigvalsh(0.5 * (middle + middle.T)).clamp(min=0).sqrt().sum()
    value = (mx - my).pow(2).sum() + cx.trace() + cy.trace() - 2 * tr_root
    return max(value.item(), 0.0)


def kernel_distance(
    fx: Tensor, fy: Tensor, subsets: int = 20, subset_size: int = 500, generator: torch.Generator | None = None
) -> float:
    """KID: mean over ``subsets`` random subsets of the unbiased MMD² with k(a, b) = (aᵀb/d + 1)³."""
    fx, fy = _as_2d(fx, "features of x"), _as_2d(fy, "features of y")
    _same_dim(fx, fy)
    d = fx.shape[1]
    m = min(subset_size, len(fx), len(fy))
    total = 0.0
    for _ in range(subsets):
        a = fx[torch.randperm(len(fx), generator=generator)[:m]]
        b = fy[torch.randperm(len(fy), generator=generator)[:m]]
        total += _unbiased_mmd2((a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3)
    return total / subsets


# ----------------------------------------------------------------------------- the dataset classifier


def labelled_images(name: str) -> tuple[Tensor, Tensor]:
    """(images in [−1, 1], integer labels) of every sample of a labelled image dataset.

    ``name`` is what :func:`scoresde.data.load_dataset` reads: ``digits``, ``mnist``, an image
    folder with one sub-folder per class, or an ``.npz`` with labels ``y``; the labels are the
    dataset's own (:attr:`scoresde.data.Dataset.train_labels`).
    """
    from .data import load_dataset

    try:
        data = load_dataset(name, heldout=0.0)
    except ImportError:
        raise ValueError(
            f"the {name!r} data need the data extra: pip install -c constraints.txt -e '.[data]'"
        ) from None
    if data.kind != "images" or not data.labelled:
        raise ValueError(
            f"classifier features need labelled images (digits, mnist, a folder with one sub-folder per class, "
            f"an .npz with labels 'y'), got {name!r}; for other images use Inception FID (--inception PATH) "
            "or the vector metrics"
        )
    return data.train, data.train_labels


def train_classifier(
    x: Tensor, labels: Tensor, *, steps: int = 600, batch_size: int = 128, heldout: float = 0.2, seed: int = 0
):
    """Train :class:`~scoresde.nets.classifier.Classifier` (AdamW) on a seeded split; return (net, accuracy).

    The accuracy is measured on the held-out ``heldout`` fraction, which is never trained on.
    """
    from .nets.classifier import Classifier

    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=g)
    n_test = max(1, int(heldout * len(x)))
    test, train = order[:n_test], order[n_test:]
    torch.manual_seed(seed)
    net = Classifier(tuple(x.shape[1:]), int(labels.max()) + 1)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    net.train()
    for _ in range(steps):
        idx = train[torch.randint(len(train), (batch_size,), generator=g)]
        loss = torch.nn.functional.cross_entropy(net(x[idx]), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    with torch.no_grad():
        accuracy = (net(x[test]).argmax(1) == labels[test]).double().mean().item()
    return net, accuracy


def load_or_train_classifier(
    dataset: str, cache_dir: str | os.PathLike | None = None, *, steps: int = 600, seed: int = 0
):
    """The feature classifier for ``dataset``: loaded from ``cache_dir`` if cached there, else trained
    and (with ``cache_dir``) saved as ``classifier.safetensors`` + ``classifier.json``.

    Returns (net, info) with info holding ``dataset``, ``test_accuracy``, ``steps``, ``seed``.
    """
    from safetensors.torch import load, save

    from .nets.classifier import Classifier

    if cache_dir is not None:
        weights, meta = Path(cache_dir) / "classifier.safetensors", Path(cache_dir) / "classifier.json"
        if weights.exists() and meta.exists():
            info = json.loads(meta.read_text())
            if info.get("dataset") == dataset:
                net = Classifier(tuple(info["data_shape"]), info["num_classes"])
                net.load_state_dict(load(weights.read_bytes()))
                return net.eval(), info
    x, labels = labelled_images(dataset)
    net, accuracy = train_classifier(x, labels, steps=steps, seed=seed)
    info = {
        "dataset": dataset,
        "data_shape": list(x.shape[1:]),
        "num_classes": net.num_classes,
        "test_accuracy": accuracy,
        "steps": steps,
        "seed": seed,
    }
    if cache_dir is not None:
        atomic_write_bytes(weights, save({k: v.contiguous() for k, v in net.state_dict().items()}))
        atomic_write_bytes(meta, json.dumps(info, indent=2).encode())
    return net, info


def image_metrics(
    samples: Tensor, reference: Tensor, classifier, generator: torch.Generator | None = None
) -> dict[str, float]:
    """``{"fd": …, "kid": …}``: Fréchet distance and KID in the classifier's feature space."""
    if tuple(samples.shape[1:]) != tuple(classifier.data_shape):
        raise ValueError(
            f"samples have shape {tuple(samples.shape[1:])} but the classifier was trained on {classifier.data_shape}"
        )
    fs, fr = classifier.embed(samples.float()), classifier.embed(reference.float())
    return {"fd": frechet_distance(fs, fr), "kid": kernel_distance(fs, fr, generator=generator)}


# ----------------------------------------------------------------------------- Inception FID (local weights only)

INCEPTION_FILE = "inception-2015-12-05.pt"


def find_inception(path: str | os.PathLike | None = None) -> Path:
    """Locate the FID Inception TorchScript file: ``path``, $SCORESDE_INCEPTION, or
    ~/.cache/scoresde/inception-2015-12-05.pt. Raises ``FileNotFoundError`` saying how to get it."""
    candidates = [path, os.environ.get("SCORESDE_INCEPTION"), Path.home() / ".cache" / "scoresde" / INCEPTION_FILE]
    for c in candidates:
        if c and Path(c).expanduser().is_file():
            return Path(c).expanduser()
    raise FileNotFoundError(
        f"Inception FID needs the TorchScript weights {INCEPTION_FILE} (the file clean-fid and StyleGAN use) on disk; "
        f"scoresde never downloads them. Put the file at ~/.cache/scoresde/{INCEPTION_FILE}, or pass its path "
        "(--inception PATH / SCORESDE_INCEPTION). The classifier-feature FD/KID need no download."
    )


def quantize_uint8(images: Tensor) -> Tensor:
    """Images in [−1, 1] → uint8 0..255 exactly as StyleGAN/EDM save samples before FID:
    ``(x·127.5 + 128).clamp(0, 255)`` truncated, i.e. round half up of (x + 1)·127.5, clamped.
    Data read from uint8 (u/127.5 − 1) maps back to u exactly."""
    return (images.detach().float() * 127.5 + 128).clamp(0, 255).floor().to(torch.uint8)


@torch.no_grad()
def inception_features(images: Tensor, path: str | os.PathLike | None = None, batch_size: int = 100) -> Tensor:
    """2048-d pool3 features of images (B, C, H, W) in [−1, 1], C = 1 or 3, with the FID Inception file.

    The preprocessing of StyleGAN/EDM and torch-fidelity (see the module docstring): uint8
    quantization (:func:`quantize_uint8`), grey repeated to RGB, the uint8 batch at its native
    size into the TorchScript's own resize and normalisation. Returns float64 features.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"Inception features need images of shape (B, 1 or 3, H, W), got {tuple(images.shape)}")
    with warnings.catch_warnings():  # the FID weights exist only as TorchScript; torch ≥ 2.10 flags jit.load
        warnings.simplefilter("ignore", DeprecationWarning)
        net = torch.jit.load(str(find_inception(path))).eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = quantize_uint8(images[i : i + batch_size])
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        out.append(net(x, return_features=True).double())
    return torch.cat(out)
