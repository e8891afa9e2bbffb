"""CuPy kernels on a GPU against the torch reference (skipped without CUDA and a working CuPy)."""

from __future__ import annotations

import importlib.util

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


@pytest.fixture(autouse=True)
def no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize("act", ["linear", "lrelu"])
def test_bias_act_kernel_matches_reference(dtype, act):
    from zsgm.ops import bias_act

    x = torch.randn(4, 64, 32, 32, device="cuda", dtype=dtype)
    b = torch.randn(64, device="cuda", dtype=dtype)
    ref = bias_act(x.double(), b.double(), act=act, clamp=256.0, impl="ref")
    out = bias_act(x, b, act=act, clamp=256.0, impl="cuda")
    torch.testing.assert_close(out.double(), ref, **TOL[dtype])
    xl = x.to(memory_format=torch.channels_last)
    torch.testing.assert_close(bias_act(xl, b, act=act, impl="cuda").double(),
                               bias_act(x.double(), b.double(), act=act, impl="ref"), **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize("up,down,pad", [(2, 1, (2, 1, 2, 1)), (1, 1, (1, 1, 1, 1)), (1, 2, (1, 1, 1, 1))])
def test_upfirdn2d_kernel_matches_reference(dtype, up, down, pad):
    from zsgm.ops import setup_filter, upfirdn2d

    x = torch.randn(4, 32, 33, 33, device="cuda", dtype=dtype)
    f = setup_filter([1, 3, 3, 1]).cuda()
    ref = upfirdn2d(x.double(), f.double(), up=up, down=down, padding=pad, gain=4, impl="ref")
    out = upfirdn2d(x, f, up=up, down=down, padding=pad, gain=4, impl="cuda")
    torch.testing.assert_close(out.double(), ref, **TOL[dtype])


def test_float64_gradcheck_through_kernels():
    from zsgm.ops import bias_act, upfirdn2d

    x = torch.randn(2, 3, 6, 6, device="cuda", dtype=torch.float64)
    x = (x + 0.3 * x.sign()).requires_grad_(True)
    b = torch.randn(3, device="cuda", dtype=torch.float64, requires_grad=True)
    f = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]], device="cuda", dtype=torch.float64)
    fn = lambda a, c: bias_act(a, c, act="lrelu", impl="cuda")  # noqa: E731
    assert gradcheck(fn, (x, b)) and gradgradcheck(fn, (x, b))
    g = lambda a: upfirdn2d(a, f, up=2, padding=(1, 2, 0, 1), impl="cuda")  # noqa: E731
    assert gradcheck(g, (x,)) and gradgradcheck(g, (x,))


def test_side_stream_launches_follow_torch_stream():
    from zsgm.ops import setup_filter, upfirdn2d

    f = setup_filter([1, 3, 3, 1]).cuda()
    side = torch.cuda.Stream()
    for _ in range(20):
        x = torch.randn(16, 128, 128, 128, device="cuda")
        ref = upfirdn2d(x, f, padding=1, gain=4, impl="ref")
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            out = upfirdn2d(x, f, padding=1, gain=4, impl="cuda")
        torch.cuda.current_stream().wait_stream(side)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_cuda_graph_capture_of_generator_forward():
    from zsgm.generator import Generator, GeneratorArch

    g = Generator(GeneratorArch.rosinality(64, channel_max=64)).cuda().eval()
    g.set_impl("cuda")
    z = torch.randn(2, 512, device="cuda")
    with torch.no_grad():
        for _ in range(3):  # warm-up: compile and load kernels outside capture
            g(z, noise_mode="const")
        graph = torch.cuda.CUDAGraph()
        static_z = z.clone()
        with torch.cuda.graph(graph):
            static_out = g(static_z, noise_mode="const")
        new_z = torch.randn(2, 512, device="cuda")
        static_z.copy_(new_z)
        graph.replay()
        torch.testing.assert_close(static_out, g(new_z, noise_mode="const"), rtol=1e-4, atol=1e-4)
