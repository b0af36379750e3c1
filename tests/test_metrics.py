"""Sample-quality metrics against closed forms and their defining properties."""

import math

import numpy as np
import pytest
import torch

from scoresde.metrics import (
    SlicedReference,
    find_inception,
    frechet_distance,
    image_metrics,
    kernel_distance,
    load_or_train_classifier,
    mmd,
    quantize_uint8,
    sliced_wasserstein,
)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_sliced_reference_equals_sliced_wasserstein():
    # the bin means/variances of the sorted reference give SW₂ at the reference's m levels exactly
    reference = torch.randn(1200, 3, generator=gen(4)) * torch.tensor([1.0, 0.3, 2.0])
    judge = SlicedReference(reference, 300, projections=64, generator=gen(5))
    for seed in (6, 7):
        x = torch.randn(300, 3, generator=gen(seed)) + 0.2
        assert judge(x) == pytest.approx(sliced_wasserstein(x, reference, 64, generator=gen(5)), rel=1e-12)
    with pytest.raises(ValueError, match="multiple"):
        SlicedReference(reference, 500)
    with pytest.raises(ValueError, match="shape"):
        judge(torch.randn(200, 3))
    with pytest.raises(ValueError, match="NaN"):
        judge(torch.full((300, 3), float("nan")))


