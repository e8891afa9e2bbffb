"""Procedural renderer of the "shapes" world.

One image holds one shape (circle, square, triangle or diamond) of one palette colour, drawn in one of
four styles:

- ``photo``  (the source domain): filled shape with a soft diagonal shading on a light grey, slightly
  textured background with a gentle vertical gradient;
- ``sketch``: off-white paper, a dark pencil outline only (no fill); the stroke lies *inside* the shape's
  boundary, so the outline's outer edge is the shape's edge;
- ``night``: dark navy background, the shape filled with a darkened colour, a brighter rim and a thin glow;
- ``pastel``: pale, desaturated fill on a light peach-tinted background.

Geometry is given in *normalised* coordinates (fractions of the image side, ``x`` to the right, ``y``
down), so the same :class:`ShapeParams` renders the same shape at 32 px and at 64 px, and the shape's
position, size and kind are identical across styles. Every image is drawn at ``SUPERSAMPLE`` x the output
resolution and box-downsampled (antialiasing). Rendering is deterministic: the only randomness (background
texture) comes from ``ShapeParams.seed``.
"""

from __future__ import annotations

import math
from typing import Sequence

import attrs
import numpy as np
import torch

STYLES: tuple[str, ...] = ("photo", "sketch", "night", "pastel")
KINDS: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
# Saturated palette colours in linear [0, 1] RGB (hues ~0, 53, 126, 227 degrees).
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.16, 0.14),
    "green": (0.16, 0.64, 0.22),
    "blue": (0.16, 0.30, 0.86),
    "yellow": (0.96, 0.84, 0.12),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)

RADIUS_RANGE = (0.20, 0.32)  # sampled shape "radius" (half the bounding box side), fraction of image side
BORDER_MARGIN = 0.07  # sampled shapes keep this gap to the image border (so the border ring is background)
SUPERSAMPLE = 4  # antialiasing factor
STROKE_WIDTH = 0.04  # sketch stroke width, fraction of image side (1.28 px at 32 px), inside the boundary

# Per style: background colour at the top row, at the bottom row, texture amplitude (std, [0, 1] units).
_BACKGROUNDS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float], float]] = {
    "photo": ((0.87, 0.86, 0.83), (0.81, 0.80, 0.77), 0.02),
    "sketch": ((0.97, 0.96, 0.93), (0.95, 0.94, 0.91), 0.012),
    "night": ((0.03, 0.04, 0.11), (0.07, 0.08, 0.17), 0.01),
    "pastel": ((0.98, 0.92, 0.88), (0.96, 0.90, 0.86), 0.01),
}
_INK = np.array([0.14, 0.14, 0.18])  # sketch pencil colour


@attrs.frozen
class ShapeParams:
    """Everything needed to render one image.

    Attributes:
        kind: one of ``KINDS``.
        colour: one of ``COLOURS`` (a sketch does not show it, but keeps it so content can be compared).
        cx, cy: centre of the shape's bounding box, fractions of the image side (``y`` grows downwards).
        radius: half the side of the shape's bounding box, fraction of the image side.
        style: one of ``STYLES``.
        seed: seed of the background texture (and stroke pressure); geometry does not depend on it.
    """

    kind: str = attrs.field(validator=attrs.validators.in_(KINDS))
    colour: str = attrs.field(validator=attrs.validators.in_(COLOURS))
    cx: float = attrs.field(converter=float)
    cy: float = attrs.field(converter=float)
    radius: float = attrs.field(converter=float)
    style: str = attrs.field(default="photo", validator=attrs.validators.in_(STYLES))
    seed: int = attrs.field(default=0, converter=int)

    def __attrs_post_init__(self) -> None:
        if not 0.02 <= self.radius <= 0.5:
            raise ValueError(f"ShapeParams.radius: expected a value in [0.02, 0.5], found {self.radius}")
        for name, c in (("cx", self.cx), ("cy", self.cy)):
            if c - self.radius < 0.0 or c + self.radius > 1.0:
                raise ValueError(
                    f"ShapeParams.{name}: the shape must stay inside the image, expected "
                    f"{self.radius:.3f} <= {name} <= {1 - self.radius:.3f}, found {c}"
                )

    def with_style(self, style: str) -> "ShapeParams":
        """The same shape (kind, colour, geometry, seed) in another style."""
        return attrs.evolve(self, style=style)


