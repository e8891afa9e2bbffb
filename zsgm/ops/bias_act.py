"""``bias_act``: fused bias + activation + gain + clamp (OPS.md 2.1).

``y = clamp(act(x + b[dim]) * gain, -clamp, +clamp)``; every stage is optional.

Two implementations of the same semantics:

- :func:`bias_act_ref`, built from plain differentiable torch ops (gradients of any order); the CPU path.
- :func:`bias_act_function`, the autograd wiring for a device kernel. A forward Function calls
  ``kernel.bias_act`` and saves only the output ``y``; its backward is a second Function that calls the
  kernel's "grad" mode ``dx = dy * gain * act'(y / gain) * [-clamp < y < clamp]`` and whose own backward
  applies that same mask to the incoming ``d(dx)``, so double backward (R1, path length) works. The
  kernel is injected: the CuPy backend passes its CUDA kernel, tests pass :class:`TorchBiasActKernel`.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Protocol

import torch
import torch.nn.functional as F

from zsgm.ops.dispatch import run_op


class ActSpec(NamedTuple):
    func: Callable[[torch.Tensor, float], torch.Tensor]  # (x, alpha) -> act(x)
    alpha: float  # default alpha
    gain: float  # default gain


ACTIVATIONS: dict[str, ActSpec] = {
    "linear": ActSpec(lambda x, a: x, 0.0, 1.0),
    "relu": ActSpec(lambda x, a: F.relu(x), 0.0, math.sqrt(2)),
    "lrelu": ActSpec(lambda x, a: F.leaky_relu(x, a), 0.2, math.sqrt(2)),
    "tanh": ActSpec(lambda x, a: torch.tanh(x), 0.0, 1.0),
    "sigmoid": ActSpec(lambda x, a: torch.sigmoid(x), 0.0, 1.0),
    "elu": ActSpec(lambda x, a: F.elu(x), 0.0, 1.0),
    "selu": ActSpec(lambda x, a: F.selu(x), 0.0, 1.0),
    "softplus": ActSpec(lambda x, a: F.softplus(x), 0.0, 1.0),
    "swish": ActSpec(lambda x, a: torch.sigmoid(x) * x, 0.0, math.sqrt(2)),
}

# Activations whose derivative is a function of the output alone (what the kernel "grad" mode needs).
KERNEL_ACTS = ("linear", "relu", "lrelu")


def resolve_act(act: str, alpha: float | None, gain: float | None) -> tuple[float, float]:
    """Validate ``act`` and fill in its default ``alpha`` and ``gain`` (OPS.md 2.1 table).

    Returns:
        ``(alpha, gain)`` as floats.
    """
    if act not in ACTIVATIONS:
        raise ValueError(f"bias_act: unknown act {act!r}; expected one of {', '.join(ACTIVATIONS)}")
    spec = ACTIVATIONS[act]
    return (spec.alpha if alpha is None else float(alpha)), (spec.gain if gain is None else float(gain))


def check_bias_act_args(x: torch.Tensor, b: torch.Tensor | None, dim: int, clamp: float | None) -> int:
    """Validate ``x``, ``b``, ``dim`` and ``clamp``; returns ``dim`` made non-negative."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"bias_act: x must be a tensor; got {type(x).__name__}")
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(f"bias_act: dim {dim} is out of range for x of shape {tuple(x.shape)}")
    dim %= x.ndim
    if b is not None and (b.ndim != 1 or b.shape[0] != x.shape[dim]):
        raise ValueError(f"bias_act: bias must have shape [{x.shape[dim]}] (x.shape[{dim}] of x "
                         f"{tuple(x.shape)}); found {tuple(b.shape)}")
    if clamp is not None and not clamp >= 0:
        raise ValueError(f"bias_act: clamp must be None (no clamp) or >= 0; got {clamp!r}")
    return dim


def bias_act_ref(x: torch.Tensor, b: torch.Tensor | None = None, *, dim: int = 1, act: str = "linear",
                 alpha: float | None = None, gain: float | None = None,
                 clamp: float | None = None) -> torch.Tensor:
    """Torch reference of :func:`bias_act` (plain torch ops: differentiable to any order).

    torch's clamp passes the gradient at exactly ``+-clamp`` where the kernel rule zeroes it (measure zero).
    """
    alpha, gain = resolve_act(act, alpha, gain)
    dim = check_bias_act_args(x, b, dim, clamp)
    if b is not None:
        x = x + b.to(x.dtype).reshape([-1 if i == dim else 1 for i in range(x.ndim)])  # b broadcast on dim
    x = ACTIVATIONS[act].func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, *, dim: int = 1, act: str = "linear",
             alpha: float | None = None, gain: float | None = None, clamp: float | None = None,
             impl: str = "auto") -> torch.Tensor:
    """Add a bias along ``dim``, apply an activation, multiply by ``gain``, clamp to ``[-clamp, clamp]``.

    Args:
        x: tensor of any shape, e.g. ``[N, C, H, W]``.
        b: bias ``[x.shape[dim]]`` or None.
        dim: the axis ``b`` runs along.
        act: one of :data:`ACTIVATIONS`.
        alpha: lrelu slope (default 0.2); unused by the other activations.
        gain: output scale; default sqrt(2) for lrelu/relu/swish, else 1.
        clamp: None for no clamp, else a bound >= 0.
        impl: ``"auto"`` | ``"cuda"`` | ``"ref"`` (see :mod:`zsgm.ops.dispatch`).

    Returns:
        Tensor of ``x``'s shape and dtype.
    """
    resolve_act(act, alpha, gain)
    check_bias_act_args(x, b, dim, clamp)
    return run_op("bias_act", impl, bias_act_ref, (x, b), x, b, dim=dim, act=act, alpha=alpha, gain=gain,
                  clamp=clamp)


