"""AIR's formulas against hand computation, the anchor prompt and the misalignment log tools."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from zsgm.clip import text_direction, tiny_random_clip
from zsgm.clip_templates import format_templates
from zsgm_air.formulas import (
    adaptive_loss,
    anchor_direction,
    image_offset,
    interpolate_token_embeddings,
    offset_misalignment,
    pool_prompt_features,
    prompt_alignment_loss,
    text_offset,
)
from zsgm_air.misalignment import curve, embedding_misalignment, format_curve, main
from zsgm_air.prompt import AnchorPrompt

S2 = math.sqrt(2.0)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; on an oversubscribed machine two threads made them ~20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny():
    return tiny_random_clip()


def test_image_offset_normalises_each_difference_then_the_mean():
    e_from = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    e_to = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    # differences (-1, 1, 0) and (-1, 0, 3): unit (-1, 1, 0)/sqrt2 and (-1, 0, 3)/sqrt10
    a = torch.tensor([-1.0, 1.0, 0.0]) / S2
    b = torch.tensor([-1.0, 0.0, 3.0]) / math.sqrt(10.0)
    expected = (a + b) / 2
    expected = expected / expected.norm()
    assert torch.allclose(image_offset(e_from, e_to), expected, atol=1e-6)
    # the NADA rule (no per-row normalisation) gives another vector here
    nada = F.normalize((e_to - e_from).mean(0), dim=0)
    assert not torch.allclose(nada, expected, atol=1e-3)


def test_air_rule_text_offset_paired_and_broadcast():
    t_from = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t_to = torch.tensor([[0.0, 1.0], [0.0, 3.0]])
    # pairs: (-1, 1) -> (-1, 1)/sqrt2 ; (0, 2) -> (0, 1)
    expected = torch.tensor([-1.0 / S2, 1.0 / S2 + 1.0]) / 2
    assert torch.allclose(text_offset(t_from, t_to), expected / expected.norm(), atol=1e-6)
    # a [1, D] anchor prompt broadcast against [K, D] template features
    t_prompt = torch.tensor([[1.0, 0.0]])
    targets = torch.tensor([[0.0, 1.0], [1.0, 2.0]])
    rows = torch.stack([torch.tensor([-1.0, 1.0]) / S2, torch.tensor([0.0, 1.0])])
    expected = rows.mean(0) / rows.mean(0).norm()
    assert torch.allclose(anchor_direction(t_prompt, targets), expected, atol=1e-6)


def test_air_rule_matches_the_core_template_direction(tiny):
    templates = ["a photo of a {}.", "a sketch of the {}.", "a {} in a painting."]
    t_src = tiny.encode_text(format_templates("photo", templates))
    t_tgt = tiny.encode_text(format_templates("sketch", templates))
    core = text_direction(tiny, "photo", "sketch", aggregate="air", templates=templates)
    assert torch.allclose(text_offset(t_src, t_tgt), core, atol=1e-6)


def test_prompt_alignment_loss_and_pooling_by_hand():
    delta_i = torch.tensor([0.0, 1.0])
    copies = torch.tensor([[2.0, 0.0], [0.0, 5.0]])  # unit rows (1,0), (0,1) -> mean (.5,.5) -> (1,1)/sqrt2
    pooled = pool_prompt_features(copies)
    assert torch.allclose(pooled, torch.tensor([[1.0, 1.0]]) / S2, atol=1e-6)
    t_last = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # offset(t_last, pooled): rows (1/sqrt2 - 1, 1/sqrt2), both equal -> unit of that
    row = torch.tensor([1 / S2 - 1.0, 1 / S2])
    expected = 1.0 - float(row[1] / row.norm())
    assert prompt_alignment_loss(delta_i, pooled, t_last).item() == pytest.approx(expected, abs=1e-6)


def test_adaptive_loss_by_hand():
    e_anchor = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    e_cur = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 2.0]])
    direction = torch.tensor([0.0, 0.6, 0.8])
    d1 = torch.tensor([-1.0, 1.0, 0.0]) / S2
    d2 = torch.tensor([0.0, 0.0, 1.0])
    expected = ((1 - d1 @ direction) + (1 - d2 @ direction)) / 2
    assert adaptive_loss(e_anchor, e_cur, direction).item() == pytest.approx(float(expected), abs=1e-6)
    assert embedding_misalignment(e_anchor, e_cur, e_anchor[:1], e_cur[:1]) == pytest.approx(
        offset_misalignment(image_offset(e_anchor, e_cur), F.normalize(e_cur[0] - e_anchor[0], dim=0)), abs=1e-6)


def test_token_embeddings_are_interpolated_over_the_whole_prompt(tiny):
    prompt = AnchorPrompt(tiny, "photo", "sketch", n_ctx=4, ctx_init="a photo of a")
    _, emb = tiny.token_embeddings(["a photo of a photo", "a photo of a sketch"])
    alpha = 0.3
    mixed = prompt.initial_embeddings(alpha)
    assert torch.allclose(mixed, interpolate_token_embeddings(emb[:1], emb[1:], alpha))
    assert torch.allclose(mixed[0], 0.7 * emb[0] + 0.3 * emb[1], atol=1e-7)
    assert torch.allclose(mixed[0, :5], emb[0, :5], atol=1e-7)  # [SOS] and the context words are shared
    assert not torch.allclose(mixed[0, 5], emb[0, 5])  # the class token moves towards the target's
    # alpha = 0 through the prompt path is the plain source text (no full stop, as the released code)
    init = prompt.initial_embeddings(0.0)
    feats = prompt.features(init[:, :1], init[:, 1:5], init[:, 5:])
    assert torch.allclose(feats, tiny.encode_text(["a photo of a photo"], normalize=False), atol=1e-5)


def test_batch_prompt_copies_get_identical_gradients_and_match_one_copy(tiny):
    prompt = AnchorPrompt(tiny, "photo", "sketch", n_ctx=4, ctx_init="a photo of a")
    t_last = tiny.encode_text(format_templates("photo", ["a photo of a {}.", "a {}."]))
    delta_i = F.normalize(torch.randn(tiny.embed_dim, generator=torch.Generator().manual_seed(0)), dim=0)
    init = prompt.initial_embeddings(0.5)
    prefix, suffix = init[:, :1], init[:, 5:]
    grads = {}
    for b in (1, 5):
        ctx = init[:, 1:5].repeat(b, 1, 1).clone().requires_grad_(True)
        loss = prompt_alignment_loss(delta_i, pool_prompt_features(prompt.features(prefix, ctx, suffix)), t_last)
        (grads[b],) = torch.autograd.grad(loss, ctx)
    # mathematically identical; numerically equal up to float rounding of the batched text tower
    assert all(torch.allclose(grads[5][i], grads[5][0], rtol=1e-5, atol=1e-6) for i in range(5))
    assert torch.allclose(grads[5][0] * 5, grads[1][0], rtol=1e-5, atol=1e-6)
    one = prompt.learn(delta_i, t_last, alpha=0.5, iters=5, lr=1e-3, batch_prompt=1)
    five = prompt.learn(delta_i, t_last, alpha=0.5, iters=5, lr=1e-3, batch_prompt=5)
    assert torch.allclose(one["t_prompt"], five["t_prompt"], atol=1e-5)
    assert torch.allclose(one["ctx"], five["ctx"], atol=1e-5)
    assert one["loss_end"] < one["loss_start"]


def test_misalignment_curve_and_cli(tmp_path, capsys):
    records = [
        {"step": 0, "event": "setup", "models": ["m0"]},
        {"step": 2, "event": "refresh", "anchor_from": -1, "mis_source": [0.5], "mis_anchor": [0.5],
         "prompt_loss_start": [0.9], "prompt_loss_end": [0.3], "seconds": 1.0, "refresh_seconds_total": 1.0,
         "run_seconds": 10.0},
        {"step": 3, "event": "monitor", "anchor_from": 2, "mis_source": [0.6], "mis_anchor": [0.2], "seconds": 0.5},
        {"step": 3, "event": "end", "refresh_seconds_total": 1.0, "run_seconds": 20.0},
    ]
    (tmp_path / "air.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"cut')
    rows = curve(records)
    assert [(r["step"], r["source"], r["anchor"]) for r in rows] == [(2, 0.5, 0.5), (3, 0.6, 0.2)]
    text = format_curve(records)
    assert "refreshes: 1" in text and "5.0% of 20.0 s" in text
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "refresh" in out and "0.9000->0.3000" in out
    assert main([str(tmp_path / "missing")]) == 2
