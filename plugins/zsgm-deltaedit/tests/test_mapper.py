"""The DeltaEdit delta mapper, its condition and loss, against the released code's formulas written in plain torch."""

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

try:
    import zsgm_deltaedit  # noqa: F401
except ImportError:  # until the plugin's pyproject exists and it is installed (pip install -e plugins/zsgm-deltaedit)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zsgm.generator import GeneratorArch  # noqa: E402
from zsgm.generator.stylespace import style_layout  # noqa: E402
from zsgm_deltaedit.mapper import (DeltaMapper, condition_from_direction, default_levels, delta_loss,  # noqa: E402
                                   delta_loss_terms, make_condition, mapper_levels)

# A 17-layer layout with the 1024-px structure (equal widths in the first 7 layers, tapering after), scaled down.
SMALL_WIDTHS = [8] * 9 + [8, 4, 4, 2, 2, 1, 1, 1]
SMALL_CLIP = 6


def _small_mapper(seed=0, **kwargs) -> DeltaMapper:
    torch.manual_seed(seed)
    m = DeltaMapper.for_layout(SMALL_WIDTHS, clip_dim=SMALL_CLIP, **kwargs)
    with torch.no_grad():  # non-zero biases so that their lr_mul scaling is exercised
        for name, p in m.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 5.0)
    return m


# ---------------------------------------------------------------------- the released forward, in plain torch

def _ref_pixelnorm(x):
    return x * torch.rsqrt(torch.mean(x ** 2, dim=1, keepdim=True) + 1e-8)  # dim 1, whatever the rank


def _ref_mapper(x, sd, prefix, norm, *, per_layer_norm_fix=False, lr_mul=0.01):
    """Released ``Mapper``: PixelNorm (dim 1) then 4 x [linear (W lr_mul / sqrt(in)), + b lr_mul, lrelu 0.2, x sqrt 2].

    With ``per_layer_norm_fix`` a 3-D input is normalised over its last axis instead (zsgm's default).
    """
    first = 0
    if norm:
        x = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + 1e-8) if per_layer_norm_fix else _ref_pixelnorm(x)
        first = 1
    for k in range(first, first + 4):
        w, b = sd[f"{prefix}.mapping.{k}.weight"], sd[f"{prefix}.mapping.{k}.bias"]
        x = F.linear(x, w * (lr_mul / math.sqrt(w.shape[1])))
        x = F.leaky_relu(x + b * lr_mul, negative_slope=0.2) * math.sqrt(2)  # bias on the last axis
    return x


def _ref_forward(sd, s, cond, *, kc=3, km=4, fix=False):
    """Released ``DeltaMapper.forward`` for a layout whose first kc + km layers are w wide."""
    w = SMALL_WIDTHS[0]
    s_c = s[:, :kc * w].view(-1, kc, w)
    s_m = s[:, kc * w:(kc + km) * w].view(-1, km, w)
    s_f = s[:, (kc + km) * w:]
    s_c = _ref_mapper(s_c, sd, "sm_coarse", True, per_layer_norm_fix=fix)
    s_m = _ref_mapper(s_m, sd, "sm_medium", True, per_layer_norm_fix=fix)
    s_f = _ref_mapper(s_f, sd, "sm_fine", True)
    c_c = _ref_mapper(cond, sd, "cm_coarse", True)
    c_m = _ref_mapper(cond, sd, "cm_medium", True)
    c_f = _ref_mapper(cond, sd, "cm_fine", True)
    x_c = torch.cat([s_c, torch.stack([c_c] * kc, dim=1)], dim=2)
    x_m = torch.cat([s_m, torch.stack([c_m] * km, dim=1)], dim=2)
    x_f = torch.cat([s_f, c_f], dim=1)
    x_c = _ref_mapper(x_c, sd, "fm_coarse", False).reshape(-1, kc * w)
    x_m = _ref_mapper(x_m, sd, "fm_medium", False).reshape(-1, km * w)
    x_f = _ref_mapper(x_f, sd, "fm_fine", False)
    return torch.cat([x_c, x_m, x_f], dim=1)


def _inputs(n=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, sum(SMALL_WIDTHS), generator=g) * 3 + 1
    cond = make_condition(torch.randn(n, SMALL_CLIP, generator=g), torch.randn(n, SMALL_CLIP, generator=g))
    return s, cond