def sample_params(
    n: int,
    *,
    rng: np.random.Generator,
    styles: Sequence[str] = STYLES,
    kinds: Sequence[str] = KINDS,
    colours: Sequence[str] = COLOURS,
    radius_range: tuple[float, float] = RADIUS_RANGE,
    margin: float = BORDER_MARGIN,
) -> list[ShapeParams]:
    """Draw ``n`` random shapes (uniform over the given styles, kinds, colours; continuous geometry).

    Args:
        n: number of shapes.
        rng: the numpy generator; the same generator state gives the same list.
        styles, kinds, colours: the names to draw from (each must be a known name).
        radius_range: ``(low, high)`` of the uniform radius.
        margin: gap between the shape's bounding box and the image border.

    Returns:
        list of ``n`` :class:`ShapeParams`.
    """
    for label, given, known in (("styles", styles, STYLES), ("kinds", kinds, KINDS), ("colours", colours, COLOURS)):
        unknown = [g for g in given if g not in known]
        if unknown or not given:
            raise ValueError(f"sample_params({label}=...): expected a non-empty subset of {known}, found {list(given)}")
    lo, hi = radius_range
    if not 0.02 <= lo <= hi or hi + margin > 0.5:
        raise ValueError(f"sample_params: radius_range {radius_range} with margin {margin} does not fit the image")
    out = []
    for _ in range(n):
        style = styles[int(rng.integers(len(styles)))]
        kind = kinds[int(rng.integers(len(kinds)))]
        colour = colours[int(rng.integers(len(colours)))]
        r = float(rng.uniform(lo, hi))
        cx = float(rng.uniform(r + margin, 1.0 - r - margin))
        cy = float(rng.uniform(r + margin, 1.0 - r - margin))
        seed = int(rng.integers(2**31 - 1))
        out.append(ShapeParams(kind=kind, colour=colour, cx=cx, cy=cy, radius=r, style=style, seed=seed))
    return out


