"""Intra-cluster LPIPS (zsgm.metrics.intra_lpips, kmedoids): the pairwise matrix equals lpips' own forward, the
k-medoids equals scikit-learn-extra's algorithm (written out here), both protocols against hand computation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from zsgm.metrics.api import EvalContext, MetricError
from zsgm.metrics.intra_lpips import (compute_intra_lpips, cross_lpips, pairwise_lpips, prepare, protocol_a,
                                      protocol_b)
from zsgm.metrics.kmedoids import kmedoids, total_cost
from zsgm.perceptual import load_lpips


@pytest.fixture(scope="module")
def standin():
    return load_lpips("standin")


def _images(n, seed, side=32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, side, side, generator=g) * 2 - 1


def test_pairwise_matrix_equals_lpips_forward_pair_by_pair(standin):
    x = prepare(_images(5, 0), None)
    d = pairwise_lpips(standin, x, block=2)  # blocks that split the set: every block pair path is used
    for i, j in itertools.product(range(5), range(5)):
        ref = float(standin(x[i:i + 1], x[j:j + 1]))  # lpips.LPIPS.forward through LpipsDistance
        assert d[i, j] == pytest.approx(ref, rel=1e-5, abs=1e-7)
    assert torch.equal(d, d.T) and torch.all(d.diagonal() == 0)
    y = prepare(_images(3, 1), None)
    c = cross_lpips(standin, x, y, block=2)
    assert c.shape == (5, 3)
    assert c[4, 2] == pytest.approx(float(standin(x[4:5], y[2:3])), rel=1e-5)


def _sklearn_extra_alternate(d: np.ndarray, k: int, max_iter: int = 300):
    """scikit-learn-extra's KMedoids(metric="precomputed") defaults (alternate, heuristic init), written out."""
    medoids = np.argsort(d.sum(1), kind="stable")[:k].copy()
    for _ in range(max_iter):
        old = medoids.copy()
        labels = np.argmin(d[medoids, :], axis=0)
        for c in range(k):
            idx = np.where(labels == c)[0]
            if len(idx) == 0:
                continue
            costs = d[np.ix_(idx, idx)].sum(1)
            if costs.min() < costs[np.argmax(idx == medoids[c])]:
                medoids[c] = idx[np.argmin(costs)]
        if np.all(old == medoids):
            break
    return medoids, np.argmin(d[medoids, :], axis=0)


def test_alternate_kmedoids_equals_scikit_learn_extra_algorithm():
    g = torch.Generator().manual_seed(4)
    pts = torch.cat([torch.randn(15, 2, generator=g) + off for off in (torch.tensor([0., 0.]),
                                                                       torch.tensor([6., 0.]),
                                                                       torch.tensor([0., 6.]))])
    pts = pts[torch.randperm(45, generator=g)]
    d = torch.cdist(pts.double(), pts.double())
    medoids, labels = kmedoids(d, 3)
    ref_m, ref_l = _sklearn_extra_alternate(d.numpy(), 3)
    assert medoids.tolist() == ref_m.tolist() and labels.tolist() == ref_l.tolist()


def test_pam_reaches_the_brute_force_optimum_and_no_swap_improves():
    g = torch.Generator().manual_seed(5)
    pts = torch.cat([torch.randn(4, 2, generator=g) * 0.5, torch.randn(5, 2, generator=g) * 0.5 + 4])
    d = torch.cdist(pts.double(), pts.double())
    medoids, labels = kmedoids(d, 2, method="pam", init="random", seed=1)
    best = min(total_cost(d, torch.tensor(c)) for c in itertools.combinations(range(9), 2))
    assert total_cost(d, medoids) == pytest.approx(best)
    for c, o in itertools.product(range(2), range(9)):
        swapped = medoids.clone()
        swapped[c] = o
        assert total_cost(d, swapped) >= total_cost(d, medoids) - 1e-12
    m1, _ = kmedoids(d, 2, init="k-medoids++", seed=3)
    m2, _ = kmedoids(d, 2, init="k-medoids++", seed=3)
    assert m1.tolist() == m2.tolist()


