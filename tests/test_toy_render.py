"""Shapes-world renderer and captions: determinism, geometry shared across styles, distinct styles."""

import numpy as np
import pytest
import torch

from zsgm.toy.captions import CAPTION_TEMPLATES, all_captions, caption, colour_words, style_words
from zsgm.toy.render import (
    BORDER_MARGIN,
    COLOURS,
    KINDS,
    STYLES,
    ShapeParams,
    contact_sheet,
    foreground_mask,
    render,
    render_batch,
    sample_params,
    save_contact_sheet,
    style_background,
)


def _dilate(m: np.ndarray, k: int) -> np.ndarray:
    out = m.copy()
    for _ in range(k):
        p = np.pad(out, 1)
        out = np.zeros_like(out)
        for dy in range(3):
            for dx in range(3):
                out |= p[dy : dy + m.shape[0], dx : dx + m.shape[1]]
    return out


@pytest.mark.parametrize("size", [32, 64])
def test_render_shapes_and_ranges(size):
    ps = sample_params(6, rng=np.random.default_rng(0))
    img = render(ps[0], size=size)
    assert img.dtype == np.uint8 and img.shape == (size, size, 3)
    batch = render_batch(ps, size=size)
    assert batch.dtype == torch.float32 and batch.shape == (6, 3, size, size)
    assert batch.min() >= -1.0 and batch.max() <= 1.0
    # render_batch is render rescaled
    back = ((batch[0].permute(1, 2, 0) + 1) * 127.5).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(back, img)


def test_determinism_from_seed():
    a = sample_params(20, rng=np.random.default_rng(7))
    b = sample_params(20, rng=np.random.default_rng(7))
    c = sample_params(20, rng=np.random.default_rng(8))
    assert a == b and a != c
    torch.testing.assert_close(render_batch(a), render_batch(b), rtol=0, atol=0)
    assert (render_batch(a) - render_batch(c)).abs().mean() > 0.05
    # the texture seed changes pixels, not geometry
    p = a[0]
    q = ShapeParams(p.kind, p.colour, p.cx, p.cy, p.radius, p.style, seed=p.seed + 1)
    assert not np.array_equal(render(p), render(q))
    np.testing.assert_array_equal(foreground_mask(p), foreground_mask(q))


def test_sample_params_respects_choices_and_margins():
    ps = sample_params(300, rng=np.random.default_rng(1), styles=("sketch",), kinds=("circle", "square"), colours=("red",))
    assert {p.style for p in ps} == {"sketch"}
    assert {p.kind for p in ps} == {"circle", "square"}
    assert {p.colour for p in ps} == {"red"}
    for p in ps:
        assert p.cx - p.radius >= BORDER_MARGIN - 1e-9 and p.cx + p.radius <= 1 - BORDER_MARGIN + 1e-9
        assert p.cy - p.radius >= BORDER_MARGIN - 1e-9 and p.cy + p.radius <= 1 - BORDER_MARGIN + 1e-9
    allp = sample_params(400, rng=np.random.default_rng(2))
    assert {p.style for p in allp} == set(STYLES) and {p.kind for p in allp} == set(KINDS)
    assert {p.colour for p in allp} == set(COLOURS)
    with pytest.raises(ValueError, match="styles"):
        sample_params(1, rng=np.random.default_rng(0), styles=("watercolour",))


def test_shape_params_validation():
    with pytest.raises(ValueError):
        ShapeParams("hexagon", "red", 0.5, 0.5, 0.2)
    with pytest.raises(ValueError):
        ShapeParams("circle", "purple", 0.5, 0.5, 0.2)
    with pytest.raises(ValueError, match="cx"):
        ShapeParams("circle", "red", 0.1, 0.5, 0.2)
    with pytest.raises(ValueError, match="radius"):
        ShapeParams("circle", "red", 0.5, 0.5, 0.7)
    p = ShapeParams("circle", "red", 0.5, 0.5, 0.2)
    assert p.with_style("night").style == "night" and p.with_style("night").cx == p.cx


