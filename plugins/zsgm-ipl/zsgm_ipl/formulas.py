"""IPL's formulas on plain tensors (METHODS.md 3.2-3.4), each small enough to check by hand."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def residual_feature(prompt_features: torch.Tensor, hard_feature: torch.Tensor) -> torch.Tensor:
    """``t_c(w) = normalize(E_T(P_c(w)) + E_T(hard_c))``.

    Args:
        prompt_features: ``[B, D]`` unnormalised text features of the learned prompts.
        hard_feature: ``[D]`` (or ``[B, D]``) unnormalised feature of the fixed prompt.

    Returns:
        ``[B, D]`` unit features.
    """
    return F.normalize(prompt_features + hard_feature.to(prompt_features), dim=-1)


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, scale: float) -> torch.Tensor:
    """Symmetric CLIP cross-entropy, each image matched by its own prompt.

    ``L = 1/2 [CE(s I T^T, diag) + CE(s T I^T, diag)]`` with mean reduction over the batch.

    Args:
        image_features: ``[B, D]`` unit image embeddings ``I``.
        text_features: ``[B, D]`` unit text features ``T`` (row i belongs to image i).
        scale: ``s = exp(logit_scale)`` of the CLIP model (about 100 for trained CLIPs).
    """
    logits = scale * image_features @ text_features.t()  # [B, B]: logits_per_image
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def domain_terms(features: torch.Tensor, class_mean: torch.Tensor) -> torch.Tensor:
    """``mean_i [1 - cos(features_i, class_mean)]``; ``features`` ``[B, D]``, ``class_mean`` ``[D]`` (any norm)."""
    return (1.0 - F.cosine_similarity(features, class_mean.to(features)[None, :].expand_as(features), dim=-1)).mean()


def domain_regulariser(t_tgt: torch.Tensor, mean_tgt: torch.Tensor, t_src: torch.Tensor, mean_src: torch.Tensor,
                       *, lambda_src: float) -> torch.Tensor:
    """``L_dom = mean_i [1 - cos(t_tgt_i, e_tgt)] + lambda_src * mean_i [1 - cos(t_src_i, e_src)]``.

    ``mean_*`` are IPL's un-renormalised template class means (the cosine makes their norm irrelevant).
    """
    return domain_terms(t_tgt, mean_tgt) + lambda_src * domain_terms(t_src, mean_src)


def image_specific_directions(t_src: torch.Tensor, t_tgt: torch.Tensor) -> torch.Tensor:
    """``dT_i = normalize(t_tgt(w_i) - t_src(w_i))``: ``[B, D]`` unit per-sample text directions."""
    return F.normalize(t_tgt - t_src, dim=-1)
