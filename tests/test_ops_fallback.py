"""Safe by default, on CPU: the CuPy backend's host code (zsgm.ops.cuda_backend) over an emulated device whose
kernels are made to fail (compile error, NVRTC error, a kernel that fails its check against the reference),
and inputs the kernels do not take (bfloat16, gain <= 0, alpha < 0, >= 2^31 elements). impl="auto" warns
once naming the op and the reason and returns the reference result; impl="cuda" raises; compilation and the
check happen once per (op, device, dtype, template). CPU tensors stand in for CUDA ones (dispatch._is_cuda)."""

from __future__ import annotations

import warnings

import pytest
import torch

from zsgm.ops import OpFallbackWarning, OpUnavailableError, bias_act, setup_filter, upfirdn2d
from zsgm.ops import cuda_backend as cb
from zsgm.ops import dispatch
from zsgm.ops.cuda_emulation import EmulatedKernel, emulated_ops

F4 = setup_filter([1, 3, 3, 1])


class NVRTCError(RuntimeError):
    """Stands in for cupy_backends.cuda.libs.nvrtc.NVRTCError."""


@pytest.fixture(autouse=True)
def fake_cuda_registry(monkeypatch):
    monkeypatch.setattr(dispatch, "_loaders", {})
    monkeypatch.setattr(dispatch, "_loaded", {})
    monkeypatch.setattr(dispatch, "_warned", set())
    monkeypatch.setattr(dispatch, "_is_cuda", lambda t: True)
    monkeypatch.delenv(dispatch.STRICT_ENV, raising=False)


def install(fail=None) -> EmulatedKernel:
    kernel = EmulatedKernel(fail=fail)
    ops = emulated_ops(kernel)
    dispatch.register_cuda_impl("bias_act", lambda: ops.bias_act)
    dispatch.register_cuda_impl("upfirdn2d", lambda: ops.upfirdn2d)
    return kernel


def calls(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 6, 6, generator=g).to(dtype)
    b = torch.randn(4, generator=g).to(dtype)
    return [("bias_act", lambda impl: bias_act(x, b, act="lrelu", clamp=1.0, impl=impl)),
            ("upfirdn2d", lambda impl: upfirdn2d(x, F4, up=2, padding=(2, 1, 2, 1), gain=4, impl=impl))]


def run_auto_twice(op, fn, match):
    with pytest.warns(OpFallbackWarning, match=match) as record:
        out = fn("auto")
    assert len([w for w in record if issubclass(w.category, OpFallbackWarning)]) == 1
    assert f"zsgm.ops: {op} on CUDA tensors falls back to the torch reference" in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once already
        again = fn("auto")
    ref = fn("ref")
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    torch.testing.assert_close(again, ref, rtol=0, atol=0)


@pytest.mark.parametrize("error", [RuntimeError("nvrtc: error: identifier 'foo' is undefined"),
                                   NVRTCError("NVRTC_ERROR_COMPILATION (6)"),
                                   OSError("libnvrtc.so.13: cannot open shared object file")])
def test_compile_failure_warns_once_per_op_and_the_reference_takes_over(error):
    kernel = install({"compile": error})
    for op, fn in calls():
        source = "bias_act.cu" if op == "bias_act" else "upfirdn2d.cu"
        run_auto_twice(op, fn, rf"{op}.*compiling cuda/{source} for cpu failed: {type(error).__name__}")
        with pytest.raises(OpUnavailableError, match=rf"{op}: impl='cuda' cannot run this call: compiling"):
            fn("cuda")
    # compiled once per op (template), never retried per call
    assert kernel.compiles == [("bias_act.cu", "cpu"), ("upfirdn2d.cu", "cpu")]
    assert kernel.launches == []


@pytest.mark.parametrize("op,wrong", [("bias_act", "zsgm_bias_act_forward32_f32"),
                                      ("bias_act", "zsgm_bias_act_grad32_f32"),
                                      ("upfirdn2d", "zsgm_upfirdn2d_up2_down1_k4_f32"),
                                      ("upfirdn2d", "zsgm_upfirdn2d_up1_down2_k4_f32")])