def _grid(size: int, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in normalised units, each [size*factor, size*factor]."""
    n = size * factor
    t = (np.arange(n, dtype=np.float64) + 0.5) / n
    return np.meshgrid(t, t, indexing="xy")  # x varies along columns, y along rows


def signed_distance(kind: str, x: np.ndarray, y: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    """Signed distance to the shape's boundary (negative inside), normalised units.

    Exact inside every shape (the polygons are convex, so the distance to the nearest edge line is the
    distance to the boundary); outside the polygons it is the max over edge half-planes (mitred corners).
    """
    dx, dy = x - cx, y - cy
    if kind == "circle":
        return np.hypot(dx, dy) - r
    if kind == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) - 0.8 * r
    if kind == "diamond":
        return (np.abs(dx) + np.abs(dy) - r) / math.sqrt(2.0)
    if kind == "triangle":
        # Equilateral, apex up, circumradius 1.15 r, centroid 0.2 r below the box centre, so its bounding
        # box is [-0.996 r, 0.996 r] x [-0.95 r, 0.775 r]: inside the radius box.
        big_r = 1.15 * r
        ty = dy - 0.2 * r
        s3 = math.sqrt(3.0) / 2.0
        d = np.maximum(np.maximum(ty, -s3 * dx - 0.5 * ty), s3 * dx - 0.5 * ty)
        return d - 0.5 * big_r  # inradius = half the circumradius
    raise ValueError(f"signed_distance: expected kind in {KINDS}, found {kind!r}")


def _downsample(a: np.ndarray, factor: int) -> np.ndarray:
    """Box-average the first two axes by ``factor``."""
    h, w = a.shape[0] // factor, a.shape[1] // factor
    return a.reshape(h, factor, w, factor, *a.shape[2:]).mean(axis=(1, 3))


def style_background(style: str, *, size: int = 32) -> np.ndarray:
    """The canonical (noise-free) background of a style: a vertical gradient, float [H, W, 3] in [0, 1]."""
    if style not in _BACKGROUNDS:
        raise ValueError(f"style_background: expected style in {STYLES}, found {style!r}")
    top, bottom, _ = _BACKGROUNDS[style]
    t = ((np.arange(size) + 0.5) / size)[:, None, None]  # [H, 1, 1]
    col = (1 - t) * np.asarray(top) + t * np.asarray(bottom)  # [H, 1, 3]
    return np.broadcast_to(col, (size, size, 3)).copy()


def _textured_background(style: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Canonical background plus a mottled luminance texture, float [H, W, 3]."""
    amp = _BACKGROUNDS[style][2]
    noise = rng.standard_normal((size + 2, size + 2))
    smooth = sum(noise[i : i + size, j : j + size] for i in range(3) for j in range(3)) / 3.0  # std 1
    return style_background(style, size=size) + amp * smooth[:, :, None]


def render(params: ShapeParams, *, size: int = 32) -> np.ndarray:
    """Render one image.

    Args:
        params: the shape.
        size: output side in pixels (any size >= 8; 32 and 64 are the ones used).

    Returns:
        uint8 array [size, size, 3].
    """
    if size < 8:
        raise ValueError(f"render: expected size >= 8, found {size}")
    f = SUPERSAMPLE
    rng = np.random.default_rng(params.seed)
    bg = np.repeat(np.repeat(_textured_background(params.style, size, rng), f, 0), f, 1)  # [Hs, Ws, 3]
    x, y = _grid(size, f)
    r = params.radius
    sdf = signed_distance(params.kind, x, y, params.cx, params.cy, r)  # [Hs, Ws]
    inside = (sdf < 0)[..., None].astype(np.float64)  # [Hs, Ws, 1]
    colour = np.asarray(PALETTE[params.colour])

    if params.style == "photo":
        t = ((x - params.cx) + (y - params.cy)) / (2.0 * r)  # light from the top left
        shade = np.clip(0.95 - 0.18 * t, 0.78, 1.1)[..., None]
        fill = np.clip(colour * shade, 0.0, 1.0)
        img = bg * (1 - inside) + fill * inside
    elif params.style == "sketch":
        stroke = ((sdf < 0) & (sdf > -STROKE_WIDTH))[..., None].astype(np.float64)
        angle = np.arctan2(y - params.cy, x - params.cx)
        phase = rng.uniform(0, 2 * np.pi)
        alpha = (0.9 + 0.07 * np.sin(3 * angle + phase))[..., None] * stroke  # pencil pressure
        img = bg * (1 - alpha) + _INK * alpha
    elif params.style == "night":
        rim = np.exp(np.minimum(sdf, 0.0) / 0.04)[..., None]  # 1 at the boundary, -> 0 inside
        fill = colour * (0.62 + 0.25 * rim)
        glow = colour * 0.06 * np.exp(-np.maximum(sdf, 0.0) / 0.02)[..., None]
        img = (bg + glow) * (1 - inside) + fill * inside
    else:  # pastel
        pale = 0.45 * colour + 0.55
        t = ((x - params.cx) + (y - params.cy)) / (2.0 * r)
        fill = pale * (1.0 - 0.03 * t)[..., None]
        img = bg * (1 - inside) + fill * inside

    out = _downsample(np.clip(img, 0.0, 1.0), f)  # [H, W, 3]
    return np.round(out * 255.0).astype(np.uint8)


def render_batch(params: Sequence[ShapeParams], *, size: int = 32) -> torch.Tensor:
    """Render many images as a generator-like batch: float32 [N, 3, size, size] in [-1, 1]."""
    if len(params) == 0:
        return torch.zeros(0, 3, size, size)
    arr = np.stack([render(p, size=size) for p in params])  # [N, H, W, 3] uint8
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def foreground_mask(params: ShapeParams, *, size: int = 32) -> np.ndarray:
    """The analytic filled mask of the shape (style independent): bool [size, size], True where the
    supersampled coverage of the pixel is at least one half."""
    x, y = _grid(size, SUPERSAMPLE)
    sdf = signed_distance(params.kind, x, y, params.cx, params.cy, params.radius)
    return _downsample((sdf < 0).astype(np.float64), SUPERSAMPLE) >= 0.5


def contact_sheet(rows: Sequence[Sequence[np.ndarray]], *, scale: int = 4, pad: int = 2):
    """Tile uint8 [H, W, 3] images (all the same size) into a PIL image, one list per row.

    Args:
        rows: images per row.
        scale: nearest-neighbour magnification of every tile.
        pad: gap in output pixels between tiles (white).
    """
    from PIL import Image

    h, w = rows[0][0].shape[:2]
    n_cols = max(len(r) for r in rows)
    th, tw = h * scale, w * scale
    sheet = np.full((len(rows) * (th + pad) + pad, n_cols * (tw + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, im in enumerate(row):
            big = np.repeat(np.repeat(im, scale, 0), scale, 1)
            y0, x0 = pad + i * (th + pad), pad + j * (tw + pad)
            sheet[y0 : y0 + th, x0 : x0 + tw] = big
    return Image.fromarray(sheet)


def save_contact_sheet(path, *, rng: np.random.Generator, n_per_row: int = 8, size: int = 32, scale: int = 4) -> None:
    """Save a PNG with one row per style of the *same* random shapes (so geometry can be compared)."""
    base = sample_params(n_per_row, rng=rng, styles=("photo",))
    rows = [[render(p.with_style(s), size=size) for p in base] for s in STYLES]
    contact_sheet(rows, scale=scale).save(path)
