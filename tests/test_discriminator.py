"""The StyleGAN2 discriminator: rosinality layout, a plain-torch reference, file formats and the shapes asset.

The reference forward below is written from the published semantics (rosinality's ConvLayer/ResBlock and the
minibatch-stddev layer): blur = zero-pad then true convolution with the normalised [1,3,3,1] outer product,
equalised-lr convs, lrelu(0.2) * sqrt(2), ``(conv2 + skip) / sqrt(2)``, stddev over groups of
``view(G, -1, F, C/F, H, W)``.
"""

from __future__ import annotations

import math
import pickle

import pytest
import torch
import torch.nn.functional as F

from zsgm.generator import (
    CheckpointError,
    Discriminator,
    DiscriminatorArch,
    DiscriminatorNotFound,
    discriminator_arch_for,
    load_discriminator,
    load_discriminator_source,
    patch_taps,
    random_discriminator,
    save_discriminator,
)
from zsgm.generator.discriminator_files import nvidia_to_rosinality_d, rosinality_to_nvidia_d

from nvidia_stand_in import install_nvidia_modules


def tiny_arch(**kw) -> DiscriminatorArch:
    return DiscriminatorArch(size=16, channels=(8, 6, 4), **kw)  # C(4)=8, C(8)=6, C(16)=4


