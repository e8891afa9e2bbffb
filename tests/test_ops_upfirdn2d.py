"""upfirdn2d: two independent oracles (a literal numpy loop of OPS.md 2.2, scipy.signal.upfirdn), parameter
sweeps with asymmetric filters, the adjoint identity, gradients of the reference and of the kernel Function
wiring (driven by a torch emulation of the kernel), the helpers and argument errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.signal
import torch
from torch.autograd import gradcheck, gradgradcheck

from zsgm.ops import (
    downsample2d,
    filter2d,
    setup_filter,
    upfirdn2d,
    upfirdn2d_adjoint_params,
    upfirdn2d_function,
    upsample2d,
)
from zsgm.ops.upfirdn2d import TorchUpFirDn2dKernel

F1 = np.array([1.0, 3.0, 2.0, -0.5])  # asymmetric 1-D (separable) filter
F2 = np.array([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]])  # asymmetric, non-square [fh=2, fw=3]: catches axis swaps
FILTERS = {"1d": F1, "2d": F2}


def literal_upfirdn2d(x, f, up, down, pad, flip, gain):
    """OPS.md 2.2 step by step on one [H, W] channel (a 1-D filter f means the 2-D filter f (x) f)."""
    (upx, upy), (downx, downy), (x0, x1, y0, y1) = up, down, pad
    f2 = np.outer(f, f) if f.ndim == 1 else f
    f2 = f2 * gain  # 2-D: gain; separable: sqrt(gain) per pass = gain
    h, w = x.shape
    z = np.zeros((h * upy, w * upx))  # 1. insert up-1 zeros after every sample
    z[::upy, ::upx] = x
    hp, wp = h * upy + y0 + y1, w * upx + x0 + x1  # 2. pad/crop, measured on the upsampled grid
    p = np.zeros((hp, wp))
    for r in range(hp):
        for c in range(wp):
            if 0 <= r - y0 < z.shape[0] and 0 <= c - x0 < z.shape[1]:
                p[r, c] = z[r - y0, c - x0]
    fh, fw = f2.shape
    oh, ow = hp - fh + 1, wp - fw + 1  # 3. valid outputs only
    out = np.zeros((oh, ow))
    for a in range(fh):
        for b in range(fw):
            if flip:  # correlation
                out += f2[a, b] * p[a:a + oh, b:b + ow]
            else:  # true convolution: out[r] = sum_k f[k] p[r + K - 1 - k]
                out += f2[a, b] * p[fh - 1 - a:fh - 1 - a + oh, fw - 1 - b:fw - 1 - b + ow]
    return out[::downy, ::downx]  # 4. every down-th sample, starting at 0


def run(x_np, f_np, **kw):
    """The op on a float64 numpy input [N, C, H, W] (or [H, W])."""
    x = torch.tensor(x_np)
    squeeze = x.ndim == 2
    if squeeze:
        x = x[None, None]
    y = upfirdn2d(x, torch.tensor(f_np), **kw)
    return y[0, 0].numpy() if squeeze else y.numpy()


PADS = [(1, 2, 0, 3), (-1, 2, 3, -2), (3, -2, -1, 1), (0, 0, 0, 0), (2, 1, 2, 1), (-2, 0, 1, -1)]
SWEEP = list(itertools.product([1, 2, 4], [1, 2, 4], ["1d", "2d"], [False, True]))


@pytest.mark.parametrize("up,down,kind,flip", SWEEP)
def test_matches_literal_loop_sweep(up, down, kind, flip):
    i = SWEEP.index((up, down, kind, flip))
    pad, gain = PADS[i % len(PADS)], (1.0, 3.0)[i % 2]
    x = np.random.default_rng(i).normal(size=(2, 3, 5, 6))
    f = FILTERS[kind]
    got = run(x, f, up=up, down=down, padding=pad, flip_filter=flip, gain=gain)
    fh, fw = (len(f), len(f)) if f.ndim == 1 else f.shape
    x0, x1, y0, y1 = pad
    expected_shape = (2, 3, (5 * up + y0 + y1 - fh + down) // down, (6 * up + x0 + x1 - fw + down) // down)
    assert got.shape == expected_shape  # the OPS.md output-size formula
    for n, c in [(0, 0), (1, 2)]:
        ref = literal_upfirdn2d(x[n, c], f, (up, up), (down, down), pad, flip, gain)
        np.testing.assert_allclose(got[n, c], ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("up,down,pad", [((2, 1), (1, 2), (2, 1, -1, 2)), ((1, 4), (2, 1), (0, 3, 2, -2)),
                                         ((4, 2), (1, 4), (-3, 1, 1, 1))])
@pytest.mark.parametrize("kind", ["1d", "2d"])
def test_matches_literal_loop_per_axis_factors(up, down, pad, kind):
    x = np.random.default_rng(7).normal(size=(4, 5))
    for flip in (False, True):
        got = run(x, FILTERS[kind], up=up, down=down, padding=pad, flip_filter=flip)
        ref = literal_upfirdn2d(x, FILTERS[kind], up, down, pad, flip, 1.0)
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def scipy_axis(sig, f, up, down, p0, p1):
    """One axis of upfirdn2d from scipy's full convolution: out[j] = full[j * down + fw - 1 - p0] (0 outside)."""
    full = scipy.signal.upfirdn(f, sig, up, 1)
    fw = len(f)
    n_out = (len(sig) * up + p0 + p1 - fw) // down + 1  # outputs whose footprint lies inside the padded signal
    idx = np.arange(n_out) * down + fw - 1 - p0
    ok = (idx >= 0) & (idx < len(full))
    return np.where(ok, full[np.clip(idx, 0, len(full) - 1)], 0.0)


