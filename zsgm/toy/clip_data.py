"""Training data of the shapes CLIP: a render pool with coverage masks, label-preserving corruptions, captions.

- :func:`render_pool`: uint8 renders, the shape's coverage (the part of the image that is *not* background:
  the fill, or a sketch's stroke) and integer labels (style, colour, kind).
- :func:`augment_batch`: corruptions a generator can produce cheaply, applied to every style with its
  label unchanged (so none of them predicts a style or a colour): background tints and smooth background
  fields, global colour casts, brightness / contrast, blur, quantisation, block artefacts, Gaussian noise,
  high-frequency gratings and checkerboards, small shifts / scales / horizontal flips. The shape's hue is
  never rotated (red / blue is semantic) and casts stay small enough to keep every palette colour's name.
- :class:`CaptionSampler`: one caption per image in many phrasings, with the attributes it mentions, and
  the ``[B, B]`` positives matrix of a batch (caption j describes image i when every attribute it
  mentions agrees with image i; a sketch shows no colour, so only sketch captions may name its colour).
"""

from __future__ import annotations

import math

import attrs
import numpy as np
import torch
import torch.nn.functional as F

from zsgm.clip_templates import IMAGENET_TEMPLATES
from zsgm.toy.captions import CAPTION_TEMPLATES, OTHER_CAPTIONS
from zsgm.toy.render import (
    COLOURS,
    KINDS,
    STROKE_WIDTH,
    STYLES,
    SUPERSAMPLE,
    ShapeParams,
    render,
    sample_params,
    signed_distance,
)

SKETCH = STYLES.index("sketch")
OTHER_STYLE = len(STYLES)  # label of an image that shows no style (a mined fake); its colour and kind are -1


def coverage(params: ShapeParams, *, size: int = 32) -> np.ndarray:
    """Fraction of each pixel covered by the shape's visible part, float [size, size]: the filled shape, or
    for a sketch the stroke only (its inside is paper, i.e. background)."""
    f = SUPERSAMPLE
    t = (np.arange(size * f, dtype=np.float64) + 0.5) / (size * f)
    x, y = np.meshgrid(t, t, indexing="xy")
    sdf = signed_distance(params.kind, x, y, params.cx, params.cy, params.radius)
    m = (sdf < 0) & (sdf > -STROKE_WIDTH) if params.style == "sketch" else sdf < 0
    return m.reshape(size, f, size, f).mean(axis=(1, 3))


