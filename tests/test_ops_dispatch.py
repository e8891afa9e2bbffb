"""Dispatch (OPS.md 5): auto/cuda/ref selection, once-only fallback warnings with the reason, strict mode,
lazy loaders, plugging in a CUDA implementation, and invalid impl names. CUDA inputs are stood in for by a
tensor subclass that reports ``is_cuda``, so every path runs on CPU."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch

from zsgm.ops import (
    OpFallbackWarning,
    OpUnavailableError,
    bias_act,
    downsample2d,
    filter2d,
    modulated_conv2d,
    register_cuda_impl,
    select_impl,
    setup_filter,
    upfirdn2d,
    upsample2d,
)
from zsgm.ops import dispatch


class FakeCuda(torch.Tensor):
    """A CPU tensor that claims to live on a CUDA device (what the dispatch looks at)."""

    @property
    def is_cuda(self):
        return True


def fake_cuda(*shape):
    return torch.randn(*shape, dtype=torch.float64).as_subclass(FakeCuda)


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch):
    """Empty registry and warning state for each test (the real CuPy loaders are never called here)."""
    monkeypatch.setattr(dispatch, "_loaders", {})
    monkeypatch.setattr(dispatch, "_loaded", {})
    monkeypatch.setattr(dispatch, "_warned", set())
    monkeypatch.delenv(dispatch.STRICT_ENV, raising=False)


class Loader:
    """Counts its calls; returns ``impl`` or raises ``error``."""

    def __init__(self, impl=None, error=None):
        self.calls, self.impl, self.error = 0, impl, error

    def __call__(self):
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.impl


F4 = setup_filter([1, 3, 3, 1]).double()


def all_ops(x, impl):
    """Every public op on x [2, 3, 8, 8] with the given impl."""
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    s = torch.ones(2, 3, dtype=torch.float64)
    return [bias_act(x, torch.zeros(3, dtype=torch.float64), act="lrelu", impl=impl),
            upfirdn2d(x, F4, up=2, padding=(2, 1, 2, 1), impl=impl), upsample2d(x, F4, impl=impl),
            downsample2d(x, F4, impl=impl), filter2d(x, F4, impl=impl),
            modulated_conv2d(x, w, s, up=2, resample_filter=F4, impl=impl)]


def test_auto_on_cpu_uses_the_reference_silently_and_never_loads_a_backend():
    loader = Loader(error=ImportError("must not be asked"))
    register_cuda_impl("bias_act", loader)
    register_cuda_impl("upfirdn2d", loader)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        assert select_impl("bias_act", "auto", x) == "ref"
        auto = all_ops(x, "auto")
    for a, r in zip(auto, all_ops(x, "ref")):
        torch.testing.assert_close(a, r)
    assert loader.calls == 0


def test_impl_cuda_on_cpu_raises_a_clear_runtime_error_for_every_op():
    register_cuda_impl("bias_act", Loader(impl=lambda *a, **k: None))  # even with a backend registered
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="bias_act: impl='cuda' needs every input on a CUDA device; found cpu"):
        select_impl("bias_act", "cuda", x)
    for call in (lambda: bias_act(x, impl="cuda"), lambda: upfirdn2d(x, F4, impl="cuda"),
                 lambda: upsample2d(x, F4, impl="cuda"), lambda: downsample2d(x, F4, impl="cuda"),
                 lambda: filter2d(x, F4, impl="cuda"),
                 lambda: modulated_conv2d(x, torch.randn(4, 3, 3, 3, dtype=torch.float64),
                                          torch.ones(2, 3, dtype=torch.float64), up=2, resample_filter=F4,
                                          impl="cuda")):
        with pytest.raises(OpUnavailableError, match="impl='cuda' needs every input on a CUDA device"):
            call()
    assert issubclass(OpUnavailableError, RuntimeError)


def test_impl_cuda_on_cuda_without_backend_raises_with_the_reason():
    x = fake_cuda(2, 3, 4, 4)
    with pytest.raises(OpUnavailableError, match="no CUDA implementation of 'upfirdn2d' is registered"):
        upfirdn2d(x, F4, impl="cuda")
    register_cuda_impl("upfirdn2d", Loader(error=ImportError("No module named 'cupy'")))
    with pytest.raises(OpUnavailableError, match="failed to load: ImportError: No module named 'cupy'"):
        select_impl("upfirdn2d", "cuda", x)


@pytest.mark.parametrize("bad", ["gpu", "CUDA", "", None, 1])
def test_invalid_impl_names(bad):
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    expected = f"impl must be one of 'auto', 'cuda', 'ref'; got {bad!r}"
    with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        select_impl("bias_act", bad, x)
    w, s = torch.randn(4, 3, 3, 3, dtype=torch.float64), torch.ones(2, 3, dtype=torch.float64)
    for op, call in [("bias_act", lambda: bias_act(x, impl=bad)), ("upfirdn2d", lambda: upfirdn2d(x, F4, impl=bad)),
                     ("upfirdn2d", lambda: filter2d(x, F4, impl=bad)),
                     ("modulated_conv2d", lambda: modulated_conv2d(x, w, s, impl=bad))]:  # up=1: no blur, still checked
        with pytest.raises(ValueError, match=f"{op}: impl must be one of"):
            call()


def test_auto_on_cuda_falls_back_with_one_warning_per_op_naming_the_reason():
    loader = Loader(error=ImportError("libnvrtc.so not found"))
    register_cuda_impl("bias_act", loader)
    x = fake_cuda(2, 3, 4, 4)
    with pytest.warns(OpFallbackWarning, match=r"bias_act on CUDA tensors falls back to the slow torch reference: "
                                               r"the CUDA implementation of 'bias_act' failed to load: "
                                               r"ImportError: libnvrtc.so not found"):
        y = bias_act(x, act="lrelu")
    plain = torch.Tensor.as_subclass
    torch.testing.assert_close(plain(y, torch.Tensor), bias_act(plain(x, torch.Tensor), act="lrelu", impl="ref"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select_impl("bias_act", "auto", x) == "ref"  # warned once already: silent now
        bias_act(x)
    assert loader.calls == 1  # the failure is cached, not retried on every call
    with pytest.warns(OpFallbackWarning, match="no CUDA implementation of 'upfirdn2d' is registered"):
        assert select_impl("upfirdn2d", "auto", x) == "ref"  # another op warns once on its own


@pytest.mark.parametrize("value", ["1", "true", "ON"])
def test_strict_env_makes_auto_raise_on_cuda_inputs_only(monkeypatch, value):
    monkeypatch.setenv("ZSGM_OPS_STRICT", value)
    register_cuda_impl("bias_act", Loader(error=ImportError("no cupy here")))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(OpUnavailableError, match=r"bias_act: .*no cupy here \(ZSGM_OPS_STRICT=1 forbids "
                                                     r"falling back"):
            bias_act(fake_cuda(2, 3))
        assert select_impl("bias_act", "auto", torch.randn(2, 3)) == "ref"  # CPU inputs are not a fallback


def test_strict_env_off_and_invalid(monkeypatch):
    x = fake_cuda(2, 3)
    monkeypatch.setenv("ZSGM_OPS_STRICT", "0")
    with pytest.warns(OpFallbackWarning):
        assert select_impl("bias_act", "auto", x) == "ref"
    monkeypatch.setenv("ZSGM_OPS_STRICT", "maybe")
    with pytest.raises(ValueError, match="ZSGM_OPS_STRICT='maybe': expected one of '1', 'true'"):
        select_impl("upfirdn2d", "auto", x)


def test_registered_cuda_impl_is_loaded_lazily_once_and_called_with_the_op_arguments():
    seen = []

    def fake_bias_act(x, b=None, **kwargs):
        seen.append((x, b, kwargs))
        return torch.zeros(x.shape)

    loader = Loader(impl=fake_bias_act)
    register_cuda_impl("bias_act", loader)
    assert loader.calls == 0  # nothing loads at registration
    x, b = fake_cuda(2, 3, 4, 4), fake_cuda(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = bias_act(x, b, act="lrelu", clamp=256.0)  # auto picks the backend for CUDA inputs
        bias_act(x, b, act="linear", impl="cuda")
    assert torch.equal(out, torch.zeros(2, 3, 4, 4)) and loader.calls == 1
    assert seen[0][0] is x and seen[0][1] is b
    assert seen[0][2] == dict(dim=1, act="lrelu", alpha=None, gain=None, clamp=256.0)
    assert select_impl("bias_act", "auto", x, None) == "cuda"  # None inputs (no bias) are ignored
    assert select_impl("bias_act", "auto", x, torch.randn(3)) == "ref"  # mixed devices: not a CUDA call


def test_reregistering_replaces_a_failed_backend():
    x = fake_cuda(2, 3)
    register_cuda_impl("bias_act", Loader(error=RuntimeError("broken build")))
    with pytest.raises(OpUnavailableError, match="broken build"):
        select_impl("bias_act", "cuda", x)
    register_cuda_impl("bias_act", Loader(impl=lambda *a, **k: "kernel"))
    assert select_impl("bias_act", "cuda", x) == "cuda"
    with pytest.raises(TypeError, match="loader must be callable"):
        register_cuda_impl("bias_act", "not a function")
    with pytest.raises(ValueError, match="op must be a non-empty string"):
        register_cuda_impl("", Loader())


def test_importing_zsgm_ops_imports_no_cuda_toolchain():
    code = "import sys, zsgm.ops; print(sorted(m for m in ('cupy', 'cupyx') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
