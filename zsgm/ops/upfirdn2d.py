"""``upfirdn2d``: upsample (zero insertion), pad/crop, FIR filter, downsample (OPS.md 2.2).

Per channel and separately per axis:

1. insert ``up - 1`` zeros after every sample;
2. pad ``(p0, p1)`` zeros on the upsampled grid (negative values crop);
3. true convolution with ``f`` (``flip_filter=True``: correlation), keeping only "valid" outputs;
4. keep every ``down``-th sample, starting at 0.

Output size per axis: ``(in * up + p0 + p1 - f_len + down) // down``. ``gain`` multiplies ``f`` by
``gain ** (f.ndim / 2)``: a 2-D filter gets ``gain``, a separable 1-D filter ``sqrt(gain)`` per pass.

The reference (:func:`upfirdn2d_ref`) is built from differentiable torch ops. :func:`upfirdn2d_function`
wires an injectable device kernel into autograd: its backward is ``upfirdn2d`` again with the adjoint
parameters of :func:`upfirdn2d_adjoint_params`, so gradients of every order come free.
"""

from __future__ import annotations

import operator
from typing import Protocol, Sequence

import torch
import torch.nn.functional as F

from zsgm.ops.dispatch import run_op

Scaling = int | Sequence[int]
Padding = int | Sequence[int]


def parse_scaling(s: Scaling, name: str = "scaling") -> tuple[int, int]:
    """``2`` or ``(sx, sy)`` -> ``(sx, sy)``, each an int >= 1."""
    try:
        sx, sy = (s, s) if not isinstance(s, (tuple, list)) else s
        sx, sy = operator.index(sx), operator.index(sy)
    except (TypeError, ValueError):
        raise ValueError(f"upfirdn2d: {name} must be an int or (x, y) ints; got {s!r}") from None
    if sx < 1 or sy < 1:
        raise ValueError(f"upfirdn2d: {name} must be >= 1; got {s!r}")
    return sx, sy


def parse_padding(p: Padding) -> tuple[int, int, int, int]:
    """``p``, ``(px, py)`` or ``(x0, x1, y0, y1)`` -> ``(x0, x1, y0, y1)`` (negative values crop)."""
    try:
        if not isinstance(p, (tuple, list)):
            v = operator.index(p)
            return v, v, v, v
        vals = tuple(operator.index(v) for v in p)
    except TypeError:
        raise ValueError(f"upfirdn2d: padding must be an int, (px, py) or (x0, x1, y0, y1); got {p!r}") from None
    if len(vals) == 2:
        return vals[0], vals[0], vals[1], vals[1]
    if len(vals) == 4:
        return vals  # type: ignore[return-value]
    raise ValueError(f"upfirdn2d: padding must be an int, (px, py) or (x0, x1, y0, y1); got {p!r}")


def filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """``(width, height)`` of a 1-D (separable) or 2-D ``[fh, fw]`` filter; ``(1, 1)`` for None."""
    if f is None:
        return 1, 1
    if f.ndim == 1:
        return f.shape[0], f.shape[0]
    return f.shape[1], f.shape[0]


def setup_filter(f, *, normalize: bool = True, flip_filter: bool = False, gain: float = 1,
                 separable: bool | None = None) -> torch.Tensor:
    """Build a float32 FIR filter.

    Args:
        f: taps (list, array or tensor), 1-D or 2-D; None means the identity ``[1]``.
        normalize: divide by the sum of the taps.
        flip_filter: flip along every axis.
        gain: multiply by ``gain ** (f.ndim / 2)`` (so a 1-D filter applied in two passes gives ``gain``).
        separable: keep a 1-D filter 1-D. Default: only when it has >= 8 taps; a shorter 1-D list becomes
            its 2-D outer product (so ``[1, 3, 3, 1]`` gives the 4x4 StyleGAN2 filter, OPS.md 1.4).

    Returns:
        float32 ``[taps]`` (separable) or ``[fh, fw]``.
    """
    f = torch.as_tensor([1.0] if f is None else f, dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"setup_filter: expected a non-empty 1-D or 2-D filter; found shape {tuple(f.shape)}")
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if separable and f.ndim != 1:
        raise ValueError(f"setup_filter: separable=True needs a 1-D filter; found shape {tuple(f.shape)}")
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)  # [fh, fw]
    if normalize:
        total = f.sum()
        if total == 0:
            raise ValueError("setup_filter: cannot normalize a filter whose taps sum to 0 (pass normalize=False)")
        f = f / total
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    return f * (gain ** (f.ndim / 2))


