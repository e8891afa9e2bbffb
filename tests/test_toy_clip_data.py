"""Augmentation of the shapes CLIP's training batches keeps captions true (zsgm.toy.clip_data.augment_batch)."""

from __future__ import annotations

import torch

from zsgm.toy.clip_data import augment_batch, geometry_labels
from zsgm.toy.render import COLOURS, KINDS, STYLES, ShapeParams, render_batch


def _left_square_batch(n: int):
    p = ShapeParams(kind="square", colour="red", cx=0.25, cy=0.5, radius=0.15, style="photo")
    h, v, size = geometry_labels(p)
    assert h == 0  # "left"
    x = render_batch([p] * n)  # [n, 3, 32, 32]
    alpha = (x - x[:, :, :1, :1]).abs().sum(1, keepdim=True).gt(0.3).float()  # the shape's coverage
    lab = torch.tensor([[STYLES.index("photo"), COLOURS.index("red"), KINDS.index("square"), h, v, size]] * n)
    return x, alpha, lab


def _side_of(x: torch.Tensor) -> torch.Tensor:
    """0 where the shape's mass lies in the left half, 1 where in the right half. [N]"""
    ink = (x - x[:, :, :, 15:17].mean((2, 3), keepdim=True)).abs().sum(1)  # [N, H, W] away from the middle colour
    cols = torch.arange(x.shape[-1]).float()
    cx = (ink.sum(1) * cols).sum(1) / ink.sum((1, 2))
    return (cx > x.shape[-1] / 2).long()


def test_a_flipped_shape_is_captioned_on_the_side_it_now_shows_and_the_images_do_not_depend_on_it():
    x, alpha, lab = _left_square_batch(64)
    img, fixed = augment_batch(x, alpha, lab, g=torch.Generator().manual_seed(0), strength=0.0)
    img_legacy, kept = augment_batch(x, alpha, lab, g=torch.Generator().manual_seed(0), strength=0.0,
                                     mirror_labels=False)
    assert torch.equal(img, img_legacy)  # the same random draws either way
    shown = _side_of(img)
    assert 10 < int(shown.sum()) < 54  # about half were flipped to the right
    assert torch.equal(fixed[:, 3], shown)  # every caption label names the side the image shows
    assert torch.equal(fixed[:, [0, 1, 2, 4, 5]], lab[:, [0, 1, 2, 4, 5]])  # nothing else changes
    assert torch.equal(kept, lab) and not torch.equal(kept[:, 3], shown)  # the old behaviour, kept on request
    assert torch.equal(lab[:, 3], torch.zeros(64, dtype=torch.long))  # the caller's labels are not modified


def test_three_column_labels_and_undecided_sides_pass_through():
    x, alpha, lab = _left_square_batch(16)
    _, out3 = augment_batch(x, alpha, lab[:, :3], g=torch.Generator().manual_seed(1))
    assert torch.equal(out3, lab[:, :3])
    between = lab.clone()
    between[:, 3] = -1  # a shape between left and right is never named by side
    _, out = augment_batch(x, alpha, between, g=torch.Generator().manual_seed(1))
    assert torch.equal(out[:, 3], between[:, 3])
