"""Checkpoint formats: rosinality .pt and zsgm .safetensors round trips, conversion, clear errors for bad files.

NVIDIA pickles (and the all-three-formats comparison) are in test_generator_nvidia_pkl.py.
"""

from __future__ import annotations

import argparse
import json

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
)
from zsgm.generator.checkpoints import detect_format


def small(**kw):
    torch.manual_seed(0)
    g = Generator(GeneratorArch.rosinality(16, style_dim=32, n_mlp=2, channel_multiplier=1, channel_max=16, **kw))
    for p in g.parameters():  # non-trivial values everywhere (noise strengths, biases)
        if p.dim() <= 1:
            p.data.normal_(0, 0.3)
    g.latent_avg = torch.randn(32)
    return g


def images(g, seed=0):
    z = torch.randn(3, g.arch.style_dim, generator=torch.Generator().manual_seed(seed))
    return g(z, noise_mode="const", truncation=0.7)


def assert_same_generator(a, b):
    assert a.arch == b.arch
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k
    assert (a.latent_avg is None) == (b.latent_avg is None)
    if a.latent_avg is not None:
        assert torch.equal(a.latent_avg, b.latent_avg)
    assert torch.allclose(images(a), images(b), atol=1e-5, rtol=0)


def test_rosinality_and_zsgm_formats_round_trip_exactly(tmp_path):
    g = small()
    save_generator(g, tmp_path / "g.safetensors")
    export_rosinality(g, tmp_path / "g.pt")
    for name, fmt in (("g.safetensors", "zsgm"), ("g.pt", "rosinality")):
        loaded, info = load_generator(tmp_path / name)
        assert info["format"] == fmt and info["path"] == str(tmp_path / name)
        assert info["missing_buffers"] == [] and info["ignored_buffers"] == []
        assert not loaded.training
        assert_same_generator(g, loaded)
    # our format: metadata as documented, latent_avg stored as a tensor
    from safetensors import safe_open

    with safe_open(str(tmp_path / "g.safetensors"), framework="pt") as fh:
        meta = fh.metadata()
        assert set(fh.keys()) == set(g.state_dict()) | {"latent_avg"}
    assert meta["format"] == "zsgm-generator" and meta["version"] == "1"
    assert GeneratorArch.from_dict(json.loads(meta["arch"])) == g.arch
    # rosinality layout: {"g_ema": state dict, "latent_avg": [D]}
    ckpt = torch.load(tmp_path / "g.pt", weights_only=True)
    assert set(ckpt) == {"g_ema", "latent_avg"} and ckpt["latent_avg"].shape == (32,)
    # no latent_avg: nothing stored, and it loads back as None
    g.latent_avg = None
    save_generator(g, tmp_path / "n.safetensors")
    export_rosinality(g, tmp_path / "n.pt")
    assert "latent_avg" not in torch.load(tmp_path / "n.pt", weights_only=True)
    assert load_generator(tmp_path / "n.safetensors")[0].latent_avg is None
    assert load_generator(tmp_path / "n.pt")[0].latent_avg is None


def test_format_is_detected_by_content_not_suffix(tmp_path):
    g = small()
    save_generator(g, tmp_path / "weights.bin")
    export_rosinality(g, tmp_path / "model.ckpt")
    torch.save({"g_ema": g.state_dict(), "latent_avg": g.latent_avg}, tmp_path / "legacy.pth",
               _use_new_zipfile_serialization=False)
    assert detect_format(tmp_path / "weights.bin") == "safetensors"
    assert detect_format(tmp_path / "model.ckpt") == "torch"
    assert detect_format(tmp_path / "legacy.pth") == "torch-legacy"
    for name in ("weights.bin", "model.ckpt", "legacy.pth"):
        assert_same_generator(g, load_generator(tmp_path / name)[0])


