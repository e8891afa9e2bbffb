"""bias_act: forward values of every activation against numpy formulas, defaults, clamp and the OPS.md 2.1
gradient rule, float64 gradcheck/gradgradcheck of the reference, the kernel Function wiring driven by a
torch emulation of the kernel, and argument errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from zsgm.ops import ACTIVATIONS, bias_act, bias_act_function
from zsgm.ops.bias_act import TorchBiasActKernel

SELU_SCALE, SELU_ALPHA = 1.0507009873554805, 1.6732632423543772


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


NUMPY_ACTS = {  # name -> (act(z, alpha), default gain)
    "linear": (lambda z, a: z, 1.0),
    "relu": (lambda z, a: np.maximum(z, 0), math.sqrt(2)),
    "lrelu": (lambda z, a: np.where(z > 0, z, a * z), math.sqrt(2)),
    "tanh": (lambda z, a: np.tanh(z), 1.0),
    "sigmoid": (lambda z, a: sigmoid(z), 1.0),
    "elu": (lambda z, a: np.where(z > 0, z, np.expm1(z)), 1.0),
    "selu": (lambda z, a: SELU_SCALE * np.where(z > 0, z, SELU_ALPHA * np.expm1(z)), 1.0),
    "softplus": (lambda z, a: np.log1p(np.exp(z)), 1.0),
    "swish": (lambda z, a: z * sigmoid(z), math.sqrt(2)),
}


def test_every_activation_is_tested():
    assert set(ACTIVATIONS) == set(NUMPY_ACTS)


@pytest.mark.parametrize("act", list(NUMPY_ACTS))
def test_forward_matches_numpy_formula(act):
    rng = np.random.default_rng(0)
    x, b = rng.normal(size=(2, 3, 4, 5)) * 2, rng.normal(size=3)
    fn, gain = NUMPY_ACTS[act]
    z = x + b[None, :, None, None]
    got = bias_act(torch.tensor(x), torch.tensor(b), act=act).numpy()
    np.testing.assert_allclose(got, fn(z, 0.2) * gain, rtol=1e-12, atol=1e-12)  # default alpha and gain
    got = bias_act(torch.tensor(x), torch.tensor(b), act=act, gain=0.7, alpha=0.1, clamp=0.5).numpy()
    np.testing.assert_allclose(got, np.clip(fn(z, 0.1) * 0.7, -0.5, 0.5), rtol=1e-12, atol=1e-12)


def test_dim_bias_none_and_dtype():
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    b = torch.randn(5, dtype=torch.float64)
    torch.testing.assert_close(bias_act(x, b, dim=-1, act="lrelu"),
                               torch.nn.functional.leaky_relu(x + b, 0.2) * math.sqrt(2))
    torch.testing.assert_close(bias_act(x, b[:3], dim=0), x + b[:3, None, None])
    assert torch.equal(bias_act(x), x)
    assert bias_act(x.float(), b, dim=2).dtype == torch.float32  # bias cast to x's dtype


# ----------------------------------------------------------------------------------------------- gradients

def off_the_kinks(shape, act, clamp, seed, **kw):
    """x, b with x + b away from 0 and act(x + b) * gain away from +-clamp (OPS.md 6.1); kw: alpha, gain."""
    g = torch.Generator().manual_seed(seed)
    b = torch.randn(shape[1], dtype=torch.float64, generator=g) * 0.1
    z = torch.randn(shape, dtype=torch.float64, generator=g) * 1.5
    z = z + 0.3 * torch.sign(z)
    for _ in range(50):
        y = bias_act(z, act=act, **kw)
        bad = (y.abs() - clamp).abs() < 0.15
        if not bad.any():
            break
        z = torch.where(bad, z * 1.4, z)  # outward: monotone acts move y past the clamp
    y = bias_act(z, act=act, **kw)
    assert not ((y.abs() - clamp).abs() < 0.15).any()
    assert (y.abs() > clamp).any() and (y.abs() < clamp).any()  # some elements saturate: the mask matters
    return (z - b[None, :, None, None]).requires_grad_(True), b.requires_grad_(True)


@pytest.mark.parametrize("act", list(NUMPY_ACTS))
def test_reference_gradcheck_and_gradgradcheck(act):
    clamp = 0.6 if act in ("tanh", "sigmoid") else 1.2  # bounded activations need a lower clamp to saturate
    x, b = off_the_kinks((2, 3, 8, 8), act, clamp, seed=3)
    fn = lambda a, c: bias_act(a, c, act=act, clamp=clamp, impl="ref")  # noqa: E731
    assert gradcheck(fn, (x, b))
    assert gradgradcheck(fn, (x, b))


@pytest.mark.parametrize("act", ["linear", "relu", "lrelu"])
def test_reference_gradient_follows_the_kernel_rule(act):
    """dx = dy * gain * act'(y / gain) * [-c < y < c]; db = sum of dx over every axis but dim."""
    clamp, gain, alpha = 1.0, 1.7, 0.3
    x, b = off_the_kinks((2, 3, 4, 4), act, clamp, seed=4, alpha=alpha, gain=gain)
    y = bias_act(x, b, act=act, alpha=alpha, gain=gain, clamp=clamp)
    dy = torch.randn_like(y)
    dx, db = torch.autograd.grad(y, (x, b), dy)
    yn, dyn = y.detach().numpy(), dy.numpy()
    slope = {"linear": np.ones_like(yn), "relu": (yn > 0) * 1.0, "lrelu": np.where(yn > 0, 1.0, alpha)}[act]
    rule = dyn * gain * slope * ((yn > -clamp) & (yn < clamp))
    np.testing.assert_allclose(dx.numpy(), rule, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db.numpy(), rule.sum(axis=(0, 2, 3)), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------- kernel wiring

class RecordingKernel(TorchBiasActKernel):
    def __init__(self):
        self.calls = []

    def bias_act(self, x, b, dim, act, alpha, gain, clamp):
        self.calls.append(("forward", dim, act, alpha, gain, clamp))
        return super().bias_act(x, b, dim, act, alpha, gain, clamp)

    def bias_act_grad(self, dy, y, dim, act, alpha, gain, clamp):
        self.calls.append(("grad", y.data_ptr()))
        return super().bias_act_grad(dy, y, dim, act, alpha, gain, clamp)


@pytest.mark.parametrize("act", ["linear", "relu", "lrelu"])
@pytest.mark.parametrize("clamp", [None, 1.2])
@pytest.mark.parametrize("gain", [None, 0.5])
def test_kernel_function_gradcheck_and_gradgradcheck(act, clamp, gain):
    x, b = off_the_kinks((2, 3, 8, 8), act, clamp or 1.2, seed=5, gain=gain)
    kernel = TorchBiasActKernel()
    fn = lambda a, c: bias_act_function(kernel, a, c, act=act, gain=gain, clamp=clamp)  # noqa: E731
    ref = lambda a, c: bias_act(a, c, act=act, gain=gain, clamp=clamp, impl="ref")  # noqa: E731
    torch.testing.assert_close(fn(x, b), ref(x, b), rtol=0, atol=0)
    assert gradcheck(fn, (x, b))
    assert gradgradcheck(fn, (x, b))
    # first and second order equal the reference's autograd (d(dx)/d(dy) is the same mask; x, b terms zero)
    dy = torch.randn(x.shape, dtype=torch.float64, requires_grad=True)
    gk = torch.autograd.grad(fn(x, b), (x, b), dy, create_graph=True)
    gr = torch.autograd.grad(ref(x, b), (x, b), dy, create_graph=True)
    for k, r in zip(gk, gr):
        torch.testing.assert_close(k, r)
    v = torch.randn_like(x)
    sk = torch.autograd.grad((gk[0] * v).sum(), (dy, x, b), allow_unused=True)
    sr = torch.autograd.grad((gr[0] * v).sum(), (dy, x, b), allow_unused=True)
    for k, r, t in zip(sk, sr, (dy, x, b)):
        torch.testing.assert_close(torch.zeros_like(t) if k is None else k, torch.zeros_like(t) if r is None else r)


def test_kernel_grad_mode_reuses_the_saved_output_and_mask():
    kernel = RecordingKernel()
    x = torch.tensor([[-3.0, 0.5], [2.0, -0.5]], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([1.0, -1.0], dtype=torch.float64, requires_grad=True)
    y = bias_act_function(kernel, x, b, dim=0, act="lrelu", clamp=1.0)
    # x + b[row] = [[-2, 1.5], [1, -1.5]]; lrelu * sqrt2 = [[-0.57, 2.12 -> clamped], [1.41 -> clamped, -0.42]]
    dy = torch.ones_like(y, requires_grad=True)
    dx, db = torch.autograd.grad(y, (x, b), dy, create_graph=True)
    s = 0.2 * math.sqrt(2)
    torch.testing.assert_close(dx, torch.tensor([[s, 0.0], [0.0, s]], dtype=torch.float64))
    torch.testing.assert_close(db, dx.sum(1))
    (d_dy,) = torch.autograd.grad(dx.sum(), dy)
    torch.testing.assert_close(d_dy, dx.detach())  # the same mask applied to d(dx)
    assert [c[0] for c in kernel.calls] == ["forward", "grad", "grad"]
    assert kernel.calls[1][1] == kernel.calls[2][1] == y.data_ptr()  # both grad launches read the saved y
    assert kernel.calls[0][1:] == (0, "lrelu", 0.2, math.sqrt(2), 1.0)


def test_kernel_identity_gradient_shortcut():
    kernel = RecordingKernel()
    x = torch.randn(2, 3, requires_grad=True, dtype=torch.float64)
    b = torch.randn(3, requires_grad=True, dtype=torch.float64)
    dx, db = torch.autograd.grad(bias_act_function(kernel, x, b), (x, b), torch.full((2, 3), 2.0, dtype=torch.float64))
    assert torch.equal(dx, torch.full((2, 3), 2.0, dtype=torch.float64)) and torch.equal(db, torch.full((3,), 4.0,
                                                                                                     dtype=torch.float64))
    assert [c[0] for c in kernel.calls] == ["forward"]  # linear, gain 1, no clamp: dx = dy, no grad launch


def test_kernel_path_rejects_what_it_cannot_differentiate():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="supports act in linear, relu, lrelu; got 'tanh'"):
        bias_act_function(TorchBiasActKernel(), x, act="tanh")
    with pytest.raises(ValueError, match="gain > 0 and alpha >= 0"):
        bias_act_function(TorchBiasActKernel(), x, act="lrelu", gain=-1.0)


# ----------------------------------------------------------------------------------------------- errors

def test_argument_errors_are_clear():
    x = torch.randn(2, 4, 3, 3)
    with pytest.raises(ValueError, match="unknown act 'gelu'; expected one of linear, relu, lrelu, tanh"):
        bias_act(x, act="gelu")
    with pytest.raises(ValueError, match=r"bias must have shape \[4\] \(x.shape\[1\] of x \(2, 4, 3, 3\)\); "
                                         r"found \(3,\)"):
        bias_act(x, torch.zeros(3))
    with pytest.raises(ValueError, match=r"bias must have shape \[3\] .* found \(1, 3\)"):
        bias_act(x, torch.zeros(1, 3), dim=2)
    with pytest.raises(ValueError, match=r"dim 4 is out of range for x of shape \(2, 4, 3, 3\)"):
        bias_act(x, dim=4)
    with pytest.raises(ValueError, match="clamp must be None .* or >= 0; got -1"):
        bias_act(x, clamp=-1)
