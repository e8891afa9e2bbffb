"""The style-share bound of the shapes CLIP (zsgm.toy.train_clip.style_share_loss): image embeddings may
project at most ``max_share`` on any style or colour text direction."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zsgm.toy.render import COLOURS, STYLES


def _directions():
    from open_clip.tokenizer import SimpleTokenizer

    from zsgm.clip_loading import build_clip_from_config
    from zsgm.toy.train_clip import CONFIG, DirectionBank

    torch.manual_seed(0)
    model = build_clip_from_config(CONFIG)
    tokenizer = SimpleTokenizer(context_length=CONFIG["text_cfg"]["context_length"])
    with torch.no_grad():
        return DirectionBank(model, tokenizer, list(STYLES) + list(COLOURS), g=torch.Generator().manual_seed(1),
                             n_templates=2)


def test_an_embedding_along_a_direction_pays_its_excess_share_and_one_orthogonal_to_all_pays_nothing():
    from zsgm.toy.train_clip import style_share_loss

    bank = _directions()
    n = bank.feats.shape[0]
    a, b = torch.triu_indices(n, n, offset=1)
    d = bank(a, b)  # [N, D] every pair's unit direction
    # a unit vector orthogonal to every direction: projections 0, nothing to pay even with a zero bound
    basis = torch.linalg.qr(torch.cat([d.T, torch.randn(d.shape[1], 3, generator=torch.Generator().manual_seed(2))],
                                      dim=1))[0]  # [D, N + 3], first columns span the directions
    free = F.normalize(basis[:, -1], dim=0)[None]  # [1, D]
    assert (free @ d.T).abs().max() < 1e-5
    assert style_share_loss(free, bank, max_share=0.0).item() == pytest.approx(0.0, abs=1e-9)
    # along the first direction: every projection above the bound is paid squared, averaged over all pairs
    along = d[:1].clone().requires_grad_(True)  # [1, D]
    proj = (along @ d.T).detach()[0]  # [N], the first is 1
    expected = F.relu(proj.abs() - 0.3).pow(2).mean()
    term = style_share_loss(along, bank, max_share=0.3)
    assert term.item() == pytest.approx(expected.item(), rel=1e-6)
    assert term.item() >= (0.7 ** 2) / len(proj) - 1e-6  # at least the first direction's excess
    assert style_share_loss(along, bank, max_share=1.0).item() == pytest.approx(0.0, abs=1e-9)
    term.backward()
    assert float((along.grad * along.detach()).sum()) != 0.0  # the gradient moves the embedding


def test_train_records_the_style_share_term_and_a_zero_bound_costs_more_than_a_loose_one(tmp_path):
    from zsgm.toy.train_clip import train

    common = dict(seed=0, steps=2, batch=8, pool=16, eval_n=0, progress=False, threads=1, pairs=4)
    tight = train(out=tmp_path / "a.safetensors", style_share_weight=1.0, style_share_max=0.0, **common)
    loose = train(out=tmp_path / "b.safetensors", style_share_weight=1.0, style_share_max=0.99, **common)
    off = train(out=tmp_path / "c.safetensors", **common)
    assert tight["style_share_loss_first_20"] > 0  # a random CLIP's embeddings project somewhere
    assert loose["style_share_loss_first_20"] < tight["style_share_loss_first_20"]
    assert off["style_share_loss_first_20"] is None and off["style_share_weight"] == 0.0
    assert tight["style_share_max"] == 0.0
