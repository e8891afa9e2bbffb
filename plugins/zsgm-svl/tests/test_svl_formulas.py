"""SVL's formulas on small tensors against hand-computed values (METHODS.md 4.1-4.3)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from zsgm_svl.formulas import (
    consistency_loss,
    diagonal_fisher,
    direction_moments,
    directional_moment_terms,
    diversity_loss,
    ewc_penalty,
    relation_loss,
    semantic_variations,
    stage1_loss,
    text_direction_set,
)

T = torch.tensor


# ----------------------------------------------------------------------------------------------- stage 1


def test_variations_have_radius_eps_equal_to_the_target_norm():
    e = T([3.0, 4.0])  # ||e|| = 5
    z = T([[1.0, 0.0], [0.0, 2.0]])
    assert torch.allclose(semantic_variations(e, z), T([[8.0, 4.0], [3.0, 9.0]]))


def test_consistency_loss_by_hand_and_the_half_angle_identity():
    e = T([3.0, 4.0])
    z = T([[1.0, 0.0], [0.0, 2.0]])  # cos(e, z) = 0.6 and 0.8
    v = semantic_variations(e, z)
    # cos(e, v1) = 40 / (5 sqrt 80), cos(e, v2) = 45 / (5 sqrt 90)
    by_hand = 1 - (40 / (5 * math.sqrt(80)) + 45 / (5 * math.sqrt(90))) / 2
    identity = 1 - (math.sqrt((1 + 0.6) / 2) + math.sqrt((1 + 0.8) / 2)) / 2
    assert math.isclose(by_hand, identity, rel_tol=1e-12)
    assert math.isclose(float(consistency_loss(e, v)), by_hand, rel_tol=1e-6)


def test_half_angle_identity_holds_for_random_vectors():
    g = torch.Generator().manual_seed(0)
    e = torch.randn(16, generator=g, dtype=torch.float64) * 7
    z = torch.randn(5, 16, generator=g, dtype=torch.float64)
    v = semantic_variations(e, z)
    cos_ev = F.cosine_similarity(v, e[None].expand_as(v), dim=-1)
    cos_ez = F.cosine_similarity(z, e[None].expand_as(z), dim=-1)
    assert torch.allclose(cos_ev, torch.sqrt((1 + cos_ez) / 2))


def test_diversity_loss_is_the_mean_absolute_pairwise_cosine():
    z = T([[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]])  # cos: (1,2) 0, (1,3) -1/sqrt2, (2,3) 1/sqrt2
    assert math.isclose(float(diversity_loss(z)), (2 / math.sqrt(2)) / 3, rel_tol=1e-6)
    assert float(diversity_loss(z[:1])) == 0.0  # K = 1: no pairs


def test_stage1_loss_combines_with_lambda_div():
    e = T([3.0, 4.0])
    z = T([[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]])
    total, cons, div = stage1_loss(e, z, 0.5)
    assert torch.isclose(total, cons + 0.5 * div)
    assert torch.isclose(cons, consistency_loss(e, semantic_variations(e, z)))


def test_text_direction_set_rows():
    e_src, e_trg = T([1.0, 0.0]), T([0.0, 1.0])
    v = T([[2.0, 2.0], [0.0, 3.0]])
    expected = T([[-1.0, 1.0], [1.0, 2.0], [-1.0, 3.0]])
    assert torch.equal(text_direction_set(e_src, e_trg, v), expected)
    assert torch.equal(text_direction_set(e_src, e_trg, None), expected[:1])  # K = 0


# ----------------------------------------------------------------------------------------------- moments

D_IMG = T([[2.0, 0.0], [0.0, 1.0]])  # N = 2
D_TXT = T([[1.0, 1.0], [1.0, -1.0], [0.0, 3.0]])  # K + 1 = 3


def test_raw_moments_sum_and_mean():
    mu, sigma = direction_moments(D_TXT, normalize=False, scale="sum")
    assert torch.allclose(mu, T([2 / 3, 1.0]))
    assert torch.allclose(sigma, T([[2.0, 0.0], [0.0, 11.0]]))
    _, sigma_mean = direction_moments(D_TXT, normalize=False, scale="mean")
    assert torch.allclose(sigma_mean, T([[2.0, 0.0], [0.0, 11.0]]) / 3)


def test_moment_loss_unnormalised_sum_and_mean():
    mean_by_hand = 1 - (2 / 3 + 0.5) / (math.sqrt(1.25) * math.sqrt(4 / 9 + 1))  # mu_I = (1, .5), mu_T = (2/3, 1)
    m, dist = directional_moment_terms(D_IMG, D_TXT, normalize=False, scale="sum")
    assert math.isclose(float(m), mean_by_hand, rel_tol=1e-6)
    assert math.isclose(float(dist), math.sqrt(104), rel_tol=1e-6)  # diag(4, 1) - diag(2, 11)
    m, dist = directional_moment_terms(D_IMG, D_TXT, normalize=False, scale="mean")
    assert math.isclose(float(m), mean_by_hand, rel_tol=1e-6)
    assert math.isclose(float(dist), math.sqrt(425) / 6, rel_tol=1e-6)  # diag(2, 1/2) - diag(2/3, 11/3)
    _, sq = directional_moment_terms(D_IMG, D_TXT, normalize=False, scale="mean", squared=True)
    assert math.isclose(float(sq), 425 / 36, rel_tol=1e-6)


def test_moment_loss_with_unit_directions():
    # unit image rows e1, e2: mu_I = (1/2, 1/2), Sigma_I = I/2 (mean) or I (sum)
    # unit text rows (1,1)/r2, (1,-1)/r2, (0,1): mu_T = (r2/3, 1/3), Sigma_T = diag(1, 2)/3 (mean) or diag(1, 2) (sum)
    mean_by_hand = 1 - (math.sqrt(2) + 1) / (math.sqrt(2) * math.sqrt(3))
    m, dist = directional_moment_terms(D_IMG, D_TXT, normalize=True, scale="mean")
    assert math.isclose(float(m), mean_by_hand, rel_tol=1e-6)
    assert math.isclose(float(dist), math.sqrt(2) / 6, rel_tol=1e-6)
    m, dist = directional_moment_terms(D_IMG, D_TXT, normalize=True, scale="sum")
    assert math.isclose(float(m), mean_by_hand, rel_tol=1e-6)
    assert math.isclose(float(dist), 1.0, rel_tol=1e-6)  # diag(1, 1) - diag(1, 2)


def test_moment_loss_at_step_zero_is_finite_with_unit_scale_gradient():
    d_img = torch.zeros(4, 3, requires_grad=True)  # G_t == G_s
    d_txt = T([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    m, dist = directional_moment_terms(d_img, d_txt)
    assert math.isclose(float(m.detach()), 1.0)
    assert math.isclose(float(dist.detach()), math.sqrt(2) / 2, rel_tol=1e-6)  # ||0 - diag(1, 1, 0) / 2||
    (m + dist).backward()
    assert torch.isfinite(d_img.grad).all() and d_img.grad.abs().max() < 10


def test_moment_scale_is_validated():
    with pytest.raises(ValueError, match="scale"):
        direction_moments(D_TXT, normalize=False, scale="median")


# ----------------------------------------------------------------------------------------------- relation


def _row_kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def test_relation_kl_by_hand():
    x_s = T([[1.0, 0.0], [0.0, 1.0]])  # M_s = I
    x_t = T([[1.0, 0.0], [1.0, 0.0]])  # M_t = all ones -> uniform rows
    p = [math.e / (math.e + 1), 1 / (math.e + 1)]
    row = _row_kl(p, [0.5, 0.5])  # both rows give the same KL (row 2 is p reversed)
    assert math.isclose(float(relation_loss(x_s, x_t)), row, rel_tol=1e-6)  # batchmean: 2 rows / 2
    assert math.isclose(float(relation_loss(x_s, x_t, reduction="sum")), 2 * row, rel_tol=1e-6)
    assert math.isclose(float(relation_loss(x_s, x_t, reduction="mean")), 2 * row / 4, rel_tol=1e-6)
    p2 = [math.e ** 2 / (math.e ** 2 + 1), 1 / (math.e ** 2 + 1)]  # temperature 0.5 doubles the logits
    assert math.isclose(float(relation_loss(x_s, x_t, temperature=0.5)), _row_kl(p2, [0.5, 0.5]), rel_tol=1e-6)
    assert float(relation_loss(x_s, x_t, include_self=False)) == 0.0  # N = 2 without the diagonal: one entry/row
    assert float(relation_loss(x_s, x_s)) == 0.0


def test_relation_without_diagonal_and_against_torch_kl_div():
    x_s = torch.eye(3)  # off-diagonal zeros: uniform rows
    x_t = T([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # off-diagonal rows [1, 0], [1, 0], [0, 0]
    q = [math.e / (math.e + 1), 1 / (math.e + 1)]
    by_hand = (2 * _row_kl([0.5, 0.5], q) + 0.0) / 3
    assert math.isclose(float(relation_loss(x_s, x_t, include_self=False)), by_hand, rel_tol=1e-6)
    g = torch.Generator().manual_seed(1)
    a, b = F.normalize(torch.randn(4, 8, generator=g), dim=-1), F.normalize(torch.randn(4, 8, generator=g), dim=-1)
    ref = F.kl_div(F.log_softmax(b @ b.t(), -1), F.log_softmax(a @ a.t(), -1), reduction="batchmean", log_target=True)
    assert torch.isclose(relation_loss(a, b), ref)


# ----------------------------------------------------------------------------------------------- EWC


def test_diagonal_fisher_of_a_linear_and_a_quadratic_toy_model():
    w = T([1.0, 2.0, 0.0], requires_grad=True)
    unused = T([5.0], requires_grad=True)
    xs = [T([1.0, -2.0, 3.0]), T([0.0, 1.0, 1.0])]
    # sim = w . x: gradient x, so F = mean of x^2
    (f_w, f_u) = diagonal_fisher([w, unused], lambda b: w @ xs[b], 2)
    assert torch.allclose(f_w, T([(1 + 0) / 2, (4 + 1) / 2, (9 + 1) / 2]))
    assert torch.equal(f_u, torch.zeros(1))
    # sim = (w . x)^2: gradient 2 (w . x) x; w.x = -3 and 2 -> gradients (-6, 12, -18) and (0, 4, 4)
    (f_w,) = diagonal_fisher([w], lambda b: (w @ xs[b]) ** 2, 2)
    assert torch.allclose(f_w, T([36 / 2, (144 + 16) / 2, (324 + 16) / 2]))


def test_ewc_penalty_by_hand():
    p = [T([1.0, 2.0]), T([[0.0, 3.0]])]
    a = [T([0.0, 0.0]), T([[1.0, 1.0]])]
    f = [T([2.0, 0.5]), T([[10.0, 0.1]])]
    # 2*1 + 0.5*4 + 10*1 + 0.1*4
    assert math.isclose(float(ewc_penalty(p, a, f)), 2 + 2 + 10 + 0.4, rel_tol=1e-6)
    q = T([1.0, 2.0], requires_grad=True)
    ewc_penalty([q], [a[0]], [f[0]]).backward()
    assert torch.allclose(q.grad, 2 * f[0] * (q.detach() - a[0]))


# ------------------------------------------------------------------- the presets' moment convention (issue 14)


def test_cov_distance_gradient_by_hand_under_the_preset_convention():
    # unit image rows u1 = (1, 0), u2 = (0.6, 0.8): Sigma_I = (u1 u1^T + u2 u2^T) / 2 = [[.68, .24], [.24, .32]]
    # text rows of D_TXT, unit: Sigma_T = diag(1, 2) / 3. diff = [[26, 18], [18, -26]] / 75, ||diff|| = 4 / (3 sqrt 5)
    d_img = T([[1.0, 0.0], [0.6, 0.8]], requires_grad=True)
    _, dist = directional_moment_terms(d_img, D_TXT, normalize=True, scale="mean", squared=False)
    assert math.isclose(float(dist.detach()), 4 / (3 * math.sqrt(5)), rel_tol=1e-6)
    dist.backward()
    # d dist / d u_k = (2 / N) G u_k with G = diff / ||diff||, then the unit-norm Jacobian (I - u u^T) (||d_k|| = 1):
    # u1: G u1 = (26, 18) / 75 * 3 sqrt5 / 4 -> projected (0, 18/75) * 3 sqrt5 / 4 = (0, 9 sqrt5 / 50)
    # u2: G u2 = (30, -10) / 75 * 3 sqrt5 / 4; its part along (-0.8, 0.6) is -0.4 * 3 sqrt5 / 4 -> (0.24, -0.18) sqrt5
    r5 = math.sqrt(5)
    assert torch.allclose(d_img.grad, T([[0.0, 9 * r5 / 50], [0.24 * r5, -0.18 * r5]]), atol=1e-6)


def test_both_moment_parts_are_bounded_distances_under_the_preset_convention():
    """Unit rows and mean-scaled Sigma (trace 1, PSD): 1 - cos in [0, 2] and ||Sigma_I - Sigma_T||_F in [0, sqrt 2],
    whatever the dimension, which is why lambda_cov = 1 weighs them equally. Summed Sigma has no such bound."""
    g = torch.Generator().manual_seed(0)
    worst_mean = worst_dist = worst_sum = 0.0
    for dim in (2, 8, 64, 512):
        for n_img, n_txt in ((4, 7), (1, 1), (8, 3)):
            for _ in range(5):
                d_img = torch.randn(n_img, dim, generator=g) * torch.rand(n_img, 1, generator=g) * 3
                d_txt = torch.randn(n_txt, dim, generator=g)
                m, dist = directional_moment_terms(d_img, d_txt, normalize=True, scale="mean")
                _, dist_sum = directional_moment_terms(d_img, d_txt, normalize=True, scale="sum")
                worst_mean, worst_dist = max(worst_mean, float(m)), max(worst_dist, float(dist))
                worst_sum = max(worst_sum, float(dist_sum))
    assert worst_mean <= 2.0 + 1e-6 and worst_dist <= math.sqrt(2) + 1e-6
    assert worst_sum > 2.0  # the paper-as-written sum grows with the row counts
    # the extremes are reached: opposite means (cos = -1), and orthogonal rank-one Sigmas (distance sqrt 2)
    e1, e2 = T([[1.0, 0.0]]), T([[0.0, 1.0]])
    assert math.isclose(float(directional_moment_terms(e1, -e1)[0]), 2.0, rel_tol=1e-6)
    assert math.isclose(float(directional_moment_terms(e1, e2)[1]), math.sqrt(2), rel_tol=1e-6)
