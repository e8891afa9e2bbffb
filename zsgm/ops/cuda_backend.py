"""CuPy RawKernel backend for ``bias_act`` and ``upfirdn2d`` (CUDA tensors only).

Rules followed (OPS.md 4): sources from ``cuda/*.cu`` compiled lazily by NVRTC on first use (never at
import), one module per (source, device), fixed ``extern "C"`` names; every output allocated by torch;
launches on torch's current stream; scalars passed as explicit numpy int32/int64/float32/float64.
:func:`register` only records loaders with :mod:`zsgm.ops.dispatch`; nothing imports CuPy until a CUDA
tensor asks for a kernel.
"""

from __future__ import annotations

import re
import threading

import numpy as np
import torch

from zsgm.ops.bias_act import KERNEL_ACTS, bias_act_function, bias_act_ref
from zsgm.ops.dispatch import register_cuda_impl
from zsgm.ops.upfirdn2d import upfirdn2d_function

THREADS = 256
_SUFFIX = {torch.float32: "f32", torch.float64: "f64", torch.float16: "f16"}
_ACT_CODE = {"linear": 0, "relu": 1, "lrelu": 2}


def kernel_text(name: str) -> str:
    """Source of ``cuda/<name>`` with local ``#include "x.cuh"`` lines inlined (NVRTC has no file includes)."""
    from zsgm._cuda import kernel_source

    text = kernel_source(name)
    return re.sub(r'#include "([^"]+\.cuh)"', lambda m: kernel_source(m.group(1)).replace("#pragma once", ""),
                  text)


