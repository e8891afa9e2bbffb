"""SVL's formulas on plain tensors (METHODS.md 4.1-4.3), each small enough to check by hand.

Notation: ``e_trg``/``e_src`` are text features E_T(t) (any norm), ``z`` the learned perturbations, ``v`` the
semantic variations, ``d_img``/``d_txt`` image/text direction sets. Where the paper is silent, the choice made
here is stated in the function's docstring and exposed as an argument.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from zsgm.technique import safe_unit

MOMENT_SCALES = ("mean", "sum")
RELATION_REDUCTIONS = ("batchmean", "sum", "mean")


# ----------------------------------------------------------------------------------------------- stage 1


def semantic_variations(e_trg: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``v^i = E_T(t_trg) + eps * z^i / ||z^i||`` with ``eps = ||E_T(t_trg)||_2`` (paper Sec. 3.3).

    Args:
        e_trg: ``[D]`` target text feature.
        z: ``[K, D]`` perturbations.

    Returns:
        ``[K, D]`` variations.
    """
    eps = e_trg.norm()
    return e_trg[None, :] + eps * F.normalize(z, dim=-1)


def consistency_loss(e_trg: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``L_cons = (1/K) sum_i [1 - cos(E_T(t_trg), v^i)]``.

    With ``eps = ||E_T(t_trg)||`` this equals ``(1/K) sum_i [1 - sqrt((1 + cos(E_T(t_trg), z^i)) / 2)]``.
    """
    return (1.0 - F.cosine_similarity(v, e_trg[None, :].expand_as(v), dim=-1)).mean()


def diversity_loss(z: torch.Tensor) -> torch.Tensor:
    """``L_div = C(K, 2)^-1 sum_{i<j} |cos(z^i, z^j)|``; 0 for ``K = 1`` (no pairs)."""
    k = z.shape[0]
    if k < 2:
        return z.sum() * 0.0
    unit = F.normalize(z, dim=-1)
    cos = unit @ unit.t()  # [K, K]
    i, j = torch.triu_indices(k, k, offset=1, device=z.device)
    return cos[i, j].abs().mean()


def stage1_loss(e_trg: torch.Tensor, z: torch.Tensor, lambda_div: float):
    """``L_S1 = L_cons + lambda_div * L_div``. Returns ``(total, L_cons, L_div)``."""
    cons = consistency_loss(e_trg, semantic_variations(e_trg, z))
    div = diversity_loss(z)
    return cons + lambda_div * div, cons, div


def text_direction_set(e_src: torch.Tensor, e_trg: torch.Tensor, v: torch.Tensor | None) -> torch.Tensor:
    """``dT_set = [E_T(t_trg) - E_T(t_src); v^1 - E_T(t_src); ...; v^K - E_T(t_src)]``, ``[(K+1), D]`` (not unit).

    ``v = None`` (or ``[0, D]``) gives ``K = 0``: the set is ``dT_0`` alone.
    """
    rows = [(e_trg - e_src)[None, :]]
    if v is not None and v.shape[0]:
        rows.append(v - e_src[None, :])
    return torch.cat(rows, dim=0)


# ----------------------------------------------------------------------------------------------- stage 2


def direction_moments(d: torch.Tensor, *, normalize: bool, scale: str):
    """First and uncentred second moment of a direction set.

    Args:
        d: ``[n, D]`` directions (rows).
        normalize: unit-normalise each row first (paper silent; zsgm default True). Rows of (numerically) zero
            length are divided by 1 instead (:func:`zsgm.technique.safe_unit`): at step 0 the image directions are
            exactly zero.
        scale: ``"mean"``: ``Sigma = d^T d / n`` (comparable between N image and K+1 text rows; zsgm default);
            ``"sum"``: ``Sigma = d^T d`` as written in the paper. ``mu`` is always the mean.

    Returns:
        ``(mu [D], Sigma [D, D])``.
    """
    if scale not in MOMENT_SCALES:
        raise ValueError(f"scale must be one of {MOMENT_SCALES}; got {scale!r}")
    if normalize:
        d = safe_unit(d)
    mu = d.mean(0)
    sigma = d.t() @ d
    if scale == "mean":
        sigma = sigma / d.shape[0]
    return mu, sigma


def directional_moment_terms(d_img: torch.Tensor, d_txt: torch.Tensor, *, normalize: bool = True,
                             scale: str = "mean", squared: bool = False):
    """The two parts of ``L_dm = [1 - cos(mu_I, mu_T)] + lambda_cov * ||Sigma_I - Sigma_T||`` (before lambda_cov).

    Args:
        d_img: ``[N, D]`` image directions ``E_I(G_t(w_n)) - E_I(G_s(w_n))``.
        d_txt: ``[K+1, D]`` text direction set.
        normalize / scale: see :func:`direction_moments`.
        squared: use ``||.||_F^2`` instead of the Frobenius norm (the paper says "Euclidean distance"; whether it
            is squared is not stated; default False).

    Returns:
        ``(mean_term, cov_distance)`` scalars. ``mu_I`` is normalised with the zero guard of ``safe_unit``
        (``mu_I`` is zero at step 0), ``mu_T`` plainly.
    """
    mu_i, sigma_i = direction_moments(d_img, normalize=normalize, scale=scale)
    mu_t, sigma_t = direction_moments(d_txt.to(d_img), normalize=normalize, scale=scale)
    mean_term = 1.0 - (safe_unit(mu_i) * F.normalize(mu_t, dim=-1)).sum()
    diff = sigma_i - sigma_t
    dist = diff.pow(2).sum() if squared else torch.linalg.matrix_norm(diff, ord="fro")
    return mean_term, dist


def relation_loss(x_src: torch.Tensor, x_tgt: torch.Tensor, *, temperature: float = 1.0,
                  reduction: str = "batchmean", include_self: bool = True) -> torch.Tensor:
    """``L_rel = KL(softmax_row(M_s / tau) || softmax_row(M_t / tau))`` with ``M = X X^T``.

    Args:
        x_src: ``[N, D]`` source image embeddings (unit in zsgm; no gradient needed).
        x_tgt: ``[N, D]`` target image embeddings.
        temperature: ``tau`` (paper: none, i.e. 1). With unit rows the logits lie in [-1, 1], so at ``tau = 1``
            the rows are close to uniform and the loss is small.
        reduction: ``"batchmean"`` (sum over the matrix / N, i.e. the mean over rows of each row's KL; default,
            as ``torch.nn.functional.kl_div``'s correct KL), ``"sum"``, or ``"mean"`` (sum / number of entries).
        include_self: keep the diagonal (self-similarity) in each row, as ``M = X X^T`` is written. Without it a
            batch of 2 has one entry per row and the loss is identically 0.

    Returns:
        Scalar.
    """
    if reduction not in RELATION_REDUCTIONS:
        raise ValueError(f"reduction must be one of {RELATION_REDUCTIONS}; got {reduction!r}")
    n = x_src.shape[0]
    m_s = (x_src @ x_src.t()) / temperature  # [N, N]
    m_t = (x_tgt @ x_tgt.t()) / temperature
    keep = torch.ones(n, n, dtype=torch.bool, device=m_t.device)
    if not include_self:
        keep &= ~torch.eye(n, dtype=torch.bool, device=m_t.device)
    m_s = m_s.masked_fill(~keep, float("-inf"))
    m_t = m_t.masked_fill(~keep, float("-inf"))
    log_p_s = F.log_softmax(m_s.to(m_t), dim=-1)
    log_p_t = F.log_softmax(m_t, dim=-1)
    kl = torch.where(keep, log_p_s.exp() * (log_p_s - log_p_t), torch.zeros_like(m_t))  # [N, N]
    if reduction == "batchmean":
        return kl.sum() / n
    if reduction == "sum":
        return kl.sum()
    return kl.sum() / keep.sum()


# ----------------------------------------------------------------------------------------------- EWC


def diagonal_fisher(params: Sequence[torch.Tensor], objective: Callable[[int], torch.Tensor],
                    n_batches: int) -> list[torch.Tensor]:
    """Diagonal empirical Fisher ``F = (1/B) sum_b (d objective(b) / d theta)^2``.

    Args:
        params: tensors requiring grad (the parameters at which F is taken).
        objective: ``objective(b)`` -> scalar for batch ``b`` (in EWC: the source image / source text similarity
            of one sample, or the mean over a batch of samples).
        n_batches: number of calls.

    Returns:
        One tensor per parameter, same shape, ``>= 0``. Parameters the objective does not reach get zeros.
    """
    params = list(params)
    fisher = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    for b in range(n_batches):
        value = objective(b)
        grads = torch.autograd.grad(value, params, allow_unused=True)
        for acc, g in zip(fisher, grads):
            if g is not None:
                acc.add_(g.detach().float().pow(2))
    return [acc / n_batches for acc in fisher]


def ewc_penalty(params: Sequence[torch.Tensor], anchors: Sequence[torch.Tensor],
                fisher: Sequence[torch.Tensor]) -> torch.Tensor:
    """``L_EWC = sum_l sum F^l (theta_t^l - theta_s^l)^2`` (a sum over every element, not a mean)."""
    total = None
    for p, a, f in zip(params, anchors, fisher):
        term = (f.to(p) * (p - a.to(p)).pow(2)).sum()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("ewc_penalty: no parameters")
    return total
