"""The StyleGAN2 generator: exact rosinality layout, inputs, truncation, noise modes, slot usage."""

from __future__ import annotations

import pytest
import torch

from zsgm.generator import Generator, GeneratorArch, infer_arch_from_rosinality_state


def small(size=16, **kw):
    torch.manual_seed(0)
    return Generator(GeneratorArch.rosinality(size, style_dim=32, n_mlp=2, channel_multiplier=1, channel_max=16, **kw))


def test_ffhq_1024_layout_matches_rosinality_exactly():
    g = Generator(GeneratorArch.rosinality(1024))
    state = g.state_dict()
    assert sum(p.numel() for p in g.parameters()) == 30_370_060
    assert len(state) == 171 and sum(v.numel() for v in state.values()) == 33_166_492
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["input.input"] == (1, 512, 4, 4)
    assert shapes["conv1.conv.weight"] == (1, 512, 512, 3, 3)
    assert shapes["to_rgb1.bias"] == (1, 3, 1, 1)
    assert shapes["convs.14.conv.weight"] == (1, 32, 64, 3, 3)  # 1024 up conv: 64 -> 32
    assert shapes["convs.14.conv.blur.kernel"] == (4, 4)
    assert shapes["convs.15.noise.weight"] == (1,)
    assert shapes["to_rgbs.7.upsample.kernel"] == (4, 4)
    assert shapes["noises.noise_16"] == (1, 1, 1024, 1024)
    assert shapes["style.8.weight"] == (512, 512) and "style.9.weight" not in shapes
    assert g.n_latent == 18
    assert infer_arch_from_rosinality_state(state) == g.arch


def test_inputs_z_w_ws_agree_and_truncation():
    g = small()
    z = torch.randn(3, 32)
    w = g.mapping(z)
    ws = w[:, None].repeat(1, g.n_latent, 1)
    a = g(z, noise_mode="const")
    assert a.shape == (3, 3, 16, 16)
    assert torch.equal(a, g(w=w, noise_mode="const"))
    assert torch.equal(a, g(ws=ws, noise_mode="const"))
    mean = g.mean_latent(256, generator=torch.Generator().manual_seed(1))
    t0 = g(w=w, truncation=0.0, truncation_latent=mean, noise_mode="const")
    assert torch.allclose(t0[0], t0[1], atol=1e-5)  # psi 0: every sample is the mean
    with pytest.raises(ValueError, match="exactly one of z, w, ws"):
        g(z, w=w)
    with pytest.raises(ValueError, match=r"ws must be \[N, 6, 32\]"):
        g.synthesis(torch.zeros(1, 5, 32))


def test_noise_modes():
    g = small()
    for m in g.modules():
        if hasattr(m, "noise") and isinstance(getattr(m, "noise"), torch.nn.Module):
            m.noise.weight.data.fill_(0.5)
    z = torch.randn(2, 32)
    assert torch.equal(g(z, noise_mode="const"), g(z, noise_mode="const"))
    r1 = g(z, noise_mode="random", rng=torch.Generator().manual_seed(3))
    r2 = g(z, noise_mode="random", rng=torch.Generator().manual_seed(3))
    assert torch.equal(r1, r2)
    assert not torch.allclose(r1, g(z, noise_mode="none"))
    with pytest.raises(ValueError, match="noise_mode must be one of"):
        g(z, noise_mode="loud")


def test_style_slots_follow_the_generator():
    g = small(32)
    slots = dict((name, slot) for slot, name in g.style_layers())
    assert slots["conv1"] == 0 and slots["to_rgb1"] == 1 and slots["convs.0"] == 1
    assert slots["convs.3"] == 4 and slots["to_rgbs.1"] == 5 and slots["to_rgbs.2"] == 7
    # changing only slot 7 changes the image only through the last ToRGB
    z = torch.randn(1, 32)
    ws = g.mapping(z)[:, None].repeat(1, g.n_latent, 1)
    ws2 = ws.clone()
    ws2[:, 7] += 1.0
    assert not torch.allclose(g.synthesis(ws, noise_mode="none"), g.synthesis(ws2, noise_mode="none"))


def test_fused_and_nonfused_generators_agree():
    g = small()
    z = torch.randn(2, 32)
    a = g(z, noise_mode="const")
    g.set_fused_modconv(False)
    assert torch.allclose(a, g(z, noise_mode="const"), atol=1e-5)


def test_arch_validation_and_round_trip():
    arch = GeneratorArch.nvidia(64, channel_base=2048, channel_max=64)
    assert arch.channels == (64, 64, 64, 64, 32)
    assert GeneratorArch.from_dict(arch.to_dict()) == arch
    with pytest.raises(ValueError, match="power of two"):
        GeneratorArch.rosinality(48)
    with pytest.raises(ValueError, match="unknown generator architecture keys"):
        GeneratorArch.from_dict({**arch.to_dict(), "oops": 1})
