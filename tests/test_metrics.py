"""Sample-quality metrics against closed forms and their defining properties."""

import math

import pytest
import torch

from scoresde.metrics import (
    find_inception,
    frechet_distance,
    image_metrics,
    kernel_distance,
    load_or_train_classifier,
    mmd,
    sliced_wasserstein,
)


def gen(seed):
    return torch.Generator().manual_seed(seed)


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


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_inception_features_plumbing_with_a_stand_in_torchscript_file(tmp_path):
    # a stand-in with the FID Inception interface net(x, return_features=True) -> (B, 2048):
    # checks that grey images become RGB in [0, 255] at 299×299 (no real weights in tests)
    from scoresde.metrics import inception_features

    class StandIn(torch.nn.Module):
        def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            assert x.shape[1:] == (3, 299, 299)
            stats = torch.stack([x.mean((1, 2, 3)), x.amin((1, 2, 3)), x.amax((1, 2, 3))], 1)
            return stats.repeat(1, 683)[:, :2048]

    path = tmp_path / "inception-2015-12-05.pt"
    torch.jit.script(StandIn()).save(str(path))
    images = torch.tensor([-1.0, 1.0]).repeat_interleave(32).reshape(2, 1, 4, 8)  # one black, one white
    feats = inception_features(images, path)
    assert feats.shape == (2, 2048)
    assert feats[0, :3].tolist() == pytest.approx([0.0, 0.0, 0.0], abs=1e-3)
    assert feats[1, :3].tolist() == pytest.approx([255.0, 255.0, 255.0], abs=1e-3)
