"""Editing with a trained mapper (METHODS.md 7.4; DeltaEdit scripts/inference.py, utils/map_tool.py).

1. ``dt = e(target) - e(neutral)``, where ``e`` is a class-mean template ensemble renormalised to unit length
   (:func:`zsgm.clip.class_embedding` with ``renormalize=True``).
2. Gate: channel ``c`` moves only if ``|R_c . dt| >= theta``, with ``dt`` *unnormalised* (what theta = 0.03 is
   calibrated against).
3. ``dŝ = mapper(s, [c^_src ; normalize(dt)])``; ``s' = s + strength * mask * dŝ``; decoded with the ToRGB layers
   still reading W+ (:func:`zsgm.generator.stylespace.synthesis_from_styles`).
4. Ours, off unless ``torgb_weight`` is set: the ToRGB layers' W slots move by ``strength * torgb_weight * sigma * d``
   along the text's W direction (:mod:`zsgm_deltaedit.torgb`).

``strength`` is ours (the released code applies strength 1); strength 0 returns the unedited image exactly.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from zsgm.clip import IMAGENET_TEMPLATES, class_embedding
from zsgm.generator.stylespace import style_layout, synthesis_from_styles, ws_to_styles

from zsgm_deltaedit.mapper import condition_from_direction
from zsgm_deltaedit.torgb import add_torgb_step

__all__ = ["edit_images", "edit_styles", "layer_mask", "relevance_mask", "text_delta", "text_templates"]


def text_templates(clip_model, templates: Sequence[str] | None = None) -> list[str]:
    """The prompt templates: ``templates`` if given, else the CLIP's own (a domain CLIP ships its phrasings), else
    the 79 ImageNet templates (DeltaEdit's list)."""
    if templates:
        return list(templates)
    own = getattr(clip_model, "templates", None)
    return list(own) if own else list(IMAGENET_TEMPLATES)


def text_delta(clip_model, neutral: str, target: str, *, templates: Sequence[str] | None = None) -> torch.Tensor:
    """``dt`` ``[D]``, unnormalised: renormalised class mean of ``target`` minus that of ``neutral``."""
    for what, text in (("neutral", neutral), ("target", target)):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"the {what} text must be a non-empty string, got {text!r}")
    tpl = text_templates(clip_model, templates)
    return (class_embedding(clip_model, target, renormalize=True, templates=tpl)
            - class_embedding(clip_model, neutral, renormalize=True, templates=tpl))


def relevance_mask(relevance: torch.Tensor, delta_t: torch.Tensor, theta: float) -> torch.Tensor:
    """bool ``[C]``: ``|R . dt| >= theta`` (``relevance`` ``[C, D]``, ``delta_t`` ``[D]`` unnormalised)."""
    if relevance.ndim != 2 or delta_t.shape != (relevance.shape[1],):
        raise ValueError(f"relevance_mask: relevance must be [C, D] and dt [D]; got {tuple(relevance.shape)} and "
                         f"{tuple(delta_t.shape)}")
    return (relevance.float() @ delta_t.float().to(relevance.device)).abs() >= theta


def layer_mask(generator, layers: Sequence[int] | None) -> torch.Tensor:
    """bool ``[C]``: the channels of the style layers ``layers`` (indices into ``style_layout``); None: all.

    Raises:
        ValueError: an index beyond the generator's style layers.
    """
    layout = style_layout(generator)
    mask = torch.zeros(layout[-1].stop, dtype=torch.bool)
    if layers is None:
        return mask | True
    bad = [k for k in layers if not 0 <= k < len(layout)]
    if bad:
        raise ValueError(f"style layers {bad}: this generator has {len(layout)} style layers (0 to {len(layout) - 1})")
    for k in layers:
        mask[layout[k].offset:layout[k].stop] = True
    return mask


def edit_styles(mapper, s: torch.Tensor, c_src: torch.Tensor, delta_t: torch.Tensor, mask: torch.Tensor) \
        -> torch.Tensor:
    """The gated predicted delta ``mask * mapper(s, [c^_src ; normalize(dt)])`` ``[N, C]``."""
    cond = condition_from_direction(c_src, delta_t.to(c_src))
    return mapper(s, cond) * mask.to(s.device, s.dtype)


@torch.no_grad()
def edit_images(generator, ws: torch.Tensor, *, mapper, relevance: torch.Tensor, clip_model, neutral: str,
                target: str, theta: float = 0.03, strengths: Sequence[float] = (0.5, 1.0, 1.5),
                noise_mode: str = "const", noise=None, templates: Sequence[str] | None = None,
                layers: Sequence[int] | None = None, torgb_weight: float = 0.0,
                torgb: Callable | None = None, delta_t: torch.Tensor | None = None) -> torch.Tensor:
    """Edited images of W+ codes for each strength.

    Args:
        generator: the generator (eval mode).
        ws: ``[N, n_latent, D]`` W+ codes (from seeds, or e4e / ReStyle inversions).
        mapper: a trained :class:`~zsgm_deltaedit.mapper.DeltaMapper` on the generator's device.
        relevance: ``[C, clip_dim]`` (:mod:`zsgm_deltaedit.relevance`).
        clip_model: the mapper's CLIP (its preprocessing embeds the source images).
        neutral, target: the texts.
        theta: the relevance threshold.
        strengths: multipliers of the gated delta.
        noise_mode, noise: the generator's noise (as ``Generator.synthesis``); the same maps for the source and
            every edit.
        templates: prompt templates (default: :func:`text_templates`).
        layers: style layers the edit may move (:func:`layer_mask`); None: all, as released.
        torgb_weight: the ToRGB colour step per unit strength, in standard deviations of the codes along the
            direction (0: off, as released).
        torgb: ``(generator, dt) -> TorgbDirection`` (e.g. ``TrainedMapper.torgb_direction``); needed when
            ``torgb_weight`` is not 0.
        delta_t: ``text_delta(clip_model, neutral, target, templates=templates)`` when the caller already has it
            (editing batch after batch with the same texts); None: computed here.

    Returns:
        ``[len(strengths), N, 3, H, W]``.
    """
    device = ws.device
    n = ws.shape[0]
    if noise is None:
        noise = generator.make_noise(n, mode=noise_mode)
    s = ws_to_styles(generator, ws)  # [N, C]
    source = synthesis_from_styles(generator, s, ws, noise=noise)
    if delta_t is None:
        delta_t = text_delta(clip_model, neutral, target, templates=templates)
    delta_t = delta_t.to(device)
    mask = relevance_mask(relevance.to(device), delta_t, theta) & layer_mask(generator, layers).to(device)
    ds = edit_styles(mapper, s, clip_model.encode_image(source), delta_t, mask)
    step = None
    if torgb_weight:
        if torgb is None:
            raise ValueError("edit_images: torgb_weight needs torgb, the source of the ToRGB direction")
        step = torgb(generator, delta_t).step(torgb_weight).to(ws)  # [D]: the W move at strength 1
    out = [synthesis_from_styles(generator, s + float(k) * ds,
                                 ws if step is None else add_torgb_step(generator, ws, float(k) * step), noise=noise)
           for k in strengths]
    return torch.stack(out) if out else source.new_zeros((0, *source.shape))
