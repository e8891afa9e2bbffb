"""How well a shapes generator covers the photo domain, measured with the ground-truth judges.

For latents ``z`` the intended shape is :func:`zsgm.toy.latents.params_from_z`. Measured on fresh samples
(random noise maps, as in adaptation), at truncation ψ = 1 and ψ = 0.7, and with style mixing:

- ``photo_rate``: fraction that :func:`zsgm.toy.judges.classify_style` calls "photo";
- ``colour_acc``: fraction whose :func:`zsgm.toy.judges.classify_colour` is the intended colour;
- ``content_iou``: mean IoU of the image's filled foreground mask and the analytic mask of the intended
  shape (:func:`zsgm.toy.render.foreground_mask`);
- ``fit_iou``: the foreground mask is matched against a bank of analytic masks (every kind on a grid of
  centres and radii, :class:`ShapeBank`); the best IoU says whether the image shows a clean shape of
  *some* kind, place and size (meaningful for truncated and mixed codes, whose intended shape is not
  defined); the best match's kind is the sample's kind in ``kinds``;
- ``kind_acc``: fraction whose best-matching kind *at the intended centre and radius* is the intended one;
- ``kinds`` / ``colours``: how many samples show each kind (best match) and colour (classified);
- ``diversity_ratio`` (mask and pixel modes of :func:`zsgm.toy.judges.diversity`) relative to real
  renders of :func:`zsgm.toy.render.sample_params`.
"""

from __future__ import annotations

import functools
from collections import Counter

import attrs
import numpy as np
import torch

from zsgm.toy.judges import classify_colour, classify_style, diversity, mask_iou
from zsgm.toy.latents import param_arrays_from_z, params_from_z, render_photo_clean
from zsgm.toy.masks import foreground_mask_from_image
from zsgm.toy.render import COLOURS, KINDS, _downsample, _grid, foreground_mask, render_batch, sample_params, \
    signed_distance

EVAL_SEED = 2024


class ShapeBank:
    """Analytic masks of every kind on a grid of centres and radii, for best-IoU shape fitting.

    Args:
        size: image side in pixels.
        centres: grid of ``cx`` and ``cy`` values (fractions of the side).
        radii: grid of radii.
        chunk: masks computed at once (memory).
        supersample: coverage supersampling of the bank's masks (2 is plenty for fitting).
    """

    def __init__(self, *, size: int = 32, centres=np.linspace(0.2, 0.8, 16), radii=np.linspace(0.14, 0.36, 8),
                 chunk: int = 256, supersample: int = 2):
        x, y = _grid(size, supersample)
        cx, cy, r = (a.reshape(-1, 1, 1) for a in np.meshgrid(centres, centres, radii, indexing="ij"))  # [G, 1, 1]
        masks, labels = [], []
        for k, kind in enumerate(KINDS):
            for s in range(0, len(cx), chunk):
                sdf = signed_distance(kind, x[None], y[None], cx[s:s + chunk], cy[s:s + chunk], r[s:s + chunk])
                cover = _downsample((sdf < 0).astype(np.float32).transpose(1, 2, 0), supersample)  # [H, W, g]
                masks.append(cover.transpose(2, 0, 1) >= 0.5)  # [g, H, W]
                labels.append(np.full(cover.shape[2], k))
        self.masks = torch.from_numpy(np.concatenate(masks)).flatten(1).float()  # [K, H*W]
        self.kinds = torch.from_numpy(np.concatenate(labels))  # [K]

    def fit(self, mask: torch.Tensor) -> tuple[list[str], torch.Tensor]:
        """Best-matching kind and its IoU for each bool mask [N, H, W] -> (kinds, iou [N])."""
        m = mask.flatten(1).float()  # [N, HW]
        inter = m @ self.masks.t()  # [N, K]
        union = m.sum(1, keepdim=True) + self.masks.sum(1)[None] - inter
        iou = inter / union.clamp(min=1.0)
        best, idx = iou.max(1)
        return [KINDS[int(self.kinds[i])] for i in idx], best


@functools.lru_cache(maxsize=2)
def shape_bank(size: int = 32) -> ShapeBank:
    return ShapeBank(size=size)


def analytic_masks(params, *, size: int) -> torch.Tensor:
    """bool [N, size, size] analytic masks of a list of ShapeParams."""
    return torch.from_numpy(np.stack([foreground_mask(p, size=size) for p in params]))


def kind_at_geometry(mask: torch.Tensor, params) -> list[str]:
    """The kind whose analytic mask at each intended geometry (centre, radius of ``params``) best overlaps
    the bool mask [N, H, W]: a cheap kind judge for samples whose intended shape is known."""
    size = mask.shape[-1]
    ious = torch.stack([mask_iou(mask, analytic_masks([attrs.evolve(p, kind=k) for p in params], size=size))
                        for k in KINDS], 1)  # [N, 4]
    return [KINDS[int(i)] for i in ious.argmax(1)]


