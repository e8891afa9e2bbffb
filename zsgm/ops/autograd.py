"""Autograd wiring for device kernels of ``bias_act`` and ``upfirdn2d``, with any gradient order.

A device backend implements a small *kernel* object; these Functions turn it into differentiable ops:

- ``bias_act``: ``kernel.bias_act(x, b, dim, act, alpha, gain, clamp)`` (forward) and
  ``kernel.bias_act_grad(dy, y, dim, act, alpha, gain, clamp)`` (the "grad" mode of OPS.md 2.1:
  ``dx = dy * gain * act'(y / gain) * [|y| < clamp]``, computed from the saved *output* ``y``). The grad
  op's own backward applies the same mask to ``d(dx)``, so double backward works (the x/b terms are zero
  almost everywhere for the piecewise-linear activations this path supports).
- ``upfirdn2d``: ``kernel.upfirdn2d(x, f, up, down, padding, flip_filter, gain)``; its backward is
  ``upfirdn2d`` itself with adjoint parameters (up <-> down, flip toggled, OPS.md 2.2 padding), so every
  order comes free.

The kernel is injectable: CPU tests drive these Functions with :class:`TorchEmulatedKernel`, which
computes the same modes with torch ops, to check ctx saving, mask reuse, bias reduction and adjoint
padding without a GPU; the CuPy backend supplies the real kernel on CUDA.
"""

from __future__ import annotations

import torch

from zsgm.ops.bias_act import resolve_act
from zsgm.ops.upfirdn2d import filter_size, parse_padding, parse_scaling, upfirdn2d_ref

KERNEL_ACTS = ("linear", "relu", "lrelu")  # activations whose derivative is a function of the output


class TorchEmulatedKernel:
    """The kernel interface computed with torch ops (CPU tests of the Function wiring)."""

    def bias_act(self, x, b, dim, act, alpha, gain, clamp):
        if b is not None:
            x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
        if act == "lrelu":
            x = torch.where(x > 0, x, x * alpha)
        elif act == "relu":
            x = x.clamp_min(0)
        x = x * gain
        return x.clamp(-clamp, clamp) if clamp is not None and clamp >= 0 else x

    def bias_act_grad(self, dy, y, dim, act, alpha, gain, clamp):
        slope = torch.ones_like(y)
        if act == "lrelu":
            slope = torch.where(y > 0, slope, slope * alpha)
        elif act == "relu":
            slope = (y > 0).to(y.dtype)
        dx = dy * slope * gain
        if clamp is not None and clamp >= 0:
            dx = dx * (y.abs() < clamp).to(dx.dtype)
        return dx

    def upfirdn2d(self, x, f, up, down, padding, flip_filter, gain):
        return upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)


class _BiasActGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dy, y, kernel, cfg):  # dy, y [x.shape] -> dx
        ctx.save_for_backward(y)
        ctx.kernel, ctx.cfg = kernel, cfg
        return kernel.bias_act_grad(dy, y, *cfg)

    @staticmethod
    def backward(ctx, d_dx):
        (y,) = ctx.saved_tensors
        d_dy = _BiasActGrad.apply(d_dx, y, ctx.kernel, ctx.cfg)  # the same mask again
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
        dx = _BiasActGrad.apply(dy, y, ctx.kernel, ctx.cfg)
        db = None
        if ctx.has_bias and ctx.needs_input_grad[1]:
            dim = ctx.cfg[0]
            db = dx.sum([i for i in range(dx.ndim) if i != dim])
        return dx, db, None, None


def bias_act_function(kernel, x, b=None, *, dim=1, act="linear", alpha=None, gain=None, clamp=None):
    """Differentiable ``bias_act`` through ``kernel`` (acts: linear, relu, lrelu)."""
    if act not in KERNEL_ACTS:
        raise ValueError(f"bias_act kernel path supports {KERNEL_ACTS}; got {act!r} (use impl='ref')")
    alpha, gain = resolve_act(act, alpha, gain)
    dim = dim % x.ndim
    return _BiasAct.apply(x, b, kernel, (dim, act, alpha, gain, clamp))


class _UpFirDn2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, f, kernel, cfg):
        up, down, padding, flip_filter, gain = cfg
        y = kernel.upfirdn2d(x, f, up, down, padding, flip_filter, gain)
        ctx.save_for_backward(f)
        ctx.kernel, ctx.cfg, ctx.in_shape, ctx.out_shape = kernel, cfg, x.shape, y.shape
        return y

    @staticmethod
    def backward(ctx, dy):
        (f,) = ctx.saved_tensors
        up, down, padding, flip_filter, gain = ctx.cfg
        (upx, upy), (downx, downy) = up, down
        x0, x1, y0, y1 = padding
        fw, fh = filter_size(f)
        ih, iw = ctx.in_shape[2], ctx.in_shape[3]
        oh, ow = ctx.out_shape[2], ctx.out_shape[3]
        adjoint_padding = (fw - x0 - 1, iw * upx - ow * downx + x0 - upx + 1,
                           fh - y0 - 1, ih * upy - oh * downy + y0 - upy + 1)
        dx = _UpFirDn2d.apply(dy, f, ctx.kernel, (down, up, adjoint_padding, not flip_filter, gain))
        return dx, None, None, None


def upfirdn2d_function(kernel, x, f, *, up=1, down=1, padding=0, flip_filter=False, gain=1.0):
    """Differentiable ``upfirdn2d`` through ``kernel`` (gradients of any order)."""
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    cfg = (parse_scaling(up, "up"), parse_scaling(down, "down"), parse_padding(padding), bool(flip_filter),
           float(gain))
    return _UpFirDn2d.apply(x, f, kernel, cfg)
