"""NVIDIA stylegan2-ada-pytorch pickles: read without executing anything (OPS.md 3.2), converted exactly.

The pickles are synthetic: stand-in classes registered as ``torch_utils.persistence`` and ``dnnlib.util`` in
``sys.modules`` (during each test only) reproduce what NVIDIA's persistence wrapper writes, around real
tensors, so torch's own tensor/storage reduction paths run.
"""

from __future__ import annotations

import pickle
import types

import numpy as np
import pytest
import torch

from zsgm.generator import (
    CheckpointError,
    Generator,
    GeneratorArch,
    export_rosinality,
    load_generator,
    save_generator,
    to_nvidia_state_dict,
)
from zsgm.generator.names import nvidia_to_rosinality
from zsgm.generator.nvidia_pkl import load_pickle_safely, read_nvidia_pickle

from nvidia_stand_in import install_nvidia_modules



def randomised(arch: GeneratorArch, seed: int) -> Generator:
    """A generator whose biases, noise strengths and latent_avg are random too (nothing at its init value)."""
    torch.manual_seed(seed)
    g = Generator(arch)
    for p in g.parameters():
        if p.dim() <= 1:
            p.data.normal_(0, 0.3)
    g.latent_avg = torch.randn(arch.style_dim)
    return g


def small():
    return randomised(GeneratorArch.rosinality(16, style_dim=32, n_mlp=2, channel_multiplier=1, channel_max=16), 0)


def images(g):
    z = torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    return g(z, noise_mode="const")  # psi 1, const noise, fp32 (OPS.md 3.5)


@pytest.fixture
def nv(monkeypatch, tmp_path):
    """Stand-in NVIDIA modules; returns a namespace with ``write(g, path, **kw)`` and the exec ``marker`` path."""
    marker = tmp_path / "module_src_ran"

    def run_embedded_source(meta):  # what the real one would do: exec the embedded source
        exec(meta["module_src"], {})

    stand_in = install_nvidia_modules(monkeypatch, reconstruct=run_embedded_source,
                                      module_src=f"open({str(marker)!r}, 'w').write('ran')\n")
    EasyDict = stand_in.EasyDict

    def tree(flat, kwargs, class_name="Generator"):
        """Nest a flat NVIDIA state dict into module records; plus a non-persistent buffer that must not reach
        the state dict."""
        top = stand_in.tree(flat, class_name, kwargs)
        top.state["_buffers"]["scratch"] = torch.zeros(3)
        top.state["_non_persistent_buffers_set"] = {"scratch"}
        return top

    def kwargs_for(g, layout="ada", **over):
        """``G_ema._init_kwargs`` as each repository's train.py writes them (``class_name`` is popped by
        ``construct_class_by_name``; ``c_dim``, ``img_resolution``, ``img_channels`` come from the data set).

        ``"ada"``: stylegan2-ada-pytorch ``training/networks.py``: synthesis settings nested under
        ``synthesis_kwargs``. ``"sg3"``: stylegan3 ``training/networks_stylegan2.py``: they are the Generator's
        own keyword arguments, so ``channel_base`` / ``channel_max`` sit at the top level (``num_fp16_res`` and
        ``conv_clamp`` only with ``--fp32``), beside ``fused_modconv_default``.
        """
        a = g.arch
        base = a.size * a.channels[-1]  # C(r) = min(base // r, max) reproduces the channel table
        kw = EasyDict(z_dim=a.style_dim, w_dim=a.style_dim, mapping_kwargs=EasyDict(num_layers=a.n_mlp))
        if layout == "ada":
            kw["synthesis_kwargs"] = EasyDict(channel_base=base, channel_max=max(a.channels), num_fp16_res=4,
                                           conv_clamp=256, architecture="skip")
        else:
            kw.update(channel_base=base, channel_max=max(a.channels), fused_modconv_default="inference_only",
                      num_fp16_res=0, conv_clamp=None)
        kw.update(c_dim=0, img_resolution=a.size, img_channels=3)
        kw.update(over)
        return kw

    def write(g, path, *, flat=None, kwargs=None, extra_state=None):
        flat = to_nvidia_state_dict(g) if flat is None else flat
        top = tree(flat, kwargs_for(g) if kwargs is None else kwargs)
        top.state.update(extra_state or {})
        d = tree({"b16.fromrgb.weight": torch.ones(4, 3, 1, 1)}, EasyDict(c_dim=0), "Discriminator")
        with open(path, "wb") as fh:
            pickle.dump({"G": top, "D": d, "G_ema": top, "augment_pipe": None,
                         "training_set_kwargs": EasyDict(path="~/ffhq.zip", resolution=16)}, fh)

    return types.SimpleNamespace(write=write, marker=marker, kwargs_for=kwargs_for, EasyDict=EasyDict)


