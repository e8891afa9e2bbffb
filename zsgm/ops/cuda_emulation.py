"""CPU emulation of zsgm's CUDA kernels, driven through the real host code of :mod:`zsgm.ops.cuda_backend`.

:class:`EmulatedKernel` is a :class:`~zsgm.ops.cuda_backend.CupyKernel` whose three device methods are
replaced: ``_compile`` returns the kernel names (after checking they exist in ``cuda/*.cu``), ``_stream``
returns None, and ``_launch`` interprets the launch: it checks each scalar argument's numpy type against the
``extern "C"`` signature parsed from the source (CuPy itself does not), reads the raw pointers of the CPU
tensors with ctypes, and runs a numpy port of the kernel's per-thread loops over the whole grid, with the
kernel's own index arithmetic (polyphase tap ranges, floor division, the multiply-shift division of the
32-bit bias_act path) and asserts that every 32-bit index stays in range.

What it checks without a GPU: the host code (argument order and types, layouts, filter handling, grid
shape, separable passes) and the kernels' index arithmetic. What it cannot: the compiled code (rounding,
FMA contraction, half conversions), races, streams, speed. Used by tests (tests/test_ops_kernel_port.py,
tests/test_ops_fallback.py) and by the benchmarks' ``--smoke`` mode.
"""

from __future__ import annotations

import contextlib
import ctypes
import re

import numpy as np
import torch

from zsgm.ops.cuda_backend import SOURCES, CupyKernel, KernelOps, kernel_text

NP_STORAGE = {"f32": np.float32, "f64": np.float64, "f16": np.float16}
_CTYPE_TO_NP = {"int": np.int32, "unsigned": np.uint32, "unsigned long long": np.uint64, "long long": np.int64}


def kernel_signatures() -> dict[str, list[str]]:
    """``{entry point name: [parameter C type, ...]}`` for every ``extern "C"`` kernel in ``cuda/*.cu``."""
    out = {}
    for source in SOURCES.values():
        text = kernel_text(source).replace("\\\n", "\n")
        stems = {}  # macro name -> [(NAME, SUFFIX, T, C)] expansions
        for m in re.finditer(r'void\s+(zsgm_[\w#]+)\s*\(([^)]*)\)', text):
            pattern, params = m.group(1), [" ".join(p.split()) for p in m.group(2).split(",")]
            stems[pattern] = params
        dtypes = re.findall(r'^ZSGM_\w+\((f16|f32|f64), ([\w ]+), (\w+)\)', text, flags=re.M)
        names = re.findall(r'^\s*ZSGM_UPFIRDN_ENTRY\((\w+), SUFFIX', text, flags=re.M)
        for pattern, params in stems.items():
            if "zsgm_" not in pattern or "##SUFFIX" not in pattern:
                continue
            for sfx, t, c in dtypes:
                for name in (names if "##NAME##" in pattern else [""]):
                    entry = pattern.replace("##NAME##", name).replace("##SUFFIX", sfx)
                    types = []
                    for p in params:
                        ctype = p.rsplit(" ", 1)[0].replace("const ", "")
                        ctype = ctype.replace("T*", f"{t}*").replace("C*", f"{c}*")
                        types.append(c if ctype == "C" else ctype)
                    out[entry] = types
    return out


def _view(ptr: int, count: int, dtype) -> np.ndarray:
    if count == 0:
        return np.zeros(0, dtype=dtype)
    buf = (ctypes.c_char * (count * np.dtype(dtype).itemsize)).from_address(ptr)
    return np.frombuffer(buf, dtype=dtype)


def _check_types(name: str, args: tuple, signature: list[str]) -> None:
    if len(args) != len(signature):
        raise AssertionError(f"{name}: {len(args)} arguments for a signature of {len(signature)}")
    for i, (a, ctype) in enumerate(zip(args, signature)):
        if ctype.endswith("*"):
            ok = type(a) is int
        elif ctype in ("float", "double"):
            ok = type(a) is (np.float32 if ctype == "float" else np.float64)
        else:
            ok = type(a) is _CTYPE_TO_NP[ctype]
        if not ok:
            raise AssertionError(f"{name}: argument {i} is {type(a).__name__}, the kernel takes {ctype}")


