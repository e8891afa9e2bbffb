"""CuPy kernels on a GPU against the torch reference (marker ``gpu``; skipped without CUDA and a working CuPy).

Each test compares impl="cuda" with the float64 reference on the same inputs, TF32 off. Covered: forward and
backward in float32/float16 (and float64 gradcheck/gradgradcheck), linear/relu/lrelu, a saturating clamp,
dim != 1, the 2-D [N, C] path, no bias, channels_last and non-contiguous inputs, upfirdn2d with asymmetric
filters both flips, separable 8-tap filters, negative padding, the generator's specialisations at real
sizes, the whole generator (image and parameter gradients), stream ordering (a test that fails when a
launch ignores torch's current stream), CUDA graph capture, the fallbacks on a real device, and that no
deprecated CuPy API warns.
"""

from __future__ import annotations

import importlib.util
import itertools
import warnings

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck


def _cupy_works() -> bool:
    if not torch.cuda.is_available() or importlib.util.find_spec("cupy") is None:
        return False
    try:
        from zsgm.ops.cuda_backend import get_kernel

        get_kernel()
        return True
    except Exception:  # noqa: BLE001
        return False


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _cupy_works(), reason="needs CUDA and a working CuPy")]

TOL = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-5),
       torch.float16: dict(rtol=1e-3, atol=1e-2)}
DTYPES = [torch.float64, torch.float32, torch.float16]
DEV = "cuda"


@pytest.fixture(autouse=True)
def no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _ops():
    from zsgm.ops import bias_act, setup_filter, upfirdn2d

    return bias_act, setup_filter, upfirdn2d


# ------------------------------------------------------------------------------------------------- bias_act


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["linear", "relu", "lrelu"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
def test_bias_act_forward(dtype, act, layout):
    bias_act, _, _ = _ops()
    x = torch.randn(4, 64, 32, 32, device=DEV, dtype=dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    elif layout == "sliced":
        x = torch.cat([x, x], dim=3)[..., ::2]  # non-contiguous
    b = torch.randn(64, device=DEV, dtype=dtype)
    for clamp in (None, 256.0, 0.5):  # 0.5 saturates most outputs
        out = bias_act(x, b, act=act, clamp=clamp, impl="cuda")
        ref = bias_act(x.double(), b.double(), act=act, clamp=clamp, impl="ref")
        torch.testing.assert_close(out.double(), ref, **TOL[dtype])
        assert out.dtype == dtype and out.shape == x.shape


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,dim", [((3, 5, 7, 9), 0), ((3, 5, 7, 9), 2), ((3, 5, 7, 9), 3), ((8, 512), 1),
                                       ((512, 8), 0), ((2, 6, 1, 1), 1)])
