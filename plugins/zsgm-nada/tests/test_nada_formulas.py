"""NADA formulas on small tensors against hand-computed values."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from zsgm.technique import directional_loss, global_clip_loss, safe_unit
from zsgm_nada.layer_freeze import slot_layers


def test_directional_loss_matches_hand_computation():
    e_src = F.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), dim=-1)
    e_tgt = F.normalize(torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]), dim=-1)
    direction = torch.tensor([0.0, 1.0, 0.0])
    # sample 0: dI = (1/sqrt2 - 1, 1/sqrt2, 0); sample 1: dI = (0, 1/sqrt2 - 1, 1/sqrt2)
    a = 1 / math.sqrt(2)
    d0 = torch.tensor([a - 1, a, 0.0])
    d1 = torch.tensor([0.0, a - 1, a])
    expected = 1 - 0.5 * (float(d0[1] / d0.norm()) + float(d1[1] / d1.norm()))
    assert math.isclose(float(directional_loss(e_src, e_tgt, direction)), expected, rel_tol=1e-6)


def test_directional_loss_per_sample_directions():
    e_src = torch.eye(3)[:2]
    e_tgt = torch.eye(3)[[1, 2]]
    dirs = torch.stack([F.normalize(torch.tensor([-1.0, 1.0, 0.0]), dim=0),   # exactly dI_0 -> cos 1
                        F.normalize(torch.tensor([0.0, 1.0, -1.0]), dim=0)])  # exactly -dI_1 -> cos -1
    assert math.isclose(float(directional_loss(e_src, e_tgt, dirs)), 0.5 * (0 + 2), rel_tol=1e-6)


def test_zero_image_direction_guard_gives_unit_scale_gradient():
    e = F.normalize(torch.randn(2, 4, dtype=torch.float64), dim=-1)
    e_tgt = e.clone().requires_grad_(True)
    direction = F.normalize(torch.randn(4, dtype=torch.float64), dim=0)
    loss = directional_loss(e, e_tgt, direction)
    loss.backward()
    assert float(loss.detach()) == 1.0
    # gradient is -dT / N for each sample: finite, along the text direction, unit scale
    assert torch.allclose(e_tgt.grad, -direction.expand(2, 4) / 2)
    assert torch.equal(safe_unit(torch.zeros(3)), torch.zeros(3))
    assert torch.allclose(safe_unit(torch.tensor([3.0, 4.0])), torch.tensor([0.6, 0.8]))


def test_global_loss():
    e_img = torch.eye(2)
    assert math.isclose(float(global_clip_loss(e_img, torch.tensor([1.0, 0.0]))), 0.5)


def test_slot_maps_follow_generator_and_nada_lists():
    # 32 px: n_latent 8, convs 6 (8,16,32 blocks: 2 each), to_rgbs 3
    exact = slot_layers(8, 6, slot_map="exact")
    assert exact[0] == ["conv1"]
    assert exact[1] == ["to_rgb1", "convs.0"]
    assert exact[2] == ["convs.1"]
    assert exact[3] == ["convs.2", "to_rgbs.0"]
    assert exact[7] == ["to_rgbs.2"]  # the last slot drives only the last ToRGB (there is no convs.6)
    nada = slot_layers(8, 6, slot_map="nada")
    assert nada[:4] == [["conv1"], ["to_rgb1"], ["convs.0"], ["convs.1"]]
    assert nada[7] == ["convs.5"]