class CupyKernel:
    """The kernel interfaces ``BiasActKernel`` and ``UpFirDn2dKernel`` (zsgm.ops.bias_act / .upfirdn2d) in CuPy."""

    def __init__(self):
        import cupy  # imported here: a missing or broken CuPy makes the loader fail, not zsgm's import

        self.cp = cupy
        self._modules: dict[tuple[str, int], object] = {}
        self._lock = threading.Lock()
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("CuPy sees no CUDA device")

    def _function(self, source: str, name: str, device: torch.device):
        key = (source, device.index or 0)
        with self._lock:
            module = self._modules.get(key)
            if module is None:
                with self.cp.cuda.Device(key[1]):
                    module = self.cp.RawModule(code=kernel_text(source), options=("-std=c++17",))
                self._modules[key] = module
        return module.get_function(name)

    def _launch(self, fn, device: torch.device, n: int, args: tuple) -> None:
        blocks = max(1, min((n + THREADS - 1) // THREADS, 65535 * 8))
        stream = self.cp.cuda.ExternalStream(torch.cuda.current_stream(device).cuda_stream, device.index or 0)
        with self.cp.cuda.Device(device.index or 0):
            fn((blocks,), (THREADS,), args, stream=stream)

    @staticmethod
    def _scalar(dtype: torch.dtype, value: float):
        return np.float64(value) if dtype == torch.float64 else np.float32(value)

    def _check(self, *tensors: torch.Tensor) -> None:
        for t in tensors:
            if not t.is_cuda or t.dtype not in _SUFFIX:
                raise ValueError(f"CUDA kernels need float16/32/64 CUDA tensors; got {t.dtype} on {t.device}")

    # --------------------------------------------------------------------------- bias_act

    def bias_act(self, x, b, dim, act, alpha, gain, clamp):
        self._check(x)
        x = x if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last) else x.contiguous()
        y = torch.empty_like(x)
        n = x.numel()
        if n == 0:
            return y
        bias = b.to(x.dtype).contiguous() if b is not None else x  # any valid pointer when absent
        fn = self._function("bias_act.cu", f"zsgm_bias_act_forward_{_SUFFIX[x.dtype]}", x.device)
        s = lambda v: self._scalar(x.dtype, v)  # noqa: E731
        self._launch(fn, x.device, n, (x.data_ptr(), bias.data_ptr(), y.data_ptr(), np.int64(n),
                                       np.int64(x.stride(dim)), np.int32(x.shape[dim]), np.int32(b is not None),
                                       np.int32(_ACT_CODE[act]), s(alpha), s(gain), s(-1.0 if clamp is None else clamp)))
        return y

    def bias_act_grad(self, dy, y, dim, act, alpha, gain, clamp):
        self._check(dy, y)
        dy = dy.contiguous(memory_format=torch.channels_last) if y.is_contiguous(
            memory_format=torch.channels_last) and not y.is_contiguous() else dy.contiguous()
        dx = torch.empty_like(y)
        n = y.numel()
        if n == 0:
            return dx
        fn = self._function("bias_act.cu", f"zsgm_bias_act_grad_{_SUFFIX[y.dtype]}", y.device)
        s = lambda v: self._scalar(y.dtype, v)  # noqa: E731
        self._launch(fn, y.device, n, (dy.data_ptr(), y.data_ptr(), dx.data_ptr(), np.int64(n),
                                       np.int32(_ACT_CODE[act]), s(alpha), s(gain), s(-1.0 if clamp is None else clamp)))
        return dx

    # --------------------------------------------------------------------------- upfirdn2d

    def upfirdn2d(self, x, f, up, down, padding, flip_filter, gain):
        self._check(x)
        (upx, upy), (downx, downy), (x0, x1, y0, y1) = up, down, padding
        compute = torch.float64 if x.dtype == torch.float64 else torch.float32
        f = f.to(device=x.device, dtype=compute)
        if f.ndim == 1:
            f = torch.outer(f, f)  # separable: one 2-D pass; gain ** (1/2) per axis = gain overall
        f = (f * gain).contiguous()
        n, c, h, w = x.shape
        fh, fw = f.shape
        out_h = (h * upy + y0 + y1 - fh + downy) // downy
        out_w = (w * upx + x0 + x1 - fw + downx) // downx
        if out_h <= 0 or out_w <= 0:
            raise ValueError(f"upfirdn2d: empty output {out_h}x{out_w} for input {h}x{w}")
        xc = x.contiguous()
        y = torch.empty((n, c, out_h, out_w), dtype=x.dtype, device=x.device)
        total = y.numel()
        if total >= 2 ** 31 or xc.numel() >= 2 ** 31:
            raise ValueError("upfirdn2d: tensors of 2^31 elements or more are not supported by the kernel")
        fn = self._function("upfirdn2d.cu", f"zsgm_upfirdn2d_generic_{_SUFFIX[x.dtype]}", x.device)
        i32 = np.int32
        self._launch(fn, x.device, total, (xc.data_ptr(), f.data_ptr(), y.data_ptr(), i32(n * c), i32(h), i32(w),
                                           i32(out_h), i32(out_w), i32(upx), i32(upy), i32(downx), i32(downy),
                                           i32(x0), i32(y0), i32(fw), i32(fh), i32(bool(flip_filter))))
        return y


_KERNEL: dict[str, CupyKernel] = {}


def get_kernel() -> CupyKernel:
    """The process-wide CuPy kernel object (created, and CuPy imported, on first call)."""
    if "k" not in _KERNEL:
        _KERNEL["k"] = CupyKernel()
    return _KERNEL["k"]


def _load_bias_act():
    kernel = get_kernel()

    def run(x, b=None, *, dim=1, act="linear", alpha=None, gain=None, clamp=None):
        if act not in KERNEL_ACTS:  # smooth activations: the reference is exact and differentiable
            return bias_act_ref(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
        return bias_act_function(kernel, x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)

    return run


def _load_upfirdn2d():
    kernel = get_kernel()

    def run(x, f, *, up=1, down=1, padding=0, flip_filter=False, gain=1.0):
        return upfirdn2d_function(kernel, x, f, up=up, down=down, padding=padding, flip_filter=flip_filter,
                                  gain=gain)

    return run


def register() -> None:
    """Record the CuPy loaders with the dispatch (no CuPy import, no compilation)."""
    register_cuda_impl("bias_act", _load_bias_act)
    register_cuda_impl("upfirdn2d", _load_upfirdn2d)
