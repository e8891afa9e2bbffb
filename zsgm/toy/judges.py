"""Ground-truth judges of the shapes world (no CLIP anywhere).

They read any image batch ``[N, 3, H, W]`` in [-1, 1] (generator outputs as well as renders) and answer:
which style is this, which colour is the shape, did the adapted image keep the source image's shape
(``content_iou``), is its background the target style's background (``background_change``), and did the
adapted generator keep its diversity (``diversity_ratio``). :func:`judge_batch` returns all of it.

Colours are measured in [0, 1] units. ``luma`` is Rec. 601 (0.299 R + 0.587 G + 0.114 B); ``S`` and ``V``
are HSV saturation ``(max - min) / max`` and value ``max``.

Style rules (:func:`classify_style`), thresholds in the constants below. From the masks of
:mod:`zsgm.toy.masks` each image gets: ``area`` (filled fraction of the image); ``contrast`` (99th
percentile of the pixels' RGB distance to the background); the ``core`` of the filled mask (the mask
eroded while at least 5% of it (and 6 pixels) remains: the deep inside, away from any outline); ``core_contrast``
(median distance to the background over the core / ``contrast``: ~0.7-1 for a filled shape, ~0 for an
outline whose inside is paper; unlike an ink-area ratio it does not grow when a generator blurs the
stroke); the background colour (border median), the fill colour (median over the core) and the ink colour
(median over the darker half, by luma, of the ink pixels inside the filled region). Then:

- ``area`` outside [MIN_AREA, MAX_AREA] -> "other" (no single shape found);
- background luma < NIGHT_BG_MAX_LUMA: "night" if ``core_contrast >= FILLED_MIN_CORE_CONTRAST`` and the
  fill is at least NIGHT_MIN_FILL_LIFT brighter (luma) than the background, else "other";
- background luma >= LIGHT_BG_MIN_LUMA:
  - outline (``core_contrast < FILLED_MIN_CORE_CONTRAST``): "sketch" if the ink is at least
    SKETCH_MIN_INK_DARKNESS darker (luma) than the background and ink S <= SKETCH_MAX_INK_SAT
    (pencil-like), else "other";
  - filled: "photo" if fill S >= PHOTO_MIN_FILL_SAT; "pastel" if PASTEL_MIN_FILL_SAT <= fill S <
    PHOTO_MIN_FILL_SAT, fill V >= PASTEL_MIN_FILL_VALUE and the background is tinted (background S >=
    PASTEL_MIN_BG_SAT; a merely faded photo on its grey background is "other"); else "other";
- anything else (mid-grey background) -> "other".

Measured on renders (tests/test_toy_judges.py): 100% of 200 renders per style at 32 px, also with
Gaussian noise (sigma 0.05 and 0.1 in [-1, 1] units) and with a 3x3 blur.
"""

from __future__ import annotations

import functools

import attrs
import numpy as np
import torch

from zsgm.toy.masks import (
    background_distance,
    border_ring,
    border_width,
    core_of,
    dilate,
    estimate_background,
    filled_from_ink,
    ink_threshold,
    remove_isolated,
    to_unit,
)
from zsgm.toy.render import PALETTE, STYLES, style_background

MIN_AREA = 0.02  # filled area, fraction of the image
MAX_AREA = 0.60
FILLED_MIN_CORE_CONTRAST = 0.35  # renders: sketch ~0.0-0.1, night ~0.7, photo / pastel ~0.8-1
NIGHT_BG_MAX_LUMA = 0.30  # renders: night background ~0.06
LIGHT_BG_MIN_LUMA = 0.60  # renders: photo ~0.83, sketch ~0.95, pastel ~0.93
NIGHT_MIN_FILL_LIFT = 0.08
SKETCH_MIN_INK_DARKNESS = 0.25  # background luma - ink luma; renders ~0.55-0.75, 3x3-blurred ~0.4
SKETCH_MAX_INK_SAT = 0.45
PHOTO_MIN_FILL_SAT = 0.50  # renders: photo fills S ~0.75-0.9, pastel fills S ~0.25-0.4
PASTEL_MIN_FILL_SAT = 0.12
PASTEL_MIN_FILL_VALUE = 0.75
PASTEL_MIN_BG_SAT = 0.06  # renders: pastel background S ~0.10; photo ~0.035, sketch ~0.04
COLOUR_MIN_SAT = 0.15  # below this the fill counts as uncoloured (classify_colour -> None)
COLOUR_MAX_HUE_DIST = 45.0  # degrees from the nearest palette hue

