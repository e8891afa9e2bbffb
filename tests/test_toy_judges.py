"""Shapes-world ground-truth judges, validated on renders (clean, noisy, blurred)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zsgm.toy import judges
from zsgm.toy.judges import (
    analyse,
    background_change,
    classify_colour,
    classify_style,
    content_iou,
    diversity,
    diversity_ratio,
    judge_batch,
    mask_iou,
)
from zsgm.toy.masks import (
    estimate_background,
    fill_holes,
    foreground_mask_from_image,
    largest_component,
)
from zsgm.toy.render import STYLES, foreground_mask, render_batch, sample_params, style_background

N_PER_STYLE = 200


def _noisy(x: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    return x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))


def _blur(x: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([1.0, 2.0, 1.0])
    k = (k[:, None] * k[None]) / 16
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k.expand(3, 1, 3, 3).contiguous(), groups=3)


@pytest.fixture(scope="module")
def world():
    """200 photo shapes and their renders in every style (same geometry), at 32 px."""
    base = sample_params(N_PER_STYLE, rng=np.random.default_rng(123), styles=("photo",))
    imgs = {s: render_batch([p.with_style(s) for p in base]) for s in STYLES}
    return base, imgs


def _acc(labels, want):
    return float(np.mean([lab == want for lab in labels]))


@pytest.mark.parametrize("variant", ["clean", "noise0.05", "noise0.1", "blur"])
def test_classify_style_accuracy(world, variant):
    _, imgs = world
    for style, x in imgs.items():
        if variant.startswith("noise"):
            x = _noisy(x, float(variant[5:]), seed=STYLES.index(style))
        elif variant == "blur":
            x = _noisy(_blur(x), 0.05)
        acc = _acc(classify_style(x), style)
        assert acc >= 0.97, f"{variant} {style}: accuracy {acc:.3f}"


def test_classify_style_other_for_non_shapes():
    blank = torch.full((3, 3, 32, 32), 0.7)
    grey = torch.zeros(2, 3, 32, 32)  # mid-grey background with a photo-like shape is not a known style
    grey[:, 0, 10:20, 10:20] = 0.9
    noise = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert classify_style(torch.cat([blank, grey, noise])) == ["other"] * 7


def test_faded_photo_is_not_pastel(world):
    base, imgs = world
    faded = imgs["photo"] * 0.4 + 0.6  # pale fill, but on the photo's grey background
    assert _acc(classify_style(faded), "pastel") < 0.05


def test_classify_colour(world):
    base, imgs = world
    for style in ("photo", "night", "pastel"):
        for variant, x in (("clean", imgs[style]), ("noisy", _noisy(imgs[style], 0.05))):
            got = classify_colour(x)
            acc = _acc([g == p.colour for g, p in zip(got, base)], True)
            assert acc >= 0.95, f"{style} {variant}: colour accuracy {acc:.3f}"
    assert _acc(classify_colour(imgs["sketch"]), None) >= 0.95
    # with an explicit (analytic) mask
    mask = torch.from_numpy(np.stack([foreground_mask(p) for p in base]))
    got = classify_colour(imgs["photo"], mask)
    assert _acc([g == p.colour for g, p in zip(got, base)], True) >= 0.95
    with pytest.raises(ValueError, match="mask"):
        classify_colour(imgs["photo"], mask[:, :16])


def test_background_estimate_and_masks_match_analytic(world):
    base, imgs = world
    gt = torch.from_numpy(np.stack([foreground_mask(p) for p in base]))
    for style, x in imgs.items():
        bg = estimate_background(x)  # [N, 3] in [-1, 1]
        want = torch.from_numpy(style_background(style, size=32).mean((0, 1))).float() * 2 - 1
        assert (bg - want).abs().max() < 0.08, style
        for xx in (x, _noisy(x, 0.05)):
            iou = mask_iou(foreground_mask_from_image(xx), gt)
            assert iou.mean() > 0.95 and iou.min() > 0.8, (style, iou.mean(), iou.min())
    # the unfilled ("ink") mask of a sketch is only the outline
    ink = foreground_mask_from_image(imgs["sketch"], filled=False)
    assert (ink.flatten(1).sum(1).float() / gt.flatten(1).sum(1)).max() < 0.75


def test_content_iou(world):
    base, imgs = world
    src = imgs["photo"]
    for style in STYLES:
        iou = content_iou(src, imgs[style])
        assert iou.shape == (N_PER_STYLE,)
        assert iou.mean() >= 0.95, style
        assert (iou >= 0.85).float().mean() >= 0.97, style
        noisy = content_iou(_noisy(src, 0.05, 1), _noisy(imgs[style], 0.05, 2))
        assert noisy.mean() >= 0.93, style
    other = render_batch(sample_params(N_PER_STYLE, rng=np.random.default_rng(9), styles=("sketch",)))
    assert content_iou(src, other).mean() < 0.45
    # a shifted shape loses overlap
    shifted = torch.roll(imgs["sketch"], shifts=4, dims=3)
    assert content_iou(src, shifted).mean() < content_iou(src, imgs["sketch"]).mean() - 0.2
    # no shape at all -> 0
    blank = torch.full_like(src[:2], 0.8)
    assert content_iou(src[:2], blank).tolist() == [0.0, 0.0]


def test_background_change(world):
    base, imgs = world
    src = imgs["photo"]
    for style in STYLES:
        faithful = background_change(src, imgs[style], target_style=style)
        assert faithful.shape == (N_PER_STYLE,) and faithful.max() < 0.03, style
    tint = torch.tensor([-0.3, 0.2, -0.4])[None, :, None, None]  # [-1, 1] units
    tinted = (imgs["sketch"] + tint).clamp(-1, 1)
    assert background_change(src, tinted, target_style="sketch").mean() > 0.1
    # the photo background kept where a night background was asked for: large artefact
    assert background_change(src, imgs["pastel"], target_style="night").mean() > 0.5
    # target_style=None: plain change against the source
    assert background_change(src, src).abs().max() < 1e-6
    assert background_change(src, imgs["night"]).mean() > 0.5
    with pytest.raises(ValueError, match="target_style"):
        background_change(src, src, target_style="watercolour")


def test_diversity(world):
    base, imgs = world
    src = imgs["photo"][:64]
    assert 0.4 < diversity(src) < 1.0 and diversity(src, mode="pixel") > 0.03
    collapsed = src[:1].expand(64, -1, -1, -1)
    assert diversity(collapsed) == pytest.approx(0.0, abs=1e-6)
    assert diversity_ratio(collapsed, src) == pytest.approx(0.0, abs=1e-6)
    assert diversity_ratio(imgs["sketch"][:64], src) == pytest.approx(1.0, abs=0.05)
    half = torch.cat([src[:8]] * 8)  # only 8 distinct samples left
    assert diversity_ratio(half, src) < 0.95
    assert np.isnan(diversity_ratio(src, collapsed))
    with pytest.raises(ValueError, match="mode"):
        diversity(src, mode="lpips")


@pytest.mark.parametrize("target", STYLES)
def test_judge_batch_on_faithful_restyle(world, target):
    _, imgs = world
    src, tgt = _noisy(imgs["photo"][:100], 0.05, 3), _noisy(imgs[target][:100], 0.05, 4)
    out = judge_batch(src, tgt, target_style=target)
    assert set(out) >= {"target_style_rate", "content_iou", "background_artefact", "diversity_ratio"}
    assert out["target_style_rate"] >= 0.97
    assert out["content_iou"] >= 0.93
    assert out["background_artefact"] < 0.04
    assert 0.9 < out["diversity_ratio"] < 1.1
    assert out["colour_rate"] >= 0.95 and out["source_style_rate"] >= 0.97 and out["n"] == 100


def test_judge_batch_on_failed_adaptations(world):
    _, imgs = world
    src = imgs["photo"][:100]
    unchanged = judge_batch(src, src, target_style="sketch")
    assert unchanged["target_style_rate"] == 0.0 and unchanged["background_artefact"] > 0.1
    collapsed = judge_batch(src, imgs["sketch"][:1].expand(100, -1, -1, -1), target_style="sketch")
    assert collapsed["target_style_rate"] == 1.0
    assert collapsed["diversity_ratio"] < 0.05 and collapsed["content_iou"] < 0.5
    with pytest.raises(ValueError, match="target_style"):
        judge_batch(src, src, target_style="oil")


def test_judges_at_64_px():
    base = sample_params(24, rng=np.random.default_rng(11), styles=("photo",))
    src = render_batch(base, size=64)
    for style in STYLES:
        tgt = _noisy(render_batch([p.with_style(style) for p in base], size=64), 0.05)
        out = judge_batch(src, tgt, target_style=style)
        assert out["target_style_rate"] >= 0.95 and out["content_iou"] > 0.93, (style, out)


def test_fill_holes_and_components():
    ring = torch.zeros(1, 12, 12, dtype=torch.bool)
    ring[0, 2:10, 2] = ring[0, 2:10, 9] = ring[0, 2, 2:10] = ring[0, 9, 2:10] = True
    filled = fill_holes(ring)
    assert filled[0, 2:10, 2:10].all() and filled.sum() == 64
    # an 8-connected diagonal wall (a diamond outline) also holds the 4-connected flood
    diamond = torch.zeros(1, 11, 11, dtype=torch.bool)
    for i in range(6):
        for y, x in ((5 - i, i + 0), (5 + i, i + 0), (5 - i, 10 - i), (5 + i, 10 - i)):
            diamond[0, y, x] = True
    assert fill_holes(diamond)[0, 5, 5] and fill_holes(diamond).sum() > diamond.sum() + 20
    # an open outline (gap of 2 px) is not filled
    gap = ring.clone()
    gap[0, 2, 5:7] = False
    assert not fill_holes(gap)[0, 5, 5]
    two = torch.zeros(2, 10, 10, dtype=torch.bool)
    two[0, 1:3, 1:3] = True  # small blob
    two[0, 5:9, 5:9] = True  # big blob
    keep = largest_component(two)
    assert keep[0].sum() == 16 and keep[0, 6, 6] and not keep[0, 1, 1] and keep[1].sum() == 0


def test_input_validation_and_analysis_reuse(world):
    _, imgs = world
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        classify_style(torch.zeros(3, 32, 32))
    a = analyse(imgs["night"][:10])
    assert classify_style(a) == ["night"] * 10
    assert judges.FILLED_MIN_CORE_CONTRAST > float(analyse(imgs["sketch"][:50]).core_contrast.max())
