"""The ground truth of the shapes generator: which shape each latent ``z`` must draw.

The shipped shapes generator (:mod:`zsgm.toy.train_generator`) is fitted by regression, not as a GAN:
every ``z ~ N(0, I)`` of width :data:`LATENT_DIM` has one intended :class:`ShapeParams`, read from its
first 11 coordinates, and the generator is trained to draw exactly that shape as a photo:

- kind   = ``KINDS[argmax z[0:4]]``;
- colour = ``COLOURS[argmax z[4:8]]``;
- radius = ``lo + (hi - lo) * Phi(z[8])`` with ``(lo, hi) = RADIUS_RANGE``;
- cx, cy = ``r + m + (1 - 2 r - 2 m) * Phi(z[9])`` (resp. ``z[10]``), ``m = BORDER_MARGIN``.

``Phi`` is the standard normal CDF, so under ``z ~ N(0, I)`` the parameters have exactly the distribution
of :func:`zsgm.toy.render.sample_params` (uniform kinds and colours, uniform radius, uniform centre given
the radius). The other coordinates carry nothing (the generator learns to ignore them).

The regression targets are photos *without* the background texture (:func:`render_photo_clean`): the
texture of :func:`zsgm.toy.render.render` is random noise, which a deterministic map ``z -> image`` could
only learn as its mean, i.e. the canonical background gradient that is drawn here.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from zsgm.toy.render import (
    BORDER_MARGIN,
    COLOURS,
    KINDS,
    PALETTE,
    RADIUS_RANGE,
    SUPERSAMPLE,
    ShapeParams,
    _downsample,
    _grid,
    signed_distance,
    style_background,
)

LATENT_DIM = 64  # style_dim of the shapes generator
KIND_DIMS = slice(0, 4)
COLOUR_DIMS = slice(4, 8)
RADIUS_DIM, CX_DIM, CY_DIM = 8, 9, 10
USED_DIMS = 11  # coordinates that decide the shape; the rest are free


def _as_numpy(z) -> np.ndarray:
    """z [N, D] (torch or numpy) -> float64 numpy, checked."""
    arr = z.detach().cpu().double().numpy() if isinstance(z, torch.Tensor) else np.asarray(z, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < USED_DIMS:
        raise ValueError(f"params_from_z: expected z of shape [N, D] with D >= {USED_DIMS}, found {arr.shape}")
    return arr


def _phi(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF."""
    return torch.special.ndtr(torch.from_numpy(x)).numpy()


def param_arrays_from_z(z) -> dict[str, np.ndarray]:
    """Vectorised :func:`params_from_z`: ``kind`` and ``colour`` as int indices into ``KINDS`` / ``COLOURS``,
    ``cx``, ``cy``, ``radius`` as float64, each ``[N]``."""
    a = _as_numpy(z)
    lo, hi = RADIUS_RANGE
    r = lo + (hi - lo) * _phi(a[:, RADIUS_DIM])
    span = 1.0 - 2.0 * (r + BORDER_MARGIN)
    return {
        "kind": a[:, KIND_DIMS].argmax(1),
        "colour": a[:, COLOUR_DIMS].argmax(1),
        "radius": r,
        "cx": r + BORDER_MARGIN + span * _phi(a[:, CX_DIM]),
        "cy": r + BORDER_MARGIN + span * _phi(a[:, CY_DIM]),
    }


def params_from_z(z, *, seed: int = 0) -> list[ShapeParams]:
    """The intended photo of each latent.

    Args:
        z: ``[N, D]`` latents (torch or numpy), ``D >= 11`` (the generator uses ``D = LATENT_DIM``).
        seed: texture seed stored in every :class:`ShapeParams` (the generator draws no texture).

    Returns:
        ``N`` :class:`ShapeParams` in the "photo" style.
    """
    p = param_arrays_from_z(z)
    return [
        ShapeParams(kind=KINDS[int(k)], colour=COLOURS[int(c)], cx=float(x), cy=float(y), radius=float(r),
                    style="photo", seed=seed)
        for k, c, x, y, r in zip(p["kind"], p["colour"], p["cx"], p["cy"], p["radius"])
    ]