OTHER = "other"


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """[..., 3] in [0, 1] -> [..., 3] (hue in degrees [0, 360), saturation, value)."""
    r, g, b = rgb.unbind(-1)
    mx, _ = rgb.max(-1)
    mn, _ = rgb.min(-1)
    c = mx - mn
    safe = torch.where(c > 0, c, torch.ones_like(c))
    h = torch.where(mx == r, ((g - b) / safe) % 6, torch.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4))
    h = torch.where(c > 0, h * 60.0, torch.zeros_like(h))
    s = torch.where(mx > 0, c / torch.where(mx > 0, mx, torch.ones_like(mx)), torch.zeros_like(mx))
    return torch.stack([h % 360.0, s, mx], -1)


def luma(rgb: torch.Tensor) -> torch.Tensor:
    """Rec. 601 luma of [..., 3] -> [...]."""
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _masked_median(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Per-image, per-channel median of x [N, 3, H, W] over m [N, H, W] -> [N, 3] (NaN where m empty)."""
    v = x.flatten(2).clone()  # [N, 3, HW]
    v[~m.flatten(1)[:, None, :].expand_as(v)] = float("nan")
    return v.nanmedian(dim=2).values


def _darker_half(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """The pixels of m [N, H, W] whose luma is at most the median luma over m (the stroke core: a thin
    antialiased outline has many half-covered, lighter pixels)."""
    lum = luma(x.permute(0, 2, 3, 1)).flatten(1).clone()  # [N, HW]
    lum[~m.flatten(1)] = float("nan")
    med = lum.nanmedian(dim=1).values  # [N]
    return m & (lum <= med[:, None]).reshape(m.shape)


@attrs.frozen
class ImageAnalysis:
    """Per-image measurements shared by the judges (colours in [0, 1] units).

    Attributes:
        bg: [N, 3] background colour. ink: bool [N, H, W]. filled: bool [N, H, W].
        area: [N] filled fraction of the image. ink_ratio: [N] |ink & filled| / |filled| (0 where empty).
        contrast: [N] q99 of the distance to the background. core: bool [N, H, W] (see module docstring).
        core_contrast: [N] median distance to the background over the core / contrast.
        fill_rgb: [N, 3] median colour over the core. ink_rgb: [N, 3] median colour of the darker
            half (by luma) of the ink inside the filled region (NaN where there is none).
    """

    bg: torch.Tensor
    ink: torch.Tensor
    filled: torch.Tensor
    area: torch.Tensor
    ink_ratio: torch.Tensor
    fill_rgb: torch.Tensor
    ink_rgb: torch.Tensor
    contrast: torch.Tensor
    core: torch.Tensor
    core_contrast: torch.Tensor


def analyse(img: torch.Tensor) -> ImageAnalysis:
    """Measure a batch [N, 3, H, W] in [-1, 1] once for all judges."""
    x = to_unit(img)
    bg = estimate_background(img)  # [N, 3] in [-1, 1]
    d = background_distance(img, bg)  # [N, H, W]
    contrast = torch.quantile(d.flatten(1), 0.99, dim=1)  # [N]
    ink = remove_isolated(d > ink_threshold(d)[:, None, None])
    filled = filled_from_ink(ink)
    n_filled = filled.flatten(1).sum(1).float()
    area = n_filled / filled[0].numel() if len(filled) else n_filled
    ink_ratio = (ink & filled).flatten(1).sum(1).float() / n_filled.clamp(min=1)
    core = core_of(filled)
    dc = d.flatten(1).clone()
    dc[~core.flatten(1)] = float("nan")
    core_d = torch.nan_to_num(dc.nanmedian(dim=1).values, nan=0.0)  # [N]
    return ImageAnalysis(
        bg=bg * 0.5 + 0.5,
        ink=ink,
        filled=filled,
        area=area,
        ink_ratio=ink_ratio,
        fill_rgb=_masked_median(x, core),
        ink_rgb=_masked_median(x, _darker_half(x, ink & filled)),
        contrast=contrast,
        core=core,
        core_contrast=core_d / contrast.clamp(min=1e-6),
    )


def _style_rule(a: ImageAnalysis, i: int) -> str:
    area = float(a.area[i])
    if not MIN_AREA <= area <= MAX_AREA:
        return OTHER
    bg_l = float(luma(a.bg[i]))
    fill_l = float(luma(a.fill_rgb[i]))
    filled = float(a.core_contrast[i]) >= FILLED_MIN_CORE_CONTRAST
    if bg_l < NIGHT_BG_MAX_LUMA:
        return "night" if filled and fill_l - bg_l >= NIGHT_MIN_FILL_LIFT else OTHER
    if bg_l < LIGHT_BG_MIN_LUMA:
        return OTHER
    if not filled:
        ink = a.ink_rgb[i]
        if torch.isnan(ink).any():
            return OTHER
        _, s, _ = rgb_to_hsv(ink).tolist()
        dark = bg_l - float(luma(ink)) >= SKETCH_MIN_INK_DARKNESS
        return "sketch" if dark and s <= SKETCH_MAX_INK_SAT else OTHER
    _, s, v = rgb_to_hsv(a.fill_rgb[i]).tolist()
    if s >= PHOTO_MIN_FILL_SAT:
        return "photo"
    bg_s = float(rgb_to_hsv(a.bg[i])[1])
    if s >= PASTEL_MIN_FILL_SAT and v >= PASTEL_MIN_FILL_VALUE and bg_s >= PASTEL_MIN_BG_SAT:
        return "pastel"
    return OTHER


def classify_style(img: torch.Tensor | ImageAnalysis) -> list[str]:
    """Style of each image: one of ``STYLES`` or "other" (rules in the module docstring).

    Args:
        img: [N, 3, H, W] in [-1, 1], or an :class:`ImageAnalysis` of it.
    """
    a = img if isinstance(img, ImageAnalysis) else analyse(img)
    return [_style_rule(a, i) for i in range(len(a.area))]


@functools.lru_cache(maxsize=1)
def _palette_hues() -> dict[str, float]:
    return {name: float(rgb_to_hsv(torch.tensor(rgb))[0]) for name, rgb in PALETTE.items()}


def _colour_rule(rgb: torch.Tensor) -> str | None:
    if torch.isnan(rgb).any():
        return None
    h, s, _ = rgb_to_hsv(rgb).tolist()
    if s < COLOUR_MIN_SAT:
        return None
    dist = {name: min(abs(h - ph), 360.0 - abs(h - ph)) for name, ph in _palette_hues().items()}
    best = min(dist, key=dist.get)
    return best if dist[best] <= COLOUR_MAX_HUE_DIST else None


def classify_colour(img: torch.Tensor, mask: torch.Tensor | None = None) -> list[str | None]:
    """Palette colour of each image's foreground by hue, or None (uncoloured, e.g. a sketch, or a hue far
    from every palette colour).

    Args:
        img: [N, 3, H, W] in [-1, 1].
        mask: bool [N, H, W] foreground to read the colour from (the median over its core, see
            :func:`zsgm.toy.masks.core_of`); None: the filled mask found in the image.
    """
    if mask is None:
        return [_colour_rule(c) for c in analyse(img).fill_rgb]
    if mask.shape != (img.shape[0], *img.shape[2:]) or mask.dtype != torch.bool:
        raise ValueError(f"classify_colour: expected a bool mask {(img.shape[0], *img.shape[2:])}, found {mask.dtype} {tuple(mask.shape)}")
    return [_colour_rule(c) for c in _masked_median(to_unit(img), core_of(mask.cpu()))]


def _as_analysis(img: torch.Tensor | ImageAnalysis) -> ImageAnalysis:
    return img if isinstance(img, ImageAnalysis) else analyse(img)


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of bool masks [N, H, W] pairwise by index -> [N]; 0 where both are empty."""
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))


