"""CLIP wrapper on a tiny random open_clip model: preprocessing, caching, directions, prompts, files."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zsgm.clip import (
    ClipLoadError,
    ClipModelSpec,
    TINY_RANDOM_CONFIG,
    build_context_prompt,
    class_embedding,
    format_templates,
    load_clip_model,
    save_clip_model,
    text_direction,
)
from zsgm.clip_templates import IMAGENET_TEMPLATES


@pytest.fixture(scope="module")
def tiny():
    return load_clip_model(ClipModelSpec(name="tiny-random"))


def test_image_encoding_is_unit_and_differentiable(tiny):
    x = (torch.rand(2, 3, 48, 48) * 2 - 1).requires_grad_(True)
    e = tiny.encode_image(x)
    assert e.shape == (2, 64)
    assert torch.allclose(e.norm(dim=-1), torch.ones(2), atol=1e-5)
    e[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", ["nada", "oneshot", "deltaedit"])
def test_preprocess_modes_give_model_input(tiny, mode):
    tiny.preprocess = mode
    try:
        const = torch.full((1, 3, 64, 48), 0.5)  # [-1, 1] value 0.5 -> 0.75 in [0, 1]
        prepared = tiny.prepare_images(const)
        assert prepared.shape == (1, 3, 32, 32)
        expected = (0.75 - tiny.mean) / tiny.std
        assert torch.allclose(prepared, expected.expand_as(prepared), atol=1e-4)
    finally:
        tiny.preprocess = "nada"


def test_text_cache_runs_the_tower_once(tiny):
    before = tiny.text_forward_count
    a = tiny.encode_text(["a sketch", "a photo"])
    b = tiny.encode_text(["a photo", "a sketch"])
    assert tiny.text_forward_count == before + 1
    assert torch.equal(a[0], b[1]) and torch.allclose(a.norm(dim=-1), torch.ones(2))


def test_direction_aggregates_match_hand_computation(tiny):
    templates = ["a {}.", "a photo of a {}.", "art of the {}."]
    e_s = tiny.encode_text(format_templates("photo", templates))
    e_t = tiny.encode_text(format_templates("sketch", templates))
    nada = F.normalize((e_t - e_s).mean(0), dim=0)
    air = F.normalize(F.normalize(e_t - e_s, dim=-1).mean(0), dim=0)
    assert torch.allclose(text_direction(tiny, "photo", "sketch", aggregate="nada", templates=templates), nada)
    assert torch.allclose(text_direction(tiny, "photo", "sketch", aggregate="air", templates=templates), air)
    assert not torch.allclose(nada, air)
    mean = e_t.mean(0)
    assert torch.allclose(class_embedding(tiny, "sketch", renormalize=False, templates=templates), mean)
    assert torch.allclose(class_embedding(tiny, "sketch", renormalize=True, templates=templates),
                          F.normalize(mean, dim=0))
    assert len(IMAGENET_TEMPLATES) == 79 and all("{}" in t for t in IMAGENET_TEMPLATES)


def test_learned_context_reproduces_the_hard_prompt(tiny):
    pieces = build_context_prompt(tiny, ["sketch", "photo"], n_ctx=4, ctx_init="a photo of a")
    ctx = pieces["init"][None].expand(2, -1, -1).clone().requires_grad_(True)  # [T, n_ctx, W]
    embeds = torch.cat([pieces["prefix"], ctx, pieces["suffix"]], dim=1)
    feats = tiny.encode_token_embeddings(embeds, pieces["tokens"])
    hard = tiny.encode_text(["a photo of a sketch.", "a photo of a photo."])
    assert torch.allclose(F.normalize(feats, dim=-1), hard, atol=1e-5)
    feats.sum().backward()
    assert ctx.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="has 3 words but n_ctx = 4"):
        build_context_prompt(tiny, ["x"], n_ctx=4, ctx_init="a photo of")


def test_local_clip_file_round_trip(tmp_path, tiny):
    path = tmp_path / "clip.safetensors"
    save_clip_model(tiny, path, config=TINY_RANDOM_CONFIG, name="mine")
    again = load_clip_model(ClipModelSpec(name="local", pretrained=str(path)))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(again.encode_image(x), tiny.encode_image(x), atol=1e-6)
    assert torch.allclose(again.encode_text(["a b"]), tiny.encode_text(["a b"]), atol=1e-6)


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(ClipLoadError, match="unknown CLIP model 'ViT-B-33'; did you mean"):
        load_clip_model(ClipModelSpec(name="ViT-B-33"))
    with pytest.raises(ClipLoadError, match="does not exist"):
        load_clip_model(ClipModelSpec(name="ViT-B-32", pretrained=str(tmp_path / "nope.bin")))
    with pytest.raises(ClipLoadError, match="no such file"):
        load_clip_model(ClipModelSpec(name="local", pretrained=str(tmp_path / "nope.safetensors")))
