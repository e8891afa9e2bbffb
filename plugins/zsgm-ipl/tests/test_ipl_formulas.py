"""IPL formulas on small tensors against hand-computed values; the mapper; the prompts on a tiny CLIP."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from open_clip.tokenizer import SimpleTokenizer

from zsgm.clip import ClipModel, ClipModelSpec, load_clip_model
from zsgm.generator.layers import EqualLinear, PixelNorm
from zsgm.plugins import get_registry
from zsgm.recipe import RecipeError, recipe_from_dict
from zsgm_ipl.formulas import (
    contrastive_loss,
    domain_regulariser,
    image_specific_directions,
    residual_feature,
)
from zsgm_ipl.mapper import LatentMapper
from zsgm_ipl.prompts import DomainPrompts
from zsgm_ipl.technique import auto_layer_k


@pytest.fixture(scope="module")
def tiny():
    return load_clip_model(ClipModelSpec(name="tiny-random"))


def test_residual_feature_adds_unnormalised_features_then_normalises():
    prompt = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    hard = torch.tensor([0.0, 4.0])
    # row 0: (3, 4) / 5; row 1: (0, 5) / 5. Normalising the terms first would give (1, 1)/sqrt2 for row 0.
    expected = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    assert torch.allclose(residual_feature(prompt, hard), expected)


def test_contrastive_loss_is_the_symmetric_cross_entropy():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    s = 2.0
    # logits_per_image = s * [[1, 0.6], [0, 0.8]]; CE(row, label) = log(1 + exp(other - own))
    ce_img = 0.5 * (math.log1p(math.exp(-0.4 * s)) + math.log1p(math.exp(-0.8 * s)))
    # logits_per_text = s * [[1, 0], [0.6, 0.8]]
    ce_txt = 0.5 * (math.log1p(math.exp(-1.0 * s)) + math.log1p(math.exp(-0.2 * s)))
    expected = 0.5 * (ce_img + ce_txt)
    assert math.isclose(float(contrastive_loss(images, texts, s)), expected, rel_tol=1e-6)
    # tau is the model's exp(logit_scale): the tiny CLIP keeps CLIP's initial log(1/0.07)
    from zsgm.clip import logit_scale

    tiny = load_clip_model(ClipModelSpec(name="tiny-random"))
    assert math.isclose(logit_scale(tiny), 1 / 0.07, rel_tol=1e-5)


def test_domain_regulariser_uses_cosine_to_unrenormalised_class_means():
    t_tgt = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mean_tgt = torch.tensor([2.0, 0.0])  # cos 1 and 0 -> mean(0, 1) = 0.5
    t_src = torch.tensor([[0.6, 0.8], [0.6, 0.8]])
    mean_src = torch.tensor([0.0, 3.0])  # cos 0.8 -> 0.2
    assert math.isclose(float(domain_regulariser(t_tgt, mean_tgt, t_src, mean_src, lambda_src=0.0)), 0.5,
                        rel_tol=1e-6)
    assert math.isclose(float(domain_regulariser(t_tgt, mean_tgt, t_src, mean_src, lambda_src=0.5)),
                        0.5 + 0.5 * 0.2, rel_tol=1e-6)


def test_image_specific_directions_are_per_sample_unit_differences():
    t_src = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    t_tgt = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    r = 1 / math.sqrt(2)
    expected = torch.tensor([[-r, r, 0.0], [0.0, -r, r]])
    assert torch.allclose(image_specific_directions(t_src, t_tgt), expected)


def test_mapper_shape_layers_and_lr_mul():
    mapper = LatentMapper(16, 3, 8)
    w = torch.randn(5, 16)
    assert mapper(w).shape == (5, 3, 8)
    layers = list(mapper.mapping)
    assert isinstance(layers[0], PixelNorm) and len(layers) == 5
    linears = layers[1:]
    assert all(isinstance(l, EqualLinear) and l.lr_mul == 0.01 and l.activation for l in linears)
    assert [tuple(l.weight.shape) for l in linears] == [(16, 16)] * 3 + [(24, 16)]

    # equalised lr: effective W = raw * lr_mul / sqrt(in), b = raw_b * lr_mul; output lrelu(0.2) * sqrt(2);
    # so the raw gradients are those of the effective parameters times the same factors (a 100x slower net).
    layer = linears[0]
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(4, 16)
    w_eff = (layer.weight * 0.01 / 4.0).detach().requires_grad_(True)
    b_eff = (layer.bias * 0.01).detach().requires_grad_(True)
    ref = F.leaky_relu(x @ w_eff.t() + b_eff, 0.2) * math.sqrt(2)
    out = layer(x)
    assert torch.allclose(out, ref, atol=1e-6)
    g = torch.randn_like(out)
    (out * g).sum().backward()
    (ref * g).sum().backward()
    assert torch.allclose(layer.weight.grad, w_eff.grad * 0.01 / 4.0, atol=1e-8)
    assert torch.allclose(layer.bias.grad, b_eff.grad * 0.01, atol=1e-8)

    # run-seeded initialisation: randn / lr_mul (std ~100), zero bias, reproducible from the generator
    a, b = LatentMapper(16, 3, 8), LatentMapper(16, 3, 8)
    a.reset_parameters(torch.Generator().manual_seed(7))
    b.reset_parameters(torch.Generator().manual_seed(7))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert 80 < float(a.mapping[4].weight.detach().std()) < 120 and float(a.mapping[4].bias.detach().abs().sum()) == 0


def test_prompts_with_the_ctx_init_words_reproduce_the_plain_texts(tiny):
    prompts = DomainPrompts(tiny, "photo", "sketch", n_ctx=4, ctx_init="a photo of a")
    raw = tiny.model.encode_text(tiny.tokenize(["a photo of a photo.", "a photo of a sketch.", "a photo of a",
                                                "a photo of a photo", "a photo of a sketch"]))
    assert torch.allclose(prompts.hard["class"], raw[:2], atol=1e-5)  # unnormalised E_T(hard_c), full stop
    assert torch.allclose(prompts.hard["classless"], raw[2:3].expand(2, -1), atol=1e-5)
    # filling the context slots with the words' own embeddings gives P_c = "a photo of a <class>" (no full stop)
    _, embeds = tiny.token_embeddings(["a photo of a"])
    ctx = embeds[:, 1:5].expand(3, -1, -1)  # [B=3, n_ctx, W]
    p_src, p_tgt = prompts.prompt_features(ctx)
    assert torch.allclose(p_src, raw[3:4].expand(3, -1), atol=1e-5)
    assert torch.allclose(p_tgt, raw[4:5].expand(3, -1), atol=1e-5)
    t_src, t_tgt = prompts.residual_features(ctx, hard="class")
    assert torch.allclose(t_src, F.normalize(raw[3] + raw[0], dim=-1).expand(3, -1), atol=1e-5)
    assert torch.allclose(t_tgt, F.normalize(raw[4] + raw[1], dim=-1).expand(3, -1), atol=1e-5)
    # classless: normalize(E_T(P_c) + E_T("a photo of a"))
    t_src, _ = prompts.residual_features(ctx, hard="classless")
    assert torch.allclose(t_src, F.normalize(raw[3] + raw[2], dim=-1).expand(3, -1), atol=1e-5)


def test_prompts_and_mapper_follow_each_clip_models_text_width():
    torch.manual_seed(0)
    clip = CLIP(embed_dim=48,
                vision_cfg={"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
                text_cfg={"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1})
    narrow = ClipModel(clip, SimpleTokenizer(context_length=16), name="narrow").eval()
    mapper = LatentMapper(64, 4, narrow.text_width)
    prompts = DomainPrompts(narrow, "photo", "sketch", n_ctx=4, ctx_init="a photo of a")
    ctx = mapper(torch.randn(2, 64))
    assert ctx.shape == (2, 4, 32)
    t_src, t_tgt = prompts.residual_features(ctx, hard="class")
    assert t_src.shape == t_tgt.shape == (2, 48)
    assert torch.allclose(image_specific_directions(t_src, t_tgt).norm(dim=-1), torch.ones(2), atol=1e-5)


def test_auto_layer_k_matches_ipl_auto_compute():
    assert [auto_layer_k(n) for n in (18, 16, 14, 8, 1)] == [12, 10, 9, 5, 1]


def test_config_errors_carry_the_field_path():
    base = {"source": "photo", "target": "sketch", "generator": {"checkpoint": "tiny-random"},
            "clip": {"models": [{"name": "tiny-random"}]}}
    with pytest.raises(RecipeError) as err:
        recipe_from_dict({**base, "techniques": [{"use": "ipl", "n_ctx": 0},
                                                 {"use": "ipl", "label": "b", "stage2_hard_prompt": "none",
                                                  "iter_mapper": 0}]})
    text = str(err.value)
    assert "techniques[0].n_ctx: must be > 0, got 0" in text
    assert "techniques[1].stage2_hard_prompt: must be one of 'class', 'classless'" in text
    assert "techniques[1].iter_mapper: must be > 0, got 0" in text


def test_ipl_preset_has_public_defaults():
    data = get_registry().presets.get("ipl").build()
    assert data["optim"] == {"steps": 300, "batch_size": 2, "lr": 0.002, "mixing": 0.0, "ema_decay": 0.99}
    assert [(m["name"], m["pretrained"]) for m in data["clip"]["models"]] == [("ViT-B-32-quickgelu", "openai")]
    ipl, directional, freeze = data["techniques"]
    assert ipl == {"use": "ipl", "batch_mapper": 32, "lr_mapper": 0.05, "iter_mapper": 300, "n_ctx": 4,
                   "ctx_init": "a photo of a", "lambda_l": 1.0, "lambda_src": 0.0,
                   "stage2_hard_prompt": "classless", "auto_layer_k": True}
    assert directional == {"use": "directional"}
    assert freeze["use"] == "layer-freeze" and "k" not in freeze and freeze["slot_map"] == "nada"
    recipe_from_dict({**data, "target": "disney"})  # valid once the user names the target


def test_ipl_preset_has_no_default_target():
    data = get_registry().presets.get("ipl").build()
    assert "target" not in data and data["source"] == "photo"
    with pytest.raises(RecipeError, match=r"target: required"):
        recipe_from_dict(data)
