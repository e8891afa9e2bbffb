"""The StyleGAN2 generator: exact rosinality layout, layer maths, inputs, truncation, noise modes, W+ slots."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from zsgm.generator import Generator, GeneratorArch, infer_arch_from_rosinality_state, to_nvidia_state_dict

D = 32  # style_dim of the small test generators


def small(size=16, **kw):
    torch.manual_seed(0)
    g = Generator(GeneratorArch.rosinality(size, style_dim=D, n_mlp=2, channel_multiplier=1, channel_max=32, **kw))
    for m in g.modules():  # non-zero noise strengths and biases, so every term reaches the image
        if type(m).__name__ == "NoiseInjection":
            m.weight.data.fill_(0.5)
    return g


def expected_rosinality_shapes(size, channels, style_dim=512, n_mlp=8):
    """Names and shapes written out from the OPS.md 3.4 table (independent of the implementation)."""
    c = {2 ** (k + 2): ch for k, ch in enumerate(channels)}
    out = {}
    for i in range(1, n_mlp + 1):
        out[f"style.{i}.weight"], out[f"style.{i}.bias"] = (style_dim, style_dim), (style_dim,)
    out["input.input"] = (1, c[4], 4, 4)

    def styled(name, cin, cout, up):
        out[f"{name}.conv.weight"] = (1, cout, cin, 3, 3)
        out[f"{name}.conv.modulation.weight"], out[f"{name}.conv.modulation.bias"] = (cin, style_dim), (cin,)
        out[f"{name}.noise.weight"], out[f"{name}.activate.bias"] = (1,), (cout,)
        if up:
            out[f"{name}.conv.blur.kernel"] = (4, 4)

    def rgb(name, cin, up):
        out[f"{name}.conv.weight"], out[f"{name}.bias"] = (1, 3, cin, 1, 1), (1, 3, 1, 1)
        out[f"{name}.conv.modulation.weight"], out[f"{name}.conv.modulation.bias"] = (cin, style_dim), (cin,)
        if up:
            out[f"{name}.upsample.kernel"] = (4, 4)

    styled("conv1", c[4], c[4], False)
    rgb("to_rgb1", c[4], False)
    for k in range(3, int(math.log2(size)) + 1):
        r, j = 2 ** k, k - 3
        styled(f"convs.{2 * j}", c[r // 2], c[r], True)
        styled(f"convs.{2 * j + 1}", c[r], c[r], False)
        rgb(f"to_rgbs.{j}", c[r], True)
    for n in range(2 * int(math.log2(size)) - 3):
        r = 2 ** ((n + 5) // 2)
        out[f"noises.noise_{n}"] = (1, 1, r, r)
    return out


def test_ffhq_1024_layout_matches_rosinality_exactly():
    arch = GeneratorArch.rosinality(1024)
    assert arch.channels == (512, 512, 512, 512, 512, 256, 128, 64, 32)  # OPS.md 1.5, cm 2
    g = Generator(arch)
    state = g.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == expected_rosinality_shapes(1024, arch.channels)
    assert len(state) == 171 and sum(v.numel() for v in state.values()) == 33_166_492
    params = list(g.parameters())
    assert sum(p.numel() for p in params) == 30_370_060 and len(params) == 138
    mapping = sum(p.numel() for n, p in g.named_parameters() if n.startswith("style."))
    assert mapping == 2_101_248
    assert g.n_latent == 18 and g.num_layers == 17
    assert infer_arch_from_rosinality_state(state) == arch
    # resampling buffers: normalised outer product of [1, 3, 3, 1], times 4 (rosinality stores the gain)
    f = torch.tensor([1.0, 3, 3, 1])
    want = torch.outer(f, f) / 64 * 4
    assert torch.equal(state["convs.0.conv.blur.kernel"], want)
    assert torch.equal(state["to_rgbs.7.upsample.kernel"], want)
    # modulation biases start at 1, noise strengths at 0
    assert torch.equal(state["convs.5.conv.modulation.bias"], torch.ones(512))
    assert torch.equal(state["to_rgbs.2.conv.modulation.bias"], torch.ones(512))
    assert state["convs.5.noise.weight"].item() == 0
    g.latent_avg = torch.zeros(512)  # becomes mapping.w_avg
    nv = to_nvidia_state_dict(g)  # OPS.md 3.4: NVIDIA G_ema has 182 tensors, 33,167,164 elements
    assert len(nv) == 182 and sum(v.numel() for v in nv.values()) == 33_167_164
    assert tuple(nv["synthesis.b1024.conv0.weight"].shape) == (32, 64, 3, 3)
    assert tuple(nv["synthesis.b1024.conv1.noise_const"].shape) == (1024, 1024)


def test_channel_tables_of_both_constructors():
    assert GeneratorArch.rosinality(1024, channel_multiplier=1).channels == (512, 512, 512, 512, 256, 128, 64, 32, 16)
    assert GeneratorArch.nvidia(1024).channels == GeneratorArch.rosinality(1024).channels  # cbase 32768 == cm 2
    assert GeneratorArch.nvidia(1024, channel_base=16384).channels == \
        GeneratorArch.rosinality(1024, channel_multiplier=1).channels
    assert GeneratorArch.nvidia(64, channel_base=2048, channel_max=64).channels == (64, 64, 64, 64, 32)


def test_arch_dict_round_trip_and_errors():
    arch = GeneratorArch.rosinality(32, style_dim=D, n_mlp=3, channel_max=16)
    assert GeneratorArch.from_dict(json.loads(json.dumps(arch.to_dict()))) == arch
    with pytest.raises(ValueError, match="power of two"):
        GeneratorArch.rosinality(48)
    with pytest.raises(ValueError, match="unknown generator architecture keys: \\['oops'\\]"):
        GeneratorArch.from_dict({**arch.to_dict(), "oops": 1})
    with pytest.raises(ValueError, match="lacks \\['channels'\\]"):
        GeneratorArch.from_dict({"size": 32})
    with pytest.raises(ValueError, match="one count per resolution 4..32 \\(4 values\\), got 3"):
        GeneratorArch(size=32, channels=(8, 8, 8))


def test_infer_arch_reads_shapes_and_names_the_odd_key():
    g = small(32)
    state = g.state_dict()
    assert infer_arch_from_rosinality_state(state) == g.arch
    lean = {k: v for k, v in state.items() if not k.startswith("noises.") and not k.endswith(".kernel")}
    assert infer_arch_from_rosinality_state(lean) == g.arch
    with pytest.raises(ValueError, match="missing key 'input.input'"):
        infer_arch_from_rosinality_state({k: v for k, v in state.items() if k != "input.input"})
    with pytest.raises(ValueError, match=r"mapping layer .* indices should run 1..1 .*found \[2\]"):
        infer_arch_from_rosinality_state({k: v for k, v in state.items() if not k.startswith("style.1.")})
    with pytest.raises(ValueError, match=r"need 'convs.0..5.conv.weight', found convs \[0, 1, 2, 3, 5\]"):
        infer_arch_from_rosinality_state({k: v for k, v in state.items() if not k.startswith("convs.4.")})
    bad = dict(state, **{"convs.2.conv.weight": torch.zeros(1, 32, 7, 3, 3)})
    with pytest.raises(ValueError, match="'convs.2.conv.weight' has 7 input channels"):
        infer_arch_from_rosinality_state(bad, source="x.pt")
    with pytest.raises(ValueError, match="x.pt: key 'input.input' should be a 4-D tensor, found \\(3,\\)"):
        infer_arch_from_rosinality_state(dict(state, **{"input.input": torch.zeros(3)}), source="x.pt")


def _lrelu(x):
    return F.leaky_relu(x, 0.2) * math.sqrt(2)


def test_layers_follow_the_published_maths():
    """Mapping, StyledConv and ToRGB against direct formulas (OPS.md 1.1, 1.3), in float64."""
    g = small(16).double()
    z = torch.randn(2, D, dtype=torch.float64)
    # mapping: PixelNorm then n_mlp equalised FC layers with lr_mul 0.01 and lrelu * sqrt(2)
    x = z * torch.rsqrt(z.square().mean(1, keepdim=True) + 1e-8)
    for i in (1, 2):
        lin = g.style[i]
        x = _lrelu(x @ (lin.weight * 0.01 / math.sqrt(D)).t() + lin.bias * 0.01)
    w = g.mapping(z)
    assert torch.allclose(w, x, atol=1e-12)
    # StyledConv (convs.1, 8x8, no upsampling): modulate, demodulate, conv, + noise, + bias, lrelu * sqrt(2)
    layer = g.convs[1]
    cin = layer.conv.weight.shape[2]
    h = torch.randn(2, cin, 8, 8, dtype=torch.float64)
    noise = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    s = w @ (layer.conv.modulation.weight / math.sqrt(D)).t() + layer.conv.modulation.bias  # [N, I]
    outs = []
    for n in range(2):
        wt = layer.conv.weight[0] / math.sqrt(cin * 9) * s[n][None, :, None, None]  # [O, I, 3, 3]
        wt = wt * torch.rsqrt(wt.square().sum((1, 2, 3), keepdim=True) + 1e-8)
        outs.append(F.conv2d(h[n:n + 1], wt, padding=1))
    y = torch.cat(outs) + layer.noise.weight * noise
    y = _lrelu(y + layer.activate.bias[None, :, None, None])
    assert torch.allclose(layer(h, w, noise), y, atol=1e-10)
    # ToRGB (to_rgb1): 1x1 modulated conv WITHOUT demodulation, weight / sqrt(C_in), + bias
    rgb = g.to_rgb1
    cin = rgb.conv.weight.shape[2]
    h = torch.randn(2, cin, 4, 4, dtype=torch.float64)
    s = w @ (rgb.conv.modulation.weight / math.sqrt(D)).t() + rgb.conv.modulation.bias
    y = torch.einsum("oi,ni,nihw->nohw", rgb.conv.weight[0, :, :, 0, 0] / math.sqrt(cin), s, h) + rgb.bias
    assert torch.allclose(rgb(h, w), y, atol=1e-10)


def test_inputs_z_w_ws_agree():
    g = small()
    z = torch.randn(3, D)
    w = g.mapping(z)
    ws = w[:, None].repeat(1, g.n_latent, 1)
    a = g(z, noise_mode="const")
    assert a.shape == (3, 3, 16, 16) and a.dtype == torch.float32
    assert torch.equal(a, g(w=w, noise_mode="const"))
    assert torch.equal(a, g(ws=ws, noise_mode="const"))
    assert torch.equal(a, g.synthesis(ws, noise_mode="const"))
    with pytest.raises(ValueError, match="exactly one of z, w, ws"):
        g(z, w=w)
    with pytest.raises(ValueError, match="exactly one of z, w, ws"):
        g()
    with pytest.raises(ValueError, match=r"ws must be \[N, 6, 32\], found \(1, 5, 32\)"):
        g.synthesis(torch.zeros(1, 5, D))
    with pytest.raises(ValueError, match=r"z must be \[N, 32\]"):
        g(torch.zeros(2, 7))


def test_truncation_uses_latent_avg_else_the_sampled_mean():
    g = small()
    z = torch.randn(2, D)
    w = g.mapping(z)
    # no latent_avg: the centre is mean_latent(4096) from seed 0, cached
    mean = g.mean_latent(4096, generator=torch.Generator().manual_seed(0))
    assert mean.shape == (1, D)
    out = g(z, truncation=0.5, noise_mode="const")
    assert torch.allclose(out, g(w=mean + 0.5 * (w - mean), noise_mode="const"), atol=1e-6)
    assert torch.equal(g.default_mean_latent(), g.default_mean_latent())
    # psi 0 collapses every sample onto the centre; latent_avg takes precedence when set
    g.latent_avg = torch.randn(D)
    t0 = g(z, truncation=0.0, noise_mode="const")
    assert torch.allclose(t0, g(w=g.latent_avg[None].expand(2, D), noise_mode="const"), atol=1e-6)
    other = torch.randn(1, D)
    t0 = g(z, truncation=0.0, truncation_latent=other, noise_mode="const")
    assert torch.allclose(t0, g(w=other.expand(2, D), noise_mode="const"), atol=1e-6)
    assert torch.equal(g(z, truncation=1.0, noise_mode="const"), g(z, noise_mode="const"))
    # the cache follows the mapping weights; latent_avg follows .to()
    g.latent_avg = None
    before = g.default_mean_latent().clone()
    with torch.no_grad():
        g.style[1].bias.add_(1.0)
    assert not torch.allclose(before, g.default_mean_latent())
    g.latent_avg = torch.randn(D)
    assert g.double().latent_avg.dtype == torch.float64


def test_noise_modes_and_explicit_noise():
    g = small()
    z = torch.randn(2, D)
    const = g(z, noise_mode="const")
    assert torch.equal(const, g(z, noise_mode="const"))
    r1 = g(z, noise_mode="random", rng=torch.Generator().manual_seed(3))
    assert torch.equal(r1, g(z, noise_mode="random", rng=torch.Generator().manual_seed(3)))
    assert not torch.allclose(r1, g(z, noise_mode="random", rng=torch.Generator().manual_seed(4)))
    assert not torch.allclose(g(z), g(z))  # global RNG: fresh noise every call
    none = g(z, noise_mode="none")
    assert not torch.allclose(none, const) and not torch.allclose(none, r1)
    bufs = [getattr(g.noises, f"noise_{i}") for i in range(g.num_layers)]
    assert torch.equal(g(z, noise=bufs), const)  # [1, 1, r, r] maps broadcast over the batch
    assert torch.equal(g(z, noise=[None] * g.num_layers), none)
    assert torch.equal(g(z, noise=g.make_noise(2, mode="random", rng=torch.Generator().manual_seed(3))), r1)
    with pytest.raises(ValueError, match="noise_mode must be one of random, const, none; got 'loud'"):
        g(z, noise_mode="loud")
    with pytest.raises(ValueError, match="expected 5 noise maps"):
        g(z, noise=bufs[:3])
    with pytest.raises(ValueError, match=r"noise\[1\] must be \[2 or 1, 1, 8, 8\], found \(1, 1, 4, 4\)"):
        g(z, noise=[bufs[0]] * g.num_layers)


def test_style_layers_match_the_slots_each_layer_reads():
    """Each synthesis layer's affine input is traced back to the W+ slot it came from (METHODS.md 1)."""
    g = small(32)
    assert g.n_latent == 8
    listed = g.style_layers()
    # the documented rule: slot 0 conv1; slot 1 to_rgb1 and convs.0; slot j>=2 convs.{j-1}; odd j>=3 to_rgbs.{(j-3)/2}
    rule = {(0, "conv1"), (1, "to_rgb1"), (1, "convs.0")}
    for j in range(2, g.n_latent):
        if j - 1 < len(g.convs):  # the last slot feeds only the last ToRGB
            rule.add((j, f"convs.{j - 1}"))
        if j % 2 == 1:
            rule.add((j, f"to_rgbs.{(j - 3) // 2}"))
    assert set(listed) == rule and len(listed) == len(rule)
    # every module that reads a style is listed exactly once
    readers = {n.rsplit(".conv.modulation", 1)[0] for n, _ in g.named_modules() if n.endswith("conv.modulation")}
    assert readers == {name for _, name in listed}
    # trace: slot j holds the constant j; each modulation layer records which constant it saw
    seen = {}
    hooks = [g.get_submodule(f"{name}.conv.modulation").register_forward_hook(
        lambda mod, inp, out, name=name: seen.__setitem__(name, inp[0][0, 0].item())) for _, name in listed]
    ws = torch.arange(g.n_latent, dtype=torch.float32)[None, :, None].expand(1, g.n_latent, D)
    g.synthesis(ws, noise_mode="none")
    for h in hooks:
        h.remove()
    assert {(int(v), k) for k, v in seen.items()} == rule


def test_fused_and_nonfused_generators_agree():
    g = small()
    z = torch.randn(2, D)
    a = g(z, noise_mode="const")
    g.set_fused_modconv(False)
    assert torch.allclose(a, g(z, noise_mode="const"), atol=1e-5)
