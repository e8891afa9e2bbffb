"""``upfirdn2d``: upsample (zero insertion), pad/crop, FIR filter, downsample (OPS.md 2.2).

Reference built from differentiable torch ops (reshape + pad, depthwise ``conv2d``, strided slicing), so
gradients of any order come for free. Filters follow NVIDIA's conventions as *semantics*: a true
convolution unless ``flip_filter``; gain multiplies the filter by ``gain ** (f.ndim / 2)``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from zsgm.ops.dispatch import cuda_impl, select_impl


def parse_scaling(s: int | Sequence[int], name: str = "scaling") -> tuple[int, int]:
    """``2`` or ``(sx, sy)`` -> ``(sx, sy)``, each >= 1."""
    sx, sy = (s, s) if isinstance(s, int) else tuple(s)
    if sx < 1 or sy < 1:
        raise ValueError(f"upfirdn2d: {name} must be >= 1, got {s!r}")
    return int(sx), int(sy)


def parse_padding(p: int | Sequence[int]) -> tuple[int, int, int, int]:
    """``p``, ``(px, py)`` or ``(x0, x1, y0, y1)`` -> ``(x0, x1, y0, y1)``."""
    if isinstance(p, int):
        return p, p, p, p
    p = tuple(int(v) for v in p)
    if len(p) == 2:
        return p[0], p[0], p[1], p[1]
    if len(p) == 4:
        return p  # type: ignore[return-value]
    raise ValueError(f"upfirdn2d: padding must be an int, (px, py) or (x0, x1, y0, y1); got {p!r}")


def filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """``(width, height)`` of a 1-D (separable) or 2-D filter; ``(1, 1)`` for None."""
    if f is None:
        return 1, 1
    if f.ndim == 1:
        return f.shape[0], f.shape[0]
    return f.shape[1], f.shape[0]


def setup_filter(f, *, normalize: bool = True, flip_filter: bool = False, gain: float = 1.0,
                 separable: bool | None = None) -> torch.Tensor:
    """Build a float32 filter. A 1-D list of fewer than 8 taps becomes its 2-D outer product."""
    f = torch.as_tensor(1.0 if f is None else f, dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    if f.ndim not in (1, 2):
        raise ValueError(f"setup_filter: expected a 1-D or 2-D filter, found shape {tuple(f.shape)}")
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    return f * (gain ** (f.ndim / 2))


def upfirdn2d_ref(x: torch.Tensor, f: torch.Tensor | None, *, up=1, down=1, padding=0, flip_filter=False,
                  gain: float = 1.0) -> torch.Tensor:
    """Torch reference of :func:`upfirdn2d`. ``x`` ``[N, C, H, W]``."""
    upx, upy = parse_scaling(up, "up")
    downx, downy = parse_scaling(down, "down")
    x0, x1, y0, y1 = parse_padding(padding)
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    n, c, h, w = x.shape
    # 1. zero insertion: [N, C, H, W] -> [N, C, H*upy, W*upx]
    x = x.reshape(n, c, h, 1, w, 1)
    x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    x = x.reshape(n, c, h * upy, w * upx)
    # 2. pad (positive) and crop (negative)
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0):x.shape[2] - max(-y1, 0), max(-x0, 0):x.shape[3] - max(-x1, 0)]
    # 3. FIR: conv2d correlates, so flip for a true convolution unless flip_filter
    f = f.to(device=x.device, dtype=x.dtype) * (gain ** (f.ndim / 2))
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        x = F.conv2d(x, f[None, None].repeat(c, 1, 1, 1), groups=c)
    else:
        k = f[None, None].repeat(c, 1, 1)  # [C, 1, fw]
        x = F.conv2d(x, k.unsqueeze(2), groups=c)  # along x
        x = F.conv2d(x, k.unsqueeze(3), groups=c)  # along y
    # 4. downsample
    return x[:, :, ::downy, ::downx]


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, *, up=1, down=1, padding=0, flip_filter: bool = False,
              gain: float = 1.0, impl: str = "auto") -> torch.Tensor:
    """Upsample, pad/crop, filter and downsample every channel of ``x`` ``[N, C, H, W]``.

    Output size per axis: ``(in * up + p0 + p1 - f_len + down) // down``.
    """
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d: x must be [N, C, H, W], found shape {tuple(x.shape)}")
    if f is not None and f.ndim not in (1, 2):
        raise ValueError(f"upfirdn2d: f must be 1-D or 2-D, found shape {tuple(f.shape)}")
    if select_impl("upfirdn2d", impl, x) == "cuda":
        return cuda_impl("upfirdn2d")(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
    return upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)


def filter2d(x, f, *, padding=0, flip_filter=False, gain=1.0, impl="auto"):
    """Filter with same-size output (plus ``padding``)."""
    fw, fh = filter_size(f)
    x0, x1, y0, y1 = parse_padding(padding)
    pad = [x0 + fw // 2, x1 + (fw - 1) // 2, y0 + fh // 2, y1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x, f, *, up=2, padding=0, flip_filter=False, gain=1.0, impl="auto"):
    """Upsample by ``up`` with filter ``f`` (gain multiplied by ``upx * upy`` to keep the mean)."""
    upx, upy = parse_scaling(up, "up")
    fw, fh = filter_size(f)
    x0, x1, y0, y1 = parse_padding(padding)
    pad = [x0 + (fw + upx - 1) // 2, x1 + (fw - upx) // 2, y0 + (fh + upy - 1) // 2, y1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=up, padding=pad, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(x, f, *, down=2, padding=0, flip_filter=False, gain=1.0, impl="auto"):
    """Filter then downsample by ``down``."""
    downx, downy = parse_scaling(down, "down")
    fw, fh = filter_size(f)
    x0, x1, y0, y1 = parse_padding(padding)
    pad = [x0 + (fw - downx + 1) // 2, x1 + (fw - downx) // 2, y0 + (fh - downy + 1) // 2, y1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter, gain=gain, impl=impl)
