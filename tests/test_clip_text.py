"""zsgm.clip text side on the tiny random CLIP: template ensembles, directions, learned-context prompts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zsgm.clip import (
    ClipModelSpec,
    build_context_prompt,
    class_embedding,
    format_templates,
    load_clip_model,
    text_direction,
)
from zsgm.clip_templates import IMAGENET_TEMPLATES

TEMPLATES = ["a {}.", "a photo of a {}.", "art of the {}.", "the {} in a video game."]


@pytest.fixture(scope="module")
def tiny():
    return load_clip_model(ClipModelSpec(name="tiny-random"))


def test_imagenet_templates_are_the_79_with_one_placeholder():
    assert len(IMAGENET_TEMPLATES) == 79 == len(set(IMAGENET_TEMPLATES))
    assert all(t.count("{}") == 1 for t in IMAGENET_TEMPLATES)
    assert IMAGENET_TEMPLATES[0] == "a bad photo of a {}." and "itap of my {}." in IMAGENET_TEMPLATES
    assert format_templates("dog", ["a {}.", "the {} in a video game."]) == ["a dog.", "the dog in a video game."]
    with pytest.raises(ValueError, match=r"templates\[1\] = 'no slot': expected exactly one '\{\}' placeholder"):
        format_templates("dog", ["a {}.", "no slot"])


def test_direction_aggregates_match_a_hand_computation(tiny):
    e_s = F.normalize(tiny.model.encode_text(tiny.tokenize([t.format("photo") for t in TEMPLATES])), dim=-1)
    e_t = F.normalize(tiny.model.encode_text(tiny.tokenize([t.format("sketch") for t in TEMPLATES])), dim=-1)
    nada = F.normalize((e_t - e_s).mean(0), dim=0)
    air = F.normalize(F.normalize(e_t - e_s, dim=-1).mean(0), dim=0)
    got_nada = text_direction(tiny, "photo", "sketch", aggregate="nada", templates=TEMPLATES)
    got_air = text_direction(tiny, "photo", "sketch", aggregate="air", templates=TEMPLATES)
    assert torch.allclose(got_nada, nada, atol=1e-6) and torch.allclose(got_air, air, atol=1e-6)
    assert not torch.allclose(nada, air, atol=1e-4)  # the two rules really differ
    assert torch.allclose(got_nada.norm(), torch.tensor(1.0))
    mean = e_t.mean(0)
    assert torch.allclose(class_embedding(tiny, "sketch", renormalize=False, templates=TEMPLATES), mean, atol=1e-6)
    assert torch.allclose(class_embedding(tiny, "sketch", renormalize=True, templates=TEMPLATES),
                          F.normalize(mean, dim=0), atol=1e-6)
    with pytest.raises(ValueError, match="aggregate must be 'nada' or 'air'; got 'sum'"):
        text_direction(tiny, "photo", "sketch", aggregate="sum", templates=TEMPLATES)


def test_direction_encodes_both_template_batches_in_one_pass(tiny, monkeypatch):
    calls = []
    real = tiny.model.encode_text
    monkeypatch.setattr(tiny.model, "encode_text", lambda tokens: calls.append(tokens.shape[0]) or real(tokens))
    text_direction(tiny, "cat", "lion", templates=IMAGENET_TEMPLATES)
    assert calls == [2 * 79]
    text_direction(tiny, "cat", "lion", aggregate="air", templates=IMAGENET_TEMPLATES)
    class_embedding(tiny, "lion", renormalize=True)
    assert calls == [2 * 79]  # everything else came from the cache


def test_inserting_the_real_context_embeddings_reproduces_the_plain_prompt(tiny):
    classes = ["sketch", "pencil drawing"]  # one- and two-token classes: EOT at different positions
    prompt = build_context_prompt(tiny, classes, n_ctx=4, ctx_init="a photo of a")
    assert prompt.texts == ("a photo of a sketch.", "a photo of a pencil drawing.")
    assert prompt.prefix.shape == (2, 1, 64) and prompt.suffix.shape == (2, 32 - 1 - 4, 64)
    assert torch.equal(prompt["tokens"], prompt.tokens)  # dict-style access works too
    _, words = tiny.token_embeddings(["a photo of a"])
    ctx = words[0, 1:5].expand(2, -1, -1).clone().requires_grad_(True)  # [T, n_ctx, W]
    feats = prompt.encode(tiny, ctx)  # unnormalised
    tiny.clear_text_cache()
    plain = tiny.encode_text(list(prompt.texts), normalize=False)
    assert torch.equal(feats.detach(), plain)
    assert torch.allclose(F.normalize(feats, dim=-1), tiny.encode_text(list(prompt.texts)), atol=1e-6)
    feats.sum().backward()
    assert ctx.grad.abs().sum() > 0
    shared = prompt.encode(tiny, prompt.init)  # [n_ctx, W] broadcast to every row
    assert torch.equal(shared, plain)


def test_other_context_vectors_change_the_features_and_keep_the_class(tiny):
    prompt = build_context_prompt(tiny, ["sketch", "photo"], n_ctx=4, ctx_init="a photo of a")
    ctx = torch.randn(4, tiny.text_width, generator=torch.Generator().manual_seed(0))
    feats = prompt.encode(tiny, ctx)
    assert not torch.allclose(feats, prompt.encode(tiny, prompt.init), atol=1e-3)
    assert not torch.allclose(feats[0], feats[1], atol=1e-3)  # the class token still matters
    with pytest.raises(ValueError, match=r"ctx: expected \[4, 64\] or \[2, 4, 64\], got \[3, 64\]"):
        prompt.assemble(torch.zeros(3, 64))


def test_context_prompt_errors(tiny):
    with pytest.raises(ValueError, match="ctx_init 'a photo of' is 3 tokens long but n_ctx = 4"):
        build_context_prompt(tiny, ["x"], n_ctx=4, ctx_init="a photo of")
    placeholder = build_context_prompt(tiny, ["x"], n_ctx=2, ctx_init=None)
    assert placeholder.texts == ("X X x.",) and placeholder.init.shape == (2, 64)
    with pytest.raises(ValueError, match="does not fit the context length 32"):
        build_context_prompt(tiny, [" ".join(["word"] * 40)], n_ctx=4)
    with pytest.raises(ValueError, match=r"embeds: expected \[1, 32, 64\]"):
        tiny.encode_token_embeddings(torch.zeros(1, 31, 64), torch.zeros(1, 32, dtype=torch.long))
