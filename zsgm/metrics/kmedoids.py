"""k-medoids on a precomputed distance matrix (for intra-cluster LPIPS, protocol B of docs/EVALUATION.md).

Two methods:

- ``"alternate"`` (Voronoi iteration; the default of scikit-learn-extra's ``KMedoids``, which AIR's
  ``IntraLPIPS_kmedoids.py`` calls as ``KMedoids(n_clusters=10, metric="precomputed")``): assign every point to its
  nearest medoid, then move each cluster's medoid to the member with the smallest summed distance to its cluster
  (only when that is strictly smaller than the current medoid's), until no medoid moves or ``max_iter``.
- ``"pam"`` (Kaufman & Rousseeuw's SWAP): repeatedly make the single medoid/non-medoid swap that lowers the total
  distance most, until none does.

Initialisations: ``"heuristic"`` (scikit-learn-extra's default: the k points with the smallest row sums;
deterministic), ``"build"`` (PAM's greedy BUILD; deterministic), ``"k-medoids++"`` (seeded, D^2 sampling with
2 + ln k local trials as in k-means++), ``"random"`` (seeded).
"""

from __future__ import annotations

import math

import numpy as np
import torch

METHODS = ("alternate", "pam")
INITS = ("heuristic", "build", "k-medoids++", "random")


def _check(d: torch.Tensor, k: int) -> torch.Tensor:
    if not isinstance(d, torch.Tensor) or d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"k-medoids needs a square [N, N] distance matrix; got "
                         f"{tuple(d.shape) if isinstance(d, torch.Tensor) else type(d).__name__}")
    if not 1 <= k <= d.shape[0]:
        raise ValueError(f"k-medoids: k={k} must be between 1 and the number of points ({d.shape[0]})")
    return d.detach().double().cpu()


def initial_medoids(d: torch.Tensor, k: int, *, init: str = "heuristic", seed: int = 0) -> torch.Tensor:
    """``[k]`` long: the starting medoids."""
    d = _check(d, k)
    n = d.shape[0]
    if init == "heuristic":
        return torch.argsort(d.sum(1), stable=True)[:k]
    if init == "random":
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k]
    if init == "build":
        chosen = [int(torch.argmin(d.sum(1)))]
        nearest = d[chosen[0]].clone()  # [N] distance to the closest chosen medoid
        for _ in range(1, k):
            cost = torch.minimum(nearest[None, :], d).sum(1)  # [N] total if each point were added
            cost[chosen] = math.inf
            best = int(torch.argmin(cost))
            chosen.append(best)
            nearest = torch.minimum(nearest, d[best])
        return torch.tensor(chosen)
    if init == "k-medoids++":
        rng = np.random.RandomState(seed)
        trials = 2 + int(math.log(k))
        chosen = [int(rng.randint(n))]
        nearest_sq = d[chosen[0]].numpy() ** 2
        for _ in range(1, k):
            potential = nearest_sq.sum()
            candidates = np.searchsorted(np.cumsum(nearest_sq), rng.random_sample(trials) * potential)
            candidates = np.minimum(candidates, n - 1)
            best, best_pot, best_sq = None, None, None
            for c in candidates:
                new_sq = np.minimum(nearest_sq, d[c].numpy() ** 2)
                if best is None or new_sq.sum() < best_pot:
                    best, best_pot, best_sq = int(c), new_sq.sum(), new_sq
            chosen.append(best)
            nearest_sq = best_sq
        return torch.tensor(chosen)
    raise ValueError(f"k-medoids init must be one of {', '.join(INITS)}; got {init!r}")


def kmedoids(d: torch.Tensor, k: int, *, method: str = "alternate", init: str = "heuristic", seed: int = 0,
             max_iter: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """k-medoids of the points whose pairwise distances are ``d`` ``[N, N]``.

    Returns:
        ``(medoids [k] long, labels [N] long)``: ``labels[i]`` indexes ``medoids`` (the nearest medoid; ties go to
        the lower cluster index).
    """
    if method not in METHODS:
        raise ValueError(f"k-medoids method must be one of {', '.join(METHODS)}; got {method!r}")
    d = _check(d, k)
    medoids = initial_medoids(d, k, init=init, seed=seed).clone()
    if method == "alternate":
        for _ in range(max_iter):
            old = medoids.clone()
            labels = torch.argmin(d[medoids], dim=0)  # [N]
            for c in range(k):
                members = torch.nonzero(labels == c).flatten()
                if members.numel() == 0:
                    continue
                costs = d[members][:, members].sum(1)  # [M] summed distance to the cluster
                best = int(torch.argmin(costs))
                current = costs[members == medoids[c]]  # empty if a tie put the medoid in another cluster
                if current.numel() == 0 or costs[best] < current[0]:
                    medoids[c] = members[best]
            if torch.equal(old, medoids):
                break
    else:
        for _ in range(max_iter):
            total = d[medoids].min(0).values.sum()
            best_cost, best_swap = total, None
            for c in range(k):
                others = torch.cat([medoids[:c], medoids[c + 1:]])
                rest = d[others].min(0).values if others.numel() else torch.full((d.shape[0],), math.inf,
                                                                                  dtype=d.dtype)
                cost = torch.minimum(rest[None, :], d).sum(1)  # [N] total if medoid c became point o
                cost[medoids] = math.inf
                o = int(torch.argmin(cost))
                if cost[o] < best_cost - 1e-12 * max(1.0, float(total)):
                    best_cost, best_swap = cost[o], (c, o)
            if best_swap is None:
                break
            medoids[best_swap[0]] = best_swap[1]
    labels = torch.argmin(d[medoids], dim=0)
    return medoids, labels


def total_cost(d: torch.Tensor, medoids: torch.Tensor) -> float:
    """Sum over points of the distance to the nearest of ``medoids``."""
    return float(d.double()[medoids].min(0).values.sum())