def content_iou(src_img: torch.Tensor | ImageAnalysis, tgt_img: torch.Tensor | ImageAnalysis) -> torch.Tensor:
    """[N] IoU of the filled foreground masks of source images and their adapted counterparts (same latent,
    same noise). 1 = the shape kept its kind, place and size; 0 where neither image shows a shape."""
    return mask_iou(_as_analysis(src_img).filled, _as_analysis(tgt_img).filled)


def background_change(
    src_img: torch.Tensor | ImageAnalysis,
    tgt_img: torch.Tensor,
    *,
    target_style: str | None = None,
    tgt_analysis: ImageAnalysis | None = None,
) -> torch.Tensor:
    """The "background artefact" of each adapted image, [N], in [0, 1] intensity units.

    Definition: the mean over channels and over the *shared background* pixels of ``|tgt - ref|``, where
    ``ref`` is the target style's canonical background (:func:`zsgm.toy.render.style_background`: the
    noise-free gradient; a faithful render of the style scores ~0.01, from its texture) or, when
    ``target_style`` is None, the source image itself (plain background change). The shared background is
    the pixels outside both filled masks dilated by ``border_width(H)`` pixels (so antialiasing, glow and
    small shifts of the shape do not count); if that is empty, the border ring is used.

    Args:
        src_img: [N, 3, H, W] in [-1, 1] (or its analysis when ``target_style`` is given).
        tgt_img: [N, 3, H, W] in [-1, 1].
        target_style: a style name or None.
        tgt_analysis: the analysis of ``tgt_img`` when already computed (saves time).
    """
    y = to_unit(tgt_img)
    n, _, h, w = y.shape
    if target_style is None:
        if isinstance(src_img, ImageAnalysis):
            raise ValueError("background_change: target_style=None needs the source images, found an ImageAnalysis")
        ref = to_unit(src_img)
    elif target_style in STYLES:
        ref = torch.from_numpy(style_background(target_style, size=h)).float().permute(2, 0, 1)[None]
    else:
        raise ValueError(f"background_change: expected target_style in {STYLES} or None, found {target_style!r}")
    union = _as_analysis(src_img).filled | (tgt_analysis if tgt_analysis is not None else analyse(tgt_img)).filled
    for _ in range(border_width(h)):
        union = dilate(union)
    region = ~union
    empty = region.flatten(1).sum(1) == 0
    region = torch.where(empty[:, None, None], border_ring(h, w).expand(n, h, w), region)
    diff = (y - ref).abs().mean(1)  # [N, H, W]
    return (diff * region).flatten(1).sum(1) / region.flatten(1).sum(1).float()