def test_rosinality_train_checkpoint_with_namespace_g_and_d(tmp_path):
    g = small()
    g_raw = small()
    with torch.no_grad():
        g_raw.input.input.add_(1.0)
    d_state = {"convs.0.0.weight": torch.ones(4, 3, 1, 1)}
    ckpt = {"g": g_raw.state_dict(), "d": d_state, "g_ema": g.state_dict(), "g_optim": {"state": {}},
            "args": argparse.Namespace(size=16, channel_multiplier=1), "ada_aug_p": 0.1, "latent_avg": g.latent_avg}
    torch.save(ckpt, tmp_path / "train.pt")
    loaded, info = load_generator(tmp_path / "train.pt")
    assert info["key"] == "g_ema" and info["args"] == {"size": 16, "channel_multiplier": 1}
    assert torch.equal(info["extra"]["d"]["convs.0.0.weight"], d_state["convs.0.0.weight"])  # D returned raw
    assert torch.equal(info["extra"]["g"]["input.input"], g_raw.input.input)
    assert_same_generator(g, loaded)
    # without g_ema the raw generator "g" is used
    torch.save({"g": g_raw.state_dict(), "d": d_state}, tmp_path / "g_only.pt")
    loaded, info = load_generator(tmp_path / "g_only.pt")
    assert info["key"] == "g" and torch.equal(loaded.input.input, g_raw.input.input)


def test_missing_and_extra_noise_and_kernel_buffers_are_tolerated(tmp_path):
    g = small()
    state = {k: v for k, v in g.state_dict().items() if not k.startswith("noises.") and not k.endswith(".kernel")}
    state["noises.noise_99"] = torch.zeros(1, 1, 2, 2)  # e.g. a file from a bigger model's noise list
    torch.save({"g_ema": state}, tmp_path / "lean.pt")
    loaded, info = load_generator(tmp_path / "lean.pt")
    assert "noises.noise_0" in info["missing_buffers"] and "convs.0.conv.blur.kernel" in info["missing_buffers"]
    assert info["ignored_buffers"] == ["noises.noise_99"]
    assert torch.equal(loaded.convs[0].conv.blur.kernel, g.convs[0].conv.blur.kernel)  # rebuilt, not lost
    z = torch.randn(2, 32)
    assert torch.allclose(g(z, noise_mode="none"), loaded(z, noise_mode="none"), atol=1e-6)


def test_loaded_generator_goes_to_map_location_with_its_latent_avg(tmp_path):
    g = small()
    export_rosinality(g, tmp_path / "g.pt")
    loaded, _ = load_generator(tmp_path / "g.pt", map_location="meta")
    assert loaded.input.input.device.type == "meta" and loaded.latent_avg.device.type == "meta"