def render_pool(n: int, *, rng: np.random.Generator, size: int = 32, progress: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render ``n`` random images (styles, kinds, colours uniform).

    Returns:
        images uint8 [n, 3, size, size], coverage uint8 [n, 1, size, size] (255 = shape), labels long
        [n, 3] (indices into ``STYLES``, ``COLOURS``, ``KINDS``).
    """
    from tqdm.auto import tqdm

    params = sample_params(n, rng=rng)
    images = np.empty((n, size, size, 3), np.uint8)
    alpha = np.empty((n, size, size), np.uint8)
    for i, p in enumerate(tqdm(params, desc="render pool", unit="img", disable=not progress, mininterval=2)):
        images[i] = render(p, size=size)
        alpha[i] = np.round(coverage(p, size=size) * 255)
    labels = torch.tensor([[STYLES.index(p.style), COLOURS.index(p.colour), KINDS.index(p.kind), *geometry_labels(p)]
                           for p in params])
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(alpha)[:, None], labels


# Where and how big: words captions may use, and the thresholds (fractions of the image side) that decide
# them. A shape between two bins gets -1 (no word fits it, so no caption naming a bin describes it).
HORIZONTAL = ("left", "right")
VERTICAL = ("top", "bottom")
SIZES = ("small", "large")
SIDE_THRESHOLDS = (0.42, 0.58)  # centre below the first: left / top; above the second: right / bottom
SIZE_THRESHOLDS = (0.24, 0.28)  # radius below the first: small; above the second: large


def _bin(value: float, thresholds: tuple[float, float]) -> int:
    return 0 if value < thresholds[0] else 1 if value > thresholds[1] else -1


def geometry_labels(params: ShapeParams) -> tuple[int, int, int]:
    """``(horizontal, vertical, size)`` indices into ``HORIZONTAL``, ``VERTICAL``, ``SIZES`` (-1: between)."""
    return (_bin(params.cx, SIDE_THRESHOLDS), _bin(params.cy, SIDE_THRESHOLDS),
            _bin(params.radius, SIZE_THRESHOLDS))


def render_paired_pool(n: int, *, rng: np.random.Generator, size: int = 32, progress: bool = False
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random shapes, each rendered in every style and once more as a photo in another colour: the
    true edits whose CLIP directions the directional term of :func:`zsgm.toy.train_clip.train` aligns with
    the text directions.

    Returns:
        images uint8 [n, len(STYLES) + 1, 3, size, size] (the styles in ``STYLES`` order, then the
        recoloured photo) and labels long [n, 3]: colour, the other colour, kind (indices).
    """
    from tqdm.auto import tqdm

    params = sample_params(n, rng=rng, styles=("photo",))
    images = np.empty((n, len(STYLES) + 1, size, size, 3), np.uint8)
    labels = []
    for i, p in enumerate(tqdm(params, desc="render pairs", unit="shape", disable=not progress, mininterval=2)):
        for j, style in enumerate(STYLES):
            images[i, j] = render(p.with_style(style), size=size)
        other = COLOURS[(COLOURS.index(p.colour) + 1 + int(rng.integers(len(COLOURS) - 1))) % len(COLOURS)]
        images[i, len(STYLES)] = render(attrs.evolve(p, colour=other), size=size)
        labels.append([COLOURS.index(p.colour), COLOURS.index(other), KINDS.index(p.kind)])
    return torch.from_numpy(images).permute(0, 1, 4, 2, 3).contiguous(), torch.tensor(labels)


def _u(g: torch.Generator, *shape: int, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=g)


def _on(g: torch.Generator, b: int, p: float) -> torch.Tensor:
    """[B, 1, 1, 1] float mask, 1 with probability p."""
    return (torch.rand((b, 1, 1, 1), generator=g) < p).float()


def _geometry(x: torch.Tensor, alpha: torch.Tensor, g: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Horizontal flips, integer shifts of up to 2 px (edge-replicated) and, for a third of the images, a
    bilinear scale of 0.9-1.1 with a sub-pixel shift.

    Returns:
        images [B, 3, H, W], coverage [B, 1, H, W] and which images were flipped, bool [B].
    """
    b, _, h, w = x.shape
    xa = torch.cat([x, alpha], 1)  # [B, 4, H, W]
    flip = torch.rand(b, generator=g) < 0.5
    xa = torch.where(flip[:, None, None, None], xa.flip(3), xa)
    pad = 2
    xp = F.pad(xa, [pad] * 4, mode="replicate")
    dx, dy = torch.randint(0, 2 * pad + 1, (2, b), generator=g)
    rows = (torch.arange(h)[None, :] + dy[:, None])  # [B, H]
    cols = (torch.arange(w)[None, :] + dx[:, None])  # [B, W]
    xa = xp[torch.arange(b)[:, None, None, None], torch.arange(4)[None, :, None, None],
            rows[:, None, :, None], cols[:, None, None, :]]
    affine = torch.rand(b, generator=g) < 1 / 3
    if bool(affine.any()):
        k = int(affine.sum())
        s = _u(g, k, lo=0.9, hi=1.1)
        t = _u(g, k, 2, lo=-1.0, hi=1.0) / w  # up to half a pixel (normalised coords span 2)
        theta = torch.zeros(k, 2, 3)
        theta[:, 0, 0], theta[:, 1, 1] = 1 / s, 1 / s
        theta[:, :, 2] = t
        grid = F.affine_grid(theta, [k, 4, h, w], align_corners=False)
        xa = xa.clone()
        xa[affine] = F.grid_sample(xa[affine], grid, mode="bilinear", padding_mode="border", align_corners=False)
    return xa[:, :3], xa[:, 3:], flip


def _pattern(g: torch.Generator, b: int, h: int, w: int) -> torch.Tensor:
    """High-frequency patterns [B, 3, H, W] in [-1, 1]: gratings of period 2-5 px in random directions and
    phases (per-channel weights), or pixel checkerboards."""
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    period = _u(g, b, lo=2.0, hi=5.0)
    ang = _u(g, b, lo=0.0, hi=math.pi)
    phase = _u(g, b, lo=0.0, hi=2 * math.pi)
    arg = (2 * math.pi / period)[:, None, None] * (torch.cos(ang)[:, None, None] * xx + torch.sin(ang)[:, None, None] * yy)
    wave = torch.sin(arg + phase[:, None, None])  # [B, H, W]
    checker = ((xx + yy) % 2 * 2 - 1)[None].expand(b, h, w)
    use_checker = (torch.rand(b, generator=g) < 0.3)[:, None, None]
    base = torch.where(use_checker, checker, wave)[:, None]  # [B, 1, H, W]
    return base * _u(g, b, 3, 1, 1, lo=-1.0, hi=1.0)


_BLUR = torch.tensor([1.0, 2.0, 1.0])
_BLUR = (_BLUR[:, None] * _BLUR[None, :] / 16.0).expand(3, 1, 3, 3).contiguous()


def augment_batch(x: torch.Tensor, alpha: torch.Tensor, labels: torch.Tensor, *, g: torch.Generator,
                  strength: float = 1.0, mirror_labels: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Label-preserving corruptions (module docstring) of a render batch.

    Args:
        x: [B, 3, H, W] renders in [-1, 1].
        alpha: [B, 1, H, W] coverage in [0, 1] (1 = shape, 0 = background).
        labels: [B, 3] (style, colour, kind) or [B, 6] (..., horizontal, vertical, size).
        g: the random generator (reproducibility).
        strength: scales every amplitude (1 = training).
        mirror_labels: a flipped image's horizontal label swaps left and right, as its picture did. False
            reproduces CLIP rounds r1-r4 and the experiments of 2026-11-28, which kept the label: half of
            their "on the left" captions described a shape on the right.

    Returns:
        ``(images, labels)``: [B, 3, H, W] corrupted images clamped to [-1, 1], and the labels (a copy when
        one changed). The corruptions draw the same random numbers whatever the labels.
    """
    b, _, h, w = x.shape
    x, alpha, flip = _geometry(x, alpha, g)
    if mirror_labels and labels.shape[1] > 3:
        labels = labels.clone()
        side = labels[:, 3]
        labels[:, 3] = torch.where(flip & (side >= 0), 1 - side, side)  # left (0) <-> right (1); -1 stays
    bg = 1.0 - alpha
    # background: flat tint plus (sometimes) a smooth field; up to 0.3 per channel in [-1, 1] units
    tint = _u(g, b, 3, 1, 1, lo=-0.3, hi=0.3) * _u(g, b, 1, 1, 1)
    field = F.interpolate(_u(g, b, 3, 3, 3, lo=-1.0, hi=1.0), size=(h, w), mode="bicubic", align_corners=False)
    field = field * _u(g, b, 1, 1, 1, lo=0.0, hi=0.2) * _on(g, b, 0.4)
    x = x + strength * _on(g, b, 0.5) * bg * (tint + field)
    # global colour cast: per-channel gain and offset
    gain = _u(g, b, 3, 1, 1, lo=0.88, hi=1.12)
    off = _u(g, b, 3, 1, 1, lo=-0.15, hi=0.15)
    cast = _on(g, b, 0.5)
    x = x + strength * cast * (x * (gain - 1.0) + off)
    # brightness / contrast around the image mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    c = _u(g, b, 1, 1, 1, lo=0.85, hi=1.2)
    br = _u(g, b, 1, 1, 1, lo=-0.15, hi=0.15)
    x = x + strength * _on(g, b, 0.5) * ((x - mean) * (c - 1.0) + br)
    x = x.clamp(-1.0, 1.0)
    # blur, quantisation, 2x2 blocks
    blurred = F.conv2d(F.pad(x, [1] * 4, mode="replicate"), _BLUR, groups=3)
    x = x + _on(g, b, 0.2) * _u(g, b, 1, 1, 1, lo=0.4, hi=1.0) * (blurred - x)
    levels = torch.randint(8, 33, (b, 1, 1, 1), generator=g).float()
    quant = ((x + 1) / 2 * levels).round() / levels * 2 - 1
    x = torch.where(_on(g, b, 0.1).bool(), quant, x)
    blocks = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="nearest")
    x = torch.where(_on(g, b, 0.08).bool(), blocks, x)
    # noise and high-frequency patterns
    x = x + strength * _on(g, b, 0.5) * _u(g, b, 1, 1, 1, lo=0.0, hi=0.12) * torch.randn(x.shape, generator=g)
    x = x + strength * _on(g, b, 0.2) * _u(g, b, 1, 1, 1, lo=0.0, hi=0.1) * _pattern(g, b, h, w)
    return x.clamp(-1.0, 1.0), labels


# ------------------------------------------------------------------------------------------- captions

_STYLE_SIMPLE = ("a {}", "{}", "a {} image", "a {} of a shape", "an image in {} style", "a {} picture")
_COLOUR_SIMPLE = ("a {} shape", "a {} thing", "something {}", "{}", "a {} object")
_KIND_SIMPLE = ("a {}", "{}", "a {} shape", "the {}")


class CaptionSampler:
    """Draw one caption per image and build the batch's positives matrix.

    Mixture (per image): 35% the renderer's captions (:data:`zsgm.toy.captions.CAPTION_TEMPLATES`), 20%
    style only ("a sketch", or an ImageNet template filled with the style word), 15% colour only (coloured
    styles; "a photo of a red."), 10% kind only, 20% combinations ("a red circle", "a circle in night style").
    Each caption records the attributes it mentions; tokens are cached per string.
    """

    def __init__(self, tokenizer, *, rng: np.random.Generator):
        self.tokenizer = tokenizer
        self.rng = rng
        self._tokens: dict[str, torch.Tensor] = {}

    def _pick(self, options) -> str:
        return options[int(self.rng.integers(len(options)))]

    def caption(self, style: int, colour: int, kind: int) -> tuple[str, tuple[int, int, int]]:
        """One caption of the image with these label indices and the attributes it mentions
        ``(style, colour, kind)`` (-1 = not mentioned). ``style == OTHER_STYLE`` (a mined fake) draws from
        :data:`~zsgm.toy.captions.OTHER_CAPTIONS`."""
        if style == OTHER_STYLE:
            return self._pick(OTHER_CAPTIONS), (OTHER_STYLE, -1, -1)
        s, c, k = STYLES[style], COLOURS[colour], KINDS[kind]
        coloured = style != SKETCH
        r = float(self.rng.random())
        if r < 0.35:
            t = self._pick(CAPTION_TEMPLATES[s])
            return t.format(c=c, k=k), (style, colour if "{c}" in t else -1, kind)
        if r < 0.55 or (r < 0.70 and not coloured):
            t = self._pick(IMAGENET_TEMPLATES) if self.rng.random() < 0.6 else self._pick(_STYLE_SIMPLE)
            return t.format(s), (style, -1, -1)
        if r < 0.70:
            t = self._pick(IMAGENET_TEMPLATES) if self.rng.random() < 0.5 else self._pick(_COLOUR_SIMPLE)
            return t.format(c), (-1, colour, -1)
        if r < 0.80:
            t = self._pick(IMAGENET_TEMPLATES) if self.rng.random() < 0.5 else self._pick(_KIND_SIMPLE)
            return t.format(k), (-1, -1, kind)
        if coloured:
            options = [(f"a {c} {k}", (-1, colour, kind)), (f"a {k} in {s} style", (style, -1, kind)),
                       (f"a {s} of a {c} shape", (style, colour, -1)), (f"a {c} {k}, {s}", (style, colour, kind)),
                       (self._pick(IMAGENET_TEMPLATES).format(f"{c} {k}"), (-1, colour, kind))]
        else:
            options = [(f"a {k} in {s} style", (style, -1, kind)), (f"a {s} of a shape", (style, -1, -1)),
                       (f"a {k}, {s}", (style, -1, kind)), (f"an outline of a {k}", (style, -1, kind))]
        return options[int(self.rng.integers(len(options)))]

    def geometry(self, text: str, mention: tuple, h: int, v: int, size: int, *, p: float = 0.4
                 ) -> tuple[str, tuple]:
        """With probability ``p``, add where / how big the shape is to ``text`` (only facts the labels know):
        "..., small", "... on the left", "... at the top right". Returns the caption and its 6-way mention."""
        if self.rng.random() >= p:
            return text, (*mention, -1, -1, -1)
        use_h = h >= 0 and self.rng.random() < 0.6
        use_v = v >= 0 and self.rng.random() < 0.6
        use_s = size >= 0 and self.rng.random() < 0.6
        where = " ".join(w for w, on in ((VERTICAL[v] if v >= 0 else "", use_v),
                                         (HORIZONTAL[h] if h >= 0 else "", use_h)) if on)
        if where:
            text += (" on the " if use_h and not use_v else " at the ") + where
        if use_s:
            text += f", {SIZES[size]}"
        return text, (*mention, h if use_h else -1, v if use_v else -1, size if use_s else -1)

    def tokens(self, texts: list[str]) -> torch.Tensor:
        """``[T, L]`` token ids (cached per string)."""
        todo = [t for t in dict.fromkeys(texts) if t not in self._tokens]
        if todo:
            for t, row in zip(todo, self.tokenizer(todo)):
                self._tokens[t] = row
        return torch.stack([self._tokens[t] for t in texts])

    def sample(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions for a batch of labels [B, 3].

        Returns:
            tokens [B, L] and bool positives [B, B] (``[i, j]``: caption j describes image i).
        """
        rows = labels.tolist()
        caps = [self.caption(*row[:3]) for row in rows]
        if labels.shape[1] == 6:  # geometry labels: some captions also say where and how big
            caps = [self.geometry(t, m, *row[3:]) if row[0] != OTHER_STYLE else (t, (*m, -1, -1, -1))
                    for (t, m), row in zip(caps, rows)]
        mention = torch.tensor([m for _, m in caps])  # [B, 3] or [B, 6]
        return self.tokens([t for t, _ in caps]), positives(labels, mention)


def positives(labels: torch.Tensor, mention: torch.Tensor) -> torch.Tensor:
    """bool [B_img, B_cap]: caption j describes image i (every mentioned attribute agrees; a colour can be
    checked only on coloured styles, and a sketch caption naming a colour fits any sketch of that kind).
    A mined fake (style ``OTHER_STYLE``, colour and kind -1) matches only the captions of fakes.

    Args:
        labels: [B_img, 3] (style, colour, kind) of the images, or [B_img, 6] with the geometry labels
            (horizontal, vertical, size; -1 = between bins).
        mention: [B_cap, 3 or 6] the attributes each caption mentions, -1 where it does not.
    """
    extra = torch.ones(len(labels), len(mention), dtype=torch.bool)
    for i in range(3, mention.shape[1]):  # geometry: the image's bin must be the one named
        extra &= (mention[:, i][None, :] < 0) | (mention[:, i][None, :] == labels[:, i][:, None])
    ls, lc, lk = (labels[:, i][:, None] for i in range(3))  # [B, 1]
    ms, mc, mk = (mention[:, i][None, :] for i in range(3))  # [1, B]
    ok_style = (ms < 0) | (ms == ls)
    ok_kind = (mk < 0) | (mk == lk)
    visible = ls != SKETCH
    ok_colour = (mc < 0) | (visible & (mc == lc)) | (~visible & (ms == SKETCH))
    return ok_style & ok_kind & ok_colour & extra
