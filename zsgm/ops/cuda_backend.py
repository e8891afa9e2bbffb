"""CuPy RawKernel backend for ``bias_act`` and ``upfirdn2d`` (CUDA tensors only), safe by default.

Rules followed (OPS.md 4):

- Sources ``cuda/*.cu`` are compiled by NVRTC lazily, **inside the fallback**: the first call that needs a
  kernel for a (op, device, dtype, template) compiles its module once per (source, device) and runs a
  check of that kernel against the torch reference on a small input, once per process. A compile, NVRTC,
  load or check failure is a *reason*: ``impl="auto"`` warns once (naming the op and the reason) and runs
  the reference for that op/device/dtype from then on; ``impl="cuda"`` raises it
  (:class:`zsgm.ops.OpUnavailableError`). Nothing is compiled at import, nothing recompiled per call.
- Inputs the kernels do not take go to the reference the same way: dtypes other than float16/32/64
  (bfloat16), ``gain <= 0`` or ``alpha < 0`` for bias_act, upfirdn2d tensors of 2^31 elements or more.
- Outputs allocated by torch; launches on torch's current stream of the tensor's device, wrapped with
  ``cupy.cuda.Stream.from_external`` (CuPy >= 14; never the deprecated ``ExternalStream``) and cached per
  (device, stream); modules and checks cached per tensor device.
- A filter that lives elsewhere (CPU) or in another dtype is moved to the device once and cached per
  filter tensor (no host-to-device copy per call, so CUDA graph capture works after one warm-up call).
- Scalars passed as explicit numpy int32/uint32/uint64/float32/float64 (CuPy does not check them against
  the kernel signature; ``zsgm.ops.cuda_emulation`` does, on CPU).

:func:`register` only records loaders with :mod:`zsgm.ops.dispatch`; nothing imports CuPy until a CUDA
tensor asks for a kernel. The device plumbing (``_compile``, ``_launch``, ``_stream``) is three methods so
that :mod:`zsgm.ops.cuda_emulation` can run the same host code on CPU against a numpy port of the kernels.
"""

from __future__ import annotations

import math
import re
import threading
import weakref
from pathlib import Path

import numpy as np
import torch

from zsgm.ops.bias_act import KERNEL_ACTS, TorchBiasActKernel, bias_act_function, bias_act_ref, resolve_act
from zsgm.ops.dispatch import register_cuda_impl
from zsgm.ops.upfirdn2d import (
    check_upfirdn2d_args,
    filter_size,
    out_size,
    upfirdn2d_adjoint_params,
    upfirdn2d_function,
    upfirdn2d_ref,
)

THREADS = 256
MAX_BLOCKS = 132 * 32  # enough resident blocks for an H100/H200; the grid-stride loop covers the rest
INDEX32_LIMIT = 2 ** 31
SUFFIX = {torch.float32: "f32", torch.float64: "f64", torch.float16: "f16"}
ACT_CODE = {"linear": 0, "relu": 1, "lrelu": 2}
SOURCES = {"bias_act": "bias_act.cu", "upfirdn2d": "upfirdn2d.cu"}
# upfirdn2d templates: stem -> (up, down, taps) fixed at compile time; "poly" takes everything at run time
UPFIRDN_STEMS = {"up2_down1_k4": (2, 1, 4), "up1_down1_k4": (1, 1, 4), "up1_down2_k4": (1, 2, 4)}
UPFIRDN_ROWS = {"up1_down1_k4": 4}  # output rows per thread (the blur kernel reuses loaded input rows)
# self-check tolerances against the float64 reference (loose enough for rounding, tight enough for indexing)
CHECK_TOL = {torch.float64: dict(rtol=1e-9, atol=1e-9), torch.float32: dict(rtol=1e-4, atol=1e-4),
             torch.float16: dict(rtol=1e-2, atol=2e-2)}