# --------------------------------------------------------------------------------------------------
# Autograd wiring for a device kernel


class BiasActKernel(Protocol):
    """What a device backend provides (``act`` in :data:`KERNEL_ACTS`, ``dim`` non-negative)."""

    def bias_act(self, x: torch.Tensor, b: torch.Tensor | None, dim: int, act: str, alpha: float, gain: float,
                 clamp: float | None) -> torch.Tensor:
        """Forward: ``clamp(act(x + b[dim]) * gain)``, output in ``x``'s memory format."""

    def bias_act_grad(self, dy: torch.Tensor, y: torch.Tensor, dim: int, act: str, alpha: float, gain: float,
                      clamp: float | None) -> torch.Tensor:
        """Grad mode: ``dy * gain * act'(y / gain) * [-clamp < y < clamp]`` from the saved output ``y``."""


class TorchBiasActKernel:
    """:class:`BiasActKernel` computed with torch ops: drives the Functions on CPU in tests."""

    def bias_act(self, x, b, dim, act, alpha, gain, clamp):
        if b is not None:
            x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
        if act == "lrelu":
            x = torch.where(x > 0, x, x * alpha)
        elif act == "relu":
            x = torch.where(x > 0, x, torch.zeros_like(x))
        x = x * gain
        return x if clamp is None else x.clamp(-clamp, clamp)

    def bias_act_grad(self, dy, y, dim, act, alpha, gain, clamp):
        slope = torch.ones_like(y)  # act'(y / gain); gain > 0 so the sign of y is the sign of x + b
        if act == "lrelu":
            slope = torch.where(y > 0, slope, slope * alpha)
        elif act == "relu":
            slope = (y > 0).to(y.dtype)
        if clamp is not None:
            slope = slope * ((y > -clamp) & (y < clamp)).to(y.dtype)  # zero where the forward saturated
        return dy * (slope * gain)


def _grad_is_identity(cfg: tuple) -> bool:
    _, act, _, gain, clamp = cfg
    return act == "linear" and gain == 1 and clamp is None


class _BiasActGrad(torch.autograd.Function):
    """``dx = grad(dy; y)``: linear in ``dy`` with a mask from ``y``; its backward is itself."""

    @staticmethod
    def forward(ctx, dy, y, kernel, cfg):  # dy, y [x.shape] -> dx [x.shape]
        ctx.save_for_backward(y)
        ctx.kernel, ctx.cfg = kernel, cfg
        return kernel.bias_act_grad(dy, y, *cfg)

    @staticmethod
    def backward(ctx, d_dx):
        (y,) = ctx.saved_tensors
        d_dy = _BiasActGrad.apply(d_dx, y, ctx.kernel, ctx.cfg)  # the same mask again
        # d/dy of the mask is zero almost everywhere for piecewise-linear activations.
        return d_dy, None, None, None


class _BiasAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, kernel, cfg):
        y = kernel.bias_act(x, b, *cfg)
        ctx.save_for_backward(y)
        ctx.kernel, ctx.cfg, ctx.has_bias = kernel, cfg, b is not None
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        dx = dy if _grad_is_identity(ctx.cfg) else _BiasActGrad.apply(dy, y, ctx.kernel, ctx.cfg)
        db = None
        if ctx.has_bias and ctx.needs_input_grad[1]:
            dim = ctx.cfg[0]
            db = dx.sum([i for i in range(dx.ndim) if i != dim])  # [C]
        return (dx if ctx.needs_input_grad[0] else None), db, None, None


def bias_act_function(kernel: BiasActKernel, x: torch.Tensor, b: torch.Tensor | None = None, *, dim: int = 1,
                      act: str = "linear", alpha: float | None = None, gain: float | None = None,
                      clamp: float | None = None) -> torch.Tensor:
    """Differentiable ``bias_act`` (first and second order) computed by ``kernel``.

    Args:
        kernel: a :class:`BiasActKernel` (the CuPy kernel on CUDA, :class:`TorchBiasActKernel` in tests).
        x, b, dim, act, alpha, gain, clamp: as :func:`bias_act`; ``act`` must be in :data:`KERNEL_ACTS`,
            ``gain > 0`` and ``alpha >= 0`` (so the output's sign determines the derivative).

    Returns:
        Tensor of ``x``'s shape.
    """
    if act not in KERNEL_ACTS:
        raise ValueError(f"bias_act kernel path supports act in {', '.join(KERNEL_ACTS)}; got {act!r} "
                         f"(the reference, impl='ref', supports all of {', '.join(ACTIVATIONS)})")
    alpha, gain = resolve_act(act, alpha, gain)
    if not gain > 0 or not alpha >= 0:
        raise ValueError(f"bias_act kernel path needs gain > 0 and alpha >= 0; got gain={gain}, alpha={alpha}")
    dim = check_bias_act_args(x, b, dim, clamp)
    return _BiasAct.apply(x, b, kernel, (dim, act, alpha, gain, None if clamp is None else float(clamp)))
