"""StyleSpace: layout, W+ -> S, and decoding from S (convs read S, ToRGBs read W+)."""

import math

import pytest
import torch

from zsgm.builtin_plugin import tiny_random_generator
from zsgm.generator import Generator, GeneratorArch
from zsgm.generator.stylespace import (StyleLayer, join_styles, split_styles, style_layout, synthesis_from_styles,
                                       ws_to_styles)


@pytest.fixture(scope="module")
def tiny():
    g, _ = tiny_random_generator()
    return g.eval()


@pytest.fixture(scope="module")
def shapes():
    from zsgm.toy.assets import load_shapes_generator

    g, _ = load_shapes_generator()
    return g.eval()


def _tapered_generator(seed=0) -> Generator:
    """32 px with a different channel count at every resolution (catches in/out-channel mix-ups)."""
    torch.manual_seed(seed)
    arch = GeneratorArch(size=32, style_dim=8, n_mlp=1, channels=(12, 10, 8, 6))
    g = Generator(arch).eval()
    with torch.no_grad():
        for name, p in g.named_parameters():  # non-trivial noise strengths and biases
            if name.endswith("noise.weight") or name.endswith("activate.bias") or name.endswith("modulation.bias"):
                p.add_(0.3 * torch.randn_like(p))
    return g


def _ws(g, n=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, g.n_latent, g.arch.style_dim, generator=gen)  # distinct w per slot


def test_layout_of_1024_config_f_has_17_layers_and_6048_channels():
    arch = GeneratorArch.rosinality(1024)
    layout = style_layout(arch)
    assert [layer.name for layer in layout] == ["conv1"] + [f"convs.{i}" for i in range(16)]
    assert [layer.slot for layer in layout] == list(range(17))
    # by hand: conv1 512; convs at 8..64 px all read 512; 128 px: 512, 256; 256: 256, 128; 512: 128, 64; 1024: 64, 32
    want = [512] * 9 + [512, 256, 256, 128, 128, 64, 64, 32]
    assert [layer.channels for layer in layout] == want
    assert sum(want) == 6048 and layout[-1].stop == 6048
    assert [layer.offset for layer in layout] == [sum(want[:k]) for k in range(17)]
    # DeltaEdit's fine level (the last 10 layers) is 2464 wide
    assert sum(layer.channels for layer in layout[7:]) == 2464


@pytest.mark.parametrize("arch", [
    GeneratorArch.rosinality(32, style_dim=16, n_mlp=1, channel_multiplier=1, channel_max=8),
    GeneratorArch(size=64, style_dim=8, n_mlp=1, channels=(12, 10, 8, 6, 4)),
    GeneratorArch(size=4, style_dim=8, n_mlp=1, channels=(5,)),
])
def test_layout_matches_the_built_modules_and_the_formula(arch):
    g = Generator(arch)
    layout = style_layout(g)
    assert layout == style_layout(arch)
    convs = [(slot, name) for slot, name in g.style_layers() if not name.startswith("to_rgb")]
    assert [(layer.slot, layer.name) for layer in layout] == sorted(convs)
    for layer in layout:
        assert layer.channels == g.get_submodule(layer.name).conv.modulation.weight.shape[0]
    c = arch.channels  # formula: c4 + sum over resolutions of (previous + own) channels
    assert layout[-1].stop == c[0] + sum(c[j] + c[j + 1] for j in range(len(c) - 1))
    assert len(layout) == g.num_layers == 2 * int(math.log2(arch.size)) - 3


def test_ws_to_styles_is_each_conv_modulation_of_its_slot():
    g = _tapered_generator()
    ws = _ws(g)
    s = ws_to_styles(g, ws)
    layout = style_layout(g)
    assert s.shape == (3, layout[-1].stop)
    for layer, part in zip(layout, split_styles(s, layout)):
        mod = g.get_submodule(layer.name).conv.modulation
        # the original's encoder: EqualLinear(D -> I, lr_mul 1): w @ (W / sqrt(D))^T + b
        want = ws[:, layer.slot] @ (mod.weight / math.sqrt(g.arch.style_dim)).t() + mod.bias
        assert torch.allclose(part, want, atol=1e-6)