def out_size(size: int, up: int, down: int, p0: int, p1: int, taps: int) -> int:
    """Output length along one axis: upsample by ``up``, pad ``p0``/``p1``, filter ``taps``, keep every ``down``-th."""
    return (size * up + p0 + p1 - taps + down) // down


def check_upfirdn2d_args(x: torch.Tensor, f: torch.Tensor | None, up: Scaling, down: Scaling,
                         padding: Padding) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int, int, int]]:
    """Validate the arguments; returns parsed ``(up, down, padding)``."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"upfirdn2d: x must be a [N, C, H, W] tensor; found "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if f is not None and (not isinstance(f, torch.Tensor) or f.ndim not in (1, 2) or f.numel() == 0):
        raise ValueError(f"upfirdn2d: f must be None or a 1-D (separable) or 2-D [fh, fw] tensor; found "
                         f"{tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__}")
    up2, down2, pad4 = parse_scaling(up, "up"), parse_scaling(down, "down"), parse_padding(padding)
    fw, fh = filter_size(f)
    h, w = x.shape[2], x.shape[3]
    ow = out_size(w, up2[0], down2[0], pad4[0], pad4[1], fw)
    oh = out_size(h, up2[1], down2[1], pad4[2], pad4[3], fh)
    if ow < 1 or oh < 1:
        raise ValueError(f"upfirdn2d: empty output {oh}x{ow} for input {h}x{w}, up {up2}, down {down2}, "
                         f"padding {pad4} and a {fh}x{fw} filter")
    return up2, down2, pad4


def upfirdn2d_ref(x: torch.Tensor, f: torch.Tensor | None, *, up: Scaling = 1, down: Scaling = 1,
                  padding: Padding = 0, flip_filter: bool = False, gain: float = 1.0) -> torch.Tensor:
    """Torch reference of :func:`upfirdn2d` (plain torch ops: differentiable to any order)."""
    (upx, upy), (downx, downy), (x0, x1, y0, y1) = check_upfirdn2d_args(x, f, up, down, padding)
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32)
    n, c, h, w = x.shape
    # 1. zero insertion: [N, C, H, W] -> [N, C, H*upy, W*upx]
    x = x.reshape(n, c, h, 1, w, 1)
    x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    x = x.reshape(n, c, h * upy, w * upx)
    # 2. pad (positive) then crop (negative)
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0):x.shape[2] - max(-y1, 0), max(-x0, 0):x.shape[3] - max(-x1, 0)]
    # 3. FIR, "valid": conv2d correlates, so flip f for a true convolution unless flip_filter
    f = f.to(device=x.device, dtype=x.dtype) * (gain ** (f.ndim / 2))
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        x = F.conv2d(x, f[None, None].expand(c, 1, -1, -1), groups=c)  # weight [C, 1, fh, fw]
    else:
        x = F.conv2d(x, f[None, None, None].expand(c, 1, 1, -1), groups=c)  # along x: [C, 1, 1, fw]
        x = F.conv2d(x, f[None, None, :, None].expand(c, 1, -1, 1), groups=c)  # along y: [C, 1, fh, 1]
    # 4. downsample, starting at 0
    return x[:, :, ::downy, ::downx]


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, *, up: Scaling = 1, down: Scaling = 1,
              padding: Padding = 0, flip_filter: bool = False, gain: float = 1.0,
              impl: str = "auto") -> torch.Tensor:
    """Upsample, pad/crop, FIR-filter and downsample every channel of ``x``.

    Args:
        x: ``[N, C, H, W]``.
        f: 1-D (separable, applied along x then y) or 2-D ``[fh, fw]`` filter, or None (identity).
        up: int or ``(ux, uy)`` zero-insertion factor.
        down: int or ``(dx, dy)`` decimation factor.
        padding: int, ``(px, py)`` or ``(x0, x1, y0, y1)`` on the upsampled grid; negative crops.
        flip_filter: correlate instead of convolve.
        gain: scales ``f`` by ``gain ** (f.ndim / 2)``.
        impl: ``"auto"`` | ``"cuda"`` | ``"ref"``.

    Returns:
        ``[N, C, (H*uy + y0 + y1 - fh + dy) // dy, (W*ux + x0 + x1 - fw + dx) // dx]``.
    """
    check_upfirdn2d_args(x, f, up, down, padding)
    return run_op("upfirdn2d", impl, upfirdn2d_ref, (x,), x, f, up=up, down=down, padding=padding,
                  flip_filter=flip_filter, gain=gain)


def upfirdn2d_adjoint_params(in_hw: tuple[int, int], out_hw: tuple[int, int], f: torch.Tensor | None, *,
                             up: Scaling = 1, down: Scaling = 1, padding: Padding = 0,
                             flip_filter: bool = False) -> dict:
    """Parameters of the ``upfirdn2d`` that is the adjoint (the backward) of the given one (OPS.md 2.2).

    ``up <-> down``, ``flip_filter`` toggled, same ``f`` and gain, padding per axis
    ``[fw - p0 - 1, in * up - out * down + p0 - up + 1]``.

    Args:
        in_hw, out_hw: ``(H, W)`` of the forward input and output.

    Returns:
        ``dict(up=(ux, uy), down=(dx, dy), padding=(x0, x1, y0, y1), flip_filter=bool)`` mapping a
        gradient of the output's shape to one of the input's shape.
    """
    (upx, upy), (downx, downy), (x0, x1, y0, y1) = (parse_scaling(up, "up"), parse_scaling(down, "down"),
                                                    parse_padding(padding))
    fw, fh = filter_size(f)
    (ih, iw), (oh, ow) = in_hw, out_hw
    pad = (fw - x0 - 1, iw * upx - ow * downx + x0 - upx + 1, fh - y0 - 1, ih * upy - oh * downy + y0 - upy + 1)
    return dict(up=(downx, downy), down=(upx, upy), padding=pad, flip_filter=not flip_filter)


# --------------------------------------------------------------------------------------------------
# Autograd wiring for a device kernel


class UpFirDn2dKernel(Protocol):
    """What a device backend provides: the forward of :func:`upfirdn2d` on parsed arguments."""

    def upfirdn2d(self, x: torch.Tensor, f: torch.Tensor, up: tuple[int, int], down: tuple[int, int],
                  padding: tuple[int, int, int, int], flip_filter: bool, gain: float) -> torch.Tensor:
        """``x`` ``[N, C, H, W]``, ``f`` 1-D or 2-D -> ``[N, C, out_h, out_w]`` (new tensor)."""


class TorchUpFirDn2dKernel:
    """:class:`UpFirDn2dKernel` computed with the torch reference: drives the Function on CPU in tests."""

    def upfirdn2d(self, x, f, up, down, padding, flip_filter, gain):
        with torch.no_grad():  # a kernel has no autograd graph of its own
            return upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)


class _UpFirDn2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, f, kernel, cfg):  # x [N, C, H, W] -> y [N, C, oh, ow]
        up, down, padding, flip_filter, gain = cfg
        y = kernel.upfirdn2d(x, f, up, down, padding, flip_filter, gain)
        ctx.save_for_backward(f)
        ctx.kernel, ctx.cfg = kernel, cfg
        ctx.in_hw, ctx.out_hw = (x.shape[2], x.shape[3]), (y.shape[2], y.shape[3])
        return y

    @staticmethod
    def backward(ctx, dy):
        (f,) = ctx.saved_tensors
        up, down, padding, flip_filter, gain = ctx.cfg
        adj = upfirdn2d_adjoint_params(ctx.in_hw, ctx.out_hw, f, up=up, down=down, padding=padding,
                                       flip_filter=flip_filter)
        dx = _UpFirDn2d.apply(dy, f, ctx.kernel, (adj["up"], adj["down"], adj["padding"], adj["flip_filter"], gain))
        return dx, None, None, None  # no gradient for f


def upfirdn2d_function(kernel: UpFirDn2dKernel, x: torch.Tensor, f: torch.Tensor | None, *, up: Scaling = 1,
                       down: Scaling = 1, padding: Padding = 0, flip_filter: bool = False,
                       gain: float = 1.0) -> torch.Tensor:
    """Differentiable ``upfirdn2d`` (gradients of any order) computed by ``kernel``.

    Args:
        kernel: an :class:`UpFirDn2dKernel` (the CuPy kernel on CUDA, :class:`TorchUpFirDn2dKernel` in tests).
        x, f, up, down, padding, flip_filter, gain: as :func:`upfirdn2d`.
    """
    up2, down2, pad4 = check_upfirdn2d_args(x, f, up, down, padding)
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    return _UpFirDn2d.apply(x, f.detach(), kernel, (up2, down2, pad4, bool(flip_filter), float(gain)))


# --------------------------------------------------------------------------------------------------
# Helpers (paddings relative to the output, OPS.md 2.2)


def filter2d(x: torch.Tensor, f: torch.Tensor | None, *, padding: Padding = 0, flip_filter: bool = False,
             gain: float = 1, impl: str = "auto") -> torch.Tensor:
    """Filter keeping the size (``H + y0 + y1``, ``W + x0 + x1``): pads ``[p0 + fw // 2, p1 + (fw - 1) // 2]``."""
    fw, fh = filter_size(f)
    x0, x1, y0, y1 = parse_padding(padding)
    pad = (x0 + fw // 2, x1 + (fw - 1) // 2, y0 + fh // 2, y1 + (fh - 1) // 2)
    return upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x: torch.Tensor, f: torch.Tensor | None, *, up: Scaling = 2, padding: Padding = 0,
               flip_filter: bool = False, gain: float = 1, impl: str = "auto") -> torch.Tensor:
    """Upsample by ``up`` (``[H * uy, W * ux]`` plus padding); gain times ``ux * uy`` keeps the mean.

    Pads ``[p0 + (fw + up - 1) // 2, p1 + (fw - up) // 2]``: pad (2, 1), gain 4 for a 4-tap filter, up 2.
    """
    upx, upy = parse_scaling(up, "up")
    fw, fh = filter_size(f)
    x0, x1, y0, y1 = parse_padding(padding)
    pad = (x0 + (fw + upx - 1) // 2, x1 + (fw - upx) // 2, y0 + (fh + upy - 1) // 2, y1 + (fh - upy) // 2)
    return upfirdn2d(x, f, up=(upx, upy), padding=pad, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(x: torch.Tensor, f: torch.Tensor | None, *, down: Scaling = 2, padding: Padding = 0,
                 flip_filter: bool = False, gain: float = 1, impl: str = "auto") -> torch.Tensor:
    """Filter, then keep every ``down``-th sample: pads ``[p0 + (fw - down + 1) // 2, p1 + (fw - down) // 2]``."""
    downx, downy = parse_scaling(down, "down")
    fw, fh = filter_size(f)
    x0, x1, y0, y1 = parse_padding(padding)
    pad = (x0 + (fw - downx + 1) // 2, x1 + (fw - downx) // 2, y0 + (fh - downy + 1) // 2, y1 + (fh - downy) // 2)
    return upfirdn2d(x, f, down=(downx, downy), padding=pad, flip_filter=flip_filter, gain=gain, impl=impl)
