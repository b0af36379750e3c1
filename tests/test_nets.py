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
    net.eval()  # no dropout: the time alone must move the output
    x = torch.randn(3, *shape)
    out = net(x, torch.tensor([0.0, 500.0, 999.0]))
    assert out.shape == x.shape
    same_t = net(x, torch.tensor([10.0, 10.0, 10.0]))
    assert not torch.allclose(out, same_t)


@pytest.mark.parametrize(("embedding", "channels"), [("scale-shift", 16), ("scale-shift", 32), ("add", 64)])
def test_unet_output_moves_with_time_and_class_beyond_round_off(embedding, channels):
    torch.manual_seed(0)
    shape = {"channels": channels, "channel_mult": (1, 2, 2), "num_res_blocks": 1, "attention_resolutions": (7,)}
    net = _unzeroed(make_network("unet", (1, 28, 28), num_classes=10, embedding=embedding, **shape))
    net.eval()  # no dropout: only t and y may move the output
    x, label = torch.randn(2, 1, 28, 28), torch.full((2,), 200.0)
    out = net(x, label)
    scale = out.abs().max()
    assert (net(x, label + 600.0) - out).abs().max() > 1e-3 * scale  # round-off is ~1e-7 of it
    assert (net(x, label, torch.tensor([0, 1])) - out).abs().max() > 1e-3 * scale


def test_added_embedding_is_erased_by_the_norm_at_one_channel_per_group():
    """Why ``embedding="add"`` (Ho et al.; runs saved before the option) is no longer the default: at
    16 channels GroupNorm has one channel per group and subtracts the per-channel shift entirely."""
    torch.manual_seed(0)
    shape = {"channels": 16, "channel_mult": (1, 2, 2), "num_res_blocks": 1, "attention_resolutions": (7,)}
    net = _unzeroed(make_network("unet", (1, 28, 28), num_classes=10, embedding="add", **shape)).eval()
    x, label = torch.randn(2, 1, 28, 28), torch.full((2,), 200.0)
    out = net(x, label)
    assert (net(x, label + 600.0) - out).abs().max() < 1e-5 * out.abs().max()
    assert (net(x, label, torch.tensor([0, 1])) - out).abs().max() < 1e-5 * out.abs().max()


def test_unet_refuses_an_unknown_embedding():
    with pytest.raises(ValueError, match="embedding must be one of scale-shift, add, got 'film'"):
        make_network("unet", (1, 8, 8), size="tiny", embedding="film")


def test_unet_cifar10_size_matches_the_paper():
    net = make_network("unet", (3, 32, 32), size="cifar10", embedding="add")
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 1) == 35.7  # Ho et al. 2020, App. B
    scale_shift = make_network("unet", (3, 32, 32), size="cifar10")  # each block's embedding map doubles
    blocks = [m for m in scale_shift.modules() if hasattr(m, "scale_shift")]
    extra = sum(b.temb.out_features // 2 * (b.temb.in_features + 1) for b in blocks)
    assert sum(p.numel() for p in scale_shift.parameters()) == sum(p.numel() for p in net.parameters()) + extra


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


# --------------------------------------------------------------------------- class conditioning

NET_CASES = [("mlp", (2,), {}), ("unet", (1, 8, 8), {"size": "tiny"})]


def _unzeroed(net):
    for p in net.parameters():  # undo the zero init of output layers so the output can move
        if p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.05)
    return net


@pytest.mark.parametrize(("name", "shape", "options"), NET_CASES)
def test_conditional_net_adds_only_a_class_table_to_the_unconditional_one(name, shape, options):
    torch.manual_seed(0)
    plain = make_network(name, shape, **options)
    torch.manual_seed(0)
    cond = make_network(name, shape, num_classes=3, **options)
    plain_state, cond_state = plain.state_dict(), cond.state_dict()
    # old checkpoints load: the unconditional net has no class parameters at all
    assert not any("classes" in k for k in plain_state)
    assert plain.num_classes is None and cond.num_classes == 3
    # the class table is built last, so every other layer draws the same initial weights
    assert [k for k in cond_state if "classes" not in k] == list(plain_state)
    assert all(torch.equal(plain_state[k], cond_state[k]) for k in plain_state)
    assert cond_state["classes.table.weight"].shape[0] == 4  # 3 classes + the null label
    # with a zero class table the conditional net computes exactly the unconditional function
    _unzeroed(plain)
    cond.load_state_dict({**plain.state_dict(), "classes.table.weight": torch.zeros_like(cond.classes.table.weight)})
    x, label = torch.randn(4, *shape), torch.tensor([0.0, 5.0, 500.0, 999.0])
    torch.testing.assert_close(cond(x, label, torch.tensor([0, 1, 2, 3])), plain(x, label), rtol=0, atol=0)


@pytest.mark.parametrize(("name", "shape", "options"), NET_CASES)
def test_class_label_changes_the_output_and_none_means_the_null_label(name, shape, options):
    torch.manual_seed(0)
    net = _unzeroed(make_network(name, shape, num_classes=3, **options)).eval()
    x, label = torch.randn(1, *shape).expand(4, *shape), torch.full((4,), 200.0)
    out = net(x, label, torch.tensor([0, 1, 2, 3]))
    for i in range(4):
        for j in range(i):
            assert not torch.allclose(out[i], out[j]), (i, j)
    torch.testing.assert_close(net(x, label), net(x, label, torch.full((4,), 3)), rtol=0, atol=0)
    # each row sees only its own label
    torch.testing.assert_close(net(x[:1], label[:1], torch.tensor([2]))[0], out[2])


def test_bad_class_labels_are_refused_with_a_sentence():
    plain = make_network("mlp", (2,))
    x, label = torch.randn(3, 2), torch.zeros(3)
    with pytest.raises(TypeError, match=r"unconditional.*num_classes=None.*takes no class labels"):
        plain(x, label, torch.zeros(3, dtype=torch.long))
    net = make_network("mlp", (2,), num_classes=5)
    with pytest.raises(ValueError, match=r"y must lie in 0 … 5 .*got values in \[0, 6\]"):
        net(x, label, torch.tensor([0, 6, 1]))
    with pytest.raises(ValueError, match=r"got values in \[-1, 1\]"):
        net(x, label, torch.tensor([0, -1, 1]))
    with pytest.raises(TypeError, match=r"integer class labels, got dtype torch\.float32"):
        net(x, label, torch.zeros(3))
    with pytest.raises(ValueError, match=r"shape \(batch,\) = \(3,\), got \(3, 1\)"):
        net(x, label, torch.zeros(3, 1, dtype=torch.long))
    with pytest.raises(TypeError, match="must be a LongTensor of class labels, got list"):
        net(x, label, [0, 1, 2])
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1"):
        make_network("unet", (1, 8, 8), size="tiny", num_classes=0)