def randomised(arch: DiscriminatorArch, seed: int = 0) -> Discriminator:
    """Every bias random too (none at its zero init)."""
    d = random_discriminator(arch, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, p in d.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return d


def images(n: int = 4, size: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randn((n, 3, size, size), generator=torch.Generator().manual_seed(seed)).clamp(-1, 1)


# ----------------------------------------------------------------------------------------------- layout


def rosinality_keys(size: int) -> list[str]:
    """rosinality's ``Discriminator(size).state_dict()`` keys, written out by hand."""
    keys = ["convs.0.0.weight", "convs.0.1.bias"]
    for k in range(1, int(math.log2(size)) - 1):
        keys += [f"convs.{k}.conv1.0.weight", f"convs.{k}.conv1.1.bias", f"convs.{k}.conv2.0.kernel",
                 f"convs.{k}.conv2.1.weight", f"convs.{k}.conv2.2.bias", f"convs.{k}.skip.0.kernel",
                 f"convs.{k}.skip.1.weight"]
    return keys + ["final_conv.0.weight", "final_conv.1.bias", "final_linear.0.weight", "final_linear.0.bias",
                   "final_linear.1.weight", "final_linear.1.bias"]


def test_names_and_shapes_are_rosinalitys():
    d = Discriminator(16, channels=(8, 6, 4))
    state = d.state_dict()
    assert list(state) == rosinality_keys(16)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["convs.0.0.weight"] == (4, 3, 1, 1)  # from-RGB to C(16)
    assert shapes["convs.1.conv1.0.weight"] == (4, 4, 3, 3) and shapes["convs.1.conv2.1.weight"] == (6, 4, 3, 3)
    assert shapes["convs.1.skip.1.weight"] == (6, 4, 1, 1) and shapes["convs.2.conv2.1.weight"] == (8, 6, 3, 3)
    assert shapes["final_conv.0.weight"] == (8, 9, 3, 3)  # C(4) + 1 stddev channel
    assert shapes["final_linear.0.weight"] == (8, 128) and shapes["final_linear.1.weight"] == (1, 8)
    assert torch.allclose(state["convs.1.conv2.0.kernel"], torch.outer(torch.tensor([1., 3, 3, 1]),
                                                                       torch.tensor([1., 3, 3, 1])) / 64)
    # rosinality's default table at 256 px (cm 2): 71 tensors, 28,864,129 parameters
    arch = DiscriminatorArch.rosinality(256)
    from zsgm.generator.discriminator import discriminator_state_shapes

    shapes = discriminator_state_shapes(arch)
    assert list(shapes) == rosinality_keys(256)
    assert sum(math.prod(s) for k, s in shapes.items() if not k.endswith(".kernel")) == 28_864_129


def test_arch_for_the_shapes_generator_and_bounds():
    from zsgm.generator import GeneratorArch

    g_arch = GeneratorArch.rosinality(32, style_dim=64, n_mlp=4, channel_max=64)
    arch = discriminator_arch_for(g_arch, channel_max=32)
    assert arch == DiscriminatorArch(size=32, channels=(32, 32, 32, 32))
    assert DiscriminatorArch.from_dict(arch.to_dict()) == arch
    with pytest.raises(ValueError, match="stddev_feat must divide"):
        DiscriminatorArch(size=16, channels=(8, 6, 4), stddev_feat=3)
    with pytest.raises(ValueError, match="unknown discriminator architecture keys"):
        DiscriminatorArch.from_dict({**arch.to_dict(), "depth": 3})
    with pytest.raises(ValueError, match="one count per resolution"):
        DiscriminatorArch(size=32, channels=(8, 8))


# ----------------------------------------------------------------------------------------------- reference


def ref_forward(state: dict, x: torch.Tensor, *, blocks: int, group: int = 4, feat: int = 1) -> torch.Tensor:
    """Plain-torch StyleGAN2 residual D from a rosinality state dict (no zsgm code)."""
    k1 = torch.tensor([1., 3., 3., 1.], dtype=x.dtype)
    blur = torch.outer(k1, k1) / k1.sum() ** 2

    def eq(w):
        return w * (1.0 / math.sqrt(w.shape[1] * w.shape[2] * w.shape[3]))

    def lrelu(t, b):
        return F.leaky_relu(t + b.view(1, -1, 1, 1), 0.2) * math.sqrt(2)

    def down(t, pad):  # zero-pad, true convolution with the (symmetric) filter
        c = t.shape[1]
        t = F.pad(t, [pad, pad, pad, pad])
        return F.conv2d(t, blur.flip(0, 1)[None, None].repeat(c, 1, 1, 1), groups=c)

    s = state
    h = lrelu(F.conv2d(x, eq(s["convs.0.0.weight"])), s["convs.0.1.bias"])
    for k in range(1, blocks + 1):
        p = f"convs.{k}."
        a = lrelu(F.conv2d(h, eq(s[p + "conv1.0.weight"]), padding=1), s[p + "conv1.1.bias"])
        a = lrelu(F.conv2d(down(a, 2), eq(s[p + "conv2.1.weight"]), stride=2), s[p + "conv2.2.bias"])
        skip = F.conv2d(down(h, 1), eq(s[p + "skip.1.weight"]), stride=2)
        h = (a + skip) / math.sqrt(2)
    n, c, hh, ww = h.shape
    g = min(n, group)
    std = []
    for i in range(n):  # sample i shares its group with the samples j = i mod (n / g)
        members = h[[j for j in range(n) if j % (n // g) == i % (n // g)]]  # [g, C, H, W]
        sd = (members.var(0, unbiased=False) + 1e-8).sqrt().reshape(feat, c // feat, hh, ww).mean((1, 2, 3))
        std.append(sd[:, None, None].expand(feat, hh, ww))
    h = torch.cat([h, torch.stack(std)], 1)
    h = lrelu(F.conv2d(h, eq(s["final_conv.0.weight"]), padding=1), s["final_conv.1.bias"])
    h = h.reshape(n, -1)
    w0, w1 = s["final_linear.0.weight"], s["final_linear.1.weight"]
    h = F.leaky_relu(h @ (w0 / math.sqrt(w0.shape[1])).t() + s["final_linear.0.bias"], 0.2) * math.sqrt(2)
    return h @ (w1 / math.sqrt(w1.shape[1])).t() + s["final_linear.1.bias"]


@pytest.mark.parametrize("n,feat", [(4, 1), (8, 2), (2, 1)])
def test_forward_matches_the_plain_torch_reference(n, feat):
    d = randomised(tiny_arch(stddev_feat=feat)).double()
    x = images(n).double()
    got = d(x)
    assert got.shape == (n, 1)
    want = ref_forward({k: v for k, v in d.state_dict().items()}, x, blocks=2, feat=feat)
    assert torch.allclose(got, want, atol=1e-12, rtol=1e-10)


def test_features_taps_and_patch_selection():
    d = randomised(tiny_arch()).double()
    x = images().double()
    blocks = d.features(x)
    assert [tuple(t.shape[1:]) for t in blocks] == [(6, 8, 8), (8, 4, 4)]  # after each ResBlock, high res first
    h1, h2, out = d.convs[1].parts(d.convs[0](x))
    assert torch.equal(blocks[0], out)
    inner = d.features(x, ["convs.1.conv2", "convs.1.conv1"])
    assert torch.equal(inner[0], h2) and torch.equal(inner[1], h1)
    shapes = d.arch.tap_shapes()
    assert all(tuple(t.shape[1:]) == shapes[name] for name, t in zip(["convs.1.conv2", "convs.1.conv1"], inner))
    with pytest.raises(ValueError, match="unknown discriminator taps.*known"):
        d.features(x, ["convs.9"])
    with pytest.raises(ValueError, match=r"\[N, 3, 16, 16\]"):
        d(torch.zeros(4, 3, 8, 8))
    with pytest.raises(ValueError, match="multiple of the group size"):
        d(images(6).double())
    # OneshotCLIP's four 512-channel maps of side 32 / 16 (from the architecture alone, nothing allocated)
    assert patch_taps(DiscriminatorArch.rosinality(1024)) == ["convs.5.conv2", "convs.6.conv1", "convs.6.conv2",
                                                              "convs.7.conv1"]
    assert DiscriminatorArch.rosinality(1024).tap_shapes()["convs.5.conv2"] == (512, 32, 32)
    assert patch_taps(DiscriminatorArch.rosinality(256)) == ["convs.3.conv2", "convs.4.conv1", "convs.4.conv2",
                                                             "convs.5.conv1"]


def test_random_discriminator_is_deterministic_and_leaves_the_global_rng():
    before = torch.random.get_rng_state()
    a, b = random_discriminator(tiny_arch(), seed=3), random_discriminator(tiny_arch(), seed=3)
    assert torch.equal(torch.random.get_rng_state(), before)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    c = random_discriminator(tiny_arch(), seed=4)
    assert not torch.equal(c.state_dict()["convs.0.0.weight"], sa["convs.0.0.weight"])


# ----------------------------------------------------------------------------------------------- files


def same_weights(a: Discriminator, b: Discriminator) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_save_load_round_trip(tmp_path):
    d = randomised(tiny_arch(stddev_group=2))
    save_discriminator(d, tmp_path / "d.safetensors")
    back, info = load_discriminator(tmp_path / "d.safetensors")
    assert info["format"] == "zsgm" and back.arch == d.arch and same_weights(d, back)
    save_discriminator(d, tmp_path / "h.safetensors", dtype=torch.float16)
    half, info = load_discriminator(tmp_path / "h.safetensors")
    assert info["dtype"] == "float16" and half.convs[0][0].weight.dtype == torch.float32
    assert torch.allclose(half(images()), d(images()), atol=2e-2)


def test_rosinality_pt_loads(tmp_path):
    d = randomised(tiny_arch())
    torch.save({"g": {}, "d": d.state_dict(), "g_ema": {}}, tmp_path / "ckpt.pt")
    back, info = load_discriminator(tmp_path / "ckpt.pt")
    assert info["format"] == "rosinality" and info["key"] == "d" and back.arch == d.arch and same_weights(d, back)
    state = {k: v for k, v in d.state_dict().items() if not k.endswith(".kernel")}  # kernels are rebuilt
    torch.save({"d": state}, tmp_path / "nokernels.pt")
    assert same_weights(load_discriminator(tmp_path / "nokernels.pt")[0], d)


def test_loader_errors_name_the_file_and_keys(tmp_path):
    torch.save({"g_ema": {}, "latent_avg": torch.zeros(4)}, tmp_path / "g_only.pt")
    with pytest.raises(DiscriminatorNotFound, match=r"g_only\.pt.*'d'.*\['g_ema', 'latent_avg'\]"):
        load_discriminator(tmp_path / "g_only.pt")
    assert issubclass(DiscriminatorNotFound, CheckpointError)
    d = randomised(tiny_arch())
    bad = d.state_dict()
    bad["final_conv.1.bias"] = torch.full((8,), float("nan"))
    torch.save({"d": bad}, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match=r"nan\.pt.*NaN.*'final_conv\.1\.bias'"):
        load_discriminator(tmp_path / "nan.pt")
    short = {k: v for k, v in d.state_dict().items() if k != "final_linear.1.bias"}
    torch.save({"d": short}, tmp_path / "short.pt")
    with pytest.raises(CheckpointError, match=r"short\.pt: missing discriminator weights \['final_linear\.1\.bias'"):
        load_discriminator(tmp_path / "short.pt")
    with pytest.raises(CheckpointError, match="no such file"):
        load_discriminator(tmp_path / "absent.pt")
    # a zsgm generator file holds no D: the loader says so, the source resolver returns None with the reason
    from zsgm.builtin_plugin import tiny_random_generator
    from zsgm.generator import save_generator

    save_generator(tiny_random_generator()[0], tmp_path / "g.safetensors")
    with pytest.raises(DiscriminatorNotFound, match=r"g\.safetensors.*zsgm-generator"):
        load_discriminator(tmp_path / "g.safetensors")
    none, info = load_discriminator_source(str(tmp_path / "g.safetensors"))
    assert none is None and "g.safetensors" in info["reason"]


# ----------------------------------------------------------------------------------------------- NVIDIA


def test_nvidia_names_round_trip():
    d = randomised(tiny_arch())
    state = d.state_dict()
    nv = rosinality_to_nvidia_d(state, d.arch)
    assert "b16.fromrgb.weight" in nv and "b8.conv1.weight" in nv and "b4.out.bias" in nv
    assert nv["b16.conv0.weight"] is state["convs.1.conv1.0.weight"]
    assert nv["b8.skip.weight"] is state["convs.2.skip.1.weight"]
    assert nv["b4.fc.weight"] is state["final_linear.0.weight"]
    nv["b16.resample_filter"] = torch.ones(4, 4)  # unused NVIDIA filters are dropped
    back = nvidia_to_rosinality_d(nv, d.arch)
    assert back.keys() == state.keys() and all(back[k] is state[k] for k in state)
    with pytest.raises(ValueError, match="no rosinality counterpart.*mapping.embed.weight"):
        nvidia_to_rosinality_d({**nv, "mapping.embed.weight": torch.zeros(1)}, d.arch)


@pytest.fixture
def nvidia_pickle(monkeypatch, tmp_path):
    """``write(flat, kwargs, path)``: a pickle shaped like NVIDIA's, with stand-in persistence modules."""
    def never(meta):
        raise AssertionError("the embedded source must never run")

    stand_in = install_nvidia_modules(monkeypatch, reconstruct=never, module_src="raise SystemExit")
    EasyDict = stand_in.EasyDict

    def write(flat, kwargs, path, *, with_d=True):
        top = stand_in.tree(flat, "Discriminator", EasyDict(kwargs))
        data = {"G": None, "G_ema": None, "augment_pipe": None, "training_set_kwargs": EasyDict(resolution=16)}
        if with_d:
            data["D"] = top
        with open(path, "wb") as fh:
            pickle.dump(data, fh)

    return write


def nvidia_state(d: Discriminator) -> dict:
    """What NVIDIA's D.state_dict() holds: our tensors renamed, plus the filter buffers every layer keeps."""
    flat = rosinality_to_nvidia_d(d.state_dict(), d.arch)
    f = d.convs[1].conv2[0].kernel
    for r in (16, 8):
        flat[f"b{r}.resample_filter"] = f.clone()
        flat[f"b{r}.conv0.resample_filter"] = f.clone()
    flat["b16.fromrgb.resample_filter"] = f.clone()
    flat["b4.conv.resample_filter"] = f.clone()
    return flat


def test_nvidia_pickle_loads_to_the_same_discriminator(tmp_path, nvidia_pickle):
    # C(r) = min(channel_base // r, channel_max): base 64, max 8 -> C(16) = 4, C(8) = 8, C(4) = 8
    arch = DiscriminatorArch(size=16, channels=(8, 8, 4), stddev_group=2)
    d = randomised(arch)
    kwargs = {"c_dim": 0, "img_resolution": 16, "img_channels": 3, "architecture": "resnet", "channel_base": 64,
              "channel_max": 8, "num_fp16_res": 4, "conv_clamp": 256, "block_kwargs": {}, "mapping_kwargs": {},
              "epilogue_kwargs": {"mbstd_group_size": 2}}
    nvidia_pickle(nvidia_state(d), kwargs, tmp_path / "net.pkl")
    back, info = load_discriminator(tmp_path / "net.pkl")
    assert info["format"] == "nvidia-pkl" and info["nvidia"] == {"conv_clamp": 256, "num_fp16_res": 4}
    assert back.arch == arch and same_weights(back, d)
    assert torch.equal(back(images()), d(images()))
    nvidia_pickle(nvidia_state(d), {**kwargs, "c_dim": 10}, tmp_path / "cond.pkl")
    with pytest.raises(CheckpointError, match=r"cond\.pkl: 'D': conditional"):
        load_discriminator(tmp_path / "cond.pkl")
    nvidia_pickle(nvidia_state(d), kwargs, tmp_path / "g_only.pkl", with_d=False)
    with pytest.raises(DiscriminatorNotFound, match=r"g_only\.pkl.*'D'.*\['G', 'G_ema'"):
        load_discriminator(tmp_path / "g_only.pkl")


# ----------------------------------------------------------------------------------------------- sources


def test_sources_names_runs_and_files(tmp_path):
    from zsgm.plugins import get_registry

    registry = get_registry()
    none, info = load_discriminator_source("tiny-random", registry=registry)
    assert none is None and "tiny-random" in info["reason"]
    d = randomised(tiny_arch())
    torch.save({"d": d.state_dict()}, tmp_path / "src.pt")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "recipe.toml").write_text(f'[generator]\ncheckpoint = "{tmp_path / "src.pt"}"\n')
    got, info = load_discriminator_source(str(run), registry=registry)
    assert same_weights(got, d) and info["run"] == str(run) and info["format"] == "rosinality"
    torch.save({"format": "zsgm-run-checkpoint", "target": {}}, run / "checkpoints" / "last.pt")
    got, info = load_discriminator_source(str(run / "checkpoints" / "last.pt"), registry=registry)
    assert same_weights(got, d)
    (tmp_path / "plain").mkdir()
    with pytest.raises(CheckpointError, match="not a zsgm run"):
        load_discriminator_source(str(tmp_path / "plain"), registry=registry)
    with pytest.raises(CheckpointError, match="not a registered generator name"):
        load_discriminator_source(str(tmp_path / "nothing.pt"), registry=registry)


def test_shipped_shapes_discriminator_prefers_renders_to_samples():
    from zsgm.plugins import get_registry
    from zsgm.toy.train_discriminator import fake_pool, real_pool, score

    registry = get_registry()
    spec = registry.generators.get("shapes")
    assert spec.lpips == "standin"
    d, info = load_discriminator_source("shapes", registry=registry)
    assert d.arch.size == 32 and info["record"]["held_out"]["auc"] > 0.7
    g, _ = spec.load(device="cpu")
    real, fake = real_pool(64, seed=12345), fake_pool(g, 64, seed=12346)
    assert score(d, real).mean() > score(d, fake).mean()
