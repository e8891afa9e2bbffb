"""Image-space primitives of the shapes-world judges: background estimate, ink and filled masks.

Everything works on any image batch ``[N, 3, H, W]`` in [-1, 1] (generated images, not only renders),
in torch, without scipy. Internally colours are in [0, 1] ("unit") intensity units.

Pipeline for one image:
1. ``bg``: per-channel median of the border ring (``border_width(H)`` pixels wide);
2. ``ink``: pixels whose Euclidean RGB distance to ``bg`` exceeds ``max(MIN_THRESHOLD,
   REL_THRESHOLD * q99)``, where ``q99`` is the 99th percentile of that distance in the image (a robust
   "foreground contrast"); isolated single pixels are dropped (noise);
3. ``filled``: the ink mask is closed (3x3 dilate then erode, to bridge one-pixel gaps in outlines), its
   holes are filled (flood fill of the non-ink pixels from the image border, 4-connected, so an 8-connected
   outline stops it), and the largest 8-connected component is kept. For a filled shape this is the shape;
   for a sketch outline it is the outline plus the region it encloses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

REL_THRESHOLD = 0.45  # ink threshold as a fraction of the image's foreground contrast (q99 distance)
MIN_THRESHOLD = 0.10  # ink threshold floor, Euclidean RGB distance in [0, 1] units (noise sigma 0.025 -> ~0.04)


def to_unit(img: torch.Tensor) -> torch.Tensor:
    """Check a batch [N, 3, H, W] in [-1, 1] and return it in [0, 1] as detached CPU float32 (clamped;
    the judges run on the CPU, whatever device the images come from)."""
    if not isinstance(img, torch.Tensor) or img.ndim != 4 or img.shape[1] != 3:
        found = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
        raise ValueError(f"expected an image batch [N, 3, H, W] in [-1, 1], found {found}")
    return ((img.detach().float().cpu() + 1.0) * 0.5).clamp(0.0, 1.0)


def border_width(size: int) -> int:
    """Width in pixels of the border ring used as background evidence (2 px at 32, 4 px at 64)."""
    return max(1, round(size / 16))


def border_ring(h: int, w: int) -> torch.Tensor:
    """bool [H, W], True on the outer ring of width ``border_width(min(h, w))``."""
    b = border_width(min(h, w))
    ring = torch.ones(h, w, dtype=torch.bool)
    ring[b : h - b, b : w - b] = False
    return ring


def estimate_background(img: torch.Tensor) -> torch.Tensor:
    """Background colour of each image: per-channel median of the border ring.

    Args:
        img: [N, 3, H, W] in [-1, 1].

    Returns:
        [N, 3] in [-1, 1] (same units as the input).
    """
    x = to_unit(img)
    ring = border_ring(x.shape[2], x.shape[3])
    px = x[:, :, ring]  # [N, 3, P]
    return px.median(dim=2).values * 2.0 - 1.0


def colour_distance(x: torch.Tensor, bg: torch.Tensor) -> torch.Tensor:
    """Euclidean RGB distance of every pixel to its image's background: x [N, 3, H, W], bg [N, 3] (both in
    [0, 1]) -> [N, H, W]."""
    return (x - bg[:, :, None, None]).pow(2).sum(1).sqrt()


def _shift_or(m: torch.Tensor, *, diagonal: bool) -> torch.Tensor:
    """OR of ``m`` [N, H, W] with its 4 (or 8) neighbours; outside the image counts as False."""
    p = F.pad(m[:, None].float(), (1, 1, 1, 1))[:, 0]  # [N, H+2, W+2]
    h, w = m.shape[1:]
    out = m.clone()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if (dy == 0 and dx == 0) or (not diagonal and dy != 0 and dx != 0):
                continue
            out |= p[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] > 0.5
    return out


def dilate(m: torch.Tensor) -> torch.Tensor:
    """3x3 binary dilation of bool [N, H, W]."""
    return _shift_or(m, diagonal=True)


def erode(m: torch.Tensor) -> torch.Tensor:
    """3x3 binary erosion of bool [N, H, W]; pixels outside the image count as foreground."""
    return ~_shift_or(~m, diagonal=True)


def remove_isolated(m: torch.Tensor) -> torch.Tensor:
    """Drop True pixels that have no True 8-neighbour (single-pixel noise)."""
    k = torch.ones(1, 1, 3, 3)
    n = F.conv2d(m[:, None].float(), k, padding=1)[:, 0]  # [N, H, W] counts incl. self
    return m & (n > 1.5)


def fill_holes(m: torch.Tensor) -> torch.Tensor:
    """Fill the holes of bool masks [N, H, W]: everything not 4-connected to the image border through
    False pixels becomes True."""
    free = ~m
    ring = border_ring(*m.shape[1:])
    reach = free & ring  # [N, H, W]
    for _ in range(m.shape[1] * m.shape[2]):
        new = _shift_or(reach, diagonal=False) & free
        if torch.equal(new, reach):
            break
        reach = new
    return ~reach


def largest_component(m: torch.Tensor) -> torch.Tensor:
    """Keep only the largest 8-connected component of each bool mask [N, H, W] (empty stays empty)."""
    n, h, w = m.shape
    if not bool(m.any()):
        return m.clone()
    big = float(h * w + 1)
    idx = torch.arange(h * w, dtype=torch.float32).reshape(1, h, w).expand(n, h, w)
    labels = torch.where(m, idx, torch.full_like(idx, big))
    for _ in range(h * w):
        pooled = -F.max_pool2d(-labels[:, None], 3, stride=1, padding=1)[:, 0]
        new = torch.where(m, pooled, labels)
        if torch.equal(new, labels):
            break
        labels = new
    lab = labels.long().clamp(max=h * w)  # background -> h*w
    offsets = (torch.arange(n) * (h * w + 1))[:, None, None]
    counts = torch.bincount((lab + offsets).flatten(), minlength=n * (h * w + 1)).reshape(n, h * w + 1)
    counts[:, h * w] = 0  # ignore background
    best = counts.argmax(dim=1)  # [N]
    return m & (lab == best[:, None, None])


def ink_threshold(d: torch.Tensor) -> torch.Tensor:
    """Per-image ink threshold [N] from background distances d [N, H, W]:
    ``max(MIN_THRESHOLD, REL_THRESHOLD * q99(d))``."""
    q = torch.quantile(d.flatten(1), 0.99, dim=1)  # [N] foreground contrast
    return torch.clamp(REL_THRESHOLD * q, min=MIN_THRESHOLD)


def background_distance(img: torch.Tensor, bg: torch.Tensor | None = None) -> torch.Tensor:
    """Euclidean RGB distance [N, H, W] ([0, 1] units) of every pixel of img [N, 3, H, W] in [-1, 1] to its
    background bg [N, 3] in [-1, 1] (None: :func:`estimate_background`)."""
    bg_u = (estimate_background(img) if bg is None else bg.detach().float().cpu()) * 0.5 + 0.5
    return colour_distance(to_unit(img), bg_u)


def ink_mask(img: torch.Tensor, bg: torch.Tensor | None = None) -> torch.Tensor:
    """Pixels that differ from the background (fill, outline or glow core): bool [N, H, W].

    Args:
        img: [N, 3, H, W] in [-1, 1].
        bg: [N, 3] in [-1, 1], or None to use :func:`estimate_background`.
    """
    d = background_distance(img, bg)  # [N, H, W]
    return remove_isolated(d > ink_threshold(d)[:, None, None])


def core_of(filled: torch.Tensor, *, keep: float = 0.05, min_pixels: int = 6) -> torch.Tensor:
    """The deepest part of each filled mask [N, H, W]: the mask eroded (3x3) as many times as it keeps at
    least ``max(min_pixels, keep * area)`` pixels (the mask itself when even one erosion keeps fewer)."""
    area = filled.flatten(1).sum(1)
    need = torch.clamp(keep * area.float(), min=float(min_pixels))
    core = filled.clone()
    cur = filled
    for _ in range(max(filled.shape[1:]) // 2 + 1):
        cur = erode(cur)
        ok = cur.flatten(1).sum(1).float() >= need  # [N]
        if not bool(ok.any()):
            break
        core = torch.where(ok[:, None, None], cur, core)
    return core


def filled_from_ink(ink: torch.Tensor) -> torch.Tensor:
    """Filled shape mask from an ink mask (close, fill holes, keep the largest component)."""
    closed = erode(dilate(ink))
    return largest_component(fill_holes(closed))


def foreground_mask_from_image(img: torch.Tensor, bg: torch.Tensor | None = None, *, filled: bool = True) -> torch.Tensor:
    """Foreground mask of each image, bool [N, H, W].

    Args:
        img: [N, 3, H, W] in [-1, 1].
        bg: [N, 3] in [-1, 1], or None to estimate it from the border.
        filled: True (default): the filled shape (an outline's enclosed region included); False: only the
            pixels that differ from the background (the "ink").
    """
    ink = ink_mask(img, bg)
    return filled_from_ink(ink) if filled else ink
