"""The one-shot losses against the released code's formulas (cyclomon/OneshotCLIP losses.py, train_oneshot.py),
written here in plain torch from their semantics, and against values computed by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from zsgm_oneshot.augment import augment_views
from zsgm_oneshot.formulas import (
    consistency_loss,
    crop_offsets,
    crop_side,
    d_logistic_loss,
    g_nonsaturating_loss,
    group_crops,
    patch_nce_loss,
    r1_penalty,
    reg_ratio,
    take_crops,
)

# ------------------------------------------------------------------------------------------- released formulas


def released_const_loss(feat_q, feat_k):
    """ConstLoss: for every ordered pair i != j, cosine of q_i, q_j and of k_i, k_j; mean squared difference."""
    feat_k = feat_k.detach()
    qsim, ksim = [], []
    for i in range(feat_q.shape[0]):
        q_row = F.cosine_similarity(feat_q[i][None], feat_q)
        k_row = F.cosine_similarity(feat_k[i][None], feat_k)
        for j in range(feat_q.shape[0]):
            if i != j:
                qsim.append(q_row[j][None])
                ksim.append(k_row[j][None])
    return torch.mean((torch.cat(qsim) - torch.cat(ksim)) ** 2)


def released_patch_loss(feat_q, feat_k, *, batch, tau, allbatch=False):
    """PatchLoss on flat [B*P, D] rows: positives by bmm of row pairs / norms, negatives within view(groups, -1, D)
    with the diagonal filled with -10, concatenated, divided by tau, cross-entropy against index 0 (no reduction)."""
    n, dim = feat_q.shape
    feat_k = feat_k.detach()
    q_norm = feat_q.norm(p=2, dim=-1, keepdim=True)
    k_norm = feat_k.norm(p=2, dim=-1, keepdim=True)
    l_pos = torch.bmm(feat_q.view(n, 1, -1), feat_k.view(n, -1, 1)).view(n, 1) / (k_norm * q_norm)
    groups = 1 if allbatch else batch
    q, k = feat_q.view(groups, -1, dim), feat_k.view(groups, -1, dim)
    qn, kn = q_norm.view(groups, -1, 1), k_norm.view(groups, -1, 1)
    p = q.shape[1]
    l_neg = torch.bmm(q, k.transpose(2, 1)) / torch.bmm(qn, kn.transpose(2, 1))
    l_neg.masked_fill_(torch.eye(p, dtype=torch.bool)[None], -10.0)
    out = torch.cat((l_pos, l_neg.view(-1, p)), dim=1) / tau
    return F.cross_entropy(out, torch.zeros(out.shape[0], dtype=torch.long), reduction="none")


def released_crops(content, out, offsets, crop):
    """rand_sampling_mult with given corners: crop cc of every image, concatenated crop-major."""
    a = [content[:, :, y:y + crop, x:x + crop] for y, x in offsets]
    b = [out[:, :, y:y + crop, x:x + crop] for y, x in offsets]
    return torch.cat(a), torch.cat(b)


# ------------------------------------------------------------------------------------------- consistency


def test_consistency_matches_released_const_loss():
    g = torch.Generator().manual_seed(0)
    for n in (2, 3, 5):
        q = torch.randn(n, 7, generator=g).requires_grad_(True)
        k = torch.randn(n, 7, generator=g)
        ours, ref = consistency_loss(q, k), released_const_loss(q, k)
        assert torch.allclose(ours, ref, atol=1e-6)
        (gq,) = torch.autograd.grad(ours, q)
        (gr,) = torch.autograd.grad(released_const_loss(q, k), q)
        assert torch.allclose(gq, gr, atol=1e-6)


def test_consistency_by_hand():
    # cos(q0, q1) = 0, cos(k0, k1) = 1: both ordered pairs give (0 - 1)^2
    assert consistency_loss(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[2.0, 0.0], [1.0, 0.0]])).item() \
        == pytest.approx(1.0)
    # cos(q0, q1) = 1/sqrt(2), cos(k0, k1) = 0
    assert consistency_loss(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.0, 3.0]])).item() \
        == pytest.approx(0.5)


def test_consistency_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2 samples"):
        consistency_loss(torch.ones(1, 4), torch.ones(1, 4))


def test_consistency_does_not_backpropagate_into_the_source():
    k = torch.randn(3, 4, requires_grad=True)
    consistency_loss(torch.randn(3, 4, requires_grad=True), k).backward()
    assert k.grad is None


# ------------------------------------------------------------------------------------------- patch contrast


@pytest.mark.parametrize("batch, crops, tau", [(2, 16, 1.0), (2, 3, 0.07), (3, 4, 0.5)])
def test_patch_released_grouping_matches_released_patch_loss(batch, crops, tau):
    g = torch.Generator().manual_seed(1)
    q = torch.randn(crops * batch, 5, generator=g).requires_grad_(True)  # crop-major rows
    k = torch.randn(crops * batch, 5, generator=g)
    ours = patch_nce_loss(group_crops(q, n_images=batch, n_crops=crops, grouping="released"),
                          group_crops(k, n_images=batch, n_crops=crops, grouping="released"), tau=tau)
    ref = released_patch_loss(q, k, batch=batch, tau=tau)
    assert torch.allclose(ours, ref, atol=1e-5)
    (gq,) = torch.autograd.grad(ours.mean(), q)
    (gr,) = torch.autograd.grad(released_patch_loss(q, k, batch=batch, tau=tau).mean(), q)
    assert torch.allclose(gq, gr, atol=1e-6)


def test_patch_all_grouping_matches_released_allbatch():
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(12, 5, generator=g), torch.randn(12, 5, generator=g)
    ours = patch_nce_loss(group_crops(q, n_images=2, n_crops=6, grouping="all"),
                          group_crops(k, n_images=2, n_crops=6, grouping="all"), tau=1.0)
    assert torch.allclose(ours, released_patch_loss(q, k, batch=2, tau=1.0, allbatch=True), atol=1e-5)


def test_patch_image_grouping_uses_each_images_own_crops():
    g = torch.Generator().manual_seed(3)
    n, p = 2, 4
    q, k = torch.randn(p * n, 5, generator=g), torch.randn(p * n, 5, generator=g)
    ours = patch_nce_loss(group_crops(q, n_images=n, n_crops=p, grouping="image"),
                          group_crops(k, n_images=n, n_crops=p, grouping="image"), tau=1.0)
    for i in range(n):  # image i's rows are i, n + i, 2n + i, ...: the released loss on them alone
        rows = torch.arange(p) * n + i
        assert torch.allclose(ours[i * p:(i + 1) * p], released_patch_loss(q[rows], k[rows], batch=1, tau=1.0),
                              atol=1e-5)


def test_patch_loss_by_hand():
    # two crops, identical unit embeddings e0, e1: row 0 logits [cos(e0,e0)=1, -10 (masked), cos(e0,e1)=0]
    e = torch.eye(2)[None]  # [1, 2, 2]
    tau = 0.5
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(-10 / tau) + math.exp(0.0)))
    loss = patch_nce_loss(e, e, tau=tau)
    assert loss.shape == (2,)
    assert loss[0].item() == pytest.approx(expected, rel=1e-6)
    assert loss[1].item() == pytest.approx(expected, rel=1e-6)


def test_crops_are_crop_major_like_the_released_sampler():
    x_s, x_t = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    offsets = crop_offsets(16, 4, 5, torch.Generator().manual_seed(0))
    assert offsets.shape == (5, 2) and int(offsets.min()) >= 0 and int(offsets.max()) <= 12
    ref_s, ref_t = released_crops(x_s, x_t, offsets.tolist(), 4)
    assert torch.equal(take_crops(x_s, offsets, 4), ref_s) and torch.equal(take_crops(x_t, offsets, 4), ref_t)


def test_crop_side_scales_with_the_image():
    assert crop_side(1024, 128 / 1024) == 128
    assert crop_side(32, 128 / 1024) == 4
    assert crop_side(8, 0.01) == 1 and crop_side(8, 1.0) == 8


# ------------------------------------------------------------------------------------------- GAN losses


def test_gan_losses_by_hand():
    zero = torch.zeros(2, 1)
    assert d_logistic_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    assert g_nonsaturating_loss(zero).item() == pytest.approx(math.log(2))
    real, fake = torch.tensor([[2.0], [0.0]]), torch.tensor([[-1.0], [3.0]])
    expected = (math.log1p(math.exp(-2)) + math.log(2)) / 2 + (math.log1p(math.exp(-1)) + math.log1p(math.exp(3))) / 2
    assert d_logistic_loss(real, fake).item() == pytest.approx(expected, rel=1e-6)
    # patch logits [N, 1, h, w]: mean over every element, as the released softplus(...).mean()
    patch = torch.tensor([[[[0.0, 1.0], [2.0, -1.0]]]])
    assert g_nonsaturating_loss(patch).item() == pytest.approx(float(F.softplus(-patch).mean()))


def test_r1_penalty_by_hand_and_against_released():
    a = torch.tensor([1.0, -2.0, 0.5])
    x = torch.randn(2, 3, requires_grad=True)
    pred = (x * a).sum(dim=1, keepdim=True)  # d pred_n / d x_n = a
    assert r1_penalty(pred, x).item() == pytest.approx(float((a ** 2).sum()))
    x2 = torch.randn(2, 3, 4, 4, requires_grad=True)
    pred2 = (x2 ** 2).sum(dim=(1, 2, 3))[:, None]
    (grad,) = torch.autograd.grad(pred2.sum(), x2, create_graph=True)  # released d_r1_loss
    assert torch.allclose(r1_penalty(pred2, x2), grad.pow(2).reshape(2, -1).sum(1).mean())


def test_lazy_regularisation_ratio():
    assert reg_ratio(16) == pytest.approx(16 / 17) and reg_ratio(4) == pytest.approx(0.8)
    assert 0.99 ** reg_ratio(16) == pytest.approx(0.9906, abs=1e-4)


# ------------------------------------------------------------------------------------------- augmentations


def test_augmentations_are_reproducible_and_differentiable():
    x = (torch.rand(1, 3, 16, 16) * 2 - 1).requires_grad_(True)
    a = augment_views(x, views=4, rng=torch.Generator().manual_seed(5))
    b = augment_views(x, views=4, rng=torch.Generator().manual_seed(5))
    c = augment_views(x, views=4, rng=torch.Generator().manual_seed(6))
    assert a.shape == (4, 3, 16, 16) and torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # independent draws per view
    assert float(a.detach().min()) >= -1 - 1e-5 and float(a.detach().max()) <= 1 + 1e-5
    a.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_released_augmentation_gives_identical_clamped_views():
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(9)) * 2 - 1
    before = torch.random.get_rng_state()
    views = augment_views(x, views=8, rng=torch.Generator().manual_seed(0), mode="released")
    assert torch.equal(torch.random.get_rng_state(), before)  # the global generator is left alone
    assert all(torch.equal(views[0], views[i]) for i in range(8))  # one draw for the whole batch
    assert float(views.min()) >= 0.0  # ColorJitter's blend clamps [-1, 1] data to [0, 1]


def _two_steps(frozen_adam: str, *, released: bool):
    """Step 1 reaches both parameters, step 2 only the first (a patch step leaves the global head out)."""
    from zsgm_oneshot.adversarial import Adversarial, AdversarialConfig

    torch.manual_seed(0)
    tech = Adversarial(AdversarialConfig(frozen_adam=frozen_adam))
    tech.discriminator = torch.nn.Linear(3, 2)
    tech.heads = torch.nn.ModuleList([torch.nn.Linear(2, 1)])
    opt = torch.optim.Adam(tech.parameters(), lr=0.1, betas=(0.9, 0.99))
    x = torch.randn(4, 3)
    tech.heads[0](tech.discriminator(x)).square().mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=not released)  # torch < 2 (the released code's): gradients zeroed, not dropped
    tech.discriminator(x).square().mean().backward()
    opt.step() if released else tech._step(opt)
    return tech, opt


def test_frozen_adam_zero_grad_steps_unreached_parameters_as_the_released_torch_did():
    ours, ours_opt = _two_steps("zero-grad", released=False)
    ref, ref_opt = _two_steps("zero-grad", released=True)
    for a, b in zip(ours.parameters(), ref.parameters()):
        assert torch.equal(a, b)
    head_state = ours_opt.state[ours.heads[0].weight]
    assert int(head_state["step"]) == 2 == int(ref_opt.state[ref.heads[0].weight]["step"])


def test_frozen_adam_skip_leaves_unreached_parameters_alone():
    skipped, opt = _two_steps("skip", released=False)
    moved, _ = _two_steps("zero-grad", released=False)
    assert int(opt.state[skipped.heads[0].weight]["step"]) == 1
    assert not torch.equal(skipped.heads[0].weight, moved.heads[0].weight)  # beta1 = 0.9: momentum moves it
    assert torch.equal(skipped.discriminator.weight, moved.discriminator.weight)