def _floor_div(a: np.ndarray, d: int) -> np.ndarray:
    """The kernel's zsgm_floor_div: C truncating division on non-negative operands only."""
    a = a.astype(np.int64)
    return np.where(a >= 0, a // d, -((-a + d - 1) // d))


def _assert_int32(*arrays) -> None:
    for a in arrays:
        if a.size and (a.max() >= 2 ** 31 or a.min() < -2 ** 31):
            raise AssertionError("a 32-bit index left the int32 range")


def run_upfirdn2d(name: str, grid, block, args) -> None:
    """Numpy port of zsgm_upfirdn2d_poly over the whole grid (one thread per output pixel per plane)."""
    (x, f, y, planes, in_h, in_w, out_h, out_w, up_x, up_y, down_x, down_y, pad_x0, pad_y0, f_w, f_h, flip,
     gain) = args
    sfx = name.rsplit("_", 1)[1]
    T, C = NP_STORAGE[sfx], (np.float64 if sfx == "f64" else np.float32)
    stem = name[len("zsgm_upfirdn2d_"):-len(sfx) - 1]
    if stem != "poly":  # the template fixes up/down/taps: the host must send matching runtime values
        u, d, k = (int(v) for v in re.match(r"up(\d)_down(\d)_k(\d)", stem).groups())
        if (int(up_x), int(up_y), int(down_x), int(down_y), int(f_w), int(f_h)) != (u, u, d, d, k, k):
            raise AssertionError(f"{name} launched with up=({up_x},{up_y}) down=({down_x},{down_y}) "
                                 f"taps={f_w}x{f_h}")
    planes, in_h, in_w, out_h, out_w = map(int, (planes, in_h, in_w, out_h, out_w))
    up_x, up_y, down_x, down_y, pad_x0, pad_y0, f_w, f_h = map(int, (up_x, up_y, down_x, down_y, pad_x0, pad_y0,
                                                                     f_w, f_h))
    X = _view(x, planes * in_h * in_w, T).astype(C)
    F = _view(f, f_h * f_w, C)
    Y = _view(y, planes * out_h * out_w, T)
    # every thread of the grid: ox = blockIdx.x * blockDim.x + threadIdx.x, likewise oy
    ox = (np.arange(grid[0])[:, None] * block[0] + np.arange(block[0])[None, :]).reshape(-1)
    oy = (np.arange(grid[1])[:, None] * block[1] + np.arange(block[1])[None, :]).reshape(-1)
    if ox.max() < out_w - 1 or oy.max() < out_h - 1:
        raise AssertionError(f"{name}: grid {grid} x block {block} does not cover {out_h}x{out_w}")
    ox, oy = ox[ox < out_w], oy[oy < out_h]  # the early return
    base_y, base_x = oy * down_y - pad_y0, ox * down_x - pad_x0
    iy_first, ix_first = _floor_div(base_y + up_y - 1, up_y), _floor_div(base_x + up_x - 1, up_x)
    ky_first, kx_first = iy_first * up_y - base_y, ix_first * up_x - base_x
    if ky_first.min() < 0 or ky_first.max() >= up_y or kx_first.min() < 0 or kx_first.max() >= up_x:
        raise AssertionError("first tap outside [0, up)")
    acc = np.zeros((planes, len(oy), len(ox)), dtype=C)
    visited = 0
    for j in range(-(-f_h // up_y)):
        ky, iy = ky_first + j * up_y, iy_first + j
        vy = (ky < f_h) & (iy >= 0) & (iy < in_h)
        for i in range(-(-f_w // up_x)):
            kx, ix = kx_first + i * up_x, ix_first + i
            vx = (kx < f_w) & (ix >= 0) & (ix < in_w)
            frow = np.where(vy, ky if flip else f_h - 1 - ky, 0)
            fcol = np.where(vx, kx if flip else f_w - 1 - kx, 0)
            src = np.where(vy, iy, 0)[:, None] * in_w + np.where(vx, ix, 0)[None, :]  # [oy, ox]
            _assert_int32(src, frow[:, None] * f_w + fcol[None, :])
            w = F[frow[:, None] * f_w + fcol[None, :]]
            mask = vy[:, None] & vx[None, :]
            visited += int(mask.sum())
            plane_off = (np.arange(planes) * (in_h * in_w))[:, None, None]
            _assert_int32(plane_off + src[None])
            acc = acc + np.where(mask[None], X[plane_off + src[None]] * w[None], C(0))
    # threads stride over planes by gridDim.z: every plane is visited exactly once
    zs = [p for z in range(grid[2]) for p in range(z, planes, grid[2])]
    if sorted(zs) != list(range(planes)):
        raise AssertionError(f"{name}: gridDim.z={grid[2]} does not visit each of {planes} planes once")
    out = (acc * C(gain)).astype(T)
    Y.reshape(planes, out_h, out_w)[:, :len(oy), :len(ox)] = out[:, :, :]
    EmulatedKernel.taps_visited += visited * planes


def run_upfirdn2d_blur4(name: str, grid, block, args, rows: int = 4) -> None:
    """Numpy port of zsgm_upfirdn2d_blur4: each thread computes ``rows`` vertically adjacent outputs from
    ``rows + 3`` loaded input rows of 4 samples."""
    (x, f, y, planes, in_h, in_w, out_h, out_w, up_x, up_y, down_x, down_y, pad_x0, pad_y0, f_w, f_h, flip,
     gain) = args
    if (int(up_x), int(up_y), int(down_x), int(down_y), int(f_w), int(f_h)) != (1, 1, 1, 1, 4, 4):
        raise AssertionError(f"{name} launched with up=({up_x},{up_y}) down=({down_x},{down_y}) taps={f_w}x{f_h}")
    sfx = name.rsplit("_", 1)[1]
    T, C = NP_STORAGE[sfx], (np.float64 if sfx == "f64" else np.float32)
    planes, in_h, in_w, out_h, out_w, pad_x0, pad_y0 = map(int, (planes, in_h, in_w, out_h, out_w, pad_x0, pad_y0))
    X = _view(x, planes * in_h * in_w, T).astype(C).reshape(planes, in_h * in_w)
    F = _view(f, 16, C).reshape(4, 4)
    W = F if flip else F[::-1, ::-1]  # correlation weights w[ky][kx]
    Y = _view(y, planes * out_h * out_w, T).reshape(planes, out_h, out_w)
    ox = (np.arange(grid[0])[:, None] * block[0] + np.arange(block[0])[None, :]).reshape(-1)
    oy0 = ((np.arange(grid[1])[:, None] * block[1] + np.arange(block[1])[None, :]).reshape(-1)) * rows
    if ox.max() < out_w - 1 or oy0.max() + rows - 1 < out_h - 1:
        raise AssertionError(f"{name}: grid {grid} x block {block} x {rows} rows does not cover {out_h}x{out_w}")
    ox, oy0 = ox[ox < out_w], oy0[oy0 < out_h]  # the early return
    bx, by = ox - pad_x0, oy0 - pad_y0
    acc = np.zeros((planes, len(oy0), rows, len(ox)), dtype=C)
    for r in range(rows + 3):
        iy = by + r
        vy = (iy >= 0) & (iy < in_h)
        v = []
        for kx in range(4):
            ix = bx + kx
            vx = (ix >= 0) & (ix < in_w)
            src = np.where(vy, iy, 0)[:, None] * in_w + np.where(vx, ix, 0)[None, :]
            _assert_int32(src)
            v.append(np.where(vy[:, None] & vx[None, :], X[:, src], C(0)))  # [planes, oy0, ox]
        for j in range(rows):
            ky = r - j
            if 0 <= ky < 4:
                acc[:, :, j, :] += v[0] * W[ky, 0] + v[1] * W[ky, 1] + v[2] * W[ky, 2] + v[3] * W[ky, 3]
    out = (acc * C(gain)).astype(T)  # [planes, oy0, rows, ox]
    for j in range(rows):
        oy = oy0 + j
        keep = oy < out_h  # the guarded store
        Y[:, oy[keep][:, None], ox[None, :]] = out[:, keep, j, :]
    zs = [p for z in range(grid[2]) for p in range(z, planes, grid[2])]
    if sorted(zs) != list(range(planes)):
        raise AssertionError(f"{name}: gridDim.z={grid[2]} does not visit each of {planes} planes once")


def run_bias_act(name: str, grid, block, args) -> None:
    sfx = name.rsplit("_", 1)[1]
    T, C = NP_STORAGE[sfx], (np.float64 if sfx == "f64" else np.float32)
    threads = grid[0] * block[0]
    if "forward" in name:
        if "forward32" in name:
            x, b, y, n, stride, sm, ss, channels, cm, cs, has_bias, act, alpha, gain, clamp = args
            n = int(n)
            if threads + n >= 2 ** 32:
                raise AssertionError("unsigned 32-bit grid-stride index would wrap")
            i = np.arange(n, dtype=np.uint64)  # the grid-stride loop visits each i < n once
            q = i if int(stride) == 1 else (i * np.uint64(sm)) >> np.uint64(ss)
            if q.size and int(q.max()) >= 2 ** 32:
                raise AssertionError("quotient left 32 bits")
            c = q - ((q * np.uint64(cm)) >> np.uint64(cs)) * np.uint64(channels)
            if c.size and (q * np.uint64(cm)).max() >= 2 ** 64 - 1:
                raise AssertionError("64-bit product overflow")
            ch = c.astype(np.int64)
        else:
            x, b, y, n, stride, channels, has_bias, act, alpha, gain, clamp = args
            n = int(n)
            ch = (np.arange(n, dtype=np.int64) // int(stride)) % int(channels)
        v = _view(x, n, T).astype(C)
        if has_bias:
            v = v + _view(b, int(channels), T).astype(C)[ch]
        if act == 1:
            v = np.where(v > 0, v, C(0))
        elif act == 2:
            v = np.where(v > 0, v, v * alpha)
        v = v * gain
        if clamp >= 0:
            v = np.where(v < -clamp, -clamp, np.where(v > clamp, clamp, v))
        _view(y, n, T)[:] = v.astype(T)
    else:
        dy, yref, dx, n, act, alpha, gain, clamp = args
        n = int(n)
        r = _view(yref, n, T).astype(C)
        g = _view(dy, n, T).astype(C) * gain
        if act == 1:
            g = np.where(r > 0, g, C(0))
        elif act == 2:
            g = np.where(r > 0, g, g * alpha)
        if clamp >= 0:
            g = np.where((r < clamp) & (r > -clamp), g, C(0))
        _view(dx, n, T)[:] = g.astype(T)


class EmulatedKernel(CupyKernel):
    """:class:`CupyKernel` with its own host code, whose launches run the numpy port on CPU tensors.

    ``fail`` injects failures: ``{"compile": exc}`` makes compiling raise ``exc``; ``{"wrong": names}`` makes
    those entry points write wrong values (their check against the reference must then fail).
    """

    taps_visited = 0

    def __init__(self, fail: dict | None = None):
        self.fail = fail or {}
        self.launches: list[str] = []
        self.compiles: list[tuple[str, str]] = []
        super().__init__()

    def _init_device(self) -> None:
        self.cp = None
        self.signatures = kernel_signatures()

    def _compile(self, source, device, names):
        self.compiles.append((source, str(device)))
        if "compile" in self.fail:
            raise self.fail["compile"]
        missing = [n for n in names if n not in self.signatures]
        if missing:
            raise RuntimeError(f"no kernel named {missing} in cuda/{source}")
        return {n: n for n in names}

    def _stream(self, device):
        return None

    def _capturing(self, device):
        return False

    def _launch(self, name, device, grid, block, args):
        self.launches.append(name)
        _check_types(name, args, self.signatures[name])
        if any(int(g) < 1 for g in grid) or int(np.prod(block)) > 1024:
            raise AssertionError(f"{name}: bad launch shape grid={grid} block={block}")
        if name.startswith("zsgm_upfirdn2d_up1_down1_k4_"):
            run_upfirdn2d_blur4(name, grid, block, args)
        elif name.startswith("zsgm_upfirdn2d_"):
            run_upfirdn2d(name, grid, block, args)
        else:
            run_bias_act(name, grid, block, args)
        if name in self.fail.get("wrong", ()):
            out = args[2]
            if name.startswith("zsgm_upfirdn2d_"):
                count = int(args[3]) * int(args[6]) * int(args[7])
            else:
                count = int(args[3])
            view = _view(out, count, NP_STORAGE[name.rsplit("_", 1)[1]])
            view[:1] = view[:1] + 1  # one wrong element


def emulated_ops(kernel: EmulatedKernel | None = None) -> KernelOps:
    """The op entry points over an :class:`EmulatedKernel` (what the CuPy loaders return, on CPU)."""
    return KernelOps(kernel if kernel is not None else EmulatedKernel())


@contextlib.contextmanager
def emulated_backend(kernel: EmulatedKernel | None = None):
    """Within the block, ``impl="cuda"`` (and ``"auto"``) on CPU tensors runs the emulated kernels through the
    dispatch, as CUDA tensors would run the CuPy ones (for the benchmarks' ``--smoke`` mode and tests).
    Yields the :class:`EmulatedKernel`; the dispatch's registry and state are restored afterwards."""
    from zsgm.ops import dispatch

    ops = emulated_ops(kernel)
    saved = (dict(dispatch._loaders), dict(dispatch._loaded), set(dispatch._warned), dispatch._is_cuda)
    dispatch._loaders.clear()
    dispatch._loaded.clear()
    dispatch._warned.clear()
    dispatch._is_cuda = lambda t: True
    dispatch.register_cuda_impl("bias_act", lambda: ops.bias_act)
    dispatch.register_cuda_impl("upfirdn2d", lambda: ops.upfirdn2d)
    try:
        yield ops.kernel
    finally:
        dispatch._loaders.clear()
        dispatch._loaders.update(saved[0])
        dispatch._loaded.clear()
        dispatch._loaded.update(saved[1])
        dispatch._warned.clear()
        dispatch._warned.update(saved[2])
        dispatch._is_cuda = saved[3]


__all__ = ["EmulatedKernel", "emulated_backend", "emulated_ops", "kernel_signatures", "run_bias_act",
           "run_upfirdn2d", "run_upfirdn2d_blur4"]