def test_every_format_loads_to_the_same_generator(tmp_path, nv):
    g = small()
    nv.write(g, tmp_path / "g.pkl")
    save_generator(g, tmp_path / "g.safetensors")
    export_rosinality(g, tmp_path / "g.pt")
    ref = images(g)
    for name, fmt in (("g.pkl", "nvidia-pkl"), ("g.safetensors", "zsgm"), ("g.pt", "rosinality")):
        loaded, info = load_generator(tmp_path / name)
        assert info["format"] == fmt
        assert loaded.arch == g.arch  # read from the file
        sa, sb = g.state_dict(), loaded.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), name
        assert torch.equal(loaded.latent_avg, g.latent_avg)  # w_avg -> latent_avg
        assert torch.allclose(images(loaded), ref, atol=1e-5, rtol=0), name
    info = load_generator(tmp_path / "g.pkl")[1]
    assert info["nvidia"] == {"conv_clamp": 256, "num_fp16_res": 4}
    assert torch.equal(info["extra"]["d"]["b16.fromrgb.weight"], torch.ones(4, 3, 1, 1))  # D returned raw
    assert not nv.marker.exists()  # the embedded module source never ran...
    with open(tmp_path / "g.pkl", "rb") as fh:
        pickle.load(fh)  # ...while a plain unpickler (NVIDIA's way) would have run it
    assert nv.marker.exists()


def test_flattened_pickle_is_the_nvidia_state_dict(tmp_path, nv):
    g = small()
    nv.write(g, tmp_path / "g.pkl")
    flat, kwargs, d_state = read_nvidia_pickle(str(tmp_path / "g.pkl"))
    want = to_nvidia_state_dict(g)
    assert set(flat) == set(want)
    assert "scratch" not in flat  # non-persistent buffer dropped
    assert all(torch.equal(flat[k], want[k]) for k in want)
    assert kwargs["img_resolution"] == 16 and kwargs["mapping_kwargs"]["num_layers"] == 2
    assert set(d_state) == {"b16.fromrgb.weight"}
    # NVIDIA shapes (OPS.md 3.4) and the reverse mapping is exact (filters are rebuilt, so they are dropped)
    assert flat["synthesis.b4.const"].shape == (16, 4, 4) and flat["synthesis.b8.conv0.noise_strength"].shape == ()
    assert flat["synthesis.b8.torgb.bias"].shape == (3,) and flat["synthesis.b16.conv1.noise_const"].shape == (16, 16)
    assert torch.equal(flat["synthesis.b8.conv0.resample_filter"] * 4, g.convs[0].conv.blur.kernel)
    back = nvidia_to_rosinality(flat, g.arch)
    state = {k: v for k, v in g.state_dict().items() if not k.endswith(".kernel")}
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)


def test_nvidia_files_convert_exactly(tmp_path, nv):
    from zsgm.generator import convert_checkpoint

    g = small()
    nv.write(g, tmp_path / "g.pkl")
    convert_checkpoint(tmp_path / "g.pkl", tmp_path / "a.pt")
    convert_checkpoint(tmp_path / "a.pt", tmp_path / "b.safetensors")
    back = load_generator(tmp_path / "b.safetensors")[0]
    want, got = to_nvidia_state_dict(g), to_nvidia_state_dict(back)
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