def test_a_kernel_failing_its_check_against_the_reference_is_not_used(op, wrong):
    kernel = install({"wrong": {wrong}})
    fn = dict(calls())[op]
    run_auto_twice(op, fn, rf"on cpu failed the check against the reference")
    checked = len(kernel.launches)
    fn("auto")
    assert len(kernel.launches) == checked  # no launch after the failed check: the reference runs
    with pytest.raises(OpUnavailableError, match="failed the check against the reference"):
        fn("cuda")


def test_kernels_that_pass_their_check_run_and_match():
    kernel = install()
    for op, fn in calls():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = fn("auto")
        torch.testing.assert_close(out, fn("ref"), rtol=1e-5, atol=1e-5)
    ran = [n for n in kernel.launches]
    assert "zsgm_upfirdn2d_up2_down1_k4_f32" in ran and "zsgm_bias_act_forward32_f32" in ran
    n = len(kernel.launches)
    for _, fn in calls():
        fn("auto")
    assert len(kernel.launches) == n + 2  # checks ran once; now one launch per call


def test_bfloat16_goes_to_the_reference():
    install()
    for op, fn in calls(torch.bfloat16):
        run_auto_twice(op, fn, r"dtype torch.bfloat16 is not supported by the kernels")
        with pytest.raises(OpUnavailableError, match="dtype torch.bfloat16 is not supported"):
            fn("cuda")


@pytest.mark.parametrize("kwargs,match", [(dict(gain=0.0), "gain > 0 and alpha >= 0"),
                                          (dict(gain=-1.0), "gain > 0 and alpha >= 0"),
                                          (dict(alpha=-0.1), "gain > 0 and alpha >= 0")])
def test_bias_act_arguments_the_kernel_cannot_differentiate_go_to_the_reference(kwargs, match):
    kernel = install()
    x, b = torch.randn(2, 4, 3, 3), torch.randn(4)
    fn = lambda impl: bias_act(x, b, act="lrelu", impl=impl, **kwargs)  # noqa: E731
    run_auto_twice("bias_act", fn, match)
    with pytest.raises(OpUnavailableError, match=match):
        fn("cuda")
    assert kernel.compiles == []  # decided before compiling anything


def test_upfirdn2d_of_2_31_elements_goes_to_the_reference(monkeypatch):
    install()
    monkeypatch.setattr(cb, "INDEX32_LIMIT", 500)  # stands in for 2^31 (no such tensor on a test machine)
    x = torch.randn(2, 4, 6, 6)  # 288 in, 2*4*12*12 = 1152 out
    fn = lambda impl: upfirdn2d(x, F4, up=2, padding=(2, 1, 2, 1), gain=4, impl=impl)  # noqa: E731
    run_auto_twice("upfirdn2d", fn, "tensors of 2\\^31 elements or more are not supported")


