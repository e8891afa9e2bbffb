"""zsgm.clip image and text encoding on the tiny random CLIP: gradients, preprocessing, text cache."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from zsgm.clip import ClipModelSpec, load_clip_model, preprocess_images


@pytest.fixture(scope="module")
def tiny():
    return load_clip_model(ClipModelSpec(name="tiny-random"))


def test_model_is_frozen_and_reports_its_sizes(tiny):
    assert (tiny.image_size, tiny.embed_dim, tiny.text_width, tiny.context_length) == (32, 64, 64, 32)
    assert not any(p.requires_grad for p in tiny.parameters())
    tiny.train()
    assert not tiny.model.training  # the wrapped CLIP stays in eval mode


def test_gradients_flow_to_the_input_image(tiny):
    x = (torch.rand(2, 3, 48, 40) * 2 - 1).requires_grad_(True)  # any size, not square
    e = tiny.encode_image(x)
    assert e.shape == (2, 64) and e.dtype == torch.float32
    assert torch.allclose(e.norm(dim=-1), torch.ones(2), atol=1e-5)
    (e[0] * torch.randn(64)).sum().backward()
    assert x.grad is not None and x.grad[0].abs().sum() > 0
    assert x.grad[1].abs().sum() == 0  # samples do not mix


@pytest.mark.parametrize("mode", ["nada", "oneshot", "deltaedit"])
@pytest.mark.parametrize("hw", [(32, 32), (64, 48), (100, 100)])
def test_constant_image_maps_to_its_normalised_constant(tiny, mode, hw):
    const = torch.full((1, 3, *hw), 0.5)  # 0.5 in [-1, 1] is 0.75 in [0, 1]
    out = preprocess_images(const, mode=mode, size=32, mean=tiny.mean, std=tiny.std)
    assert out.shape == (1, 3, 32, 32)
    assert torch.allclose(out, ((0.75 - tiny.mean) / tiny.std).expand_as(out), atol=1e-5)


def test_nada_resizes_the_short_side_and_crops_the_centre(tiny):
    mean, std = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    x = torch.rand(1, 3, 64, 128) * 2 - 1  # short side 64 -> 32, long side 128 -> 64, crop columns 16..48
    resized = F.interpolate((x + 1) / 2, size=(32, 64), mode="bicubic", align_corners=False)
    assert torch.allclose(preprocess_images(x, mode="nada", size=32, mean=mean, std=std), resized[..., 16:48])
    square = F.interpolate((x + 1) / 2, size=(32, 32), mode="bicubic", align_corners=False)
    assert torch.allclose(preprocess_images(x, mode="oneshot", size=32, mean=mean, std=std), square)
    same = torch.rand(1, 3, 32, 32) * 2 - 1  # already the input size: untouched apart from the scaling
    assert torch.equal(preprocess_images(same, mode="nada", size=32, mean=mean, std=std), (same + 1) / 2)


@pytest.mark.parametrize("hw", [(64, 64), (40, 56)])
def test_deltaedit_equals_upsample_x7_then_average_pool(hw):
    mean, std = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    x = torch.rand(2, 3, *hw, dtype=torch.float32) * 2 - 1
    naive = F.adaptive_avg_pool2d(F.interpolate((x + 1) / 2, scale_factor=7, mode="nearest"), (32, 32))
    assert torch.allclose(preprocess_images(x, mode="deltaedit", size=32, mean=mean, std=std), naive, atol=1e-6)


def test_preprocessing_uses_the_models_mean_and_std(tiny):
    tiny.preprocess = "oneshot"
    try:
        assert torch.allclose(tiny.prepare_images(torch.zeros(1, 3, 32, 32))[0, :, 0, 0],
                              (0.5 - tiny.mean.flatten()) / tiny.std.flatten())
    finally:
        tiny.preprocess = "nada"
    with pytest.raises(ValueError, match="preprocess mode must be one of nada, oneshot, deltaedit; got 'bogus'"):
        preprocess_images(torch.zeros(1, 3, 8, 8), mode="bogus", size=32, mean=tiny.mean, std=tiny.std)


def test_text_cache_hit_does_not_rerun_the_model(tiny, monkeypatch):
    calls = []
    real = tiny.model.encode_text

    def counting(tokens, *args, **kwargs):
        calls.append(tokens.shape[0])
        return real(tokens, *args, **kwargs)

    monkeypatch.setattr(tiny.model, "encode_text", counting)
    a = tiny.encode_text(["cache a", "cache b", "cache a"])
    assert calls == [2]  # one pass for the two distinct new strings
    b = tiny.encode_text(["cache b", "cache a"])
    assert calls == [2]  # all cached
    tiny.encode_text(["cache a", "cache c"])
    assert calls == [2, 1]  # only the new string
    assert torch.equal(a[0], b[1]) and torch.equal(a[0], a[2])
    assert torch.allclose(a.norm(dim=-1), torch.ones(3)) and not a.requires_grad
    raw = tiny.encode_text(["cache a"], normalize=False)
    assert calls == [2, 1] and torch.allclose(F.normalize(raw, dim=-1), a[:1])
    with pytest.raises(TypeError, match="list of strings"):
        tiny.encode_text("cache a")


def test_importing_zsgm_clip_loads_nothing():
    code = ("import sys, zsgm.clip, zsgm.clip_prompts, zsgm.clip_templates; "
            "print(sorted(m for m in ('open_clip', 'huggingface_hub', 'safetensors') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
