"""Frechet distance and KID over feature matrices, computed by torch-fidelity's own functions.

FID, KID and SIFID all end in these two calls; keeping them in one place means every number zsgm reports is the
library's arithmetic (``torch_fidelity.metric_fid.fid_statistics_to_metric``, an eigenvalue form of
``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrt(S1 S2))``, and ``torch_fidelity.metric_kid.kid_features_to_metric``, the
unbiased MMD^2 with the cubic polynomial kernel ``(x.y / d + 1)^3`` over random subsets).
"""

from __future__ import annotations

import torch

from zsgm.metrics.api import MetricError

#: torch-fidelity's KID defaults (``torch_fidelity.defaults.DEFAULTS``), the values papers using it report with.
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
KID_SEED = 2020


def _features(f: torch.Tensor, what: str, min_rows: int = 2) -> torch.Tensor:
    if not isinstance(f, torch.Tensor) or f.ndim != 2:
        raise MetricError(f"{what}: features must be a [N, D] tensor; got "
                          f"{tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__}")
    if f.shape[0] < min_rows:
        raise MetricError(f"{what}: need at least {min_rows} feature rows for a covariance; got {f.shape[0]}")
    if not torch.isfinite(f).all():
        raise MetricError(f"{what}: features hold NaN or Inf")
    return f.detach().cpu().float()


def frechet_distance(f1: torch.Tensor, f2: torch.Tensor, *, what: str = "Frechet distance") -> float:
    """Frechet distance between Gaussians fitted to ``f1`` ``[N, D]`` and ``f2`` ``[M, D]`` (torch-fidelity)."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    f1, f2 = _features(f1, what), _features(f2, what)
    if f1.shape[1] != f2.shape[1]:
        raise MetricError(f"{what}: feature sizes differ ({f1.shape[1]} vs {f2.shape[1]})")
    stats1, stats2 = fid_features_to_statistics(f1), fid_features_to_statistics(f2)
    return float(fid_statistics_to_metric(stats1, stats2, False)["frechet_inception_distance"])


def kid_subset_size(n1: int, n2: int, wanted: int = KID_SUBSET_SIZE) -> int:
    """The KID subset size used: ``wanted``, lowered to the smaller set when either has fewer images."""
    size = min(wanted, n1, n2)
    if size < 2:
        raise MetricError(f"KID: need at least 2 images in each set for a subset; got {n1} generated and {n2} real")
    return size


def kernel_inception_distance(f1: torch.Tensor, f2: torch.Tensor, *, subsets: int = KID_SUBSETS,
                              subset_size: int = KID_SUBSET_SIZE, seed: int = KID_SEED) -> tuple[float, float]:
    """``(mean, std)`` of KID over ``subsets`` random subsets of ``subset_size`` rows (torch-fidelity).

    Raises:
        MetricError: a subset larger than either set (say so rather than let the library assert).
    """
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    f1, f2 = _features(f1, "KID"), _features(f2, "KID")
    if f1.shape[1] != f2.shape[1]:
        raise MetricError(f"KID: feature sizes differ ({f1.shape[1]} vs {f2.shape[1]})")
    if subset_size < 2 or subset_size > min(f1.shape[0], f2.shape[0]):
        raise MetricError(f"KID: subset size {subset_size} needs 2 <= size <= both set sizes "
                          f"({f1.shape[0]} generated, {f2.shape[0]} real); lower kid_subset_size")
    if subsets < 1:
        raise MetricError(f"KID: kid_subsets must be >= 1; got {subsets}")
    out = kid_features_to_metric(f1, f2, kid_subsets=int(subsets), kid_subset_size=int(subset_size),
                                 rng_seed=int(seed), verbose=False)
    return float(out[KEY_METRIC_KID_MEAN]), float(out[KEY_METRIC_KID_STD])


def gaussian_statistics(f: torch.Tensor, *, what: str = "Frechet distance") -> dict:
    """torch-fidelity's ``{"mu", "sigma"}`` of ``f`` ``[N, D]`` (numpy), to compare many pairs without keeping
    the features."""
    from torch_fidelity.metric_fid import fid_features_to_statistics

    return fid_features_to_statistics(_features(f, what))


def frechet_from_statistics(s1: dict, s2: dict) -> float:
    """torch-fidelity's Frechet distance between two :func:`gaussian_statistics`."""
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    return float(fid_statistics_to_metric(s1, s2, False)["frechet_inception_distance"])
