"""Base class for technique instances and the shared CLIP-space loss helpers they use."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zsgm.registry import Term


class Technique(torch.nn.Module):
    """A technique instance: an ``nn.Module`` (so its state is checkpointed) that implements run hooks.

    Subclasses decorate hook methods with :data:`zsgm.hookspecs.hookimpl`. ``self.use`` (the recipe entry
    with weight, interval and label) is set by the run after construction.

    Args:
        config: the technique's attrs config instance.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.use = None

    def term(self, name: str, value: torch.Tensor) -> Term:
        """A named, unweighted loss term owned by this technique."""
        return Term(owner=self, name=name, value=value)


ZERO_DIRECTION_NORM = 1e-4


def safe_unit(x: torch.Tensor, *, tiny: float = ZERO_DIRECTION_NORM) -> torch.Tensor:
    """``x / ||x||`` along the last axis, with an explicit guard for (numerically) zero vectors.

    A vector whose norm is below ``tiny`` is divided by 1 instead of its norm. In the directional loss this
    happens at step 0, when the target generator still equals the source: the image direction is then zero
    or float noise (~1e-6: a grad-enabled forward may take other kernels than the no-grad one), and its
    normalisation would give a gradient ~1e6 times larger than any later step's, inflating Adam's
    second-moment estimate for hundreds of steps (NADA's ``x + 1e-6`` re-encode has the same problem). With
    the guard the term is ``1 - <dI, dT>``: value ~1, gradient ``-dT`` at unit scale. Unit CLIP embeddings
    move by far more than 1e-4 for any visible change, so only the first step is affected.
    """
    norm = x.norm(dim=-1, keepdim=True)
    return x / torch.where(norm < tiny, torch.ones_like(norm), norm)


def directional_loss(e_src: torch.Tensor, e_tgt: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Mean over samples of ``1 - cos(normalize(e_tgt - e_src), direction)``.

    Args:
        e_src: ``[N, D]`` source image embeddings (unit).
        e_tgt: ``[N, D]`` target image embeddings (unit).
        direction: ``[D]`` shared or ``[N, D]`` per-sample text direction (unit).

    Returns:
        Scalar loss.
    """
    d_img = safe_unit(e_tgt - e_src)  # [N, D]
    d_txt = F.normalize(direction.to(d_img), dim=-1)
    if d_txt.dim() == 1:
        d_txt = d_txt[None, :].expand_as(d_img)
    return (1.0 - (d_img * d_txt).sum(dim=-1)).mean()


def global_clip_loss(e_img: torch.Tensor, e_text: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - cos(e_img, e_text)``; ``e_img`` ``[N, D]``, ``e_text`` ``[D]`` (both unit)."""
    return (1.0 - e_img @ F.normalize(e_text.to(e_img), dim=-1)).mean()
