"""Reference ops: gradchecks, independent oracles (SciPy, a literal numpy loop), adjoints, dispatch."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

from zsgm.ops import (
    OpUnavailableError,
    bias_act,
    downsample2d,
    filter2d,
    modulated_conv2d,
    select_impl,
    setup_filter,
    upfirdn2d,
    upsample2d,
)
from zsgm.ops import dispatch


def literal_upfirdn(x: np.ndarray, f: np.ndarray, up, down, pad, flip) -> np.ndarray:
    """OPS.md 2.2 followed literally on one [H, W] channel with a 2-D filter."""
    (upx, upy), (downx, downy), (x0, x1, y0, y1) = up, down, pad
    h, w = x.shape
    z = np.zeros((h * upy, w * upx))
    z[::upy, ::upx] = x
    padded = np.zeros((z.shape[0] + max(y0, 0) + max(y1, 0), z.shape[1] + max(x0, 0) + max(x1, 0)))
    padded[max(y0, 0):max(y0, 0) + z.shape[0], max(x0, 0):max(x0, 0) + z.shape[1]] = z
    padded = padded[max(-y0, 0):padded.shape[0] - max(-y1, 0), max(-x0, 0):padded.shape[1] - max(-x1, 0)]
    k = f if flip else f[::-1, ::-1]  # correlate with the flipped filter = true convolution
    fh, fw = f.shape
    out = np.array([[np.sum(padded[i:i + fh, j:j + fw] * k) for j in range(padded.shape[1] - fw + 1)]
                    for i in range(padded.shape[0] - fh + 1)])
    return out[::downy, ::downx]


ASYM_2D = np.array([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]])  # asymmetric, non-square: catches flips and axis swaps


@pytest.mark.parametrize("up,down,pad,flip", [
    ((1, 1), (1, 1), (1, 1, 0, 2), False),
    ((2, 1), (1, 2), (2, 1, 1, 0), True),
    ((2, 2), (1, 1), (-1, 2, 0, -1), False),
    ((4, 1), (2, 4), (3, 3, 2, 1), True),
    ((1, 2), (2, 1), (0, 0, 0, 0), False),
])
def test_upfirdn2d_matches_literal_loop(up, down, pad, flip):
    x = np.random.default_rng(0).normal(size=(5, 6))
    ref = literal_upfirdn(x, ASYM_2D, up, down, pad, flip)
    got = upfirdn2d(torch.tensor(x)[None, None], torch.tensor(ASYM_2D), up=up, down=down, padding=pad,
                    flip_filter=flip)[0, 0].numpy()
    assert got.shape == ref.shape
    assert np.allclose(got, ref)


@pytest.mark.parametrize("up,down", list(itertools.product([1, 2, 4], [1, 2, 4])))
def test_upfirdn2d_separable_matches_scipy(up, down):
    fx = np.array([1.0, 3.0, 2.0, 0.5, -1.0])
    x = np.random.default_rng(1).normal(size=(4, 7))
    fw = len(fx)
    got = upfirdn2d(torch.tensor(x)[None, None], torch.tensor(fx), up=up, down=down,
                    padding=(fw - 1, fw - up, fw - 1, fw - up))[0, 0].numpy()
    rows = np.stack([scipy.signal.upfirdn(fx, r, up, down) for r in x])  # along x
    ref = np.stack([scipy.signal.upfirdn(fx, c, up, down) for c in rows.T]).T  # along y
    h, w = min(ref.shape[0], got.shape[0]), min(ref.shape[1], got.shape[1])
    assert np.allclose(got[:h, :w], ref[:h, :w])
    expected = (np.array(x.shape) * up + (fw - 1) + (fw - up) - fw + down) // down  # output-size formula
    assert tuple(got.shape) == tuple(expected)


def test_gain_and_helpers_output_sizes():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    f = setup_filter([1, 3, 3, 1]).double()
    assert f.shape == (4, 4) and torch.isclose(f.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert upsample2d(x, f).shape == (2, 3, 16, 16)
    assert downsample2d(x, f).shape == (2, 3, 4, 4)
    assert filter2d(x, f).shape == (2, 3, 8, 8)
    const = torch.ones(1, 1, 6, 6, dtype=torch.float64)
    assert torch.allclose(upsample2d(const, f)[..., 3:-3, 3:-3], torch.ones(1, 1, 6, 6, dtype=torch.float64))
    assert torch.allclose(upfirdn2d(x, f, padding=2, gain=3.0), 3.0 * upfirdn2d(x, f, padding=2))
    sep = setup_filter(torch.arange(1.0, 9.0))  # 8 taps stay separable (1-D)
    assert sep.ndim == 1


@pytest.mark.parametrize("up,down,pad,flip", [(2, 1, (2, 1, 2, 1), False), (1, 2, (1, 1, 1, 1), True),
                                              (2, 2, (0, 3, 1, 2), False)])
def test_upfirdn2d_adjoint_identity(up, down, pad, flip):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 2, 7, 6, dtype=torch.float64, generator=g)
    f = torch.tensor(ASYM_2D)
    y = upfirdn2d(x, f, up=up, down=down, padding=pad, flip_filter=flip)
    r = torch.randn(y.shape, dtype=torch.float64, generator=g)
    fw, fh = f.shape[1], f.shape[0]
    x0, x1, y0, y1 = pad
    adj_pad = [fw - x0 - 1, x.shape[3] * up - y.shape[3] * down + x0 - up + 1,
               fh - y0 - 1, x.shape[2] * up - y.shape[2] * down + y0 - up + 1]
    xt = upfirdn2d(r, f, up=down, down=up, padding=adj_pad, flip_filter=not flip)
    assert xt.shape == x.shape
    assert torch.isclose((y * r).sum(), (x * xt).sum())


def test_upfirdn2d_gradcheck_and_gradgradcheck():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    f = torch.tensor(ASYM_2D)
    fn = lambda t: upfirdn2d(t, f, up=2, down=1, padding=(1, 2, 0, 1), flip_filter=False)  # noqa: E731
    assert gradcheck(fn, (x,))
    assert gradgradcheck(fn, (x,))


@pytest.mark.parametrize("act", ["linear", "lrelu", "relu", "tanh", "sigmoid", "elu", "selu", "softplus", "swish"])
def test_bias_act_gradcheck_and_gradgradcheck(act):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=g)
    x = x + 0.3 * torch.sign(x)  # keep away from the kink at 0
    x.requires_grad_(True)
    b = torch.randn(3, dtype=torch.float64, generator=g).mul(0.01).requires_grad_(True)
    clamp = 10.0  # far from the values: no boundary cases
    assert gradcheck(lambda a, c: bias_act(a, c, act=act, clamp=clamp), (x, b))
    assert gradgradcheck(lambda a, c: bias_act(a, c, act=act, clamp=clamp), (x, b))


def test_bias_act_values_and_validation():
    x = torch.tensor([[-1.0, 2.0], [3.0, -4.0]])
    b = torch.tensor([0.5, -0.5])
    y = bias_act(x, b, dim=1, act="lrelu", clamp=2.0)
    expected = torch.tensor([[-0.5 * 0.2, 1.5], [2.0, -4.5 * 0.2]]) * 2 ** 0.5
    assert torch.allclose(y, expected.clamp(-2, 2))
    with pytest.raises(ValueError, match="unknown act 'gelu2'"):
        bias_act(x, act="gelu2")
    with pytest.raises(ValueError, match=r"bias must have shape \[2\].*found \(3,\)"):
        bias_act(x, torch.zeros(3))


def test_modconv_fused_equals_nonfused_and_up_decomposition():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=g)
    w = torch.randn(5, 3, 3, 3, dtype=torch.float64, generator=g)
    s = torch.randn(2, 3, dtype=torch.float64, generator=g)
    f = setup_filter([1, 3, 3, 1]).double()
    for up in (1, 2):
        a = modulated_conv2d(x, w, s, up=up, resample_filter=f, fused=True)
        b = modulated_conv2d(x, w, s, up=up, resample_filter=f, fused=False)
        assert torch.allclose(a, b, atol=1e-12)
    # explicit decomposition of the up path for sample 0
    wm = w * s[0][None, :, None, None]
    wm = wm / (wm.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
    assert torch.allclose(wm.square().sum(dim=[1, 2, 3]), torch.ones(5, dtype=torch.float64))
    y = F.conv_transpose2d(x[:1], wm.transpose(0, 1), stride=2)
    y = upfirdn2d(y, f, padding=1, gain=4)
    assert torch.allclose(modulated_conv2d(x, w, s, up=2, resample_filter=f)[:1], y, atol=1e-12)


def test_modconv_gradcheck():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    s = torch.randn(2, 2, dtype=torch.float64, generator=g, requires_grad=True)
    f = setup_filter([1, 3, 3, 1]).double()
    assert gradcheck(lambda a, b, c: modulated_conv2d(a, b, c, up=2, resample_filter=f), (x, w, s))


def test_dispatch_rules(monkeypatch):
    x = torch.randn(2, 2)
    assert select_impl("bias_act", "auto", x) == "ref"
    assert select_impl("bias_act", "ref", x) == "ref"
    with pytest.raises(OpUnavailableError, match="needs CUDA tensors"):
        select_impl("bias_act", "cuda", x)
    with pytest.raises(ValueError, match="impl must be one of 'auto', 'cuda', 'ref'; got 'gpu'"):
        bias_act(x, impl="gpu")
    # a registered backend that fails to load is reported with its reason
    dispatch.register_cuda_impl("fake_op", lambda: (_ for _ in ()).throw(ImportError("no cupy here")))
    with pytest.raises(OpUnavailableError, match="no cupy here"):
        dispatch.cuda_impl("fake_op")