class _Call:
    """Pickles as ``func(*args)``: how a malicious pickle runs code on a plain unpickler."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def test_pickles_that_call_anything_else_are_refused_and_run_nothing(tmp_path, nv):
    import builtins
    import os

    marker = tmp_path / "pwned"
    g = small()
    cases = {
        "system.pkl": ({"G_ema": _Call(os.system, f"touch {marker}")}, r"global (posix|os)\.system"),
        "exec.pkl": ({"G_ema": _Call(builtins.exec, f"open({str(marker)!r}, 'w')")}, r"global builtins\.exec"),
        "eval.pkl": ([_Call(builtins.eval, f"open({str(marker)!r}, 'w')")], r"global builtins\.eval"),
        "module.pkl": ({"G_ema": torch.nn.Linear(2, 2)}, r"global torch\.nn\.modules\.linear\.Linear"),
    }
    for name, (obj, msg) in cases.items():
        with open(tmp_path / name, "wb") as fh:
            pickle.dump(obj, fh)
        with pytest.raises(CheckpointError, match=f"{name}: refusing to load {msg}.*nothing was executed"):
            load_generator(tmp_path / name)
    # hidden deep inside an otherwise valid network pickle
    nv.write(g, tmp_path / "nested.pkl", extra_state={"_init_args": (_Call(os.system, f"touch {marker}"),)})
    with pytest.raises(CheckpointError, match=r"nested.pkl: refusing to load global (posix|os)\.system"):
        load_generator(tmp_path / "nested.pkl")
    # torch.storage._load_from_bytes is replaced by a weights-only load: a storage blob holding code is refused
    blob = tmp_path / "blob"
    torch.save(_Call(os.system, f"touch {marker}"), blob, _use_new_zipfile_serialization=False)
    with open(tmp_path / "storage.pkl", "wb") as fh:
        pickle.dump({"G_ema": _Call(torch.storage._load_from_bytes, blob.read_bytes())}, fh)
    with pytest.raises(CheckpointError, match=r"storage.pkl: not a readable NVIDIA network pickle \(UnpicklingError"):
        load_generator(tmp_path / "storage.pkl")
    assert not marker.exists() and not nv.marker.exists()
    with open(tmp_path / "exec.pkl", "rb") as fh:
        pickle.load(fh)  # proof that the payload is live: a plain unpickler runs it
    assert marker.exists()


def test_numpy_scalars_in_both_numpy_spellings():
    data = pickle.dumps({"gain": np.float32(0.25), "n": np.int64(7)}, protocol=3)  # GLOBAL opcodes carry the names
    scalar = np.float32(0).__reduce__()[0]
    here = scalar.__module__  # numpy._core.multiarray (NumPy 2) or numpy.core.multiarray (NumPy 1)
    for spelling in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out = load_pickle_safely_bytes(data.replace(here.encode(), spelling.encode()))
        assert out == {"gain": np.float32(0.25), "n": 7} and isinstance(out["gain"], np.float32)
    object_scalar = pickle.dumps(_Call(scalar, np.dtype(object), None), protocol=3)
    with pytest.raises(CheckpointError, match=r"numpy scalar of dtype dtype\('O'\)"):
        load_pickle_safely_bytes(object_scalar)


def load_pickle_safely_bytes(data: bytes):
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".pkl") as fh:
        fh.write(data)
        fh.flush()
        return load_pickle_safely(fh.name)


def test_bad_nvidia_pickles_give_clear_errors(tmp_path, nv):
    g = small()
    nv.write(g, tmp_path / "g.pkl")
    data = (tmp_path / "g.pkl").read_bytes()
    (tmp_path / "cut.pkl").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pkl: not a readable NVIDIA network pickle.*truncated"):
        load_generator(tmp_path / "cut.pkl")
    with open(tmp_path / "plain.pkl", "wb") as fh:
        pickle.dump({"weights": [1, 2]}, fh)
    with pytest.raises(CheckpointError, match=r"plain.pkl: expected an NVIDIA network pickle with key 'G_ema', "
                                              r"found \['weights'\]"):
        load_generator(tmp_path / "plain.pkl")
    flat = {("synthesis.L0_36_512.weight" if k == "synthesis.b4.const" else k): v
            for k, v in to_nvidia_state_dict(g).items()}
    nv.write(g, tmp_path / "sg3.pkl", flat=flat)
    with pytest.raises(CheckpointError, match="sg3.pkl: missing NVIDIA key 'synthesis.b4.const': not a StyleGAN2"):
        load_generator(tmp_path / "sg3.pkl")
    nv.write(g, tmp_path / "cond.pkl", kwargs=nv.kwargs_for(g, c_dim=10))
    with pytest.raises(CheckpointError, match=r"cond.pkl: G_ema init kwargs: conditional generators \(c_dim 10\) "
                                              r"are not supported"):
        load_generator(tmp_path / "cond.pkl")
    nv.write(g, tmp_path / "big.pkl", kwargs=nv.kwargs_for(g, img_resolution=32))
    with pytest.raises(CheckpointError, match="big.pkl: missing NVIDIA key 'synthesis.b32.conv0.weight'"):
        load_generator(tmp_path / "big.pkl")
    flat = dict(to_nvidia_state_dict(g), **{"mapping.embed.weight": torch.zeros(32, 10)})
    nv.write(g, tmp_path / "extra.pkl", flat=flat)
    with pytest.raises(CheckpointError, match=r"extra.pkl: NVIDIA keys not part of a 16px StyleGAN2 generator: "
                                              r"\['mapping.embed.weight'\]"):
        load_generator(tmp_path / "extra.pkl")
    assert not nv.marker.exists()


# ------------------------------------------------------------------ both repositories' init-kwargs layouts


def tapered():
    """A 64-px G whose top resolution has fewer channels than channel_max: C(r) = min(512 // r, 16), i.e. the
    issue's ``channel_base = 16384`` at 64 px (512 -> 256 channels), scaled down. NVIDIA's default channel_base
    (32768) would give 16 channels at 64 px, so reading the wrong place for channel_base cannot pass."""
    return randomised(GeneratorArch.nvidia(64, style_dim=8, n_mlp=2, channel_base=512, channel_max=16), 1)


@pytest.mark.parametrize("layout", ["ada", "sg3"])
def test_both_repositories_layouts_give_the_architecture_of_the_tensors(tmp_path, nv, layout):
    g = tapered()
    assert g.arch.channels == (16, 16, 16, 16, 8)
    kwargs = nv.kwargs_for(g, layout=layout)
    assert ("channel_base" in kwargs) == (layout == "sg3") and ("synthesis_kwargs" in kwargs) == (layout == "ada")
    nv.write(g, tmp_path / "g.pkl", kwargs=kwargs)
    loaded, info = load_generator(tmp_path / "g.pkl")
    assert loaded.arch == g.arch
    sa, sb = g.state_dict(), loaded.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    z = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(loaded(z, noise_mode="const"), g(z, noise_mode="const"), atol=1e-5, rtol=0)
    want = {"conv_clamp": 256, "num_fp16_res": 4} if layout == "ada" else {"conv_clamp": None, "num_fp16_res": 0}
    assert info["nvidia"] == want  # read from where each layout keeps them
    assert not nv.marker.exists()


@pytest.mark.parametrize("layout", ["ada", "sg3"])
def test_init_kwargs_that_disagree_with_the_tensors_name_the_key(tmp_path, nv, layout):
    g = tapered()
    kwargs = nv.kwargs_for(g, layout=layout)
    (kwargs["synthesis_kwargs"] if layout == "ada" else kwargs)["channel_base"] = 32768  # NVIDIA's default
    nv.write(g, tmp_path / "g.pkl", kwargs=kwargs)
    with pytest.raises(CheckpointError, match=r"g.pkl: key 'convs.6.conv.weight' has shape \[1, 8, 16, 3, 3\], the "
                                              r"architecture read from G_ema's init kwargs .* expects \[1, 16, 16"):
        load_generator(tmp_path / "g.pkl")


BAD_KWARGS = [
    ({"img_resolution": None}, r"missing 'img_resolution'"),
    ({"img_resolution": "64"}, r"'img_resolution' should be an integer, found '64'"),
    ({"img_resolution": 48}, r"'img_resolution' = 48 is not a power of two"),
    ({"img_resolution": 1 << 40}, r"'img_resolution' = 1099511627776 is outside 4..4096"),
    ({"w_dim": 1 << 20, "z_dim": 1 << 20}, r"'w_dim' = 1048576 is outside 1..4096"),
    ({"w_dim": 8.5}, r"'w_dim' should be an integer, found 8.5"),
    ({"channel_base": 1 << 40}, r"'channel_base' = 1099511627776 is outside"),
    ({"channel_max": -1}, r"'channel_max' = -1 is outside 1..4096"),
    ({"channel_base": 32}, r"'channel_base' = 32 gives 0 channels at 64px"),
    ({"mapping_kwargs": {"num_layers": 10 ** 9}}, r"'mapping_kwargs.num_layers' = 1000000000 is outside 1..64"),
    ({"mapping_kwargs": {"num_layers": 2, "lr_multiplier": float("nan")}}, r"'mapping_kwargs.lr_multiplier' should "
                                                                           r"be a finite positive number"),
    ({"mapping_kwargs": [1, 2]}, r"'mapping_kwargs' should be a table"),
    ({"resample_filter": [1, 2]}, r"'resample_filter' should be 4 integer taps"),
    ({"architecture": "resnet"}, r"'architecture' = 'resnet' is not supported"),
]


@pytest.mark.parametrize("over,message", BAD_KWARGS, ids=[str(i) for i in range(len(BAD_KWARGS))])
def test_bad_init_kwargs_give_one_error_naming_the_kwarg(tmp_path, nv, over, message, monkeypatch):
    import zsgm.generator.checkpoints as checkpoints

    def never(*args, **kwargs):
        raise AssertionError("a generator was allocated for a file that should have been refused")

    g = tapered()
    nv.write(g, tmp_path / "g.pkl", kwargs=nv.kwargs_for(g, layout="sg3", **over))
    monkeypatch.setattr(checkpoints, "Generator", never)
    with pytest.raises(CheckpointError, match=r"g.pkl: G_ema init kwargs: " + message):
        load_generator(tmp_path / "g.pkl")


def test_pickled_tensors_that_claim_huge_shapes_are_refused_without_a_copy(tmp_path, nv, monkeypatch):
    """A stride-0 view of one value pickles as a [2^20, 2^20] tensor in a file of a few kB."""
    import zsgm.generator.checkpoints as checkpoints

    def never(*args, **kwargs):
        raise AssertionError("a generator was allocated for a file that should have been refused")

    monkeypatch.setattr(checkpoints, "Generator", never)
    g = small()
    for key, want in (("mapping.fc0.weight", r"'style.1.weight' has shape \[1048576, 1048576\]"),
                      ("synthesis.b8.conv0.weight", r"'convs.0.conv.weight' has shape \[1, 1048576, 1048576, 3, 3\]")):
        flat = dict(to_nvidia_state_dict(g))
        flat[key] = torch.zeros(1).expand(*([1 << 20, 1 << 20] + ([3, 3] if "conv" in key else [])))
        nv.write(g, tmp_path / "lie.pkl", flat=flat)
        assert (tmp_path / "lie.pkl").stat().st_size < 1_000_000
        with pytest.raises(CheckpointError, match=r"lie.pkl: key " + want + r", the architecture read from G_ema's "
                                                  r"init kwargs"):
            load_generator(tmp_path / "lie.pkl")


def test_non_finite_weights_in_a_pickle_are_refused(tmp_path, nv):
    g = small()
    flat = dict(to_nvidia_state_dict(g))
    flat["synthesis.b16.torgb.bias"] = torch.tensor([0.0, float("nan"), 0.0])
    nv.write(g, tmp_path / "nan.pkl", flat=flat)
    with pytest.raises(CheckpointError, match=r"nan.pkl: 1 of \d+ tensors hold non-finite values \(NaN or inf\), the "
                                              r"first is 'to_rgbs.1.bias' \(1 of 3 values\)"):
        load_generator(tmp_path / "nan.pkl")


def test_random_init_kwargs_end_in_the_generator_or_one_checkpoint_error(tmp_path, nv, monkeypatch):
    """Any value at any architecture kwarg, in either layout: a correct load or one CheckpointError naming the
    file, and never a generator larger than the file's."""
    import random

    import zsgm.generator.checkpoints as checkpoints

    real = checkpoints.Generator
    monkeypatch.setattr(checkpoints, "Generator", lambda arch: real(arch) if arch.size <= 64 and max(
        arch.channels) <= 16 and arch.style_dim <= 8 else pytest.fail(f"allocated {arch}"))
    g = tapered()
    values = [None, "64", -1, 0, 1, 3, 8, 64, 512, 1 << 40, 2.5, float("nan"), float("inf"), True, [], {}, [1, 3, 3, 1],
              np.int64(64), "skip"]
    rng = random.Random(0)
    for _ in range(40):
        layout = rng.choice(["ada", "sg3"])
        kwargs = nv.kwargs_for(g, layout=layout)
        synth = kwargs["synthesis_kwargs"] if layout == "ada" else kwargs
        table, key = rng.choice([(kwargs, "img_resolution"), (kwargs, "w_dim"), (kwargs, "z_dim"), (kwargs, "c_dim"),
                                 (kwargs, "img_channels"), (kwargs["mapping_kwargs"], "num_layers"),
                                 (kwargs["mapping_kwargs"], "lr_multiplier"), (synth, "channel_base"),
                                 (synth, "channel_max"), (synth, "architecture"), (synth, "resample_filter")])
        table[key] = rng.choice(values)
        nv.write(g, tmp_path / "g.pkl", kwargs=kwargs)
        try:
            loaded, _ = load_generator(tmp_path / "g.pkl")
        except CheckpointError as exc:
            assert "g.pkl" in str(exc) and "\n" not in str(exc), (key, table[key], exc)
        else:
            assert loaded.arch.channels == g.arch.channels, (key, table[key])
