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
    np.savez(tmp_path / "img.npz", x=np.full((4, 8, 8, 3), 255, np.uint8), y=np.zeros(4))
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