def render_photo_clean(params: Sequence[ShapeParams], *, size: int = 32) -> torch.Tensor:
    """Photos exactly as :func:`zsgm.toy.render.render` draws them, minus the background texture and the
    uint8 rounding (vectorised over the batch).

    Args:
        params: shapes (their ``style`` is ignored: always a photo).
        size: output side in pixels.

    Returns:
        float32 ``[N, 3, size, size]`` in [-1, 1].
    """
    n = len(params)
    if n == 0:
        return torch.zeros(0, 3, size, size)
    f = SUPERSAMPLE
    x, y = _grid(size, f)  # [S, S] each, S = size * f
    cx = np.array([p.cx for p in params])[:, None, None]  # [N, 1, 1]
    cy = np.array([p.cy for p in params])[:, None, None]
    r = np.array([p.radius for p in params])[:, None, None]
    sdf = np.empty((n, *x.shape))  # [N, S, S]
    kinds = np.array([p.kind for p in params])
    for kind in KINDS:
        idx = np.nonzero(kinds == kind)[0]
        if len(idx):
            sdf[idx] = signed_distance(kind, x[None], y[None], cx[idx], cy[idx], r[idx])
    inside = (sdf < 0)[..., None].astype(np.float64)  # [N, S, S, 1]
    colour = np.array([PALETTE[p.colour] for p in params])[:, None, None, :]  # [N, 1, 1, 3]
    t = ((x[None] - cx) + (y[None] - cy)) / (2.0 * r)  # light from the top left
    shade = np.clip(0.95 - 0.18 * t, 0.78, 1.1)[..., None]
    fill = np.clip(colour * shade, 0.0, 1.0)  # [N, S, S, 3]
    bg = np.repeat(np.repeat(style_background("photo", size=size), f, 0), f, 1)[None]  # [1, S, S, 3]
    img = bg * (1.0 - inside) + fill * inside
    out = _downsample(np.clip(img, 0.0, 1.0).transpose(1, 2, 0, 3), f)  # [size, size, N, 3]
    return torch.from_numpy(out.transpose(2, 3, 0, 1).copy()).float() * 2.0 - 1.0


CODE_SCALE = 2.0  # value of the one-hot kind / colour entries of the designed code
FOURIER_FREQS = (1, 2, 4)


def designed_code(z) -> torch.Tensor:
    """A hand-designed ``w`` [N, LATENT_DIM] that states each latent's intended shape plainly.

    The generator's synthesis network is first taught to draw from this code (stage A of
    :mod:`zsgm.toy.train_generator`) and its mapping network is then taught to produce it from ``z``
    (stage B): learning ``z -> image`` end to end through a fresh mapping network stalls at the mean blob.

    Layout: ``[0:4]`` one-hot kind x :data:`CODE_SCALE`; ``[4:8]`` one-hot colour x :data:`CODE_SCALE`;
    ``[8:11]`` radius, cx, cy rescaled to about [-1, 1]; ``[11:23]`` sin / cos of ``pi f cx`` and ``pi f cy``
    for ``f`` in :data:`FOURIER_FREQS`; the rest zero.
    """
    p = param_arrays_from_z(z)
    n = len(p["kind"])
    rows = torch.arange(n)
    w = torch.zeros(n, LATENT_DIM)
    w[rows, torch.from_numpy(p["kind"])] = CODE_SCALE
    w[rows, 4 + torch.from_numpy(p["colour"])] = CODE_SCALE
    r, cx, cy = (torch.from_numpy(p[k]).float() for k in ("radius", "cx", "cy"))
    lo, hi = RADIUS_RANGE
    feats = [(r - lo) / (hi - lo) * 2 - 1, cx * 4 - 2, cy * 4 - 2]
    for f in FOURIER_FREQS:
        for c in (cx, cy):
            feats += [torch.sin(np.pi * f * c), torch.cos(np.pi * f * c)]
    w[:, 8:8 + len(feats)] = torch.stack(feats, 1)
    return w
