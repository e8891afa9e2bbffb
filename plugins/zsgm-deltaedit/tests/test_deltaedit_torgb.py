"""The ToRGB colour step (ours): the text's W direction from codes, its streaming form over a code cache, and its
place in ``edit_images`` (strength 0 stays the unedited image; only the ToRGB slots move)."""

from __future__ import annotations

import pytest
import torch

from zsgm.generator.stylespace import style_layout, synthesis_from_styles, torgb_slots, ws_to_styles
from zsgm_deltaedit.codes import CodeReader, build_codes
from zsgm_deltaedit.edit import edit_images, text_delta
from zsgm_deltaedit.mapper import DeltaMapper
from zsgm_deltaedit.mappers import TrainedMapper
from zsgm_deltaedit.recipe import mapper_preset
from zsgm_deltaedit.torgb import add_torgb_step, text_w_direction, torgb_direction


def test_the_direction_is_the_one_the_clip_scores_follow():
    """CLIP scores that grow along a planted W direction u: d comes out as u, sigma as the codes' spread along it."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(4000, 16, generator=gen) * 2.0 + 3.0  # [N, D]: spread 2 in every direction
    u = torch.nn.functional.normalize(torch.randn(16, generator=gen), dim=0)
    y = 0.05 * ((w - 3.0) @ u)  # [N]
    t = torch.zeros(8)
    t[0] = 1.0
    c = torch.zeros(4000, 8)
    c[:, 0], c[:, 1] = y, 1.0  # normalize(c) . t = y / sqrt(1 + y^2): increasing in w . u
    found = text_w_direction(w, c, 3.0 * t)  # dt's length does not matter
    assert float(found.direction @ u) > 0.99
    assert found.sigma == pytest.approx(2.0, rel=0.05)
    torch.testing.assert_close(found.step(1.5), 1.5 * found.sigma * found.direction)
    with pytest.raises(ValueError, match="CLIP scores do not vary with W"):
        text_w_direction(w, torch.ones(4000, 8), t)
    with pytest.raises(ValueError, match="the codes' W do not vary"):
        text_w_direction(torch.full((4000, 16), 0.3), c, t)


def test_streaming_over_the_code_cache_equals_the_direction_in_memory(tmp_path, tiny_generator, tiny_clip):
    g = tiny_generator
    build_codes(tmp_path, g, tiny_clip, samples=11, chunk_size=4, seed=3, identity={"g": "tiny"}, batch=3,
                progress=False)
    reader = CodeReader(tmp_path)
    rows = reader.head(reader.rows, names=("ws", "c"))
    dt = text_delta(tiny_clip, "photo", "sketch")
    streamed = torgb_direction(reader, g, dt)
    in_memory = text_w_direction(rows["ws"][:, torgb_slots(g)].mean(1), rows["c"], dt)
    torch.testing.assert_close(streamed.direction, in_memory.direction, rtol=1e-5, atol=1e-6)
    assert streamed.sigma == pytest.approx(in_memory.sigma, rel=1e-6)
    # the first rows only (a mapper trained before more codes joined the folder), across a file boundary
    head = torgb_direction(reader, g, dt, rows=7)
    want = text_w_direction(rows["ws"][:7, torgb_slots(g)].mean(1), rows["c"][:7], dt)
    torch.testing.assert_close(head.direction, want.direction, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(head.direction, streamed.direction)


def _edit_setup(g, clip):
    torch.manual_seed(1)
    layout = style_layout(g)
    net = DeltaMapper.for_layout(layout, clip_dim=clip.embed_dim).eval()
    relevance = torch.nn.functional.normalize(torch.randn(layout[-1].stop, clip.embed_dim), dim=1)
    ws = g.mapping(torch.randn(3, g.arch.style_dim))[:, None].repeat(1, g.n_latent, 1).detach()
    return net, relevance, ws, g.make_noise(3, mode="const")


def test_edit_images_moves_the_torgb_slots_by_strength_times_the_step(tiny_generator, tiny_clip):
    g = tiny_generator
    net, relevance, ws, noise = _edit_setup(g, tiny_clip)
    d = torch.nn.functional.normalize(torch.randn(g.arch.style_dim), dim=0)
    from zsgm_deltaedit.torgb import TorgbDirection

    direction = TorgbDirection(d, 0.7)
    calls = []

    def source(generator, dt):
        calls.append(dt)
        return direction

    kw = dict(mapper=net, relevance=relevance, clip_model=tiny_clip, neutral="red", target="blue", noise=noise)
    # theta no channel reaches: only the ToRGB step moves the image
    out = edit_images(g, ws, theta=10.0, strengths=(0.0, 1.5), torgb_weight=2.0, torgb=source, **kw)
    with torch.no_grad():
        s = ws_to_styles(g, ws)
        unedited = synthesis_from_styles(g, s, ws, noise=noise)
        want = synthesis_from_styles(g, s, add_torgb_step(g, ws, 1.5 * 2.0 * 0.7 * d), noise=noise)
    assert torch.equal(out[0], unedited)
    torch.testing.assert_close(out[1], want)
    assert not torch.equal(out[1], unedited) and len(calls) == 1
    moved = add_torgb_step(g, ws, d)
    assert torch.equal((moved - ws).abs().sum((0, 2)) > 0,
                       torch.tensor([k in torgb_slots(g) for k in range(g.n_latent)]))
    # weight 0 is the released edit, with or without a source
    plain = edit_images(g, ws, theta=10.0, strengths=(1.5,), **kw)
    assert torch.equal(plain[0], unedited)
    with pytest.raises(ValueError, match="torgb_weight needs torgb"):
        edit_images(g, ws, theta=10.0, strengths=(1.0,), torgb_weight=1.0, **kw)


def test_a_moved_cache_finds_the_codes_beside_the_mapper(tmp_path):
    from zsgm_deltaedit.codes import MANIFEST
    from zsgm_deltaedit.mappers import _codes_path

    (tmp_path / "codes-abc").mkdir()
    (tmp_path / "codes-abc" / MANIFEST).write_text("{}")
    record = {"codes": "/old/cache/codes-abc", "codes_id": {"folder": "codes-abc", "rows": 3}}
    assert _codes_path(tmp_path / "mapper-x", record) == tmp_path / "codes-abc"
    record["codes"] = str(tmp_path / "codes-abc")
    assert _codes_path(tmp_path / "elsewhere" / "mapper-x", record) == tmp_path / "codes-abc"
    assert _codes_path(tmp_path / "mapper-x", {"codes_id": {"folder": "codes-gone"}}) is None


def test_a_mapper_without_its_codes_says_so(tmp_path, tiny_generator, tiny_clip):
    trained = TrainedMapper(folder=tmp_path, recipe=mapper_preset("deltaedit"), mapper=None, relevance=None,
                            clip_model=tiny_clip, generator_fingerprint="", codes=tmp_path / "gone")
    with pytest.raises(ValueError, match="needs the codes the mapper was trained on .*gone: missing.*--torgb 0"):
        trained.torgb_direction(tiny_generator, torch.ones(tiny_clip.embed_dim))
