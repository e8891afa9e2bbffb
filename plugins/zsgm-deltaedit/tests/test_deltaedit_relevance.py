"""Channel relevance on a tiny generator: shape, unit rows, zero for an inert channel, and the batched computation
equal to StyleCLIP's per-channel procedure done one channel and one image at a time."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zsgm.generator.stylespace import style_layout, synthesis_from_styles, ws_to_styles
from zsgm_deltaedit.relevance import channel_relevance, read_relevance, write_relevance


def _codes(g, m=3):
    with torch.no_grad():
        ws = g.mapping(torch.randn(m, g.arch.style_dim, generator=torch.Generator().manual_seed(0)))
        ws = ws[:, None].repeat(1, g.n_latent, 1)
        s = ws_to_styles(g, ws)
    return ws, s


def slow_channel(g, clip, ws, s, mean, std, c, alpha):
    """StyleCLIP's loop for one channel: set it to its mean in every image, edit by -alpha and +alpha sigma,
    encode each image on its own, normalise, difference, normalise, average, normalise."""
    diffs = []
    for m in range(ws.shape[0]):
        feats = []
        for sign in (-1.0, 1.0):
            code = s[m:m + 1].clone()
            code[0, c] = mean[c] + sign * alpha * std[c]
            img = synthesis_from_styles(g, code, ws[m:m + 1], noise_mode="const")
            feats.append(clip.model.encode_image(clip.prepare_images(img)).float())
        e_minus, e_plus = (F.normalize(f, dim=-1) for f in feats)
        diffs.append(F.normalize(e_plus - e_minus, dim=-1))
    return F.normalize(torch.cat(diffs).mean(0), dim=-1)


@torch.no_grad()
def test_relevance_shape_inert_channel_and_styleclips_procedure(tiny_generator, tiny_clip):
    g = tiny_generator
    layout = style_layout(g)
    inert = layout[2].offset + 3  # input channel 3 of convs.1: zero its weights, so it changes nothing
    g.get_submodule(layout[2].name).conv.weight[:, :, 3] = 0
    ws, s = _codes(g)
    mean, std = s.mean(0), s.std(0, unbiased=False) + 0.1
    rel = channel_relevance(g, tiny_clip, ws, s, mean, std, alpha=5.0, batch=40, progress=False)
    assert rel.shape == (layout[-1].stop, tiny_clip.embed_dim)
    assert torch.equal(rel[inert], torch.zeros(tiny_clip.embed_dim))
    norms = rel.norm(dim=1)
    others = torch.cat([norms[:inert], norms[inert + 1:]])
    torch.testing.assert_close(others, torch.ones_like(others), atol=1e-5, rtol=0)
    for c in (0, layout[1].offset + 5, layout[-1].stop - 1):
        torch.testing.assert_close(rel[c], slow_channel(g, tiny_clip, ws, s, mean, std, c, 5.0), atol=2e-4, rtol=0)


def test_relevance_file_round_trip_and_settings(tmp_path):
    rel, mean, std = torch.randn(5, 4), torch.randn(5), torch.rand(5)
    write_relevance(tmp_path / "r.safetensors", rel, mean, std, {"images": 2, "clip": {"name": "x"}})
    assert torch.equal(read_relevance(tmp_path / "r.safetensors", settings={"clip": {"name": "x"}, "images": 2}), rel)
    assert read_relevance(tmp_path / "r.safetensors", settings={"images": 3, "clip": {"name": "x"}}) is None
    assert read_relevance(tmp_path / "missing.safetensors") is None
