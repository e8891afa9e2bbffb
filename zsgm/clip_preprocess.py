"""Differentiable CLIP preprocessing: generator output ``[N, 3, H, W]`` in [-1, 1] -> normalised CLIP input.

Three pipelines (METHODS.md section 1): ``"nada"`` ((x+1)/2, bicubic resize of the short side to the model's input
size, centre crop, mean/std), ``"oneshot"`` (bicubic straight to the input size, no crop) and ``"deltaedit"``
(nearest upsampling x7, then average pooling down to the input size; computed as two small matrix products,
without the x7 image). :class:`zsgm.clip.ClipModel` applies the one its spec names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["DELTAEDIT_UPSAMPLE", "PREPROCESS_MODES", "preprocess_images"]

PREPROCESS_MODES = ("nada", "oneshot", "deltaedit")
DELTAEDIT_UPSAMPLE = 7


def _deltaedit_matrix(n_in: int, size: int, device, dtype) -> torch.Tensor:
    """``[size, n_in]``: nearest upsampling x7 followed by adaptive average pooling to ``size`` (1-D)."""
    n_up = n_in * DELTAEDIT_UPSAMPLE
    pool = torch.zeros(size, n_up, dtype=torch.float64)
    for i in range(size):  # adaptive_avg_pool2d's window: [floor(i*n/s), ceil((i+1)*n/s))
        start, end = (i * n_up) // size, -((-(i + 1) * n_up) // size)
        pool[i, start:end] = 1.0 / (end - start)
    up = torch.zeros(n_up, n_in, dtype=torch.float64)
    up[torch.arange(n_up), torch.arange(n_up) // DELTAEDIT_UPSAMPLE] = 1.0
    return (pool @ up).to(device=device, dtype=dtype)  # [size, n_in]


def preprocess_images(x: torch.Tensor, *, mode: str, size: int, mean: torch.Tensor, std: torch.Tensor,
                      antialias: bool = False) -> torch.Tensor:
    """Generator output -> normalised CLIP input, differentiably (METHODS.md section 1).

    Args:
        x: ``[N, 3, H, W]`` in [-1, 1], any size (not necessarily square).
        mode: "nada" (bicubic resize of the short side to ``size``, centre crop), "oneshot" (bicubic straight to
            ``size`` x ``size``), "deltaedit" (nearest x7 then average pooling to ``size``, StyleCLIP's pipeline).
        size: the model's input size.
        mean / std: ``[1, 3, 1, 1]`` normalisation.
        antialias: antialiased bicubic resizing (off by default: the reference code resized tensors without it).

    Returns:
        ``[N, 3, size, size]`` float32.
    """
    x = (x.float() + 1) / 2  # [N, 3, H, W] in [0, 1]
    h, w = x.shape[-2:]
    if mode == "nada":
        if (h, w) != (size, size):
            short, long = min(h, w), max(h, w)
            new_long = int(size * long / short)  # torchvision Resize(int) rounding
            nh, nw = (size, new_long) if h <= w else (new_long, size)
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=antialias)
            top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))  # torchvision CenterCrop
            x = x[:, :, top:top + size, left:left + size]
    elif mode == "oneshot":
        if (h, w) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=antialias)
    elif mode == "deltaedit":
        mh = _deltaedit_matrix(h, size, x.device, x.dtype)  # [S, H]
        mw = mh if w == h else _deltaedit_matrix(w, size, x.device, x.dtype)  # [S, W]
        x = torch.einsum("sh,nchw,tw->ncst", mh, x, mw)  # [N, 3, S, S]
    else:
        raise ValueError(f"preprocess mode must be one of {', '.join(PREPROCESS_MODES)}; got {mode!r}")
    return (x - mean) / std
