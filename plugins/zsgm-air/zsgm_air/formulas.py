"""AIR's formulas on plain tensors (METHODS.md 5.1), each checked against hand computation in the tests.

Every offset in AIR uses the same rule, for images and for texts alike (the *AIR rule* of METHODS.md 1)::

    offset(a, b) = normalize( mean_n normalize(b_n - a_n) )

- image offset ``ΔI_A = offset(ê_I(G_anchor(w_n)), ê_I(G_t(w_n)))`` over a fixed latent set;
- prompt objective ``1 - cos(ΔI_A, offset(t_last, t_prompt))`` (``t_last`` is ``[K, D]`` template features at
  first, then the ``[1, D]`` previous prompt; ``t_prompt`` ``[1, D]`` broadcasts);
- new direction ``ΔT_{A->T} = offset(t_prompt, ê_T(tpl_k(tgt)))``;
- adaptive loss ``L_adapt = mean_n [1 - cos(normalize(ê_I(G_t(w_n)) - ê_I(G_anchor(w_n))), ΔT_{A->T})]``.

Normalisations use :func:`zsgm.technique.safe_unit` (an explicit guard for zero vectors instead of the
released code's ``x + 1e-6`` re-encode).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zsgm.technique import directional_loss, safe_unit


def air_offset(start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """The AIR-rule offset ``normalize(mean_n normalize(end_n - start_n))``, ``[D]``.

    Args:
        start: ``[N, D]``, ``[1, D]`` or ``[D]`` (broadcast against ``end``).
        end: ``[N, D]``, ``[1, D]`` or ``[D]``.

    Returns:
        Unit vector ``[D]`` (zero rows are guarded by :func:`safe_unit`).
    """
    diff = end - start
    if diff.dim() == 1:
        diff = diff[None]
    return safe_unit(safe_unit(diff).mean(0))


def image_offset(e_from: torch.Tensor, e_to: torch.Tensor) -> torch.Tensor:
    """``ΔI = normalize(mean_n normalize(e_to,n - e_from,n))`` of paired unit image embeddings ``[N, D]``."""
    if e_from.shape != e_to.shape or e_from.dim() != 2:
        raise ValueError(f"image_offset: expected two [N, D] tensors of the same shape, got "
                         f"{list(e_from.shape)} and {list(e_to.shape)}")
    return air_offset(e_from, e_to)


def text_offset(t_from: torch.Tensor, t_to: torch.Tensor) -> torch.Tensor:
    """``ΔT = normalize(mean_k normalize(t_to,k - t_from,k))``; ``[K, D]`` paired by template, or ``[1, D]``
    broadcast against ``[K, D]`` (an anchor prompt against template features)."""
    return air_offset(t_from, t_to)


def pool_prompt_features(features: torch.Tensor) -> torch.Tensor:
    """``t_prompt = normalize(mean_b normalize(f_b))`` ``[1, D]`` of ``B`` (batch_prompt) prompt copies ``[B, D]``.

    With ``B = 1`` this is ``normalize(f)``. The released code averages the copies the same way (it skips the
    average only when ``B`` equals the template count, a case zsgm does not reproduce).
    """
    return safe_unit(safe_unit(features).mean(0, keepdim=True))


def prompt_alignment_loss(delta_i: torch.Tensor, t_prompt: torch.Tensor, t_last: torch.Tensor) -> torch.Tensor:
    """``1 - cos(ΔI_A, offset(t_last, t_prompt))``: the objective of the anchor prompt (METHODS.md 5.1(b)).

    Args:
        delta_i: ``[D]`` unit image offset from the anchor to the current generator.
        t_prompt: ``[1, D]`` unit pooled prompt feature (differentiable).
        t_last: ``[K, D]`` source template features (first refresh) or ``[1, D]`` previous anchor prompt.
    """
    return 1.0 - (text_offset(t_last, t_prompt) * delta_i.to(t_prompt)).sum()


def anchor_direction(t_prompt: torch.Tensor, t_target: torch.Tensor) -> torch.Tensor:
    """``ΔT_{A->T} = normalize(mean_k normalize(ê_T(tpl_k(tgt)) - t_prompt))``, ``[D]``.

    Args:
        t_prompt: ``[1, D]`` unit anchor prompt feature.
        t_target: ``[K, D]`` unit target template features.
    """
    return text_offset(t_prompt, t_target)


def interpolate_token_embeddings(src: torch.Tensor, tgt: torch.Tensor, alpha: float) -> torch.Tensor:
    """``(1 - α)·src + α·tgt`` over the whole token-embedding sequence (prefix, context slots, class, rest)."""
    if src.shape != tgt.shape:
        raise ValueError(f"interpolate_token_embeddings: shapes differ, {list(src.shape)} vs {list(tgt.shape)}")
    return (1.0 - alpha) * src + alpha * tgt


def adaptive_loss(e_anchor: torch.Tensor, e_current: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """``L_adapt = mean_n [1 - cos(normalize(e_current,n - e_anchor,n), ΔT_{A->T})]`` (scalar).

    The directional loss of METHODS.md 1 with the anchor generator in place of the source.
    """
    return directional_loss(e_anchor, e_current, direction)


def offset_misalignment(image_dir: torch.Tensor, text_dir: torch.Tensor) -> float:
    """Offset misalignment ``1 - cos(ΔI, ΔT)`` of two directions ``[D]`` (0 aligned, 1 orthogonal, 2 opposite)."""
    return float(1.0 - F.cosine_similarity(image_dir.float().reshape(1, -1), text_dir.float().reshape(1, -1))[0])