def scipy_2d(x, fx, fy, up, down, pad, flip):
    (upx, upy), (downx, downy), (x0, x1, y0, y1) = up, down, pad
    if flip:  # correlation = convolution with the reversed filter
        fx, fy = fx[::-1], fy[::-1]
    rows = np.stack([scipy_axis(r, fx, upx, downx, x0, x1) for r in x])  # along x
    return np.stack([scipy_axis(c, fy, upy, downy, y0, y1) for c in rows.T]).T  # along y


FX = np.array([1.0, 3.0, 2.0, 0.5, -1.0])  # 5 taps, asymmetric
FY = np.array([2.0, -1.0, 0.25])  # 3 taps, asymmetric


@pytest.mark.parametrize("up,down", list(itertools.product([1, 2, 4], [1, 2, 4])))
def test_full_convolution_padding_equals_scipy_upfirdn(up, down):
    """OPS.md 6.1: padding (fw - 1, fw - up) per axis, no flip, is scipy.signal.upfirdn exactly."""
    x = np.random.default_rng(1).normal(size=(4, 7))
    f2 = torch.tensor(np.outer(FY, FX))  # 2-D filter fy (x) fx: rows filtered by fx, columns by fy
    pad = (len(FX) - 1, len(FX) - up, len(FY) - 1, len(FY) - up)
    got = upfirdn2d(torch.tensor(x)[None, None], f2, up=up, down=down, padding=pad)[0, 0].numpy()
    rows = np.stack([scipy.signal.upfirdn(FX, r, up, down) for r in x])
    ref = np.stack([scipy.signal.upfirdn(FY, c, up, down) for c in rows.T]).T
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    # the separable 1-D form, same taps on both axes
    pad1 = (len(FX) - 1, len(FX) - up) * 2
    got1 = upfirdn2d(torch.tensor(x)[None, None], torch.tensor(FX), up=up, down=down, padding=pad1)[0, 0].numpy()
    rows = np.stack([scipy.signal.upfirdn(FX, r, up, down) for r in x])
    np.testing.assert_allclose(got1, np.stack([scipy.signal.upfirdn(FX, c, up, down) for c in rows.T]).T,
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("up,down,pad,flip", [
    ((2, 2), (1, 1), (0, 0, 0, 0), False), ((2, 1), (2, 1), (-2, 3, 1, -1), True),
    ((4, 2), (2, 4), (3, -1, -2, 4), False), ((1, 1), (2, 2), (1, 1, 1, 1), True),
    ((1, 4), (4, 1), (2, 2, 5, -2), True),
])
def test_any_padding_equals_sliced_scipy(up, down, pad, flip):
    """Other paddings (negative included) are a slice / zero-extension of scipy's full convolution."""
    x = np.random.default_rng(2).normal(size=(6, 5))
    got = upfirdn2d(torch.tensor(x)[None, None], torch.tensor(np.outer(FY, FX)), up=up, down=down, padding=pad,
                    flip_filter=flip)[0, 0].numpy()
    ref = scipy_2d(x, FX, FY, up, down, pad, flip)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["1d", "2d"])