def kernel_text(name: str) -> str:
    """Source of ``cuda/<name>`` with local ``#include "x.cuh"`` lines inlined (NVRTC has no file includes).

    Reads the installed ``zsgm._cuda`` package, or the checkout's ``cuda/`` folder when zsgm runs from a
    source tree on ``PYTHONPATH`` without being installed.
    """
    def read(n: str) -> str:
        try:
            from zsgm._cuda import kernel_source

            return kernel_source(n)
        except ImportError:
            return (Path(__file__).resolve().parents[2] / "cuda" / n).read_text(encoding="utf-8")

    return re.sub(r'#include "([^"]+\.cuh)"', lambda m: read(m.group(1)).replace("#pragma once", ""), read(name))


def fastdiv_params(d: int) -> tuple[int, int]:
    """Multiplier ``m`` and shift ``s`` with ``n // d == (n * m) >> s`` for every ``0 <= n < 2^31``.

    Round-up reciprocal: ``l = ceil(log2 d)``, ``s = 31 + l``, ``m = ceil(2^s / d)`` (so ``m <= 2^32`` and
    ``n * m < 2^63`` fits the kernel's unsigned 64-bit product). Exact because the rounding error
    ``m * d - 2^s < d <= 2^l`` stays below ``2^s / n``.
    """
    if not 1 <= d < INDEX32_LIMIT:
        raise ValueError(f"fastdiv_params: divisor must be in [1, 2^31); got {d}")
    l = (d - 1).bit_length()  # ceil(log2 d); 0 for d = 1
    s = 31 + l
    return -(-(1 << s) // d), s


def compute_dtype(x: torch.Tensor, f: torch.Tensor | None) -> torch.dtype:
    """The dtype a kernel computes ``x`` in: float32 for a separable (1-D) filter on float16 input (the two passes
    keep their intermediate in float32), else ``x``'s."""
    return torch.float32 if f is not None and f.ndim == 1 and x.dtype == torch.float16 else x.dtype


def upfirdn_stem(up: tuple[int, int], down: tuple[int, int], f: torch.Tensor) -> str:
    """The compiled template an upfirdn2d call runs with (``"poly"`` unless a specialisation fits)."""
    fw, fh = filter_size(f)
    if f.ndim == 2 and up[0] == up[1] and down[0] == down[1] and fw == fh:
        for stem, (u, d, k) in UPFIRDN_STEMS.items():
            if (up[0], down[0], fw) == (u, d, k):
                return stem
    return "poly"


class _StreamHandle:
    """What a RawKernel launch reads from ``stream=`` (its ``.ptr``), for CuPy < 14 without ``from_external``."""

    def __init__(self, ptr: int):
        self.ptr = ptr


class CupyKernel:
    """The kernel interfaces ``BiasActKernel`` and ``UpFirDn2dKernel`` (zsgm.ops.bias_act / .upfirdn2d) in CuPy,
    plus :meth:`bias_act_reason` / :meth:`upfirdn2d_reason`, which say why a call must use the reference."""

    def __init__(self):
        self._modules: dict[tuple[str, int], object] = {}
        self._functions: dict[tuple[str, int], object] = {}
        self._status: dict[tuple, str | None] = {}  # (op, device, dtype, stem) -> None (ready) or the reason
        self._streams: dict[tuple[int, int], object] = {}
        self._filters: dict[int, tuple] = {}  # id(filter) -> (weakref, {(device, dtype, version): copy})
        self._ones: dict[tuple, torch.Tensor] = {}
        self._reasons: dict[tuple, str | None] = {}  # memoised upfirdn2d_reason per call signature
        self._lock = threading.RLock()
        self._init_device()

    # ------------------------------------------------------------------ device plumbing (emulated in tests)

    def _init_device(self) -> None:
        import cupy  # imported here: a missing or broken CuPy makes the loader fail, not zsgm's import

        self.cp = cupy
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("CuPy sees no CUDA device")

    def _compile(self, source: str, device: torch.device, names: list[str]) -> dict[str, object]:
        """Compile ``cuda/<source>`` for ``device`` (once per source and device); return the named functions."""
        key = (source, _index(device))
        with self.cp.cuda.Device(key[1]):
            module = self._modules.get(key)
            if module is None:
                module = self.cp.RawModule(code=kernel_text(source), options=("-std=c++17",))
                self._modules[key] = module
            return {n: module.get_function(n) for n in names}  # get_function compiles + loads (may raise)

    def _stream(self, device: torch.device):
        """Torch's current stream on ``device`` as CuPy sees it (cached per device and stream)."""
        ts = torch.cuda.current_stream(device)
        key = (_index(device), ts.cuda_stream)
        stream = self._streams.get(key)
        if stream is None:
            from_external = getattr(self.cp.cuda.Stream, "from_external", None)
            if from_external is not None:  # CuPy >= 14: the CUDA stream protocol (torch streams implement it)
                with self.cp.cuda.Device(key[0]):
                    stream = from_external(ts)
            else:
                stream = _StreamHandle(ts.cuda_stream)
            self._streams[key] = stream
        return stream

    def _launch(self, name: str, device: torch.device, grid: tuple, block: tuple, args: tuple) -> None:
        fn = self._functions[(name, _index(device))]
        with self.cp.cuda.Device(_index(device)):
            fn(grid, block, args, stream=self._stream(device))

    def _capturing(self, device: torch.device) -> bool:
        return device.type == "cuda" and torch.cuda.is_current_stream_capturing()

    # ------------------------------------------------------------------ readiness: compile + check, once

    def _ready(self, op: str, device: torch.device, dtype: torch.dtype, stem: str = "") -> str | None:
        """None when the kernels for (op, device, dtype, stem) compiled and passed their check, else the reason."""
        key = (op, _index(device), dtype, stem)
        if key in self._status:
            return self._status[key]
        if self._capturing(device):  # the check synchronises: not allowed inside CUDA graph capture
            return (f"first use on {device} ({dtype}) inside CUDA graph capture; run the model once before "
                    f"capturing")
        with self._lock:
            if key not in self._status:
                self._status[key] = self._prepare(op, device, dtype, stem)
        return self._status[key]

    def _prepare(self, op: str, device: torch.device, dtype: torch.dtype, stem: str) -> str | None:
        sfx = SUFFIX[dtype]
        if op == "bias_act":
            names = [f"zsgm_bias_act_{m}{b}_{sfx}" for m in ("forward", "grad") for b in ("32", "64")]
        else:
            names = [f"zsgm_upfirdn2d_{stem}_{sfx}"]
        try:
            fns = self._compile(SOURCES[op], device, names)
        except Exception as exc:  # noqa: BLE001 - NVRTC/compile/load errors of any CuPy version
            return f"compiling cuda/{SOURCES[op]} for {device} failed: {_one_line(exc)}"
        for n, fn in fns.items():
            self._functions[(n, _index(device))] = fn
        try:
            problem = self._check_bias_act(device, dtype) if op == "bias_act" else \
                self._check_upfirdn2d(device, dtype, stem)
        except Exception as exc:  # noqa: BLE001 - a launch failure is a failed check
            problem = _one_line(exc)
        if problem is not None:
            what = f"zsgm_upfirdn2d_{stem}_{sfx}" if op == "upfirdn2d" else f"bias_act {sfx} kernels"
            return f"{what} on {device} failed the check against the reference: {problem}"
        return None

    def _check_bias_act(self, device: torch.device, dtype: torch.dtype) -> str | None:
        g = torch.Generator().manual_seed(1234)
        x64 = torch.randn(2, 5, 3, 4, generator=g, dtype=torch.float64)
        x64 = x64 + 0.1 * x64.sign()  # off the kinks
        b64 = 0.3 * torch.randn(5, generator=g, dtype=torch.float64)
        dy64 = torch.randn(x64.shape, generator=g, dtype=torch.float64)
        emu = TorchBiasActKernel()
        for act, clamp, cl in (("lrelu", 1.5, False), ("relu", None, True), ("linear", 0.8, False)):
            x = x64.to(device=device, dtype=dtype)
            if cl:
                x = x.to(memory_format=torch.channels_last)
            b, dy = b64.to(device=device, dtype=dtype), dy64.to(device=device, dtype=dtype)
            alpha, gain = resolve_act(act, None, None)
            y = self._bias_act(x, b, 1, act, alpha, gain, clamp)
            want = bias_act_ref(x.double(), b.double(), act=act, clamp=clamp)
            if not torch.allclose(y.double(), want, **CHECK_TOL[dtype]):
                return f"forward {act} clamp={clamp} channels_last={cl} differs"
            dx = self._bias_act_grad(dy, y, 1, act, alpha, gain, clamp)
            want = emu.bias_act_grad(dy.double(), y.double(), 1, act, alpha, gain, clamp)
            if not torch.allclose(dx.double(), want, **CHECK_TOL[dtype]):
                return f"grad {act} clamp={clamp} channels_last={cl} differs"
        return None

    def _check_upfirdn2d(self, device: torch.device, dtype: torch.dtype, stem: str) -> str | None:
        g = torch.Generator().manual_seed(4321)
        if stem == "poly":
            cases = [((2, 1), (1, 2), (1, 2, 0, -1), (2, 3)), ((1, 3), (2, 1), (-1, 0, 2, 1), (3, 2))]
        else:
            u, d, k = UPFIRDN_STEMS[stem]
            pads = {(2, 1): (2, 1, 2, 1), (1, 1): (1, 2, 2, 1), (1, 2): (1, 1, 2, 1)}[(u, d)]
            cases = [((u, u), (d, d), pads, (k, k))]
        for up, down, pad, (fh, fw) in cases:
            x = torch.randn(2, 3, 7, 9, generator=g, dtype=torch.float64)
            f = torch.randn(fh, fw, generator=g, dtype=torch.float32)  # asymmetric: catches flips and swaps
            for flip in (False, True):
                xd = x.to(device=device, dtype=dtype)
                y = self._upfirdn2d(xd, f, up, down, pad, flip, 2.0, stem)
                want = upfirdn2d_ref(xd.double(), f.double(), up=up, down=down, padding=pad, flip_filter=flip,
                                     gain=2.0)
                if y.shape != want.shape or not torch.allclose(y.double(), want, **CHECK_TOL[dtype]):
                    return f"up={up} down={down} padding={pad} flip={flip} differs"
        return None

    # ------------------------------------------------------------------ why a call must use the reference

    def bias_act_reason(self, x: torch.Tensor, b: torch.Tensor | None, act: str, alpha: float | None,
                        gain: float | None, clamp: float | None) -> str | None:
        """None when the kernels can run this call; else why not (stable text: it keys the warn-once)."""
        if act not in KERNEL_ACTS:
            return None  # smooth activations run the reference directly (not a fallback)
        if x.dtype not in SUFFIX:
            return f"dtype {x.dtype} is not supported by the kernels (float16/32/64 only)"
        alpha, gain = resolve_act(act, alpha, gain)
        if not gain > 0 or not alpha >= 0:
            return "the kernels need gain > 0 and alpha >= 0 (the output's sign decides the derivative)"
        if b is not None and b.device != x.device:
            return "bias on another device than x"
        return self._ready("bias_act", x.device, x.dtype)

    def upfirdn2d_reason(self, x: torch.Tensor, f: torch.Tensor | None, up, down, padding, gain) -> str | None:
        """None when the kernels can run this call (forward and backward); else why not.

        Memoised per call signature (device, dtype, shapes, up/down/padding), so the per-call host cost is one
        dictionary lookup once a shape has been seen."""
        key = (x.device, x.dtype, x.shape, None if f is None else (f.shape, f.dtype), _hashable(up),
               _hashable(down), _hashable(padding), gain >= 0)
        try:
            return self._reasons[key]
        except KeyError:
            pass
        reason = self._upfirdn2d_reason(x, f, up, down, padding, gain)
        if reason is None or "graph capture" not in reason:  # capture is transient: ask again next time
            if len(self._reasons) > 4096:
                self._reasons.clear()
            self._reasons[key] = reason
        return reason

    def _upfirdn2d_reason(self, x, f, up, down, padding, gain) -> str | None:
        if x.dtype not in SUFFIX:
            return f"dtype {x.dtype} is not supported by the kernels (float16/32/64 only)"
        up2, down2, pad4 = check_upfirdn2d_args(x, f, up, down, padding)
        fw, fh = filter_size(f)
        n, c, h, w = x.shape
        out_h = out_size(h, up2[1], down2[1], pad4[2], pad4[3], fh)
        out_w = out_size(w, up2[0], down2[0], pad4[0], pad4[1], fw)
        if max(x.numel(), n * c * out_h * out_w, n * c * h * out_w, n * c * out_h * w) >= INDEX32_LIMIT:
            return "tensors of 2^31 elements or more are not supported by the kernels"
        if f is not None and f.ndim == 1 and not gain >= 0:
            return "a separable filter needs gain >= 0 (sqrt(gain) per pass)"
        if f is not None and not torch.is_floating_point(f):
            return f"filter dtype {f.dtype} is not floating point"
        f_probe = f if f is not None else torch.ones(1, 1)
        adj = upfirdn2d_adjoint_params((h, w), (out_h, out_w), f, up=up2, down=down2, padding=pad4)
        dtype = compute_dtype(x, f_probe)
        for stem in {upfirdn_stem(up2, down2, f_probe), upfirdn_stem(adj["up"], adj["down"], f_probe)}:
            reason = self._ready("upfirdn2d", x.device, dtype, stem)
            if reason is not None:
                return reason
        return None

    # ------------------------------------------------------------------ bias_act

    def bias_act(self, x, b, dim, act, alpha, gain, clamp):
        reason = self._ready("bias_act", x.device, x.dtype)
        if reason is not None:
            raise RuntimeError(f"bias_act kernel unavailable: {reason}")
        return self._bias_act(x, b, dim, act, alpha, gain, clamp)

    def bias_act_grad(self, dy, y, dim, act, alpha, gain, clamp):
        reason = self._ready("bias_act", y.device, y.dtype)
        if reason is not None:
            raise RuntimeError(f"bias_act kernel unavailable: {reason}")
        return self._bias_act_grad(dy, y, dim, act, alpha, gain, clamp)

    def _bias_act(self, x, b, dim, act, alpha, gain, clamp):
        x = x if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last) else x.contiguous()
        y = torch.empty_like(x)  # same memory format as x
        n = x.numel()
        if n == 0:
            return y
        sfx, s = SUFFIX[x.dtype], _scalar_type(x.dtype)
        bias = b.to(x.dtype).contiguous() if b is not None else x  # any valid pointer when absent
        channels = x.shape[dim]
        stride = x.stride(dim) if channels > 1 else 1  # a size-1 dim's stride is arbitrary (even 0); c is 0
        tail = (np.int32(b is not None), np.int32(ACT_CODE[act]), s(alpha), s(gain),
                s(-1.0 if clamp is None else clamp))
        if n < INDEX32_LIMIT:
            sm, ss = fastdiv_params(stride)
            cm, cs = fastdiv_params(channels)
            args = (x.data_ptr(), bias.data_ptr(), y.data_ptr(), np.int32(n), np.uint32(stride), np.uint64(sm),
                    np.uint32(ss), np.uint32(channels), np.uint64(cm), np.uint32(cs)) + tail
            name = f"zsgm_bias_act_forward32_{sfx}"
        else:
            args = (x.data_ptr(), bias.data_ptr(), y.data_ptr(), np.int64(n), np.int64(stride),
                    np.int64(channels)) + tail
            name = f"zsgm_bias_act_forward64_{sfx}"
        self._launch(name, x.device, (_blocks(n),), (THREADS,), args)
        return y

    def _bias_act_grad(self, dy, y, dim, act, alpha, gain, clamp):
        # dy must share y's layout (the kernel pairs elements by position)
        cl = y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
        dy = dy.contiguous(memory_format=torch.channels_last) if cl else dy.contiguous()
        if not (y.is_contiguous() or cl):
            y = y.contiguous()
        dx = torch.empty_like(y)
        n = y.numel()
        if n == 0:
            return dx
        sfx, s = SUFFIX[y.dtype], _scalar_type(y.dtype)
        idx = np.int32 if n < INDEX32_LIMIT else np.int64
        args = (dy.data_ptr(), y.data_ptr(), dx.data_ptr(), idx(n), np.int32(ACT_CODE[act]), s(alpha), s(gain),
                s(-1.0 if clamp is None else clamp))
        self._launch(f"zsgm_bias_act_grad{'32' if idx is np.int32 else '64'}_{sfx}", y.device, (_blocks(n),),
                     (THREADS,), args)
        return dx

    # ------------------------------------------------------------------ upfirdn2d

    def upfirdn2d(self, x, f, up, down, padding, flip_filter, gain):
        stem = upfirdn_stem(up, down, f)
        reason = self._ready("upfirdn2d", x.device, compute_dtype(x, f), stem)
        if reason is not None:
            raise RuntimeError(f"upfirdn2d kernel unavailable: {reason}")
        return self._upfirdn2d(x, f, up, down, padding, flip_filter, gain, stem)

    def device_filter(self, f: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``f`` as a contiguous ``dtype`` tensor on ``device``: ``f`` itself when it already is, else a copy
        made once and cached per filter tensor (and its version, so in-place edits are seen)."""
        if f.device == device and f.dtype == dtype and f.is_contiguous():
            return f
        entry = self._filters.get(id(f))
        if entry is None or entry[0]() is not f:  # keyed by identity (tensors compare elementwise)
            entry = self._filters[id(f)] = (weakref.ref(f, lambda _, i=id(f): self._filters.pop(i, None)), {})
        per_f = entry[1]
        key = (str(device), dtype, f._version)
        out = per_f.get(key)
        if out is None:
            per_f.clear()  # an older version of this filter is stale
            out = per_f[key] = f.detach().to(device=device, dtype=dtype).contiguous()
        return out

    def _upfirdn2d(self, x, f, up, down, padding, flip_filter, gain, stem):
        (upx, upy), (downx, downy), (x0, x1, y0, y1) = up, down, padding
        ctype = torch.float64 if x.dtype == torch.float64 else torch.float32
        if f is None:
            key = (str(x.device), ctype)
            f = self._ones.get(key)
            if f is None:
                f = self._ones[key] = torch.ones(1, 1, dtype=ctype, device=x.device)
        fd = self.device_filter(f, x.device, ctype)
        n, c, h, w = x.shape
        xc = x.contiguous()
        if fd.ndim == 2:
            return self._pass(xc, fd, (upx, upy), (downx, downy), (x0, y0), (x1, y1), flip_filter, gain, stem)
        g = math.sqrt(gain)  # separable: sqrt(gain) per pass, along x then along y (as the reference)
        cdt = compute_dtype(xc, fd)  # float16 input: the intermediate stays float32 (no rounding between passes)
        t = self._pass(xc.to(cdt), fd[None, :], (upx, 1), (downx, 1), (x0, 0), (x1, 0), flip_filter, g, "poly")
        y = self._pass(t, fd[:, None], (1, upy), (1, downy), (0, y0), (0, y1), flip_filter, g, "poly")
        return y.to(x.dtype)

    def _pass(self, x, f, up, down, pad0, pad1, flip, gain, stem):
        """One launch: x [N, C, H, W] contiguous, f [fh, fw] contiguous (compute dtype) -> new tensor."""
        n, c, h, w = x.shape
        fh, fw = f.shape
        out_h = out_size(h, up[1], down[1], pad0[1], pad1[1], fh)
        out_w = out_size(w, up[0], down[0], pad0[0], pad1[0], fw)
        y = torch.empty((n, c, out_h, out_w), dtype=x.dtype, device=x.device)
        planes = n * c
        if y.numel() == 0 or x.numel() == 0:
            return y.zero_()
        bx = 32 if out_w > 16 else (16 if out_w > 8 else 8)
        by = THREADS // bx
        rows = by * UPFIRDN_ROWS.get(stem, 1)  # output rows per block
        grid = ((out_w + bx - 1) // bx, (out_h + rows - 1) // rows, min(planes, 65535))
        i32 = np.int32
        args = (x.data_ptr(), f.data_ptr(), y.data_ptr(), i32(planes), i32(h), i32(w), i32(out_h), i32(out_w),
                i32(up[0]), i32(up[1]), i32(down[0]), i32(down[1]), i32(pad0[0]), i32(pad0[1]), i32(fw), i32(fh),
                i32(bool(flip)), _scalar_type(x.dtype)(gain))
        self._launch(f"zsgm_upfirdn2d_{stem}_{SUFFIX[x.dtype]}", x.device, grid, (bx, by), args)
        return y


def _hashable(v):
    return tuple(v) if isinstance(v, list) else v


def _index(device: torch.device) -> int:
    return device.index if device.index is not None else 0


def _blocks(n: int) -> int:
    return max(1, min((n + THREADS - 1) // THREADS, MAX_BLOCKS))


def _scalar_type(dtype: torch.dtype):
    return np.float64 if dtype == torch.float64 else np.float32


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


# ---------------------------------------------------------------------------------------------- the ops


class KernelOps:
    """The two op entry points the dispatch calls, over one kernel object (CuPy, or an emulation)."""

    def __init__(self, kernel: CupyKernel):
        self.kernel = kernel

        def bias_act_run(x, b=None, *, dim=1, act="linear", alpha=None, gain=None, clamp=None):
            if act not in KERNEL_ACTS:  # smooth activations: the reference is exact and differentiable
                return bias_act_ref(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
            return bias_act_function(kernel, x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)

        def bias_act_why(x, b=None, *, dim=1, act="linear", alpha=None, gain=None, clamp=None):
            return kernel.bias_act_reason(x, b, act, alpha, gain, clamp)

        def upfirdn2d_run(x, f, *, up=1, down=1, padding=0, flip_filter=False, gain=1.0):
            return upfirdn2d_function(kernel, x, f, up=up, down=down, padding=padding, flip_filter=flip_filter,
                                      gain=gain)

        def upfirdn2d_why(x, f, *, up=1, down=1, padding=0, flip_filter=False, gain=1.0):
            return kernel.upfirdn2d_reason(x, f, up, down, padding, gain)

        bias_act_run.unavailable_reason = bias_act_why
        upfirdn2d_run.unavailable_reason = upfirdn2d_why
        self.bias_act, self.upfirdn2d = bias_act_run, upfirdn2d_run


_KERNEL: dict[str, CupyKernel] = {}


def get_kernel() -> CupyKernel:
    """The process-wide CuPy kernel object (created, and CuPy imported, on first call)."""
    if "k" not in _KERNEL:
        _KERNEL["k"] = CupyKernel()
    return _KERNEL["k"]


def _load_bias_act():
    return KernelOps(get_kernel()).bias_act


def _load_upfirdn2d():
    return KernelOps(get_kernel()).upfirdn2d


def register() -> None:
    """Record the CuPy loaders with the dispatch (no CuPy import, no compilation)."""
    register_cuda_impl("bias_act", _load_bias_act)
    register_cuda_impl("upfirdn2d", _load_upfirdn2d)