def test_smooth_activations_use_the_reference_without_a_warning():
    kernel = install()
    x = torch.randn(2, 4, 3, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = bias_act(x, torch.randn(4), act="tanh")
    assert out.shape == x.shape and kernel.compiles == []


def test_strict_mode_raises_instead_of_falling_back(monkeypatch):
    install({"compile": RuntimeError("broken toolkit")})
    monkeypatch.setenv("ZSGM_OPS_STRICT", "1")
    x = torch.randn(2, 4, 3, 3)
    with pytest.raises(OpUnavailableError, match=r"broken toolkit \(ZSGM_OPS_STRICT=1 forbids"):
        bias_act(x, act="lrelu")


def test_readiness_is_cached_per_device_dtype_and_template(monkeypatch):
    kernel = EmulatedKernel()
    seen = []
    monkeypatch.setattr(kernel, "_prepare", lambda *key: seen.append(key) or None)
    for _ in range(3):
        for dev in ("cuda:0", "cuda:1"):
            for dtype in (torch.float32, torch.float16):
                assert kernel._ready("upfirdn2d", torch.device(dev), dtype, "poly") is None
        assert kernel._ready("upfirdn2d", torch.device("cuda:0"), torch.float32, "up2_down1_k4") is None
    assert len(seen) == 5 and len(set(seen)) == 5


def test_first_use_inside_cuda_graph_capture_is_not_cached_as_a_failure(monkeypatch):
    kernel = EmulatedKernel()
    monkeypatch.setattr(kernel, "_capturing", lambda device: True)
    reason = kernel._ready("bias_act", torch.device("cpu"), torch.float32)
    assert "inside CUDA graph capture" in reason and kernel._status == {}
    monkeypatch.setattr(kernel, "_capturing", lambda device: False)
    assert kernel._ready("bias_act", torch.device("cpu"), torch.float32) is None


def test_filters_are_converted_once_and_cached_per_filter_and_version():
    kernel = EmulatedKernel()
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    a = kernel.device_filter(f, torch.device("cpu"), torch.float64)
    assert a.dtype == torch.float64 and kernel.device_filter(f, torch.device("cpu"), torch.float64) is a
    assert kernel.device_filter(f, torch.device("cpu"), torch.float32) is f  # already right: no copy
    f.mul_(2)  # in-place edit: a new version
    b = kernel.device_filter(f, torch.device("cpu"), torch.float64)
    assert b is not a and torch.equal(b, f.double())
    del f
    assert kernel._filters == {}  # dropped with the filter


class FakeTorchStream:
    def __init__(self, handle):
        self.cuda_stream = handle


def test_launch_stream_is_torchs_current_stream_via_from_external(monkeypatch):
    kernel = EmulatedKernel()
    made = []

    class Stream:
        @staticmethod
        def from_external(obj):
            made.append(obj.cuda_stream)
            return ("cupy stream", obj.cuda_stream)

    class Device:
        def __init__(self, i):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    class ExternalStream:  # deprecated in CuPy 14: must not be used
        def __init__(self, *a, **k):
            raise AssertionError("ExternalStream used")

    cuda = type("cuda", (), {"Stream": Stream, "Device": Device, "ExternalStream": ExternalStream})
    kernel.cp = type("cupy", (), {"cuda": cuda})
    current = {"h": 111}
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: FakeTorchStream(current["h"]))
    dev = torch.device("cuda", 0)
    s1 = cb.CupyKernel._stream(kernel, dev)
    assert s1 == ("cupy stream", 111) and cb.CupyKernel._stream(kernel, dev) is s1
    current["h"] = 222  # inside `with torch.cuda.stream(side)`: the launch follows
    assert cb.CupyKernel._stream(kernel, dev) == ("cupy stream", 222) and made == [111, 222]
    del Stream.from_external  # CuPy < 14: a plain handle object with .ptr (what RawKernel reads)
    current["h"] = 333
    assert cb.CupyKernel._stream(kernel, dev).ptr == 333


def test_backend_source_uses_no_deprecated_cupy_api():
    import inspect

    assert "ExternalStream(" not in inspect.getsource(cb).replace("``ExternalStream``", "")


def test_upfirdn2d_reason_is_memoised_per_call_signature(monkeypatch):
    kernel = EmulatedKernel()
    calls = []
    inner = kernel._upfirdn2d_reason
    monkeypatch.setattr(kernel, "_upfirdn2d_reason", lambda *a: calls.append(a) or inner(*a))
    x = torch.randn(2, 3, 8, 8)
    for _ in range(3):
        assert kernel.upfirdn2d_reason(x, F4, 2, 1, [2, 1, 2, 1], 4.0) is None
    assert kernel.upfirdn2d_reason(torch.randn(2, 3, 9, 9), F4, 2, 1, [2, 1, 2, 1], 4.0) is None
    assert len(calls) == 2
    monkeypatch.setattr(kernel, "_capturing", lambda device: True)
    fresh = EmulatedKernel()
    monkeypatch.setattr(fresh, "_capturing", lambda device: True)
    assert "graph capture" in fresh.upfirdn2d_reason(x, F4, 2, 1, (2, 1, 2, 1), 4.0)
    assert fresh._reasons == {}  # not remembered: the next call outside capture checks again
