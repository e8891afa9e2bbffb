"""Modulated convolution with demodulation (OPS.md 1.3, 2.4), fused (grouped) or non-fused.

Both forms compute the same function; the fused form builds one weight per sample and runs a grouped
conv, the non-fused form scales activations before and after a shared-weight conv.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zsgm.ops.upfirdn2d import upfirdn2d

DEMOD_EPS = 1e-8


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool = True,
                     up: int = 1, resample_filter: torch.Tensor | None = None, fused: bool = True,
                     impl: str = "auto") -> torch.Tensor:
    """Per-sample modulated conv.

    Args:
        x: ``[N, I, H, W]`` input.
        weight: ``[O, I, k, k]`` (already scaled by the caller's equalised-lr factor).
        styles: ``[N, I]`` per-sample input-channel scales.
        demodulate: normalise each output filter to unit norm (eps 1e-8).
        up: 1 (same-size conv) or 2 (transposed conv stride 2, then a 4x4 blur with padding 1, gain 4).
        resample_filter: the normalised 2-D blur filter (needed when ``up == 2``).
        fused: grouped conv with per-sample weights (True) or shared weights with scaling (False).

    Returns:
        ``[N, O, H * up, W * up]``.
    """
    n, i, h, w = x.shape
    o, wi, kh, kw = weight.shape
    if wi != i or styles.shape != (n, i):
        raise ValueError(f"modulated_conv2d: x {tuple(x.shape)}, weight {tuple(weight.shape)} and styles "
                         f"{tuple(styles.shape)} disagree (expected weight [O, {i}, k, k] and styles [{n}, {i}])")
    if up not in (1, 2):
        raise ValueError(f"modulated_conv2d: up must be 1 or 2, got {up}")
    if up == 2 and resample_filter is None:
        raise ValueError("modulated_conv2d: up=2 needs resample_filter")
    wmod = weight[None] * styles[:, None, :, None, None]  # [N, O, I, k, k]
    dcoefs = (wmod.square().sum(dim=[2, 3, 4]) + DEMOD_EPS).rsqrt() if demodulate else None  # [N, O]
    if fused:
        if dcoefs is not None:
            wmod = wmod * dcoefs[:, :, None, None, None]
        xg = x.reshape(1, n * i, h, w)
        if up == 1:
            out = F.conv2d(xg, wmod.reshape(n * o, i, kh, kw), padding=kh // 2, groups=n)
        else:
            wt = wmod.transpose(1, 2).reshape(n * i, o, kh, kw)  # [N*I, O, k, k]
            out = F.conv_transpose2d(xg, wt, stride=2, padding=0, groups=n)
        out = out.reshape(n, o, out.shape[2], out.shape[3])
    else:
        xs = x * styles[:, :, None, None]
        if up == 1:
            out = F.conv2d(xs, weight, padding=kh // 2)
        else:
            out = F.conv_transpose2d(xs, weight.transpose(0, 1), stride=2, padding=0)
        if dcoefs is not None:
            out = out * dcoefs[:, :, None, None]
    if up == 2:
        out = upfirdn2d(out, resample_filter, padding=1, gain=4, impl=impl)  # [N, O, 2H+1, 2W+1] -> [N, O, 2H, 2W]
    return out