def test_compat_option_reproduces_the_released_forward():
    m = _small_mapper(pixelnorm_over_layers=True)
    s, cond = _inputs()
    out = m(s, cond)
    want = _ref_forward(m.state_dict(), s, cond)
    assert out.shape == (5, sum(SMALL_WIDTHS))
    assert torch.allclose(out, want, rtol=1e-5, atol=1e-5)


def test_default_normalises_each_layer_over_its_own_channels():
    m = _small_mapper()
    s, cond = _inputs()
    out = m(s, cond)
    assert torch.allclose(out, _ref_forward(m.state_dict(), s, cond, fix=True), rtol=1e-5, atol=1e-5)
    # and it differs from the released normalisation across layers
    assert not torch.allclose(out, _ref_forward(m.state_dict(), s, cond), rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------------- the 1024 layout: shapes and sizes

def _released_shapes():
    """The released DeltaMapper's state dict shapes, from its layer sizes (delta_mapper.py)."""
    sizes = {"sm_coarse": (512, 512, True), "sm_medium": (512, 512, True), "sm_fine": (2464, 2464, True),
             "cm_coarse": (1024, 512, True), "cm_medium": (1024, 512, True), "cm_fine": (1024, 2464, True),
             "fm_coarse": (1024, 512, False), "fm_medium": (1024, 512, False), "fm_fine": (4928, 2464, False)}
    out = {}
    for name, (i, o, norm) in sizes.items():
        for k in range(4):
            idx = k + 1 if norm else k
            out[f"{name}.mapping.{idx}.weight"] = (o, i if k == 0 else o)
            out[f"{name}.mapping.{idx}.bias"] = (o,)
    return out


def test_1024_layout_has_the_released_structure_and_parameter_count():
    layout = style_layout(GeneratorArch.rosinality(1024))
    with torch.device("meta"):
        m = DeltaMapper.for_layout(layout)
        out = m(torch.zeros(2, 6048), torch.zeros(2, 1024))
    assert out.shape == (2, 6048)
    assert [(lv.name, len(lv.widths), lv.width, lv.offset) for lv in m.levels] == \
        [("coarse", 3, 512, 0), ("medium", 4, 512, 1536), ("fine", 10, 2464, 3584)]
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == _released_shapes()
    # by hand: a Mapper(i, o) holds i*o + o + 3 (o*o + o) values
    def mapper(i, o):
        return i * o + o + 3 * (o * o + o)
    per_layer_level = mapper(512, 512) + mapper(1024, 512) + mapper(1024, 512)  # 3,676,160
    fine = mapper(2464, 2464) + mapper(1024, 2464) + mapper(4928, 2464)  # 75,408,256
    assert per_layer_level == 3_676_160 and fine == 75_408_256
    assert sum(p.numel() for p in m.parameters()) == 2 * per_layer_level + fine == 82_760_576


def test_shapes_layout_uses_a_scaled_split():
    from zsgm.toy.train_generator import make_arch

    layout = style_layout(make_arch())  # 32 px: 7 conv layers of 64 channels
    assert [layer.channels for layer in layout] == [64] * 7
    torch.manual_seed(0)
    m = DeltaMapper.for_layout(layout, clip_dim=128)
    assert [(lv.name, len(lv.widths), lv.width) for lv in m.levels] == \
        [("coarse", 1, 64), ("medium", 2, 64), ("fine", 4, 256)]
    out = m(torch.randn(3, 448), make_condition(torch.randn(3, 128), torch.randn(3, 128)))
    assert out.shape == (3, 448) and torch.isfinite(out).all()


@pytest.mark.parametrize("n, want", [(3, (1, 1)), (4, (1, 1)), (5, (1, 1)), (7, (1, 2)), (9, (2, 2)), (11, (2, 3)),
                                     (13, (2, 3)), (15, (3, 4)), (17, (3, 4)), (19, (3, 4))])
def test_default_levels_scale_the_released_split(n, want):
    coarse, medium = default_levels(n)
    assert (coarse, medium) == want
    assert coarse >= 1 and medium >= 1 and n - coarse - medium >= 1
    assert (coarse, medium) == (max(1, math.floor(3 * n / 17 + 0.5)), max(1, math.floor(4 * n / 17 + 0.5)))


def test_level_errors_name_the_problem():
    with pytest.raises(ValueError, match="at least 3 style layers"):
        default_levels(2)
    with pytest.raises(ValueError, match="leaving at least one fine layer"):
        mapper_levels([8] * 7, (3, 4))
    with pytest.raises(ValueError, match="two positive layer counts"):
        mapper_levels([8] * 7, (0, 2))
    with pytest.raises(ValueError, match=r"level 'medium' \(style layers 1\.\.2\).*\[8, 4\]"):
        mapper_levels([8, 8, 4, 4], (1, 2))
    m = _small_mapper()
    with pytest.raises(ValueError, match=rf"s must be \[N, {sum(SMALL_WIDTHS)}\]"):
        m(torch.zeros(2, 88), torch.zeros(2, 2 * SMALL_CLIP))
    with pytest.raises(ValueError, match=r"cond must be \[2, 12\]"):
        m(torch.zeros(2, sum(SMALL_WIDTHS)), torch.zeros(2, SMALL_CLIP))


def test_config_round_trip_rebuilds_the_same_structure():
    m = _small_mapper(pixelnorm_over_layers=True)
    m2 = DeltaMapper.from_config(m.config())
    m2.load_state_dict(m.state_dict(), strict=True)
    s, cond = _inputs(n=2)
    assert m2.pixelnorm_over_layers and torch.equal(m2(s, cond), m(s, cond))


# ---------------------------------------------------------------------- condition and loss

def test_make_condition_matches_the_released_pair_construction():
    g = torch.Generator().manual_seed(3)
    c1, c2 = torch.randn(4, 7, generator=g) * 5, torch.randn(4, 7, generator=g)
    c2[1] = c1[1]  # a pair (i, i): zero direction, no NaN (the 1e-5 clamp)
    # train_dataset.py: c / |c| for both, delta / clamp(|delta|, min=1e-5), concatenated after c^_1
    h1 = c1 / c1.norm(dim=-1, keepdim=True)
    h2 = c2 / c2.norm(dim=-1, keepdim=True)
    d = h2 - h1
    d = d / d.norm(dim=-1, keepdim=True).clamp(min=1e-5)
    want = torch.cat([h1, d], dim=1)
    got = make_condition(c1, c2)
    assert got.shape == (4, 14)
    assert torch.allclose(got, want, atol=1e-7)
    assert torch.equal(got[1, 7:], torch.zeros(7))


def test_condition_from_a_text_direction_broadcasts_one_direction():
    g = torch.Generator().manual_seed(4)
    c, dt = torch.randn(3, 5, generator=g), torch.randn(5, generator=g) * 0.01
    got = condition_from_direction(c, dt)
    # inference.py: dt / clamp(|dt|, 1e-5) replaces the second half of the (normalised) source condition
    want = torch.cat([c / c.norm(dim=-1, keepdim=True), (dt / dt.norm().clamp(min=1e-5)).expand(3, 5)], dim=1)
    assert torch.allclose(got, want, atol=1e-7)
    with pytest.raises(ValueError, match="direction"):
        condition_from_direction(c, torch.zeros(4))


def test_loss_matches_the_released_training_loss():
    g = torch.Generator().manual_seed(5)
    pred, target = torch.randn(6, 11, generator=g), torch.randn(6, 11, generator=g)
    # scripts/train.py: MSELoss (mean over all elements); 1 - mean over the batch of CosineSimilarity(dim=-1)
    l2 = torch.nn.MSELoss()(pred, target)
    cos = 1 - torch.mean(torch.nn.CosineSimilarity(dim=-1)(pred, target))
    terms = delta_loss_terms(pred, target)
    assert torch.allclose(terms["l2"], l2) and torch.allclose(terms["cos"], cos)
    assert torch.allclose(delta_loss(pred, target), l2 + cos)
    assert torch.allclose(delta_loss(pred, target, l2=0.3, cos=2.0), 0.3 * l2 + 2.0 * cos)
    # per sample over the flat vector: not the cosine of the whole batch as one vector
    flat = 1 - F.cosine_similarity(pred.reshape(1, -1), target.reshape(1, -1)).squeeze()
    assert not torch.allclose(terms["cos"], flat)
    with pytest.raises(ValueError, match="pred and target"):
        delta_loss(pred, target[:, :5])


def test_a_few_adam_steps_fit_a_fixed_batch():
    m = _small_mapper(seed=2)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    s, cond = _inputs(n=8, seed=6)
    target = torch.randn(8, sum(SMALL_WIDTHS), generator=torch.Generator().manual_seed(7)) * 0.1
    opt = torch.optim.Adam(m.parameters(), lr=0.5)  # the released lr (x 0.01 through lr_mul)
    first = delta_loss(m(s, cond), target).item()
    for _ in range(15):
        opt.zero_grad()
        loss = delta_loss(m(s, cond), target)
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