def test_gain_and_flip(kind):
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    f = torch.tensor(FILTERS[kind])
    base = upfirdn2d(x, f, up=2, padding=1)
    torch.testing.assert_close(upfirdn2d(x, f, up=2, padding=1, gain=5.0), 5.0 * base)  # gain^(ndim/2) per pass
    flipped = f.flip(list(range(f.ndim)))
    torch.testing.assert_close(upfirdn2d(x, f, up=2, padding=1, flip_filter=True),
                               upfirdn2d(x, flipped, up=2, padding=1))
    assert not torch.allclose(upfirdn2d(x, f, up=2, padding=1, flip_filter=True), base)  # asymmetric: differs


def test_float32_input_and_identity_filter():
    x = torch.randn(2, 3, 8, 8)
    f = setup_filter([1, 2, 4, 1])
    torch.testing.assert_close(upfirdn2d(x, f, up=2, padding=(2, 1, 2, 1)),
                               upfirdn2d(x.double(), f.double(), up=2, padding=(2, 1, 2, 1)).float())
    assert torch.equal(upfirdn2d(x, None), x)
    assert torch.equal(upfirdn2d(x, None, down=2), x[:, :, ::2, ::2])


# ----------------------------------------------------------------------------------------------- adjoint

ADJ_CASES = [((2, 2), (1, 1), (2, 1, 2, 1), "2d", False), ((1, 1), (2, 2), (1, 1, 1, 1), "1d", True),
             ((4, 1), (1, 2), (-1, 3, 0, 2), "2d", True), ((2, 4), (4, 1), (0, -2, 3, 1), "1d", False),
             ((1, 1), (1, 1), (1, 1, 1, 1), "2d", False), ((4, 4), (2, 2), (3, 3, -3, 0), "2d", True),
             ((2, 1), (2, 4), (0, 0, 0, 0), "1d", True)]


