"""``bias_act``: fused bias + activation + gain + clamp (OPS.md 2.1), with a pure-torch reference.

``y = clamp(act(x + b[dim]) * gain, -clamp, +clamp)``; every stage optional. The reference is built from
differentiable torch ops, so it supports gradients of any order.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from zsgm.ops.dispatch import cuda_impl, select_impl

# name -> (function(x, alpha), default alpha, default gain)
ACTIVATIONS: dict[str, tuple[Callable[[torch.Tensor, float], torch.Tensor], float, float]] = {
    "linear": (lambda x, a: x, 0.0, 1.0),
    "relu": (lambda x, a: F.relu(x), 0.0, math.sqrt(2)),
    "lrelu": (lambda x, a: F.leaky_relu(x, a), 0.2, math.sqrt(2)),
    "tanh": (lambda x, a: torch.tanh(x), 0.0, 1.0),
    "sigmoid": (lambda x, a: torch.sigmoid(x), 0.0, 1.0),
    "elu": (lambda x, a: F.elu(x), 0.0, 1.0),
    "selu": (lambda x, a: F.selu(x), 0.0, 1.0),
    "softplus": (lambda x, a: F.softplus(x), 0.0, 1.0),
    "swish": (lambda x, a: torch.sigmoid(x) * x, 0.0, math.sqrt(2)),
}


def resolve_act(act: str, alpha: float | None, gain: float | None) -> tuple[float, float]:
    """Validate ``act`` and fill in its default alpha and gain."""
    if act not in ACTIVATIONS:
        raise ValueError(f"bias_act: unknown act {act!r}; expected one of {', '.join(ACTIVATIONS)}")
    _, default_alpha, default_gain = ACTIVATIONS[act]
    return (default_alpha if alpha is None else float(alpha)), (default_gain if gain is None else float(gain))


def bias_act_ref(x: torch.Tensor, b: torch.Tensor | None = None, *, dim: int = 1, act: str = "linear",
                 alpha: float | None = None, gain: float | None = None,
                 clamp: float | None = None) -> torch.Tensor:
    """Torch reference of :func:`bias_act` (differentiable to any order)."""
    alpha, gain = resolve_act(act, alpha, gain)
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)]).to(x.dtype)
    x = ACTIVATIONS[act][0](x, alpha)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, *, dim: int = 1, act: str = "linear",
             alpha: float | None = None, gain: float | None = None, clamp: float | None = None,
             impl: str = "auto") -> torch.Tensor:
    """Add a bias along ``dim``, apply an activation, scale by ``gain``, clamp to ``[-clamp, clamp]``.

    Args:
        x: any-shape tensor, e.g. ``[N, C, H, W]``.
        b: ``[x.shape[dim]]`` bias or None.
        act: one of :data:`ACTIVATIONS`; alpha (lrelu slope) and gain default per activation.
        clamp: None (or negative) for no clamp.
        impl: "auto" | "cuda" | "ref" (see :mod:`zsgm.ops.dispatch`).

    Returns:
        Tensor of ``x``'s shape.
    """
    resolve_act(act, alpha, gain)
    if b is not None:
        if b.ndim != 1 or not (-x.ndim <= dim < x.ndim) or b.shape[0] != x.shape[dim]:
            raise ValueError(f"bias_act: bias must have shape [{x.shape[dim] if -x.ndim <= dim < x.ndim else '?'}] "
                             f"(x.shape[{dim}] of x {tuple(x.shape)}); found {tuple(b.shape)}")
    if select_impl("bias_act", impl, x) == "cuda":
        return cuda_impl("bias_act")(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
    return bias_act_ref(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
