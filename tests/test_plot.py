"""``scoresde plot RUN``: one PNG with the loss curves and the newest preview; clear lines otherwise."""

from __future__ import annotations

import builtins
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from scoresde.cli import app
from scoresde.imageio import save_png

plt = pytest.importorskip("matplotlib.pyplot")


def fake_run(folder, records: int = 6):
    folder.mkdir()
    with open(folder / "metrics.jsonl", "w") as f:
        for i in range(1, records + 1):
            by_t = [1.0 / (k + 1) / i for k in range(10)]
            by_t[3] = None  # an empty bin is skipped
            t_bins = [k / 10 for k in range(11)]
            f.write(json.dumps({"step": 10 * i, "loss": 0.5 / i, "loss_by_t": by_t, "t_bins": t_bins}) + "\n")
        f.write('{"step": 70, "lo')  # a torn last line (killed run) is ignored
    for step, colour in ((20, (255, 0, 0)), (60, (0, 255, 0))):
        save_png(folder / "samples" / f"step_{step:08d}.png", np.full((40, 40, 3), colour, np.uint8))
    return folder


def test_plot_writes_one_png_with_the_curves_and_the_newest_preview(tmp_path):
    run = fake_run(tmp_path / "run")
    result = CliRunner().invoke(app, ["plot", str(run)])
    assert result.exit_code == 0, result.output + result.stderr
    image = plt.imread(run / "plot.png")[..., :3]
    assert image.shape[:2] == (550, 1320)
    pure = lambda rgb: np.all(np.abs(image - np.array(rgb)) < 0.02, axis=-1)  # noqa: E731
    assert pure((0, 1, 0)).sum() > 100 * 100  # the step-60 preview, enlarged
    assert pure((1, 0, 0)).sum() == 0  # not the older one
    left = image[:, : image.shape[1] // 2]
    assert (np.abs(left - left.mean((0, 1))).sum(-1) > 0.3).sum() > 1000  # curves were drawn on the left


def test_plot_refuses_a_folder_without_metrics_and_says_what_to_install(tmp_path, monkeypatch):
    result = CliRunner().invoke(app, ["plot", str(tmp_path)])
    assert result.exit_code == 2 and "has no metrics.jsonl" in result.stderr and len(result.stderr.splitlines()) == 1
    result = CliRunner().invoke(app, ["plot", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "does not exist" in result.stderr
    run = fake_run(tmp_path / "run")
    real = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    result = CliRunner().invoke(app, ["plot", str(run)])
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1
    assert 'need matplotlib; install it with: pip install -c constraints.txt -e ".[log]"' in result.stderr