def test_bias_act_other_dims_2d_path_and_no_bias(dtype, shape, dim):
    bias_act, _, _ = _ops()
    x = torch.randn(shape, device=DEV, dtype=dtype)
    b = torch.randn(shape[dim], device=DEV, dtype=dtype)
    for bb, act in itertools.product((b, None), ("lrelu", "relu", "linear")):
        out = bias_act(x, bb, dim=dim, act=act, clamp=1.0, gain=0.7, impl="cuda")
        ref = bias_act(x.double(), None if bb is None else bb.double(), dim=dim, act=act, clamp=1.0, gain=0.7,
                       impl="ref")
        torch.testing.assert_close(out.double(), ref, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("act,clamp", [("lrelu", None), ("lrelu", 0.5), ("relu", 256.0), ("linear", 0.5)])
@pytest.mark.parametrize("cl", [False, True])
def test_bias_act_backward_fp32_fp16(dtype, act, clamp, cl):
    bias_act, _, _ = _ops()
    g = torch.Generator(device="cpu").manual_seed(0)
    x0 = torch.randn(4, 32, 16, 16, generator=g, dtype=torch.float64)
    x0 = (x0 + 0.05 * x0.sign()).to(DEV)  # off the kinks
    b0 = (0.01 * torch.randn(32, generator=g, dtype=torch.float64)).to(DEV)
    dy = torch.randn(x0.shape, generator=g, dtype=torch.float64).to(DEV)
    xr, br = x0.clone().requires_grad_(), b0.clone().requires_grad_()
    gx, gb = torch.autograd.grad(bias_act(xr, br, act=act, clamp=clamp, impl="ref"), (xr, br), dy)
    x = x0.to(dtype)
    x = (x.to(memory_format=torch.channels_last) if cl else x).requires_grad_()
    b = b0.to(dtype).requires_grad_()
    hx, hb = torch.autograd.grad(bias_act(x, b, act=act, clamp=clamp, impl="cuda"), (x, b), dy.to(dtype))
    if dtype == torch.float32:
        torch.testing.assert_close(hx.double(), gx, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(hb.double(), gb, rtol=1e-4, atol=1e-3)
    else:  # fp16 rounding can move an output across the clamp or 0: allow a few mask flips
        flips = ((hx.double() - gx).abs() > 1e-2 + 1e-2 * gx.abs()).sum().item()
        assert flips <= 8
        torch.testing.assert_close(hb.double(), hx.double().sum([0, 2, 3]), rtol=1e-2, atol=1e-1)
    if clamp is not None:  # saturated outputs pass no gradient
        y = bias_act(x.detach(), b.detach(), act=act, clamp=clamp, impl="cuda")
        assert (hx[y.abs() >= clamp] == 0).all()


def test_bias_act_gradcheck_float64():
    bias_act, _, _ = _ops()
    for act, clamp, cl in itertools.product(("linear", "relu", "lrelu"), (None, 1.5), (False, True)):
        x = torch.randn(2, 3, 5, 6, device=DEV, dtype=torch.float64)
        x = x + 0.3 * x.sign()
        x = (x.to(memory_format=torch.channels_last) if cl else x).requires_grad_()
        b = (0.1 * torch.randn(3, device=DEV, dtype=torch.float64)).requires_grad_()
        fn = lambda a, c: bias_act(a, c, act=act, clamp=clamp, gain=0.7, impl="cuda")  # noqa: E731
        assert gradcheck(fn, (x, b)) and gradgradcheck(fn, (x, b))


# ------------------------------------------------------------------------------------------------ upfirdn2d

F2 = [[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]]  # asymmetric, non-square: catches flips and axis swaps
PARAMS = [(1, 1, 0), (2, 1, (2, 1, 2, 1)), (1, 2, (1, 1, 1, 1)), (1, 1, (1, 2, 0, 1)), ((2, 1), (1, 2), (0, 3, 1, 2)),
          (3, 1, (2, 2, 1, 1)), (2, 2, (1, 1, 1, 1)), (1, 1, (-1, -2, 0, -1)), (2, 1, (-2, 3, 1, -1)),
          (4, 4, (3, 3, 3, 3))]


def _filters(setup_filter):
    return {"2d-asym": torch.tensor(F2), "4x4": setup_filter([1, 3, 3, 1]), "8tap-sep": torch.arange(1.0, 9.0) / 36,
            "none": None}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
def test_upfirdn2d_forward_grid(dtype, flip, layout):
    _, setup_filter, upfirdn2d = _ops()
    fails = []
    for (up, down, pad), (fname, f) in itertools.product(PARAMS, _filters(setup_filter).items()):
        x = torch.randn(2, 5, 13, 11, device=DEV, dtype=dtype)
        if layout == "channels_last":
            x = x.to(memory_format=torch.channels_last)
        elif layout == "sliced":
            x = torch.cat([x, x], dim=3)[..., ::2]
        fd = None if f is None else f.to(DEV)
        for fdev in (fd, f):  # the filter on the GPU, and on the CPU (moved once, cached)
            out = upfirdn2d(x, fdev, up=up, down=down, padding=pad, flip_filter=flip, gain=3.0, impl="cuda")
            ref = upfirdn2d(x.double(), None if f is None else f.double(), up=up, down=down, padding=pad,
                            flip_filter=flip, gain=3.0, impl="ref")
            try:
                torch.testing.assert_close(out.double(), ref, **TOL[dtype])
            except AssertionError as e:
                fails.append(f"up={up} down={down} pad={pad} f={fname}: {str(e).splitlines()[0]}")
    assert not fails, "\n".join(fails[:10])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("case", ["skip", "blur"])
@pytest.mark.parametrize("r", [8, 64, 256])
def test_upfirdn2d_generator_specialisations_forward_backward(dtype, case, r):
    _, setup_filter, upfirdn2d = _ops()
    f = setup_filter([1, 3, 3, 1]).to(DEV)
    if case == "skip":
        x0, kw = torch.randn(4, 3, r // 2, r // 2, device=DEV), dict(up=2, padding=(2, 1, 2, 1), gain=4)
    else:
        x0, kw = torch.randn(4, 32, r + 1, r + 1, device=DEV), dict(padding=1, gain=4)
    xr = x0.double().requires_grad_()
    ref = upfirdn2d(xr, f.double(), impl="ref", **kw)
    dy = torch.randn_like(ref)
    (gref,) = torch.autograd.grad(ref, xr, dy)
    x = x0.to(dtype).requires_grad_()
    out = upfirdn2d(x, f, impl="cuda", **kw)
    (g,) = torch.autograd.grad(out, x, dy.to(dtype))
    tol = TOL[dtype] if dtype == torch.float16 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.double(), ref.detach(), **tol)
    torch.testing.assert_close(g.double(), gref, **tol)


def test_upfirdn2d_gradcheck_float64_flip_and_separable():
    _, _, upfirdn2d = _ops()
    f2 = torch.tensor(F2, device=DEV, dtype=torch.float64)
    f8 = (torch.arange(1.0, 9.0, dtype=torch.float64) / 36).to(DEV)
    for (up, down, pad), f, flip in itertools.product(PARAMS[:7], (f2, f8), (False, True)):
        x = torch.randn(1, 2, 9, 10, device=DEV, dtype=torch.float64, requires_grad=True)
        fn = lambda a: upfirdn2d(a, f, up=up, down=down, padding=pad, flip_filter=flip, gain=2.0,  # noqa: E731
                                 impl="cuda")
        assert gradcheck(fn, (x,)) and gradgradcheck(fn, (x,))


# ------------------------------------------------------------------------------------------- whole generator


def test_whole_generator_cuda_matches_reference_forward_and_gradients():
    from zsgm.generator import Generator, GeneratorArch

    torch.manual_seed(0)
    gen = Generator(GeneratorArch.rosinality(256)).to(DEV)
    z = torch.randn(4, 512, device=DEV)
    outs, grads = {}, {}
    for impl in ("ref", "cuda"):
        gen.set_impl(impl)
        gen.zero_grad(set_to_none=True)
        img = gen(z, noise_mode="const")
        img.square().mean().backward()
        outs[impl] = img.detach()
        grads[impl] = {n: p.grad.detach().clone() for n, p in gen.named_parameters() if p.grad is not None}
    torch.testing.assert_close(outs["cuda"], outs["ref"], rtol=1e-4, atol=1e-4)
    assert grads["cuda"].keys() == grads["ref"].keys()
    for name, gr in grads["ref"].items():
        rel = ((grads["cuda"][name] - gr).abs().max() / gr.abs().max().clamp_min(1e-12)).item()
        assert rel < 1e-3, name


# ----------------------------------------------------------------------------------------- streams, graphs


def test_launches_follow_torchs_current_stream():
    """The side stream spins, then writes x, then runs the ops: a launch on any other stream reads stale x."""
    bias_act, setup_filter, upfirdn2d = _ops()
    f = setup_filter([1, 3, 3, 1]).to(DEV)
    side = torch.cuda.Stream()
    for _ in range(3):
        x = torch.zeros(8, 64, 128, 128, device=DEV)
        b = torch.zeros(64, device=DEV)
        bias_act(x, b, act="linear", gain=2.0, impl="cuda")  # warm-up (compile + check) outside the race
        upfirdn2d(x, f, padding=1, gain=4, impl="cuda")
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            torch.cuda._sleep(100_000_000)  # tens of ms of spinning on the side stream
            x.fill_(1.0)
            y1 = bias_act(x, b, act="linear", gain=2.0, impl="cuda")
            y2 = upfirdn2d(x, f, padding=1, gain=4, impl="cuda")
        torch.cuda.current_stream().wait_stream(side)
        assert bool((y1 == 2).all())
        assert abs(y2[:, :, 10, 10].mean().item() - 4.0) < 1e-5


def test_cuda_graph_capture_of_generator_forward():
    from zsgm.generator import Generator, GeneratorArch

    g = Generator(GeneratorArch.rosinality(64, channel_max=64)).cuda().eval()
    g.set_impl("cuda")
    z = torch.randn(2, 512, device="cuda")
    with torch.no_grad():
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):  # warm-up on the capture stream: compile, check, cache filters
                g(z, noise_mode="const")
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        static_z = z.clone()
        with torch.cuda.graph(graph):
            static_out = g(static_z, noise_mode="const")
        new_z = torch.randn(2, 512, device="cuda")
        static_z.copy_(new_z)
        graph.replay()
        torch.testing.assert_close(static_out, g(new_z, noise_mode="const"), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------- safe by default


def test_every_kernel_passed_its_self_check_and_no_deprecation_warning():
    bias_act, setup_filter, upfirdn2d = _ops()
    from zsgm.ops.cuda_backend import get_kernel

    x = torch.randn(2, 8, 16, 16, device=DEV)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # DeprecationWarning (ExternalStream) or a fallback would fail here
        for dtype in DTYPES:
            bias_act(x.to(dtype), None, act="lrelu", impl="cuda")
            upfirdn2d(x.to(dtype), setup_filter([1, 3, 3, 1]).to(DEV), up=2, padding=(2, 1, 2, 1), gain=4,
                      impl="cuda")
    status = get_kernel()._status
    assert status and all(v is None for v in status.values()), status


def test_bf16_and_compile_failure_fall_back_on_a_real_device(monkeypatch):
    bias_act, setup_filter, upfirdn2d = _ops()
    from zsgm.ops import OpFallbackWarning, dispatch
    from zsgm.ops import cuda_backend as cb

    x = torch.randn(2, 8, 4, 4, device=DEV, dtype=torch.bfloat16)
    monkeypatch.setattr(dispatch, "_warned", set())
    with pytest.warns(OpFallbackWarning, match="bfloat16 is not supported"):
        out = bias_act(x, torch.zeros(8, device=DEV, dtype=torch.bfloat16), act="lrelu")
    torch.testing.assert_close(out, bias_act(x, torch.zeros(8, device=DEV, dtype=torch.bfloat16), act="lrelu",
                                             impl="ref"))
    fresh = cb.CupyKernel()
    monkeypatch.setattr(fresh.cp, "RawModule", lambda **kw: (_ for _ in ()).throw(RuntimeError("simulated NVRTC")))
    monkeypatch.setattr(cb, "_KERNEL", {"k": fresh})
    monkeypatch.setattr(dispatch, "_loaded", {})
    with pytest.warns(OpFallbackWarning, match="compiling cuda/upfirdn2d.cu for cuda:0 failed: RuntimeError: simulated"):
        y = upfirdn2d(torch.randn(2, 3, 8, 8, device=DEV), setup_filter([1, 3, 3, 1]), up=2, padding=(2, 1, 2, 1),
                      gain=4)
    assert y.shape == (2, 3, 16, 16)
