"""The CUDA kernels' index arithmetic on CPU: a numpy port of their per-thread loops
(zsgm.ops.cuda_emulation), driven through the real host code (zsgm.ops.cuda_backend.CupyKernel), against the
torch references on many shapes; the multiply-shift division of the 32-bit bias_act path; the polyphase tap
count; argument types against the kernels' parsed signatures."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from zsgm.ops import bias_act_function, bias_act_ref, setup_filter, upfirdn2d_function, upfirdn2d_ref
from zsgm.ops import cuda_backend as cb
from zsgm.ops.cuda_emulation import EmulatedKernel, kernel_signatures

TOL = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-5),
       torch.float16: dict(rtol=1e-3, atol=1e-2)}
F2 = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]])  # asymmetric, non-square [fh=2, fw=3]
F1 = torch.tensor([1.0, 3.0, 2.0, -0.5])  # asymmetric separable
F8 = torch.arange(1.0, 9.0) / 36  # 8-tap separable (setup_filter keeps >= 8 taps 1-D)
F4 = setup_filter([1, 3, 3, 1])  # the generator's 4x4


@pytest.fixture
def kernel():
    return EmulatedKernel()


def test_fastdiv_is_exact_for_every_31_bit_numerator():
    rng = np.random.default_rng(0)
    divisors = list(range(1, 1100)) + [2 ** k + e for k in range(1, 31) for e in (-1, 0, 1) if 2 ** k + e < 2 ** 31]
    divisors += [int(v) for v in rng.integers(1, 2 ** 31, 300)]
    for d in divisors:
        m, s = cb.fastdiv_params(d)
        assert m <= 2 ** 32
        n = np.concatenate([rng.integers(0, 2 ** 31, 2000), [0, 1, d - 1, d, d + 1, 2 ** 31 - 1, 2 ** 31 - 2],
                            (np.arange(1, 50) * d - 1)[np.arange(1, 50) * d <= 2 ** 31]]).astype(np.uint64)
        n = n[n < 2 ** 31]
        q = (n * np.uint64(m)) >> np.uint64(s)  # the kernel's unsigned 64-bit product
        assert np.array_equal(q, n // np.uint64(d)), d
    with pytest.raises(ValueError, match=r"divisor must be in \[1, 2\^31\)"):
        cb.fastdiv_params(0)


def test_signatures_are_parsed_for_every_entry_point():
    sig = kernel_signatures()
    stems = ["bias_act_forward32", "bias_act_forward64", "bias_act_grad32", "bias_act_grad64", "upfirdn2d_poly",
             "upfirdn2d_up2_down1_k4", "upfirdn2d_up1_down1_k4", "upfirdn2d_up1_down2_k4"]
    assert sorted(sig) == sorted(f"zsgm_{s}_{d}" for s in stems for d in ("f16", "f32", "f64"))
    assert sig["zsgm_upfirdn2d_poly_f16"][:2] == ["unsigned short*", "float*"]
    assert sig["zsgm_bias_act_forward32_f64"][-1] == "double"


def test_a_wrong_scalar_type_is_caught(kernel, monkeypatch):
    monkeypatch.setattr(cb.np, "int32", int, raising=True)  # host code would pass Python ints (int64 to CuPy)
    x = torch.randn(1, 2, 4, 4)
    with pytest.raises(AssertionError, match="the kernel takes int"):
        kernel._upfirdn2d(x, F4, (1, 1), (1, 1), (1, 2, 1, 2), False, 1.0, "poly")


UP_DOWN_PAD = [((1, 1), (1, 1), (0, 0, 0, 0)), ((2, 2), (1, 1), (2, 1, 2, 1)), ((1, 1), (2, 2), (1, 1, 1, 1)),
               ((1, 1), (1, 1), (1, 2, 0, 1)), ((2, 1), (1, 2), (0, 3, 1, 2)), ((3, 3), (1, 1), (2, 2, 1, 1)),
               ((1, 1), (3, 3), (0, 0, 0, 0)), ((2, 2), (2, 2), (1, 1, 1, 1)), ((1, 1), (1, 1), (-1, -2, 0, -1)),
               ((2, 2), (1, 1), (-2, 3, 1, -1)), ((1, 2), (3, 1), (2, 0, 0, 2)), ((4, 4), (4, 4), (3, 3, 3, 3)),
               ((1, 1), (1, 1), (2, 2, 2, 2)), ((1, 4), (2, 1), (5, -3, 0, 4))]
FILTERS = {"2d": F2, "1d4": F1, "1d8": F8, "4x4": F4, "none": None}


def _upfirdn_case(kernel, x, f, up, down, pad, flip, gain):
    stem = cb.upfirdn_stem(up, down, f if f is not None else torch.ones(1, 1))
    try:
        out = kernel._upfirdn2d(x, f, up, down, pad, flip, gain, stem)
    except ValueError:
        return None
    ref = upfirdn2d_ref(x.double(), None if f is None else f.double(), up=up, down=down, padding=pad,
                        flip_filter=flip, gain=gain)
    assert out.shape == ref.shape and out.dtype == x.dtype
    torch.testing.assert_close(out.double(), ref, **TOL[x.dtype])
    return stem


def _upfirdn_sweep(kernel, params, dtypes, layouts):
    torch.manual_seed(1)
    stems = set()
    n = 0
    for (up, down, pad), (fname, f), flip, dtype, layout in itertools.product(
            params, FILTERS.items(), (False, True), dtypes, layouts):
        x = torch.randn(2, 3, 7, 9, dtype=dtype)
        if layout == "channels_last":
            x = x.to(memory_format=torch.channels_last)
        elif layout == "sliced":
            x = torch.cat([x, x], dim=3)[..., ::2]
        out_h = (7 * up[1] + pad[2] + pad[3] - (1 if f is None else f.shape[0]) + down[1]) // down[1]
        out_w = (9 * up[0] + pad[0] + pad[1] - (1 if f is None else f.shape[-1]) + down[0]) // down[0]
        if out_h < 1 or out_w < 1:
            continue
        stems.add(_upfirdn_case(kernel, x, f, up, down, pad, flip, 3.0))
        n += 1
    return n, stems


def test_upfirdn2d_port_matches_the_reference_float64(kernel):
    n, stems = _upfirdn_sweep(kernel, UP_DOWN_PAD, (torch.float64,), ("contiguous",))
    assert n > 100 and stems == {"poly", "up2_down1_k4", "up1_down2_k4", "up1_down1_k4"}


@pytest.mark.slow
def test_upfirdn2d_port_matches_the_reference_all_dtypes_and_layouts(kernel):
    n, _ = _upfirdn_sweep(kernel, UP_DOWN_PAD, (torch.float32, torch.float16),
                          ("contiguous", "channels_last", "sliced"))
    assert n > 600


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 2, 1, 17), (2, 1, 33, 2), (1, 3, 40, 41)])
@pytest.mark.parametrize("case", ["skip", "blur", "skip-backward", "blur-backward"])
def test_upfirdn2d_port_generator_shapes_and_odd_sizes(kernel, shape, case):
    up, down, pad = {"skip": ((2, 2), (1, 1), (2, 1, 2, 1)), "blur": ((1, 1), (1, 1), (1, 1, 1, 1)),
                     "skip-backward": ((1, 1), (2, 2), (1, 1, 1, 1)),
                     "blur-backward": ((1, 1), (1, 1), (2, 2, 2, 2))}[case]
    x = torch.randn(*shape)
    if x.shape[2] * up[1] + pad[2] + pad[3] - 4 + down[1] < down[1] or \
            x.shape[3] * up[0] + pad[0] + pad[1] - 4 + down[0] < down[0]:
        pytest.skip("empty output")
    assert _upfirdn_case(kernel, x, F4, up, down, pad, False, 4.0) != "poly"


def test_upfirdn2d_port_more_planes_than_grid_z(kernel):
    x = torch.randn(70000, 1, 1, 2, dtype=torch.float64)  # 70000 planes > 65535: the z loop wraps
    _upfirdn_case(kernel, x, F2, (1, 1), (1, 1), (1, 1, 1, 0), True, 1.0)


def test_polyphase_visits_only_the_taps_that_hit_input_samples(kernel):
    x = torch.randn(1, 1, 16, 16)
    EmulatedKernel.taps_visited = 0
    kernel._upfirdn2d(x, F4, (2, 2), (1, 1), (2, 1, 2, 1), False, 4.0, "up2_down1_k4")  # 32x32 outputs
    assert EmulatedKernel.taps_visited <= 32 * 32 * 4  # 4 of the 16 taps per output (fewer at the border)
    assert EmulatedKernel.taps_visited > 32 * 32 * 3
    EmulatedKernel.taps_visited = 0
    kernel._upfirdn2d(x, F8, (4, 4), (1, 1), (4, 3, 4, 3), False, 16.0, "poly")  # separable: 2 passes of 2 taps
    assert EmulatedKernel.taps_visited <= (16 * 64 + 64 * 64) * 2


@pytest.mark.parametrize("full", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_upfirdn2d_function_gradcheck_through_the_port(kernel, full):
    cases = list(itertools.product(UP_DOWN_PAD[:8], (F2, F1), (False, True)))
    for (up, down, pad), f, flip in (cases if full else [cases[6], cases[13]]):
        x = torch.randn(1, 1, 4, 5, dtype=torch.float64, requires_grad=True)
        fd = f.double()
        fn = lambda a: upfirdn2d_function(kernel, a, fd, up=up, down=down, padding=pad,  # noqa: E731
                                          flip_filter=flip, gain=2.0)
        assert gradcheck(fn, (x,)) and gradgradcheck(fn, (x,))


BIAS_SHAPES = [((3, 5, 4, 6), 1), ((3, 5, 4, 6), 0), ((3, 5, 4, 6), 2), ((3, 5, 4, 6), 3), ((7, 9), 1), ((7, 9), 0),
               ((2, 6, 1, 1), 1), ((2, 1, 3, 3), 1), ((4, 7), 1)]


def _layouts(x):
    yield x
    if x.ndim == 4:
        yield x.to(memory_format=torch.channels_last)
        yield torch.cat([x, x], dim=3)[..., ::2]  # non-contiguous
    if x.ndim == 2:
        yield x.t().contiguous().t()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_bias_act_port_matches_the_reference(kernel, dtype):
    torch.manual_seed(0)
    for (shape, dim), act, clamp, has_b, gain in itertools.product(
            BIAS_SHAPES, ("linear", "relu", "lrelu"), (None, 0.7), (True, False), (None, 0.5)):
        x0 = torch.randn(shape, dtype=dtype)
        b = torch.randn(shape[dim], dtype=dtype) if has_b else None
        for x in _layouts(x0):
            with torch.no_grad():
                out = bias_act_function(kernel, x, b, dim=dim, act=act, gain=gain, clamp=clamp)
            ref = bias_act_ref(x.double(), None if b is None else b.double(), dim=dim, act=act, gain=gain,
                               clamp=clamp)
            torch.testing.assert_close(out.double(), ref, **TOL[dtype])
            if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
                assert out.stride() == x.stride()


def test_bias_act_size_one_channel_dim_with_an_odd_stride(kernel):
    x = torch.empty_strided((2, 1, 3), (3, 0, 1), dtype=torch.float64).normal_()  # contiguous, stride(1) = 0
    assert x.is_contiguous()
    b = torch.randn(1, dtype=torch.float64)
    torch.testing.assert_close(bias_act_function(kernel, x, b, act="lrelu"), bias_act_ref(x, b, act="lrelu"))


def test_bias_act_port_64_bit_path(kernel, monkeypatch):
    monkeypatch.setattr(cb, "INDEX32_LIMIT", 50)  # tensors of >= 50 elements take the 64-bit entry points
    x = torch.randn(3, 5, 4, 6, dtype=torch.float64).to(memory_format=torch.channels_last).requires_grad_(True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True)
    y = bias_act_function(kernel, x, b, act="lrelu", clamp=1.0)
    torch.testing.assert_close(y, bias_act_ref(x, b, act="lrelu", clamp=1.0))
    y.sum().backward()
    assert "zsgm_bias_act_forward64_f64" in kernel.launches and "zsgm_bias_act_grad64_f64" in kernel.launches


@pytest.mark.parametrize("full", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_bias_act_gradcheck_through_the_port(kernel, full):
    cases = list(itertools.product(("linear", "relu", "lrelu"), (None, 1.5), (False, True)))
    for act, clamp, cl in (cases if full else [cases[-1]]):
        x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
        x = x + 0.3 * x.sign()
        x = (x.to(memory_format=torch.channels_last) if cl else x).requires_grad_(True)
        b = (0.1 * torch.randn(3, dtype=torch.float64)).requires_grad_(True)
        fn = lambda a, c: bias_act_function(kernel, a, c, act=act, clamp=clamp, gain=0.7)  # noqa: E731
        assert gradcheck(fn, (x, b)) and gradgradcheck(fn, (x, b))
