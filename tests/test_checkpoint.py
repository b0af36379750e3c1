"""The checkpoint format (scoresde.checkpoint): round trips, corruption caught with the file named,
pruning, RNG and optimizer states restored so that training continues identically; the pure batch
order and the EMA update."""

from __future__ import annotations

import json

import pytest
import torch

from scoresde import checkpoint as ckpt
from scoresde.batches import batch_indices
from scoresde.ema import EMA, gamma_for_sigma_rel, sigma_rel


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "model.w": torch.randn(3, 4, generator=g),
        "ema.w": torch.randn(3, 4, generator=g, dtype=torch.float64),
        "optim.0.step": torch.tensor(7.0),
        "x.int": torch.arange(5),
    }


def test_round_trip_keeps_every_tensor_and_field_and_prunes_to_keep(tmp_path):
    tensors = _tensors()
    for step in (1, 2, 3):
        path = ckpt.save_checkpoint(
            ckpt.checkpoint_path(tmp_path, step), tensors, {"step": step, "config": {"a": [1, 2]}}, keep=2
        )
    assert [p.name for p in ckpt.checkpoint_files(tmp_path)] == ["step_00000002.json", "step_00000003.json"]
    assert not (tmp_path / "checkpoints" / "step_00000001.safetensors").exists()
    assert ckpt.latest_checkpoint(tmp_path) == path
    loaded = ckpt.load_latest(tmp_path)
    assert loaded.path == path and loaded.step == 3 and loaded.config == {"a": [1, 2]}
    assert loaded.meta["format"] == ckpt.FORMAT
    assert loaded.tensors.keys() == tensors.keys()
    assert all(torch.equal(loaded.tensors[k], v) and loaded.tensors[k].dtype == v.dtype for k, v in tensors.items())
    assert ckpt.section(loaded.tensors, "model.").keys() == {"w"}


def test_corrupt_weights_json_or_missing_files_are_refused_naming_the_file(tmp_path):
    path = ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 5), _tensors(), {"step": 5})
    weights = path.with_suffix(".safetensors")
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0x01  # one bit
    weights.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=rf"{weights.name} are corrupt \(SHA-256"):
        ckpt.read_checkpoint(path)
    weights.unlink()
    with pytest.raises(ValueError, match=rf"{path.name} has no weights file"):
        ckpt.read_checkpoint(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=rf"{path.name} is corrupt"):
        ckpt.read_checkpoint(path)
    path.write_text(json.dumps({"format": 99, "step": 5}))
    with pytest.raises(ValueError, match="not a scoresde checkpoint"):
        ckpt.read_checkpoint(path)
    with pytest.raises(ValueError, match="has no checkpoint"):
        ckpt.load_latest(tmp_path / "checkpoints")
    with pytest.raises(ValueError, match="does not exist"):
        ckpt.load_latest(tmp_path / "nope")


def test_rng_and_optimizer_states_restore_the_same_continuation(tmp_path):
    g = torch.Generator().manual_seed(3)
    torch.randn(10, generator=g)
    text = ckpt.encode_rng(g.get_state())
    expected = torch.randn(5, generator=g)
    g2 = torch.Generator()
    g2.set_state(ckpt.decode_rng(text))
    assert torch.equal(torch.randn(5, generator=g2), expected)

    def make():
        torch.manual_seed(0)
        net = torch.nn.Linear(3, 2)
        return net, torch.optim.AdamW(net.parameters(), lr=1e-2)

    def step(net, opt, k):
        x = torch.full((4, 3), float(k))
        opt.zero_grad()
        net(x).square().sum().backward()
        opt.step()

    net, opt = make()
    for k in range(3):
        step(net, opt, k)
    optim_tensors, optim_meta = ckpt.pack_optimizer(opt.state_dict())
    state = {f"model.{k}": v for k, v in net.state_dict().items()}
    path = ckpt.save_checkpoint(
        ckpt.checkpoint_path(tmp_path, 3), {**state, **optim_tensors}, {"step": 3, "optimizer": optim_meta}
    )
    step(net, opt, 3)
    meta, tensors = ckpt.read_checkpoint(path)
    net2, opt2 = make()
    ckpt.load_weights(net2, ckpt.section(tensors, "model."), path)
    opt2.load_state_dict(ckpt.optimizer_state(meta, tensors, torch.device("cpu")))
    step(net2, opt2, 3)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), net2.parameters(), strict=True))
    with pytest.raises(ValueError, match=rf"{path.name} does not match"):
        ckpt.load_weights(torch.nn.Linear(3, 3), ckpt.section(tensors, "model."), path)


def test_batches_are_a_pure_function_of_step_and_each_epoch_a_permutation():
    n, b, seed = 10, 4, 7
    stream = torch.cat([batch_indices(s, n, b, seed) for s in range(5)])  # 20 = two full epochs
    assert sorted(stream[:10].tolist()) == list(range(n)) and sorted(stream[10:].tolist()) == list(range(n))
    assert torch.equal(batch_indices(3, n, b, seed), stream[12:16])  # any step alone gives the same batch
    assert not torch.equal(batch_indices(0, n, b, seed + 1), stream[:4])


