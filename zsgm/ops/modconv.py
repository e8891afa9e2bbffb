"""Modulated convolution with optional demodulation (OPS.md 1.3, 1.4, 2.4), fused or non-fused.

Per sample n, output channel o, input channel i:

- modulate: ``w'[n, o, i] = W[o, i] * s[n, i]``
- demodulate: ``d[n, o] = rsqrt(sum_{i, ky, kx} w'[n, o, i]^2 + 1e-8)``, ``w''[n, o] = w'[n, o] * d[n, o]``
- up=1: ``y = conv2d(x, w'')`` with "same" padding ``k // 2`` (cross-correlation);
  up=2: ``conv_transpose2d(x, w'', stride=2)`` (no weight flip, H -> 2H + 1) then a 4x4 blur with padding
  (1, 1, 1, 1) and gain 4 (2H + 1 -> 2H).

The fused form builds one weight per sample and runs a grouped conv; the non-fused form scales the input
by ``s`` before, and the output by ``d`` after, a shared-weight conv. Same function, different rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zsgm.ops.dispatch import check_impl
from zsgm.ops.upfirdn2d import upfirdn2d

DEMOD_EPS = 1e-8
UP_BLUR_PADDING = (1, 1, 1, 1)
UP_BLUR_GAIN = 4


def demodulation_coefficients(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """``d[n, o] = rsqrt(sum_{i,ky,kx} (W[o, i] * s[n, i])^2 + 1e-8)``.

    Args:
        weight: ``[O, I, kh, kw]``; styles: ``[N, I]``.

    Returns:
        ``[N, O]``.
    """
    w2 = weight.square().sum(dim=[2, 3])  # [O, I]
    return (styles.square() @ w2.t() + DEMOD_EPS).rsqrt()  # [N, O]


def modulated_weight(weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool = True) -> torch.Tensor:
    """The per-sample effective weight ``w''`` ``[N, O, I, kh, kw]`` (``w'`` when not demodulating)."""
    w = weight[None] * styles[:, None, :, None, None]  # [N, O, I, kh, kw]
    if demodulate:
        w = w * demodulation_coefficients(weight, styles)[:, :, None, None, None]
    return w


def _check(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, up: int,
           resample_filter: torch.Tensor | None, padding) -> None:
    if x.ndim != 4 or weight.ndim != 4 or styles.ndim != 2:
        raise ValueError(f"modulated_conv2d: expected x [N, I, H, W], weight [O, I, k, k] and styles [N, I]; found "
                         f"x {tuple(x.shape)}, weight {tuple(weight.shape)}, styles {tuple(styles.shape)}")
    n, i = x.shape[:2]
    if weight.shape[1] != i or tuple(styles.shape) != (n, i):
        raise ValueError(f"modulated_conv2d: x {tuple(x.shape)} needs weight [O, {i}, k, k] and styles [{n}, {i}]; "
                         f"found weight {tuple(weight.shape)} and styles {tuple(styles.shape)}")
    if up not in (1, 2):
        raise ValueError(f"modulated_conv2d: up must be 1 or 2; got {up!r}")
    if up == 2:
        if resample_filter is None:
            raise ValueError("modulated_conv2d: up=2 needs resample_filter (the normalised 4x4 blur filter)")
        if padding is not None:
            raise ValueError(f"modulated_conv2d: padding applies to up=1 only (up=2 is the fixed transposed conv + "
                             f"blur); got padding={padding!r}")


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool = True,
                     up: int = 1, resample_filter: torch.Tensor | None = None, fused: bool = True,
                     padding: int | tuple[int, int] | None = None, impl: str = "auto") -> torch.Tensor:
    """Per-sample modulated (and demodulated) convolution.

    Args:
        x: ``[N, I, H, W]`` input.
        weight: ``[O, I, kh, kw]``, already scaled by the caller's equalised-lr factor.
        styles: ``[N, I]`` per-sample input-channel scales.
        demodulate: normalise each sample's output filters to unit norm (eps 1e-8).
        up: 1 (conv) or 2 (transposed conv stride 2, then blur padding (1, 1, 1, 1), gain 4).
        resample_filter: the normalised ``[4, 4]`` blur filter (sum 1); required for ``up=2``.
        fused: grouped conv with per-sample weights (True) or shared weight with input/output scaling.
        padding: up=1 only: conv zero padding, int or ``(py, px)``; None = ``(kh // 2, kw // 2)`` ("same").
        impl: dispatch of the blur (``"auto"`` | ``"cuda"`` | ``"ref"``).

    Returns:
        ``[N, O, H * up, W * up]`` (up=1 with other padding: ``H + 2 py - kh + 1`` etc.).
    """
    _check(x, weight, styles, up, resample_filter, padding)
    check_impl("modulated_conv2d", impl)
    n, i, h, w = x.shape
    o, _, kh, kw = weight.shape
    if padding is None:
        padding = (kh // 2, kw // 2)
    if fused:
        wmod = modulated_weight(weight, styles, demodulate=demodulate)  # [N, O, I, kh, kw]
        xg = x.reshape(1, n * i, h, w)
        if up == 1:
            out = F.conv2d(xg, wmod.reshape(n * o, i, kh, kw), padding=padding, groups=n)
        else:
            wt = wmod.transpose(1, 2).reshape(n * i, o, kh, kw)  # [N*I, O, kh, kw]: conv_transpose layout
            out = F.conv_transpose2d(xg, wt, stride=2, groups=n)
        out = out.reshape(n, o, out.shape[2], out.shape[3])
    else:
        xs = x * styles[:, :, None, None].to(x.dtype)  # [N, I, H, W]
        if up == 1:
            out = F.conv2d(xs, weight, padding=padding)
        else:
            out = F.conv_transpose2d(xs, weight.transpose(0, 1), stride=2)  # weight as [I, O, kh, kw]
        if demodulate:
            out = out * demodulation_coefficients(weight, styles)[:, :, None, None].to(out.dtype)
    if up == 2:  # [N, O, 2H + kh - 2, 2W + kw - 2] -> blur
        out = upfirdn2d(out, resample_filter, padding=UP_BLUR_PADDING, gain=UP_BLUR_GAIN, impl=impl)
        if out.shape[2:] != (2 * h, 2 * w):
            raise ValueError(f"modulated_conv2d: up=2 expects a 3x3 weight and a 4-tap resample_filter (output "
                             f"2H x 2W); weight {tuple(weight.shape)} and filter {tuple(resample_filter.shape)} "
                             f"give {tuple(out.shape[2:])} for input {h}x{w}")
    return out