@pytest.mark.parametrize("kind", KINDS)
def test_analytic_mask_geometry(kind):
    p = ShapeParams(kind, "blue", 0.4, 0.6, 0.25)
    m32, m64 = foreground_mask(p, size=32), foreground_mask(p, size=64)
    assert m32.shape == (32, 32) and m64.shape == (64, 64)
    # the mask scales with the size (same normalised geometry)
    up = m32.repeat(2, 0).repeat(2, 1)
    assert (up & m64).sum() / (up | m64).sum() > 0.85
    ys, xs = np.nonzero(m64)
    assert abs((xs.min() + xs.max() + 1) / 2 / 64 - 0.4) < 0.05  # bounding box centred on (cx, cy)
    assert abs((ys.min() + ys.max() + 1) / 2 / 64 - 0.6) < 0.1
    assert xs.max() - xs.min() + 1 <= 0.5 * 64 + 1  # inside the radius box
    area = {"circle": np.pi, "square": 2.56, "triangle": 1.72, "diamond": 2.0}[kind] * (0.25 * 64) ** 2
    assert abs(m64.sum() - area) / area < 0.05


@pytest.mark.parametrize("size", [32, 64])
def test_geometry_shared_across_styles_and_background_is_canonical(size):
    ps = sample_params(12, rng=np.random.default_rng(3), styles=("photo",))
    for p in ps:
        mask = foreground_mask(p, size=size)
        far_bg = ~_dilate(mask, max(1, size // 16))
        inner = ~_dilate(~mask, max(1, size // 16))  # eroded mask
        imgs = {s: render(p.with_style(s), size=size).astype(np.float64) / 255 for s in STYLES}
        for s, im in imgs.items():
            bg = style_background(s, size=size)
            # away from the shape, every style shows its own canonical background (+ mild texture)
            assert np.abs(im - bg)[far_bg].mean() < 0.03, s
        # inside, filled styles differ from their background; a sketch's inside is paper
        for s in ("photo", "night", "pastel"):
            diff = np.linalg.norm(imgs[s] - style_background(s, size=size), axis=-1)
            assert diff[inner].mean() > 0.2, s
        deep = ~_dilate(~mask, max(2, size // 10))  # well inside, past the stroke
        sk = np.linalg.norm(imgs["sketch"] - style_background("sketch", size=size), axis=-1)
        assert sk[deep].mean() < 0.1 and sk[mask].max() > 0.5  # paper inside, dark stroke on the edge
        # the border ring is pure background: the shape is inside the image
        b = max(1, size // 16)
        assert not mask[:b].any() and not mask[-b:].any() and not mask[:, :b].any() and not mask[:, -b:].any()


def test_styles_are_visually_distinct():
    ps = sample_params(16, rng=np.random.default_rng(4), styles=("photo",))
    imgs = {s: render_batch([p.with_style(s) for p in ps]) for s in STYLES}
    for i, a in enumerate(STYLES):
        for b in STYLES[i + 1 :]:
            assert (imgs[a] - imgs[b]).abs().mean() > 0.08, (a, b)
    # sketch has no colour: its pixels are near grey; photo is saturated inside the shape
    sk = (imgs["sketch"] + 1) / 2
    assert (sk.max(1).values - sk.min(1).values).max() < 0.2


def test_captions_contain_style_colour_and_kind_words():
    words = style_words()
    assert words == {"photo": "photo", "sketch": "sketch", "night": "night", "pastel": "pastel"}
    assert set(colour_words()) == set(COLOURS)
    rng = np.random.default_rng(0)
    ps = sample_params(200, rng=np.random.default_rng(5))
    seen = set()
    for p in ps:
        c = caption(p, rng=rng)
        seen.add(c.replace(p.colour, "{c}").replace(p.kind, "{k}"))
        assert words[p.style] in c and p.kind in c
        if p.style != "sketch":
            assert p.colour in c
        assert caption(p) == all_captions(p)[0]
    assert len(seen) >= 12  # several phrasings
    assert caption(ShapeParams("circle", "red", 0.5, 0.5, 0.2)) == "a photo of a red circle"
    assert caption(ShapeParams("triangle", "red", 0.5, 0.5, 0.2, "sketch")) == "a sketch of a triangle"
    assert caption(ShapeParams("square", "red", 0.5, 0.5, 0.2, "night")) == "a red square at night"
    assert caption(ShapeParams("circle", "blue", 0.5, 0.5, 0.2, "pastel")) == "a pastel blue circle"
    assert set(CAPTION_TEMPLATES) == set(STYLES)


def test_contact_sheet(tmp_path):
    path = tmp_path / "sheet.png"
    save_contact_sheet(path, rng=np.random.default_rng(0), n_per_row=3, size=32, scale=2)
    from PIL import Image

    im = Image.open(path)
    assert im.size == (3 * (64 + 2) + 2, 4 * (64 + 2) + 2)
    sheet = contact_sheet([[np.zeros((8, 8, 3), np.uint8)]], scale=1, pad=1)
    assert np.asarray(sheet)[1:9, 1:9].max() == 0 and np.asarray(sheet)[0, 0].min() == 255