def test_protocol_b_hand_computed():
    # points on a line: {0, 1, 2} and {10, 11, 12, 13}; k=2 -> medoids 1 and 11 (or 12: both cost 4; 11 is the
    # heuristic start and is kept since no member is strictly cheaper)
    xs = torch.tensor([0., 1., 2., 10., 11., 12., 13.], dtype=torch.float64)
    d = (xs[:, None] - xs[None, :]).abs()
    out = protocol_b(d, k=2)
    to_medoid = np.array([1, 0, 1, 1, 0, 1, 2], dtype=float)
    assert sorted(out["cluster_sizes"]) == [3, 4]
    assert out["all"] == pytest.approx(to_medoid.mean()) and out["all_std"] == pytest.approx(to_medoid.std())
    means = np.array([2 / 3, 4 / 4])
    assert out["avg"] == pytest.approx(means.mean()) and out["avg_std"] == pytest.approx(means.std())


def test_protocol_a_equals_the_ojha_procedure_written_out(standin):
    x = prepare(_images(12, 6), None)
    centres = prepare(_images(3, 7), None)
    out = protocol_a(standin, x, centres, max_per_cluster=3, seed=11, block=5)
    # Ojha / AIR: nearest centre by LPIPS, shuffle each cluster, keep <= 50 (here 3), mean over pairs i < j
    assign = [int(np.argmin([float(standin(x[i:i + 1], centres[c:c + 1])) for c in range(3)])) for i in range(12)]
    gen = torch.Generator().manual_seed(11)
    means = []
    for c in range(3):
        members = torch.tensor([i for i in range(12) if assign[i] == c], dtype=torch.long)
        members = members[torch.randperm(len(members), generator=gen)][:3].tolist()
        pairs = [float(standin(x[a:a + 1], x[b:b + 1])) for a, b in itertools.combinations(members, 2)]
        if pairs:
            means.append(np.mean(pairs))
    assert out["clusters_scored"] == len(means)
    assert out["mean"] == pytest.approx(np.mean(means), rel=1e-5)
    assert len(means) >= 2  # the std below is defined
    # Ojha / AIR: torch.std over the (non-NaN) cluster means, torch's default unbiased (ddof 1) estimate
    assert out["std"] == pytest.approx(float(torch.tensor(means).std()), rel=1e-4, abs=1e-7)


def test_compute_protocol_b_and_a_with_records(tmp_path, standin):
    ctx = EvalContext(generated=_images(12, 8), weights={"lpips-net": "standin"}, seed=3, truncation=0.7,
                      options={"intra-lpips": {"k": 3, "size": None}})
    res = compute_intra_lpips(ctx)
    d = pairwise_lpips(standin, prepare(ctx.generated, None))
    assert res.values["intra-lpips"] == pytest.approx(protocol_b(d, k=3)["all"], rel=1e-6)
    assert set(res.values) == {"intra-lpips", "intra-lpips_std", "intra-lpips_avg", "intra-lpips_avg_std"}
    rec = res.record
    assert rec["protocol"].startswith("B") and rec["n_generated"] == 12 and "NOT LPIPS" in rec["lpips"]
    assert rec["truncation"] == 0.7 and sum(rec["cluster_sizes"]) == 12
    centres = tmp_path / "centres"
    centres.mkdir()
    for i in range(2):
        Image.fromarray((np.random.RandomState(i).rand(32, 32, 3) * 255).astype(np.uint8)).save(centres / f"c{i}.png")
    ctx.options["intra-lpips"]["centres"] = str(centres)
    res_a = compute_intra_lpips(ctx)
    assert res_a.record["protocol"].startswith("A") and res_a.record["centres"]["n"] == 2
    assert res_a.values["intra-lpips"] == pytest.approx(compute_intra_lpips(ctx).values["intra-lpips"])  # seeded


def test_bad_inputs_fail_in_one_line(tmp_path, monkeypatch):
    few = EvalContext(generated=_images(4, 9), weights={"lpips-net": "standin"})
    with pytest.raises(MetricError, match="k=10 needs at least 10 samples"):
        compute_intra_lpips(few)
    few.options["intra-lpips"] = {"protocol": "A"}
    with pytest.raises(MetricError, match="protocol A needs"):
        compute_intra_lpips(few)
    few.options["intra-lpips"] = {"protocol": "A", "centres": str(tmp_path / "none")}
    with pytest.raises(MetricError, match="no such folder"):
        compute_intra_lpips(few)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    ctx = EvalContext(generated=_images(12, 9))
    with pytest.raises(MetricError) as err:
        compute_intra_lpips(ctx)
    msg = str(err.value)
    assert "\n" not in msg and "vgg16-397923af.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg
    assert "--weights lpips=PATH" in msg