def diversity(imgs: torch.Tensor | ImageAnalysis, *, mode: str = "mask") -> float:
    """Diversity of a batch as the mean over pairs ``i < j``.

    Args:
        imgs: [N, 3, H, W] in [-1, 1] (an analysis only for mode "mask").
        mode: "mask": ``1 - IoU`` of the filled masks (content diversity: kind, place, size; the same for
            every style, so comparable across domains); "pixel": mean absolute pixel difference in [0, 1]
            units (includes colour and texture).

    Returns:
        the diversity (0 for fewer than two images, or a collapsed batch).
    """
    if mode == "mask":
        m = _as_analysis(imgs).filled.flatten(1).float()  # [N, HW]
        n = m.shape[0]
        if n < 2:
            return 0.0
        inter = m @ m.T
        a = m.sum(1)
        union = a[:, None] + a[None, :] - inter
        iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    elif mode == "pixel":
        x = to_unit(imgs).flatten(1)  # [N, D]
        n = x.shape[0]
        if n < 2:
            return 0.0
        iou = 1.0 - torch.cdist(x[None].double(), x[None].double(), p=1)[0].float() / x.shape[1]
    else:
        raise ValueError(f"diversity: expected mode 'mask' or 'pixel', found {mode!r}")
    iu = torch.triu_indices(n, n, offset=1)
    return float((1.0 - iou[iu[0], iu[1]]).mean())