@pytest.mark.parametrize("which", ["tiny", "shapes", "tapered"])
def test_unedited_styles_give_exactly_the_w_plus_image(which, request):
    g = _tapered_generator() if which == "tapered" else request.getfixturevalue(which)
    ws = _ws(g, seed=1)
    noise = g.make_noise(3, rng=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = g.synthesis(ws, noise=noise)
        img = synthesis_from_styles(g, ws_to_styles(g, ws), ws, noise=noise)
        assert torch.equal(img, ref)
        const = synthesis_from_styles(g, ws_to_styles(g, ws), ws, noise_mode="const")
        assert torch.equal(const, g.synthesis(ws, noise_mode="const"))


def test_random_noise_from_the_same_rng_matches_synthesis(tiny):
    ws = _ws(tiny, n=2)
    with torch.no_grad():
        a = synthesis_from_styles(tiny, ws_to_styles(tiny, ws), ws, rng=torch.Generator().manual_seed(3))
        b = tiny.synthesis(ws, rng=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def _record_conv_outputs(g):
    """Forward hooks on every conv layer's activation: name -> output, in call order."""
    seen, handles = {}, []
    for layer in style_layout(g):
        mod = g.get_submodule(layer.name).activate
        handles.append(mod.register_forward_hook(lambda m, i, o, name=layer.name: seen.__setitem__(name, o)))
    return seen, handles


def test_editing_one_channel_changes_only_that_layer_and_those_after_it():
    g = _tapered_generator()
    ws = _ws(g, n=2, seed=2)
    layout = style_layout(g)
    noise = g.make_noise(2, mode="const")
    s = ws_to_styles(g, ws).detach()
    k = 4  # convs.3
    s_edit = s.clone()
    s_edit[:, layout[k].offset + 1] += 2.0
    seen, handles = _record_conv_outputs(g)
    try:
        with torch.no_grad():
            base_img = synthesis_from_styles(g, s, ws, noise=noise)
            base = dict(seen)
            edit_img = synthesis_from_styles(g, s_edit, ws, noise=noise)
            edit = dict(seen)
    finally:
        for h in handles:
            h.remove()
    assert list(base) == [layer.name for layer in layout]
    for i, layer in enumerate(layout):
        same = torch.equal(base[layer.name], edit[layer.name])
        assert same == (i < k), layer.name
    assert not torch.equal(base_img, edit_img)


def test_the_skip_image_before_the_edited_resolution_is_untouched():
    """ToRGB outputs at resolutions below the edited layer are unchanged (they read ws and earlier features)."""
    g = _tapered_generator()
    ws = _ws(g, n=2, seed=4)
    layout = style_layout(g)
    s = ws_to_styles(g, ws).detach()
    s_edit = s.clone()
    s_edit[:, layout[5].offset] -= 1.5  # convs.4: the upsampling conv at 32 px
    outs = {}
    hooks = [rgb.register_forward_hook(lambda m, i, o, j=j: outs.setdefault(j, []).append(o))
             for j, rgb in enumerate([g.to_rgb1, *g.to_rgbs])]
    try:
        with torch.no_grad():
            synthesis_from_styles(g, s, ws, noise_mode="const")
            synthesis_from_styles(g, s_edit, ws, noise_mode="const")
    finally:
        for h in hooks:
            h.remove()
    # to_rgb1 (4 px), to_rgbs.0 (8 px), to_rgbs.1 (16 px) precede convs.4; to_rgbs.2 (32 px) follows it
    assert [torch.equal(*outs[j]) for j in range(4)] == [True, True, True, False]


def test_the_torgb_layers_still_read_ws(tiny):
    """The last W+ slot drives only the final ToRGB: changing it in ws alone changes the image, not S."""
    ws = _ws(tiny, n=1)
    s = ws_to_styles(tiny, ws).detach()
    ws2 = ws.clone()
    ws2[:, tiny.n_latent - 1] += 1.0  # the last slot drives only the final ToRGB
    with torch.no_grad():
        a = synthesis_from_styles(tiny, s, ws, noise_mode="const")
        b = synthesis_from_styles(tiny, s, ws2, noise_mode="const")
    assert not torch.equal(a, b)
    assert ws_to_styles(tiny, ws2).equal(s)  # no conv reads that slot


def test_gradients_reach_the_style_codes(tiny):
    ws = _ws(tiny, n=1)
    s = ws_to_styles(tiny, ws).detach().requires_grad_(True)
    synthesis_from_styles(tiny, s, ws, noise_mode="none").square().mean().backward()
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_split_and_join_round_trip_and_check_widths():
    layout = [StyleLayer("conv1", 0, 3, 0), StyleLayer("convs.0", 1, 2, 3)]
    s = torch.arange(10.0).reshape(2, 5)
    parts = split_styles(s, layout)
    assert [p.shape for p in parts] == [(2, 3), (2, 2)]
    assert torch.equal(parts[1], s[:, 3:5])
    assert torch.equal(join_styles(parts, layout), s)
    with pytest.raises(ValueError, match=r"\[N, 5\]"):
        split_styles(s[:, :4], layout)
    with pytest.raises(ValueError, match="widths"):
        join_styles(parts[::-1], layout)


def test_bad_shapes_name_what_was_expected(tiny):
    ws = _ws(tiny, n=2)
    total = style_layout(tiny)[-1].stop
    with pytest.raises(ValueError, match=rf"ws_to_styles: ws must be \[N, {tiny.n_latent}, 64\]"):
        ws_to_styles(tiny, ws[:, :-1])
    with pytest.raises(ValueError, match=rf"S codes must be \[N, {total}\]"):
        synthesis_from_styles(tiny, torch.zeros(2, total + 1), ws)
    with pytest.raises(ValueError, match="s has 1 rows, ws has 2"):
        synthesis_from_styles(tiny, torch.zeros(1, total), ws)
    with pytest.raises(ValueError, match="noise maps"):
        synthesis_from_styles(tiny, torch.zeros(2, total), ws, noise=[None])


def test_decoding_from_s_reads_w_plus_only_at_the_torgb_slots():
    """Moving any other W+ slot leaves the image; moving a ToRGB slot changes it (convs read S, ToRGBs read W+)."""
    from zsgm.generator.stylespace import torgb_slots

    g = _tapered_generator(3).eval()
    assert torgb_slots(g) == [1, 3, 5, 7] and torgb_slots(g.arch) == [1, 3, 5, 7]
    torch.manual_seed(4)
    ws = torch.randn(2, g.n_latent, g.arch.style_dim)
    noise = g.make_noise(2, mode="const")
    with torch.no_grad():
        s = ws_to_styles(g, ws)
        base = synthesis_from_styles(g, s, ws, noise=noise)
        for slot in range(g.n_latent):
            moved = ws.clone()
            moved[:, slot] += 1.0
            changed = not torch.equal(synthesis_from_styles(g, s, moved, noise=noise), base)
            assert changed == (slot in torgb_slots(g)), slot
