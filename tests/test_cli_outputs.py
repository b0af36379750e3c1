"""Output paths of every command: checked before any work, one error line naming the path, parents created."""

from __future__ import annotations

import os

import numpy as np
import pytest
from typer.testing import CliRunner

from scoresde.cli import app

GMM = ["sample", "--model", "gmm", "--steps", "5", "--num", "16"]


def one_line_error(args: list[str], *fragments: str) -> None:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, (result.exit_code, result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output + result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def blockers(tmp_path):
    """An existing folder with a file-like name, and a plain file standing where a folder is needed."""
    (tmp_path / "taken.png").mkdir()
    (tmp_path / "taken.json").mkdir()
    (tmp_path / "file").write_text("not a folder")
    return tmp_path


def test_existing_folder_where_a_file_is_expected(blockers):
    one_line_error([*GMM, "--out", blockers / "taken.png"], f"--out {blockers / 'taken.png'} is an existing folder")
    one_line_error(["likelihood", "--json", blockers / "taken.json"], "--json", "is an existing folder")
    one_line_error(["evaluate", "--json", blockers / "taken.json"], "--json", "is an existing folder")


def test_a_file_in_the_way_of_the_output_folder(blockers):
    target = blockers / "file" / "sub" / "x.npz"
    one_line_error([*GMM, "--out", target], f"cannot write --out {target}: {blockers / 'file'} is a file")
    one_line_error(["evaluate", "--json", blockers / "file" / "e.json"], f"{blockers / 'file'} is a file")
    one_line_error(
        ["compare-losses", "--out", blockers / "file"],
        f"--out {blockers / 'file'} is an existing file; expected a folder",
    )


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write into read-only folders")
def test_unwritable_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        one_line_error([*GMM, "--out", locked / "x.png"], f"cannot write --out {locked / 'x.png'}", "not writable")
        one_line_error([*GMM, "--out", locked / "new" / "x.png"], "cannot create the folder")
        one_line_error(["compare-losses", "--out", locked / "cmp"], f"cannot create --out {locked / 'cmp'}")
    finally:
        locked.chmod(0o700)


def test_missing_parent_folders_are_created(tmp_path):
    target = tmp_path / "a" / "b" / "samples.npz"
    result = CliRunner().invoke(app, [*GMM, "--out", str(target)])
    assert result.exit_code == 0, result.output + result.stderr
    assert np.load(target)["samples"].shape == (16, 2)


def test_chunked_npz_is_streamed_and_equals_one_chunked_library_call(tmp_path):
    """`sample --batch-size` writes the .npz chunk by chunk: the same numbers as samplers.sample with that
    batch_size (each chunk draws from the generator in turn), the same keys as np.savez, no temp file left."""
    import torch

    from scoresde import samplers
    from scoresde.analytic import MODELS
    from scoresde.sde import VPSDE

    target = tmp_path / "s.npz"
    args = ["sample", "--model", "gmm", "--solver", "ancestral", "--steps", "7", "--num", "250", "--seed", "4"]
    result = CliRunner().invoke(app, [*args, "--batch-size", "64", "--out", str(target)])
    assert result.exit_code == 0, result.output + result.stderr
    sde = VPSDE()
    expected, info = samplers.sample(
        MODELS["gmm"]().model(sde, "eps"),
        sde,
        (250, 2),
        solver="ancestral",
        steps=7,
        prediction="eps",
        generator=torch.Generator().manual_seed(4),
        batch_size=64,
        return_info=True,
    )
    with np.load(target) as f:
        assert sorted(f.files) == ["nfe", "samples", "seed", "solver", "steps"]
        assert np.array_equal(f["samples"], expected.float().numpy())
        assert int(f["nfe"]) == info.nfe == 7 and str(f["solver"]) == "ancestral" and int(f["seed"]) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]