def test_sliced_wasserstein_of_shifted_gaussians():
    # W₂ of 1-D projections of N(0, I) and N(m, I) is |θᵀm|, and E_θ (θᵀm)² = ‖m‖²/d
    d, n = 3, 10000
    m = torch.tensor([1.0, -2.0, 0.5])
    x = torch.randn(n, d, generator=gen(0))
    y = torch.randn(n // 2, d, generator=gen(1)) + m  # unequal sizes on purpose
    sw = sliced_wasserstein(x, y, projections=1000, generator=gen(2))
    assert sw == pytest.approx(m.norm().item() / math.sqrt(d), rel=0.03)
    same = sliced_wasserstein(x, torch.randn(n, d, generator=gen(3)), generator=gen(2))
    assert same < 0.05  # finite-sample bias of order n^{-1/2}


def test_mmd_is_near_zero_for_same_distribution_and_grows_with_shift():
    x = torch.randn(1000, 2, generator=gen(0))
    same = mmd(x, torch.randn(1000, 2, generator=gen(1)))
    shifted = [mmd(x, torch.randn(1000, 2, generator=gen(1)) + s) for s in (0.25, 0.5, 1.0)]
    assert abs(same) < 0.01
    assert same < shifted[0] < shifted[1] < shifted[2]


def test_frechet_distance_matches_gaussian_closed_form():
    # for N(μ₁, diag s₁²) and N(μ₂, diag s₂²): ‖μ₁ − μ₂‖² + Σ (s₁ − s₂)²
    n = 50000
    mu1, mu2 = torch.tensor([0.0, 1.0, -1.0, 0.5]), torch.tensor([0.5, 1.0, 0.0, 0.5])
    s1, s2 = torch.tensor([1.0, 2.0, 0.5, 1.0]), torch.tensor([1.5, 1.0, 0.5, 1.0])
    x = mu1 + s1 * torch.randn(n, 4, generator=gen(0), dtype=torch.float64)
    y = mu2 + s2 * torch.randn(n, 4, generator=gen(1), dtype=torch.float64)
    expected = ((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum()
    assert frechet_distance(x, y) == pytest.approx(expected.item(), abs=0.05)
    assert frechet_distance(x, y) == pytest.approx(frechet_distance(y, x), rel=1e-9)
    assert frechet_distance(x, x) < 1e-8


def test_metrics_refuse_mismatched_input():
    with pytest.raises(ValueError, match="dimensions"):
        sliced_wasserstein(torch.randn(10, 2), torch.randn(10, 3))
    with pytest.raises(ValueError, match="NaN"):
        mmd(torch.full((10, 2), float("nan")), torch.randn(10, 2))
    with pytest.raises(ValueError, match="n >= 2"):
        frechet_distance(torch.randn(1, 4), torch.randn(10, 4))


@pytest.fixture(scope="module")
def digits_classifier(tmp_path_factory):
    pytest.importorskip("sklearn")
    cache = tmp_path_factory.mktemp("run")
    net, info = load_or_train_classifier("digits", cache, steps=200)
    return net, info, cache


def test_classifier_is_accurate_and_cached(digits_classifier):
    net, info, cache = digits_classifier
    assert info["test_accuracy"] > 0.9
    assert (cache / "classifier.safetensors").exists() and (cache / "classifier.json").exists()
    again, info2 = load_or_train_classifier("digits", cache, steps=200)
    assert info2 == info
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    assert torch.equal(again.embed(x), net.embed(x))


def test_classifier_frechet_distance_of_split_is_small_symmetric_and_grows_with_noise(digits_classifier):
    from scoresde.metrics import labelled_images

    net = digits_classifier[0]
    x, _ = labelled_images("digits")
    order = torch.randperm(len(x), generator=gen(0))
    a, b = x[order[:800]], x[order[800:1600]]
    fa = net.embed(a)
    assert frechet_distance(fa, fa) < 1e-8
    split = image_metrics(b, a, net, generator=gen(1))
    assert frechet_distance(net.embed(a), net.embed(b)) == pytest.approx(
        frechet_distance(net.embed(b), net.embed(a)), rel=1e-9
    )
    noisy = [
        image_metrics((b + s * torch.randn(b.shape, generator=gen(2))).clamp(-1, 1), a, net) for s in (0.1, 0.3, 0.6)
    ]
    fds, kids = [m["fd"] for m in noisy], [m["kid"] for m in noisy]
    assert split["fd"] < fds[0] < fds[1] < fds[2]
    assert split["fd"] < 0.2 * fds[2]
    assert kids[0] < kids[1] < kids[2] and abs(split["kid"]) < 0.1 * kids[2]


def test_kid_is_near_zero_for_same_distribution():
    x = torch.randn(1000, 8, generator=gen(0))
    y = torch.randn(1000, 8, generator=gen(1))
    assert abs(kernel_distance(x, y, generator=gen(2))) < 0.02 < kernel_distance(x, y + 0.5, generator=gen(2))


def test_inception_weights_missing_gives_instructions(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SCORESDE_INCEPTION", raising=False)
    with pytest.raises(FileNotFoundError, match=r"never downloads.*inception-2015-12-05\.pt"):
        find_inception(tmp_path / "missing.pt")


def with_moments(mean: torch.Tensor, cov: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n samples whose sample mean and (n − 1) covariance are exactly ``mean`` and ``cov``."""
    z = torch.randn(n, len(mean), generator=gen(seed), dtype=torch.float64)
    z = z - z.mean(0)
    white = z @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(z.T))).T
    return mean + white @ torch.linalg.cholesky(cov).T


def test_frechet_distance_equals_closed_form_and_the_ttur_formula_on_exact_moments():
    """Diagonal covariances: FD = ‖μ₁ − μ₂‖² + Σ (s₁ − s₂)² exactly; general covariances: TTUR's
    ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 sqrtm(Σ₁Σ₂)) with scipy's sqrtm, as torch-fidelity/pytorch-fid compute it."""
    scipy_linalg = pytest.importorskip("scipy.linalg")
    mu1, mu2 = torch.tensor([0.0, 1.0, -1.0, 0.5], dtype=torch.float64), torch.tensor([0.5, 1.0, 0.0, 0.5])
    s1, s2 = torch.tensor([1.0, 2.0, 0.5, 1.0]), torch.tensor([1.5, 1.0, 0.5, 3.0])
    x = with_moments(mu1, torch.diag(s1**2).double(), 300, 0)
    y = with_moments(mu2.double(), torch.diag(s2**2).double(), 500, 1)
    expected = ((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum()
    assert frechet_distance(x, y) == pytest.approx(expected.item(), rel=1e-9)
    d = 12
    a, b = (
        torch.randn(d, d, generator=gen(2), dtype=torch.float64),
        torch.randn(d, d, generator=gen(3), dtype=torch.float64),
    )
    cov1, cov2 = a @ a.T / d + 0.1 * torch.eye(d), b @ b.T / d + 0.1 * torch.eye(d)  # they do not commute
    m1, m2 = (
        torch.randn(d, generator=gen(4), dtype=torch.float64),
        torch.randn(d, generator=gen(5), dtype=torch.float64),
    )
    fx, fy = with_moments(m1, cov1, 400, 6), with_moments(m2, cov2, 300, 7)
    c1, c2 = np.cov(fx.numpy(), rowvar=False), np.cov(fy.numpy(), rowvar=False)  # TTUR: np.cov, ddof 1
    root = scipy_linalg.sqrtm(c1 @ c2).real
    ttur = ((m1 - m2) ** 2).sum().item() + np.trace(c1) + np.trace(c2) - 2 * np.trace(root)
    assert frechet_distance(fx, fy) == pytest.approx(ttur, rel=1e-9)
    assert frechet_distance(fx, fy) == pytest.approx(frechet_distance(fy, fx), rel=1e-9)


def test_frechet_distance_agrees_with_torch_fidelity():
    metric_fid = pytest.importorskip("torch_fidelity.metric_fid")
    fx = torch.randn(300, 64, generator=gen(8), dtype=torch.float64)
    fy = 0.8 * torch.randn(250, 64, generator=gen(9), dtype=torch.float64) + 0.3
    stats = [metric_fid.fid_features_to_statistics(f) for f in (fx, fy)]
    reference = metric_fid.fid_statistics_to_metric(*stats, verbose=False)["frechet_inception_distance"]
    assert frechet_distance(fx, fy) == pytest.approx(reference, rel=1e-6)


def test_quantization_is_stylegans_round_half_up_and_inverts_uint8_data():
    u = torch.arange(256, dtype=torch.float32)
    assert torch.equal(quantize_uint8(u / 127.5 - 1), torch.arange(256, dtype=torch.uint8))
    halfway = (torch.tensor([0.5, 1.5, 2.5, 254.5]) / 127.5 - 1).double()  # ties go up, as (x*127.5 + 128).to(uint8)
    assert quantize_uint8(halfway).tolist() == [1, 2, 3, 255]
    assert quantize_uint8(torch.tensor([-3.0, -1.0, 1.0, 7.0])).tolist() == [0, 0, 255, 255]
    assert quantize_uint8(torch.tensor([0.2 / 127.5 - 1, 0.7 / 127.5 - 1])).tolist() == [0, 1]


class RecordingInception(torch.nn.Module):
    """A stand-in for the FID TorchScript: it insists on the input contract (uint8, NCHW, 3 channels,
    native size) and returns the raw pixel values padded to 2048 so the test can read what it got."""

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        assert x.dtype == torch.uint8 and x.ndim == 4 and x.shape[1] == 3 and return_features
        flat = x.to(torch.float32).flatten(1)
        return torch.cat([flat, torch.zeros(x.shape[0], 2048 - flat.shape[1])], 1)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_inception_input_is_the_uint8_grid_at_native_size_with_grey_repeated(tmp_path):
    from scoresde.metrics import inception_features

    path = tmp_path / "inception-2015-12-05.pt"
    torch.jit.script(RecordingInception()).save(str(path))
    u = torch.randint(0, 256, (5, 1, 4, 6), generator=gen(0))
    feats = inception_features(u / 127.5 - 1, path, batch_size=2)  # three batches
    assert feats.shape == (5, 2048) and feats.dtype == torch.float64
    got = feats[:, : 3 * 24].reshape(5, 3, 4, 6)
    assert torch.equal(got, u.double().repeat(1, 3, 1, 1))  # same grey grid in R, G and B
    rgb = torch.rand(2, 3, 5, 5, generator=gen(1)) * 2 - 1
    got = inception_features(rgb, path)[:, :75].reshape(2, 3, 5, 5)
    assert torch.equal(got, quantize_uint8(rgb).double())
    with pytest.raises(ValueError, match=r"\(B, 1 or 3, H, W\), got \(2, 2, 5, 5\)"):
        inception_features(torch.zeros(2, 2, 5, 5), path)