def diversity_ratio(tgt_imgs, src_imgs, *, mode: str = "mask") -> float:
    """``diversity(tgt) / diversity(src)``: ~1 when adaptation kept diversity, -> 0 on mode collapse
    (NaN when the source batch has no diversity)."""
    d_src = diversity(src_imgs, mode=mode)
    if d_src <= 1e-12:
        return float("nan")
    return diversity(tgt_imgs, mode=mode) / d_src


def judge_batch(src_imgs: torch.Tensor, tgt_imgs: torch.Tensor, *, target_style: str) -> dict[str, float]:
    """All ground-truth judgements of paired source / adapted batches (same latents and noise).

    Args:
        src_imgs: [N, 3, H, W] in [-1, 1] from the source (photo) generator.
        tgt_imgs: [N, 3, H, W] in [-1, 1] from the adapted generator.
        target_style: the style the adaptation aimed at (one of ``STYLES``).

    Returns:
        dict of floats: ``target_style_rate`` (fraction classified as ``target_style``), ``content_iou``
        (mean), ``background_artefact`` (mean :func:`background_change` against the target style),
        ``diversity_ratio`` (mask mode), ``pixel_diversity_ratio``, ``colour_rate`` (coloured target
        styles: fraction whose colour matches the source's; sketch: fraction with no colour),
        ``source_style_rate`` (fraction of the source batch classified as "photo"), ``n``.
    """
    if target_style not in STYLES:
        raise ValueError(f"judge_batch: expected target_style in {STYLES}, found {target_style!r}")
    if src_imgs.shape != tgt_imgs.shape:
        raise ValueError(f"judge_batch: src and tgt shapes differ: {tuple(src_imgs.shape)} vs {tuple(tgt_imgs.shape)}")
    a_src, a_tgt = analyse(src_imgs), analyse(tgt_imgs)
    styles = classify_style(a_tgt)
    tgt_col = [_colour_rule(c) for c in a_tgt.fill_rgb]
    if target_style == "sketch":
        colour_ok = [c is None for c in tgt_col]
    else:
        src_col = [_colour_rule(c) for c in a_src.fill_rgb]
        colour_ok = [t is not None and t == s for t, s in zip(tgt_col, src_col)]
    return {
        "target_style_rate": float(np.mean([s == target_style for s in styles])),
        "content_iou": float(mask_iou(a_src.filled, a_tgt.filled).mean()),
        "background_artefact": float(background_change(a_src, tgt_imgs, target_style=target_style, tgt_analysis=a_tgt).mean()),
        "diversity_ratio": diversity_ratio(a_tgt, a_src, mode="mask"),
        "pixel_diversity_ratio": diversity_ratio(tgt_imgs, src_imgs, mode="pixel"),
        "colour_rate": float(np.mean(colour_ok)),
        "source_style_rate": float(np.mean([s == "photo" for s in classify_style(a_src)])),
        "n": float(len(styles)),
    }
