"""Checkpoint formats: identical images across rosinality .pt, NVIDIA .pkl and zsgm .safetensors; safety."""

from __future__ import annotations

import argparse
import pickle
import sys
import types

import pytest
import torch

from zsgm.generator import (
    CheckpointError,
    Generator,
    GeneratorArch,
    convert_checkpoint,
    export_rosinality,
    load_generator,
    save_generator,
    to_nvidia_state_dict,
)


def small():
    torch.manual_seed(0)
    g = Generator(GeneratorArch.rosinality(16, style_dim=32, n_mlp=2, channel_multiplier=1, channel_max=16))
    for name, p in g.named_parameters():  # non-trivial values everywhere (noise strengths, biases)
        if p.dim() <= 1:
            p.data.normal_(0, 0.3)
    g.latent_avg = torch.randn(32)
    return g


def images(g, seed=0):
    z = torch.randn(3, g.arch.style_dim, generator=torch.Generator().manual_seed(seed))
    return g(z, noise_mode="const", truncation=0.7)


def assert_same_generator(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert torch.equal(a.latent_avg, b.latent_avg)
    assert torch.allclose(images(a), images(b), atol=1e-5)


# ------------------------------------------------------------------ synthetic NVIDIA pickles


class _Persistent:
    """Stands in for an NVIDIA persistent network object; pickles as the persistence reconstruction call."""

    def __init__(self, class_name, state):
        self.class_name, self.state = class_name, state

    def __reduce__(self):
        return (sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj,
                ({"type": "class", "version": 6, "module_src": "import os\nos.system('echo pwned')",
                  "class_name": self.class_name, "state": self.state},))


def _nvidia_tree(flat: dict[str, torch.Tensor], kwargs: dict) -> _Persistent:
    """Nest a flat NVIDIA state dict into module records (params vs buffers as NVIDIA registers them)."""
    buffers = ("resample_filter", "noise_const", "w_avg")

    def node(prefix, names):
        children, params, bufs = {}, {}, {}
        for name in names:
            rest = name[len(prefix):]
            head, _, tail = rest.partition(".")
            if tail:
                children.setdefault(head, []).append(name)
            elif head in buffers:
                bufs[head] = flat[name]
            else:
                params[head] = torch.nn.Parameter(flat[name], requires_grad=False)
        return _Persistent("Module", {
            "_parameters": params, "_buffers": bufs, "_non_persistent_buffers_set": set(),
            "_modules": {h: node(prefix + h + ".", ns) for h, ns in children.items()},
        })

    top = node("", list(flat))
    top.state["_init_kwargs"] = kwargs
    return top


@pytest.fixture
def fake_nvidia_modules(monkeypatch):
    persistence = types.ModuleType("torch_utils.persistence")
    persistence._reconstruct_persistent_obj = lambda meta: None
    persistence._reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    persistence._reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    monkeypatch.setitem(sys.modules, "torch_utils", types.ModuleType("torch_utils"))
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", persistence)


def write_nvidia_pickle(g, path):
    flat = to_nvidia_state_dict(g)
    kwargs = {"z_dim": 32, "w_dim": 32, "c_dim": 0, "img_resolution": 16, "img_channels": 3,
              "mapping_kwargs": {"num_layers": 2},
              "synthesis_kwargs": {"channel_base": 16 * 16, "channel_max": 16, "num_fp16_res": 0,
                                   "conv_clamp": None, "architecture": "skip"}}
    with open(path, "wb") as fh:
        pickle.dump({"G": None, "D": None, "G_ema": _nvidia_tree(flat, kwargs), "augment_pipe": None,
                     "training_set_kwargs": {"path": "x"}}, fh)


def test_all_formats_load_to_the_same_generator(tmp_path, fake_nvidia_modules):
    g = small()
    save_generator(g, tmp_path / "g.safetensors")
    export_rosinality(g, tmp_path / "g.pt")
    write_nvidia_pickle(g, tmp_path / "g.pkl")
    for name, fmt in (("g.safetensors", "zsgm"), ("g.pt", "rosinality"), ("g.pkl", "nvidia-pkl")):
        loaded, info = load_generator(tmp_path / name)
        assert info["format"] == fmt
        assert loaded.arch == g.arch  # architecture read from the file
        assert_same_generator(g, loaded)


def test_round_trips_through_convert_are_exact(tmp_path, fake_nvidia_modules):
    g = small()
    write_nvidia_pickle(g, tmp_path / "g.pkl")
    convert_checkpoint(tmp_path / "g.pkl", tmp_path / "a.pt")
    convert_checkpoint(tmp_path / "a.pt", tmp_path / "b.safetensors")
    convert_checkpoint(tmp_path / "b.safetensors", tmp_path / "c.pt")
    assert_same_generator(g, load_generator(tmp_path / "c.pt")[0])
    assert to_nvidia_state_dict(g).keys() == to_nvidia_state_dict(load_generator(tmp_path / "c.pt")[0]).keys()


def test_rosinality_train_checkpoint_with_namespace_and_d(tmp_path):
    g = small()
    ckpt = {"g": g.state_dict(), "g_ema": g.state_dict(), "d": {"x": torch.ones(2)},
            "args": argparse.Namespace(size=16), "latent_avg": g.latent_avg}
    torch.save(ckpt, tmp_path / "train.pt")
    loaded, info = load_generator(tmp_path / "train.pt")
    assert info["key"] == "g_ema" and "d" in info["extra"]
    assert_same_generator(g, loaded)


def test_missing_noise_buffers_are_tolerated(tmp_path):
    g = small()
    state = {k: v for k, v in g.state_dict().items() if not k.startswith("noises.") and not k.endswith(".kernel")}
    torch.save({"g_ema": state}, tmp_path / "lean.pt")
    loaded, _ = load_generator(tmp_path / "lean.pt")
    z = torch.randn(2, 32)
    assert torch.allclose(g(z, noise_mode="none"), loaded(z, noise_mode="none"), atol=1e-6)


def test_pickle_with_forbidden_global_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    with open(tmp_path / "evil.pkl", "wb") as fh:
        pickle.dump({"G_ema": Evil()}, fh)
    with pytest.raises(CheckpointError, match=r"refusing to load global (posix|os)\.system"):
        load_generator(tmp_path / "evil.pkl")
    assert not marker.exists()
    evil_pt = tmp_path / "evil.pt"
    torch.save({"g_ema": {}}, evil_pt)  # a valid zip...
    with open(tmp_path / "exec.pt", "wb") as fh:  # ...and a legacy torch file smuggling exec
        pickle.dump({"g_ema": Evil()}, fh)
    with pytest.raises(CheckpointError, match="safe loader|refusing"):
        load_generator(tmp_path / "exec.pt")
    assert not marker.exists()


def test_truncated_and_foreign_files_give_clear_errors(tmp_path, fake_nvidia_modules):
    g = small()
    save_generator(g, tmp_path / "g.safetensors")
    export_rosinality(g, tmp_path / "g.pt")
    write_nvidia_pickle(g, tmp_path / "g.pkl")
    for name in ("g.safetensors", "g.pt", "g.pkl"):
        data = (tmp_path / name).read_bytes()
        cut = tmp_path / f"cut-{name}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError, match=str(cut.name)):
            load_generator(cut)
    noise = tmp_path / "noise.bin"
    noise.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(CheckpointError, match="unknown file format"):
        load_generator(noise)
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="expected key 'g_ema' or 'g'"):
        load_generator(tmp_path / "other.pt")
    state = g.state_dict()
    state["conv1.conv.weight"] = torch.zeros(1, 16, 16, 3, 1)
    torch.save({"g_ema": state}, tmp_path / "bad-shape.pt")
    with pytest.raises(CheckpointError, match="conv1.conv.weight.*has shape"):
        load_generator(tmp_path / "bad-shape.pt")
    with pytest.raises(CheckpointError, match="no such file"):
        load_generator(tmp_path / "missing.pt")