def test_convert_checkpoint_chooses_the_writer_by_suffix(tmp_path):
    g = small()
    export_rosinality(g, tmp_path / "src.pt")
    info = convert_checkpoint(tmp_path / "src.pt", tmp_path / "a.safetensors")
    assert info["format"] == "rosinality"
    convert_checkpoint(tmp_path / "a.safetensors", tmp_path / "b.pt")
    assert detect_format(tmp_path / "a.safetensors") == "safetensors" and detect_format(tmp_path / "b.pt") == "torch"
    assert_same_generator(g, load_generator(tmp_path / "b.pt")[0])
    with pytest.raises(CheckpointError, match=r"out.onnx: unsupported output suffix '.onnx' \(use .pt or .safetensors"):
        convert_checkpoint(tmp_path / "src.pt", tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_writes_are_atomic(tmp_path, monkeypatch):
    g = small()
    target = tmp_path / "g.safetensors"
    save_generator(g, target)
    before = target.read_bytes()
    import builtins

    import zsgm.io_utils

    def broken_open(path, mode="r", *args, **kwargs):  # the disk fills half-way through the temp file
        fh = builtins.open(path, mode, *args, **kwargs)
        if "w" in mode:
            fh.write(b"half a file")
            fh.close()
            raise OSError("disk full")
        return fh

    monkeypatch.setattr(zsgm.io_utils, "open", broken_open, raising=False)
    with pytest.raises(OSError, match="disk full"):
        save_generator(small(), target)
    assert target.read_bytes() == before  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.safetensors"]  # no temp file left behind


def test_truncated_and_foreign_files_give_clear_errors(tmp_path):
    g = small()
    save_generator(g, tmp_path / "g.safetensors")
    export_rosinality(g, tmp_path / "g.pt")
    torch.save({"g_ema": g.state_dict()}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    for name in ("g.safetensors", "g.pt", "legacy.pt"):
        data = (tmp_path / name).read_bytes()
        for cut_at in (len(data) // 2, 12):
            cut = tmp_path / f"cut{cut_at}-{name}"
            cut.write_bytes(data[:cut_at])
            with pytest.raises(CheckpointError, match=str(cut.name)):
                load_generator(cut)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt: file is empty or truncated"):
        load_generator(tmp_path / "empty.pt")
    noise = tmp_path / "noise.pt"
    noise.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(CheckpointError, match="noise.pt: unknown file format"):
        load_generator(noise)
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other.pt: no generator .*expected key 'g_ema' or 'g'.*\['model'\]"):
        load_generator(tmp_path / "other.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="list.pt: expected a dict with key 'g_ema' or 'g', found a list"):
        load_generator(tmp_path / "list.pt")
    torch.save({"g_ema": {"weight": torch.zeros(3)}}, tmp_path / "resnet.pt")
    with pytest.raises(CheckpointError, match=r"resnet.pt \[g_ema\]: missing key 'input.input'"):
        load_generator(tmp_path / "resnet.pt")
    state = g.state_dict()
    state["conv1.conv.weight"] = torch.zeros(1, 16, 16, 3, 1)
    torch.save({"g_ema": state}, tmp_path / "bad-shape.pt")
    with pytest.raises(CheckpointError, match=r"bad-shape.pt: key 'conv1.conv.weight' has shape \[1, 16, 16, 3, 1\]"
                                              r", the architecture read from the file expects \[1, 16, 16, 3, 3\]"):
        load_generator(tmp_path / "bad-shape.pt")
    state = dict(g.state_dict(), **{"style.1.weight_orig": torch.zeros(32, 32)})
    torch.save({"g_ema": state}, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match=r"extra.pt: unexpected entries \['style.1.weight_orig'\]"):
        load_generator(tmp_path / "extra.pt")
    state = {k: v for k, v in g.state_dict().items() if k != "convs.1.activate.bias"}
    torch.save({"g_ema": state}, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"missing.pt: missing generator weights \['convs.1.activate.bias'\]"):
        load_generator(tmp_path / "missing.pt")
    torch.save({"g_ema": g.state_dict(), "latent_avg": torch.zeros(7)}, tmp_path / "avg.pt")
    with pytest.raises(CheckpointError, match=r"avg.pt: latent_avg should have 32 values, found \[7\]"):
        load_generator(tmp_path / "avg.pt")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="foreign.safetensors: a safetensors file but not a zsgm generator"):
        load_generator(tmp_path / "foreign.safetensors")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "v9.safetensors"),
              metadata={"format": "zsgm-generator", "version": "9", "arch": "{}"})
    with pytest.raises(CheckpointError, match="v9.safetensors: zsgm generator format version '9' is not supported"):
        load_generator(tmp_path / "v9.safetensors")
    with pytest.raises(CheckpointError, match="nowhere.pt: no such file"):
        load_generator(tmp_path / "nowhere.pt")


def test_torch_files_are_loaded_weights_only(tmp_path):
    """A .pt whose pickle calls a function is refused by torch's weights-only unpickler and runs nothing."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    torch.save({"g_ema": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil.pt: refused by the safe torch loader"):
        load_generator(tmp_path / "evil.pt")
    torch.save({"g_ema": Evil()}, tmp_path / "evil-legacy.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match=r"evil-legacy.pt: refused by the safe torch loader"):
        load_generator(tmp_path / "evil-legacy.pt")
    assert not marker.exists()