def test_ema_update_is_the_warmed_up_exponential_average():
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 2)
    ema = EMA(net, 0.9, warmup=True)
    start = [p.detach().clone() for p in ema.module.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    ema.update(0)  # d = min(0.9, 1/10) = 0.1
    for e, s, p in zip(ema.module.parameters(), start, net.parameters(), strict=True):
        torch.testing.assert_close(e, 0.1 * s + 0.9 * p)
    assert ema.decay_at(1000) == 0.9 and EMA(net, 0.9, warmup=False).decay_at(0) == 0.9
    assert not any(p.requires_grad for p in ema.module.parameters()) and not ema.module.training


@pytest.mark.parametrize("gamma", [0.5, 6.94, 16.97])
def test_power_ema_averages_the_run_with_weights_proportional_to_step_to_the_gamma(gamma):
    """Karras et al. 2024: after N updates θ_ema = Σ_k w_k θ_k with w_k = ((k+1)^(γ+1) − k^(γ+1))/N^(γ+1)
    (updates k = 0..N−1), whose profile tends to t^γ: mean (γ+1)/(γ+2)·N and std σ_rel·N."""
    net = torch.nn.Linear(1, 1, bias=False).double()
    ema = EMA(net, 0.5, warmup=True, gamma=gamma)  # decay and warm-up are ignored with γ > 0
    n = 2000
    thetas = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for k in range(n):
            net.weight.fill_(thetas[k])
            ema.update(k)
    k = torch.arange(n, dtype=torch.float64)
    w = ((k + 1) ** (gamma + 1) - k ** (gamma + 1)) / n ** (gamma + 1)
    torch.testing.assert_close(w.sum(), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(ema.module.weight.reshape(()), (w * thetas).sum(), rtol=1e-9, atol=1e-12)
    mean = (w * (k + 1)).sum()
    std = ((w * (k + 1 - mean) ** 2).sum()).sqrt()
    assert abs(mean / n - (gamma + 1) / (gamma + 2)) < 2e-3
    assert abs(std / n - sigma_rel(gamma)) < 2e-3
    assert abs(gamma_for_sigma_rel(sigma_rel(gamma)) - gamma) < 1e-6 * (1 + gamma)
    assert abs(gamma_for_sigma_rel(0.05) - 16.97) < 0.01 and abs(gamma_for_sigma_rel(0.10) - 6.94) < 0.01
    with pytest.raises(ValueError, match="σ_rel must lie"):
        gamma_for_sigma_rel(0.9)
    with pytest.raises(ValueError, match="γ must be ≥ 0"):
        EMA(net, 0.5, gamma=-1.0)


def test_load_latest_walks_back_to_the_newest_valid_checkpoint_warning_once_per_skipped_file(tmp_path):
    paths = [ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, s), _tensors(), {"step": s}) for s in (1, 2, 3, 4)]
    weights = paths[3].with_suffix(".safetensors")
    weights.write_bytes(weights.read_bytes()[:100])  # cut short
    paths[2].write_text('{"format": 1, "st')  # cut short

    def refuse_step_2(checkpoint):
        if checkpoint.step == 2:
            raise ValueError(f"checkpoint {checkpoint.path} does not fit")

    warned: list[str] = []
    loaded = ckpt.load_latest(tmp_path, check=refuse_step_2, warn=warned.append)
    assert loaded.path == paths[0] and loaded.step == 1
    assert len(warned) == 3 and all(f"skipped it, using the older {paths[0]}" in w for w in warned)
    assert weights.name in warned[0] and paths[2].name in warned[1] and paths[1].name in warned[2]
    with pytest.warns(UserWarning) as record:
        assert ckpt.load_latest(tmp_path).step == 2  # without `check`, step 2 is valid
    assert [str(w.message).split("; skipped")[0] for w in record] == [w.split("; skipped")[0] for w in warned[:2]]
    assert torch.equal(loaded.tensors["model.w"], _tensors()["model.w"])

    paths[0].with_suffix(".safetensors").unlink()
    with pytest.raises(ValueError, match="no valid checkpoint; tried: ") as err:
        ckpt.load_latest(tmp_path, check=refuse_step_2)
    assert all(p.name in str(err.value) or p.with_suffix(".safetensors").name in str(err.value) for p in paths)
    assert "\n" not in str(err.value)


def test_pruning_keeps_the_checkpoint_just_written_and_removes_later_steps_and_partial_files(tmp_path):
    """A run resumed from step 4 (6 and 8 cut short) writes step 6 again with keep=1: pruning by
    position alone would delete the new step 6 and keep the broken step 8."""
    paths = {s: ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, s), _tensors(), {"step": s}) for s in (2, 4, 6, 8)}
    for s in (6, 8):
        weights = paths[s].with_suffix(".safetensors")
        weights.write_bytes(weights.read_bytes()[:50])
    folder = tmp_path / "checkpoints"
    (folder / "step_00000010.safetensors").write_bytes(b"weights whose JSON was never written")
    (folder / ".step_00000012.safetensors.abc.tmp").write_bytes(b"a write killed before its rename")
    with pytest.warns(UserWarning):
        assert ckpt.load_latest(tmp_path).step == 4
    ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 6), _tensors(), {"step": 6}, keep=1)
    assert sorted(p.name for p in folder.iterdir()) == ["step_00000006.json", "step_00000006.safetensors"]
    assert ckpt.load_latest(tmp_path).step == 6
    with pytest.raises(ValueError, match="keep must be >= 1"):
        ckpt.prune(paths[2], 0)


def test_atomic_writes_flush_the_file_and_then_its_folder(tmp_path, monkeypatch):
    import os
    import stat

    from scoresde.imageio import atomic_write_bytes

    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    atomic_write_bytes(tmp_path / "a" / "x.bin", b"123")
    assert synced == ["file", "folder"] and (tmp_path / "a" / "x.bin").read_bytes() == b"123"
