"""The stage-1 augmentations of the reference search (METHODS.md 6.1), reproducible from a seeded generator.

The released code builds ``Compose(RandomAffine(15, translate 0.1, shear 5), RandomPerspective(0.7, p=1),
ColorJitter(0.1, 0.1, 0.1, 0.1), RandomErasing(p 0.7, scale 0.1-0.4, ratio 0.3-3.3), Resize(224))`` and applies it
to ``G_s(w).repeat(8, 1, 1, 1)``: a [-1, 1] image batch. Two things follow from torchvision's semantics:

- a transform called on a batch draws its parameters once, so the 8 copies are 8 *identical* views;
- ColorJitter clamps float images to [0, 1] (its blend), so every negative value of the [-1, 1] image becomes 0 and
  CLIP sees ``0.5 * clamp(x, 0, 1) + 0.5``: the dark half of the image is erased.

``mode = "independent"`` (default) fixes both: each view draws its own parameters and is augmented in [0, 1]
(fills and the erasing value are mid-grey, 0.5, which is the released code's 0 in [-1, 1] units), then mapped back.
``mode = "released"`` reproduces the released behaviour, including the bilinear resize to the CLIP input (done by
the caller per CLIP model, :func:`released_resize`).

torchvision draws its random parameters from torch's global CPU generator; here that generator is forked and seeded
from the run's stream, so the draws are reproducible and nothing outside is disturbed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

AUGMENT_MODES = ("independent", "released")


def _pipeline(fill: float):
    # torchvision.transforms (v1), as the released code: v2's hue adjustment writes in place into views and
    # cannot be differentiated (torchvision 0.29), while v1's tensor ops can.
    from torchvision import transforms as T

    return T.Compose([
        T.RandomAffine(degrees=15, translate=(0.1, 0.1), shear=5, fill=fill),
        T.RandomPerspective(distortion_scale=0.7, p=1.0, fill=fill),
        T.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.1),
        T.RandomErasing(p=0.7, scale=(0.1, 0.4), ratio=(0.3, 1 / 0.3), value=fill),
    ])


def augment_views(x: torch.Tensor, *, views: int, rng: torch.Generator, mode: str = "independent") -> torch.Tensor:
    """Differentiable augmented copies of one image.

    Args:
        x: ``[1, 3, H, W]`` in [-1, 1].
        views: number of copies.
        rng: seeds torchvision's draws (one seed per call).
        mode: "independent" or "released" (module docstring).

    Returns:
        ``[views, 3, H, W]``, in [-1, 1] for "independent"; for "released" what the released pipeline gives before
        its final resize (values clamped by ColorJitter, so in [0, 1]).
    """
    if mode not in AUGMENT_MODES:
        raise ValueError(f"augment must be one of {', '.join(AUGMENT_MODES)}; got {mode!r}")
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=rng))
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        if mode == "released":
            return _pipeline(0.0)(x.repeat(views, 1, 1, 1))  # one draw for the whole batch, on [-1, 1] data
        pipeline = _pipeline(0.5)
        unit = (x + 1) / 2  # [1, 3, H, W] in [0, 1]
        return torch.cat([pipeline(unit) for _ in range(views)]) * 2 - 1


def released_resize(views: torch.Tensor, size: int) -> torch.Tensor:
    """The released pipeline's last step, ``Resize([size, size])`` on tensors: bilinear, no antialiasing."""
    if views.shape[-2:] == (size, size):
        return views
    return F.interpolate(views, size=(size, size), mode="bilinear", align_corners=False)