@pytest.mark.parametrize("up,down,pad,kind,flip", ADJ_CASES)
def test_adjoint_identity(up, down, pad, kind, flip):
    """<upfirdn(x), r> = <x, upfirdn_adj(r)> with the OPS.md 2.2 backward parameters."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64, generator=g)
    f = torch.tensor(FILTERS[kind])
    y = upfirdn2d(x, f, up=up, down=down, padding=pad, flip_filter=flip, gain=2.0)
    r = torch.randn(y.shape, dtype=torch.float64, generator=g)
    adj = upfirdn2d_adjoint_params(x.shape[2:], y.shape[2:], f, up=up, down=down, padding=pad, flip_filter=flip)
    assert adj["up"] == down and adj["down"] == up and adj["flip_filter"] == (not flip)
    xt = upfirdn2d(r, f, gain=2.0, **adj)
    assert xt.shape == x.shape
    torch.testing.assert_close((y * r).sum(), (x * xt).sum(), rtol=1e-12, atol=1e-12)


def test_adjoint_params_of_the_generator_specialisations():
    """OPS.md 2.3: skip upsample -> (up 1, down 2, pad 1); blur -> (up 1, down 1, pad 2)."""
    f = setup_filter([1, 3, 3, 1])
    assert upfirdn2d_adjoint_params((16, 16), (32, 32), f, up=2, padding=(2, 1, 2, 1)) == dict(
        up=(1, 1), down=(2, 2), padding=(1, 1, 1, 1), flip_filter=True)
    assert upfirdn2d_adjoint_params((33, 33), (32, 32), f, padding=(1, 1, 1, 1)) == dict(
        up=(1, 1), down=(1, 1), padding=(2, 2, 2, 2), flip_filter=True)


# ----------------------------------------------------------------------------------------------- gradients

GRAD_CASES = [(2, 1, (1, 2, 0, 1), "2d", False), (1, 2, (-1, 2, 1, 0), "1d", True), ((2, 1), (1, 2), 1, "2d", True)]
# Full Jacobians on the tiny shape; on [2, 3, 8, 8] torch's fast mode (a random projection u^T J v, same
# tolerances) keeps the run in seconds on a shared 2-core machine.
SHAPES = [((1, 2, 5, 4), False), ((2, 3, 8, 8), True)]


def assert_first_and_second_order(fn, inputs, fast):
    assert gradcheck(fn, inputs, fast_mode=fast)
    assert gradgradcheck(fn, inputs, fast_mode=fast)


@pytest.mark.parametrize("shape,fast", SHAPES)
@pytest.mark.parametrize("up,down,pad,kind,flip", GRAD_CASES)
def test_reference_gradcheck_and_gradgradcheck(up, down, pad, kind, flip, shape, fast):
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    f = torch.tensor(FILTERS[kind])
    fn = lambda a: upfirdn2d(a, f, up=up, down=down, padding=pad, flip_filter=flip, gain=2.0, impl="ref")  # noqa
    assert_first_and_second_order(fn, (x,), fast)


class RecordingKernel(TorchUpFirDn2dKernel):
    def __init__(self):
        self.calls = []

    def upfirdn2d(self, x, f, up, down, padding, flip_filter, gain):
        self.calls.append((tuple(x.shape), up, down, padding, flip_filter, gain))
        return super().upfirdn2d(x, f, up, down, padding, flip_filter, gain)


@pytest.mark.parametrize("shape,fast", SHAPES)
@pytest.mark.parametrize("up,down,pad,kind,flip", GRAD_CASES + [((4, 1), (1, 2), (2, -1, 0, 3), "2d", False)])
def test_kernel_function_wiring_gradcheck_and_gradgradcheck(up, down, pad, kind, flip, shape, fast):
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    f = torch.tensor(FILTERS[kind])
    kernel = TorchUpFirDn2dKernel()
    fn = lambda a: upfirdn2d_function(kernel, a, f, up=up, down=down, padding=pad, flip_filter=flip,  # noqa
                                      gain=2.0)
    ref = lambda a: upfirdn2d(a, f, up=up, down=down, padding=pad, flip_filter=flip, gain=2.0, impl="ref")  # noqa
    torch.testing.assert_close(fn(x), ref(x), rtol=0, atol=0)
    assert_first_and_second_order(fn, (x,), fast)
    # first and second order equal the reference's autograd
    dy = torch.randn(fn(x).shape, dtype=torch.float64, requires_grad=True)
    (gk,) = torch.autograd.grad(fn(x), x, dy, create_graph=True)
    (gr,) = torch.autograd.grad(ref(x), x, dy, create_graph=True)
    torch.testing.assert_close(gk, gr)
    v = torch.randn_like(x)
    torch.testing.assert_close(torch.autograd.grad((gk * v).sum(), dy)[0], torch.autograd.grad((gr * v).sum(), dy)[0])


def test_kernel_backward_launches_the_adjoint_and_double_backward_the_forward_again():
    kernel = RecordingKernel()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    f = setup_filter([1, 3, 3, 1]).double()
    y = upfirdn2d_function(kernel, x, f, up=2, padding=(2, 1, 2, 1), gain=4)
    dy = torch.randn_like(y, requires_grad=True)
    (dx,) = torch.autograd.grad(y, x, dy, create_graph=True)
    torch.autograd.grad(dx.sum(), dy)
    assert kernel.calls == [
        ((2, 3, 16, 16), (2, 2), (1, 1), (2, 1, 2, 1), False, 4.0),  # forward
        ((2, 3, 32, 32), (1, 1), (2, 2), (1, 1, 1, 1), True, 4.0),  # backward: adjoint, flip toggled
        ((2, 3, 16, 16), (2, 2), (1, 1), (2, 1, 2, 1), False, 4.0),  # double backward: the forward again
    ]


# ----------------------------------------------------------------------------------------------- helpers

def test_setup_filter_rules():
    f = setup_filter([1, 3, 3, 1])
    assert f.dtype == torch.float32 and f.shape == (4, 4)  # < 8 taps: 2-D outer product
    torch.testing.assert_close(f, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64)
    sep = setup_filter(list(range(1, 9)))
    assert sep.shape == (8,) and torch.isclose(sep.sum(), torch.tensor(1.0))  # >= 8 taps stay separable
    assert setup_filter([1, 2], separable=True).shape == (2,)
    assert setup_filter(list(range(1, 9)), separable=False).shape == (8, 8)
    torch.testing.assert_close(setup_filter([1, 2, 3], gain=4), 4 * setup_filter([1, 2, 3]))  # 2-D: gain
    torch.testing.assert_close(setup_filter([1, 2, 3], separable=True, gain=4),
                               2 * setup_filter([1, 2, 3], separable=True))  # 1-D: sqrt(gain)
    torch.testing.assert_close(setup_filter(F2, flip_filter=True, normalize=False),
                               torch.tensor(F2[::-1, ::-1].copy(), dtype=torch.float32))
    assert torch.equal(setup_filter(None), torch.ones(1, 1))
    with pytest.raises(ValueError, match="1-D or 2-D filter; found shape \\(1, 2, 2\\)"):
        setup_filter(np.ones((1, 2, 2)))
    with pytest.raises(ValueError, match="separable=True needs a 1-D filter"):
        setup_filter(F2, separable=True)
    with pytest.raises(ValueError, match="sum to 0"):
        setup_filter([1, -1])


def test_upsample2d_is_the_generator_skip_upsample():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    f = setup_filter([1, 3, 3, 1]).double()
    y = upsample2d(x, f)
    assert y.shape == (2, 3, 16, 16)
    torch.testing.assert_close(y, upfirdn2d(x, f, up=2, padding=(2, 1, 2, 1), gain=4))  # OPS.md 1.4 / 2.3
    const = upsample2d(torch.ones(1, 1, 8, 8, dtype=torch.float64), f)
    torch.testing.assert_close(const[..., 2:-2, 2:-2], torch.ones(1, 1, 12, 12, dtype=torch.float64))  # mean kept
    assert upsample2d(x, f, up=(2, 1)).shape == (2, 3, 8, 16)
    assert upsample2d(x, f, up=4, padding=(1, 0, 2, 3)).shape == (2, 3, 37, 33)


def test_downsample2d_and_filter2d_sizes_and_values():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    f = setup_filter([1, 3, 3, 1]).double()
    torch.testing.assert_close(downsample2d(x, f), upfirdn2d(x, f, down=2, padding=(1, 1, 1, 1)))
    assert downsample2d(x, f).shape == (2, 3, 4, 4)
    const = torch.ones(1, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(downsample2d(const, f)[..., 1:-1, 1:-1], torch.ones(1, 1, 2, 2, dtype=torch.float64))
    for taps in ([1, 3, 3, 1], [1, 2, 1], [1, 2, 3, 2, 1]):
        g = setup_filter(taps).double()
        assert filter2d(x, g).shape == x.shape  # even and odd sizes keep the size
        torch.testing.assert_close(filter2d(const, g)[..., 2:-2, 2:-2], torch.ones(1, 1, 4, 4, dtype=torch.float64))
    # asymmetric non-square filter: size kept, and the literal loop with the documented padding agrees
    f2 = torch.tensor(F2)
    y = filter2d(x, f2, padding=(1, 0, 0, 2))
    assert y.shape == (2, 3, 10, 9)
    ref = literal_upfirdn2d(x[0, 1].numpy(), F2, (1, 1), (1, 1), (1 + 1, 0 + 1, 0 + 1, 2 + 0), False, 1.0)
    np.testing.assert_allclose(y[0, 1].numpy(), ref, rtol=1e-12, atol=1e-12)
    delta = torch.zeros(3, 3, dtype=torch.float64)
    delta[1, 1] = 1
    torch.testing.assert_close(filter2d(x, delta), x)  # centred delta: identity


def test_argument_errors_are_clear():
    x = torch.randn(1, 2, 4, 4)
    f = torch.ones(2, 2)
    with pytest.raises(ValueError, match=r"x must be a \[N, C, H, W\] tensor; found \(2, 4, 4\)"):
        upfirdn2d(x[0], f)
    with pytest.raises(ValueError, match=r"f must be None or a 1-D .* found \(1, 2, 2\)"):
        upfirdn2d(x, f[None])
    with pytest.raises(ValueError, match="up must be >= 1; got 0"):
        upfirdn2d(x, f, up=0)
    with pytest.raises(ValueError, match=r"padding must be an int, \(px, py\) or \(x0, x1, y0, y1\); got \(1, 2, 3\)"):
        upfirdn2d(x, f, padding=(1, 2, 3))
    with pytest.raises(ValueError, match="empty output"):
        upfirdn2d(x, f, padding=-2)