def judge_images(img: torch.Tensor, z: torch.Tensor | None = None) -> dict:
    """Quality numbers of generated photos ``img`` [N, 3, S, S]; with their latents ``z`` [N, D] also the
    ones that need the intended shape (``colour_acc``, ``content_iou``, ``kind_acc``)."""
    size = img.shape[-1]
    styles = classify_style(img)
    colours = classify_colour(img)
    mask = foreground_mask_from_image(img)
    kinds, fit = shape_bank(size).fit(mask)
    out = {
        "photo_rate": float(np.mean([s == "photo" for s in styles])),
        "fit_iou": float(fit.mean()),
        "kinds": dict(sorted(Counter(kinds).items())),
        "colours": dict(sorted(Counter(c for c in colours if c is not None).items())),
        "all_kinds_and_colours": set(kinds) == set(KINDS) and set(colours) >= set(COLOURS),
    }
    if z is not None:
        p = param_arrays_from_z(z)
        out["colour_acc"] = float(np.mean([c == COLOURS[i] for c, i in zip(colours, p["colour"])]))
        params = params_from_z(z)
        out["kind_acc"] = float(np.mean([k == q.kind for k, q in zip(kind_at_geometry(mask, params), params)]))
        out["content_iou"] = float(mask_iou(mask, analytic_masks(params, size=size)).mean())
    return out


@torch.no_grad()
def sample(g, z: torch.Tensor, *, truncation: float = 1.0, rng: torch.Generator | None = None,
           ws: torch.Tensor | None = None) -> torch.Tensor:
    """Images of latents z [N, D] (or of given W+ codes ws) with random noise maps from ``rng``."""
    if ws is None:
        ws = g.mapping(z)[:, None, :].repeat(1, g.n_latent, 1)  # [N, L, D]
        ws = g.truncate(ws, truncation, None)
    return g.synthesis(ws, noise=g.make_noise(ws.shape[0], mode="random", rng=rng))


@torch.no_grad()
def measure_generator(g, *, n: int = 256, seed: int = EVAL_SEED, grid: str | None = None) -> dict:
    """All quality numbers of a shapes generator (see the module docstring), as a JSON-able dict.

    Args:
        g: the generator (32 or 64 px).
        n: samples per measurement.
        seed: seeds latents, noise and the real renders.
        grid: optional PNG path for a sample grid (rows: intended photos, ψ = 1, ψ = 0.7, mixed at slot 4).
    """
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn((n, g.arch.style_dim), generator=rng)  # [N, D]
    size = g.arch.size
    real = render_batch(sample_params(n, rng=np.random.default_rng(seed), styles=("photo",)), size=size)
    d_real = {m: diversity(real, mode=m) for m in ("mask", "pixel")}
    out: dict = {"n": n, "seed": seed}
    images = {}
    for psi in (1.0, 0.7):
        img = sample(g, z, truncation=psi, rng=rng)
        images[psi] = img
        res = judge_images(img, z)
        res.update({f"diversity_ratio_{m}": diversity(img, mode=m) / d_real[m] for m in ("mask", "pixel")})
        out[f"psi_{psi:g}"] = res
    # style mixing: every sample mixed, at a random crossover (1 .. L-1) as zsgm.step.sample_ws does
    z2 = torch.randn((n, g.arch.style_dim), generator=rng)
    w1, w2 = g.mapping(z), g.mapping(z2)
    cross = torch.randint(1, g.n_latent, (n,), generator=rng)
    take2 = torch.arange(g.n_latent)[None, :] >= cross[:, None]  # [N, L]
    ws = torch.where(take2[..., None], w2[:, None], w1[:, None])
    img = sample(g, z, ws=ws, rng=rng)
    mix = judge_images(img)
    mask = foreground_mask_from_image(img)
    iou1 = mask_iou(mask, analytic_masks(params_from_z(z), size=size))
    col = classify_colour(img)
    c1, c2 = param_arrays_from_z(z)["colour"], param_arrays_from_z(z2)["colour"]
    mix["by_crossover"] = {
        int(c): {"n": int((cross == c).sum()),
                 "content_iou_vs_z1": float(iou1[cross == c].mean()),
                 "colour_of_z1": float(np.mean([col[i] == COLOURS[c1[i]] for i in np.nonzero((cross == c).numpy())[0]])),
                 "colour_of_z2": float(np.mean([col[i] == COLOURS[c2[i]] for i in np.nonzero((cross == c).numpy())[0]]))}
        for c in range(1, g.n_latent)
    }
    out["mixing"] = mix
    out["real_diversity"] = d_real
    if grid is not None:
        from zsgm.io_utils import image_grid, save_png

        k = min(12, n)
        target = render_photo_clean(params_from_z(z[:k]), size=size)
        ws4 = torch.cat([w1[:k, None].repeat(1, 4, 1), w2[:k, None].repeat(1, g.n_latent - 4, 1)], 1)
        rows = [target, images[1.0][:k], images[0.7][:k], sample(g, None, ws=ws4, rng=rng)]
        save_png(image_grid(rows), grid)
    return out
