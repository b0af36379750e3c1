"""Networks: shapes, the paper's CIFAR-10 size, time conditioning, and no SDE knowledge."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from scoresde.nets import NETWORKS, UNET_SIZES, make_network, sinusoidal_embedding


@pytest.mark.parametrize(
    ("name", "shape", "options"),
    [
        ("mlp", (2,), {}),
        ("mlp", (3, 4), {}),
        ("unet", (1, 8, 8), {"size": "tiny"}),
        (
            "unet",
            (3, 16, 16),
            {"channels": 16, "channel_mult": (1, 2, 2), "num_res_blocks": 1, "attention_resolutions": (8,)},
        ),
    ],
)
def test_output_has_the_input_shape_and_depends_on_time(name, shape, options):
    torch.manual_seed(0)
    net = make_network(name, shape, **options)
    for p in net.parameters():  # undo the zero init of output layers so the output can move
        if p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.05)
    x = torch.randn(3, *shape)
    out = net(x, torch.tensor([0.0, 500.0, 999.0]))
    assert out.shape == x.shape
    same_t = net(x, torch.tensor([10.0, 10.0, 10.0]))
    assert not torch.allclose(out, same_t)


def test_unet_cifar10_size_matches_the_paper():
    net = make_network("unet", (3, 32, 32), size="cifar10")
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 1) == 35.7  # Ho et al. 2020, App. B


def test_unet_refuses_sizes_it_cannot_halve():
    with pytest.raises(ValueError, match="not divisible"):
        make_network("unet", (1, 10, 10), size="small")
    with pytest.raises(ValueError, match="unknown network 'resnet'; choose one of: mlp, unet"):
        make_network("resnet", (2,))
    assert set(UNET_SIZES) >= {"tiny", "cifar10"} and set(NETWORKS) == {"mlp", "unet"}


def test_sinusoidal_embedding_matches_ho_et_al():
    emb = sinusoidal_embedding(torch.tensor([0.0, 3.0]), 8)
    freqs = torch.exp(-torch.log(torch.tensor(10_000.0)) * torch.arange(4) / 4)
    torch.testing.assert_close(emb[1], torch.cat([torch.sin(3 * freqs), torch.cos(3 * freqs)]))
    torch.testing.assert_close(emb[0], torch.cat([torch.zeros(4), torch.ones(4)]))


def test_networks_do_not_import_the_sde():
    """STYLE.md principle 2: math lives apart from networks."""
    import scoresde.nets

    folder = Path(scoresde.nets.__file__).parent
    for source in folder.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any(n.split(".")[-1] in ("sde", "losses", "schedules") for n in names), (source.name, names)
