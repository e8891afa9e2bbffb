"""The one-shot losses as pure tensor functions (METHODS.md 6.2), tested against the released formulas.

Everything here is shape-in, tensor-out: no run, no model. The techniques call these.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import autograd

#: The logit the released PatchLoss writes on the diagonal of the negatives (before dividing by tau).
DIAGONAL_LOGIT = -10.0

GROUPINGS = ("image", "released", "all")


def consistency_loss(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """L_con: mean over ordered pairs i != j of ``[cos(q_i, q_j) - cos(k_i, k_j)]^2``.

    Args:
        q: ``[N, D]`` target-image embeddings (differentiable).
        k: ``[N, D]`` source-image embeddings (detached here).

    Returns:
        Scalar. Plain squared difference of the two similarity structures (no softmax, as the released ConstLoss).

    Raises:
        ValueError: fewer than two samples (there is no pair; the released code would return NaN).
    """
    n = q.shape[0]
    if n < 2:
        raise ValueError(f"clip-consistency needs at least 2 samples per step (optim.batch_size), got {n}")
    qn = F.normalize(q, dim=-1)  # [N, D]
    kn = F.normalize(k.detach(), dim=-1)
    off = ~torch.eye(n, dtype=torch.bool, device=q.device)  # [N, N]
    return ((qn @ qn.t() - kn @ kn.t())[off] ** 2).mean()


def patch_nce_loss(q: torch.Tensor, k: torch.Tensor, *, tau: float) -> torch.Tensor:
    """InfoNCE over crops, per crop: the positive is the same crop of the source, the negatives the other source
    crops of the group; the diagonal of the negatives (the positive again) is masked with -10 *before* dividing by
    ``tau`` and stays in the softmax, as in the released PatchLoss.

    Args:
        q: ``[G, P, D]`` target-crop embeddings (differentiable), ``G`` groups of ``P`` crops.
        k: ``[G, P, D]`` source-crop embeddings at the same locations (detached here).
        tau: temperature.

    Returns:
        ``[G * P]`` cross-entropy per crop (the caller takes the mean).
    """
    g, p, _ = q.shape
    qn = F.normalize(q, dim=-1)
    kn = F.normalize(k.detach(), dim=-1)
    l_pos = (qn * kn).sum(-1, keepdim=True)  # [G, P, 1]
    l_neg = qn @ kn.transpose(1, 2)  # [G, P, P]
    diagonal = torch.eye(p, dtype=torch.bool, device=q.device)[None]
    l_neg = l_neg.masked_fill(diagonal, DIAGONAL_LOGIT)
    logits = torch.cat([l_pos, l_neg], dim=-1).reshape(g * p, p + 1) / tau  # [G*P, P+1]
    return F.cross_entropy(logits, torch.zeros(g * p, dtype=torch.long, device=q.device), reduction="none")


def group_crops(flat: torch.Tensor, *, n_images: int, n_crops: int, grouping: str) -> torch.Tensor:
    """Arrange crop embeddings into InfoNCE groups.

    Args:
        flat: ``[n_crops * n_images, D]`` in crop-major order (row ``c * n_images + i`` is crop ``c`` of image
            ``i``), the order of the released ``rand_sampling_mult``.
        grouping: "image" (each image's own crops: ``[n_images, n_crops, D]``); "released" (the released code's
            ``view(batch, -1, D)`` of the crop-major list: group ``g`` holds rows ``g*n_crops ...``, i.e. a range
            of crop locations of every image); "all" (one group, the released ``nce_allbatch``).

    Returns:
        ``[G, P, D]``.
    """
    d = flat.shape[-1]
    if grouping == "image":
        return flat.reshape(n_crops, n_images, d).transpose(0, 1)
    if grouping == "released":
        return flat.reshape(n_images, n_crops, d)
    if grouping == "all":
        return flat.reshape(1, n_crops * n_images, d)
    raise ValueError(f"grouping must be one of {', '.join(GROUPINGS)}; got {grouping!r}")


def crop_side(image_side: int, crop_frac: float) -> int:
    """The crop side in pixels: ``round(crop_frac * image_side)``, at least 1 and at most the image side."""
    return max(1, min(image_side, int(round(crop_frac * image_side))))


def crop_offsets(image_side: int, crop: int, n_crops: int, rng: torch.Generator) -> torch.Tensor:
    """``[n_crops, 2]`` top-left corners ``(y, x)``, each uniform in ``[0, image_side - crop]``."""
    return torch.randint(0, image_side - crop + 1, (n_crops, 2), generator=rng)


def take_crops(x: torch.Tensor, offsets: torch.Tensor, crop: int) -> torch.Tensor:
    """Crops at the same locations in every image, crop-major.

    Args:
        x: ``[N, C, H, W]``.
        offsets: ``[P, 2]`` (y, x).

    Returns:
        ``[P * N, C, crop, crop]``; row ``c * N + i`` is crop ``c`` of image ``i``.
    """
    return torch.cat([x[:, :, y:y + crop, x0:x0 + crop] for y, x0 in offsets.tolist()], dim=0)


def d_logistic_loss(real_pred: torch.Tensor, fake_pred: torch.Tensor) -> torch.Tensor:
    """``mean softplus(-D(real)) + mean softplus(D(fake))`` over every logit (global ``[N, 1]`` or patch maps)."""
    return F.softplus(-real_pred).mean() + F.softplus(fake_pred).mean()


def g_nonsaturating_loss(fake_pred: torch.Tensor) -> torch.Tensor:
    """``mean softplus(-D(fake))``."""
    return F.softplus(-fake_pred).mean()


def r1_penalty(real_pred: torch.Tensor, real_img: torch.Tensor) -> torch.Tensor:
    """``mean_n ||d sum(D(real)) / d real_n||^2`` with a graph for the second-order step.

    Args:
        real_pred: ``[N, ...]`` logits of ``real_img`` (the released code first averages patch logits per image).
        real_img: ``[N, 3, H, W]`` with ``requires_grad``.
    """
    (grad,) = autograd.grad(real_pred.sum(), real_img, create_graph=True)
    return grad.pow(2).reshape(grad.shape[0], -1).sum(1).mean()


def reg_ratio(reg_every: int) -> float:
    """The rosinality lazy-regularisation ratio ``k / (k + 1)`` (16 -> 16/17)."""
    return reg_every / (reg_every + 1)
