"""Modulated conv: fused == non-fused, an independent per-sample implementation, the up=2 decomposition
(transposed conv stride 2, then blur pad 1 gain 4, with scipy as the blur oracle), unit-norm effective
weights after demodulation, padding, gradients of both orders and argument errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

from zsgm.ops import modulated_conv2d, setup_filter
from zsgm.ops.modconv import modulated_weight

BLUR = setup_filter([1, 3, 3, 1]).double()  # normalised 4x4, sum 1


def inputs(n=2, i=3, o=4, hw=8, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, i, hw, hw, dtype=torch.float64, generator=g)
    w = torch.randn(o, i, k, k, dtype=torch.float64, generator=g) / (i * k * k) ** 0.5
    s = torch.randn(n, i, dtype=torch.float64, generator=g) + 1.0
    return x, w, s


def effective_weight(w, s, demodulate):
    """OPS.md 1.3 written out per (n, o): w' = W * s; w'' = w' * rsqrt(sum w'^2 + 1e-8)."""
    out = torch.empty(s.shape[0], *w.shape, dtype=w.dtype)
    for n in range(s.shape[0]):
        for o in range(w.shape[0]):
            wp = w[o] * s[n][:, None, None]
            out[n, o] = wp / torch.sqrt((wp ** 2).sum() + 1e-8) if demodulate else wp
    return out


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("demodulate", [True, False])
def test_fused_equals_nonfused(up, demodulate):
    x, w, s = inputs()
    a = modulated_conv2d(x, w, s, up=up, demodulate=demodulate, resample_filter=BLUR, fused=True)
    b = modulated_conv2d(x, w, s, up=up, demodulate=demodulate, resample_filter=BLUR, fused=False)
    assert a.shape == (2, 4, 8 * up, 8 * up)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("demodulate", [True, False])
def test_up1_equals_per_sample_conv(fused, demodulate):
    x, w, s = inputs(k=3)
    weff = effective_weight(w, s, demodulate)
    ref = torch.cat([F.conv2d(x[n:n + 1], weff[n], padding=1) for n in range(2)])
    got = modulated_conv2d(x, w, s, demodulate=demodulate, fused=fused)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    x1, w1, s1 = inputs(k=1)  # the ToRGB shape: 1x1, no demodulation
    ref1 = torch.cat([F.conv2d(x1[n:n + 1], effective_weight(w1, s1, False)[n]) for n in range(2)])
    torch.testing.assert_close(modulated_conv2d(x1, w1, s1, demodulate=False, fused=fused), ref1,
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fused", [True, False])
def test_up2_equals_transposed_conv_then_blur(fused):
    """OPS.md 1.4: conv_transpose2d stride 2 with w'' (no flip), then 4x4 blur pad (1, 1, 1, 1), gain 4."""
    x, w, s = inputs()
    weff = effective_weight(w, s, True)  # [N, O, I, 3, 3]
    got = modulated_conv2d(x, w, s, up=2, resample_filter=BLUR, fused=fused)
    f4 = BLUR.numpy() * 4
    for n in range(2):
        t = F.conv_transpose2d(x[n:n + 1], weff[n].transpose(0, 1), stride=2)[0].numpy()  # [O, 17, 17]
        assert t.shape == (4, 17, 17)
        blurred = np.stack([scipy.signal.convolve2d(np.pad(c, 1), f4, mode="valid") for c in t])  # [O, 16, 16]
        np.testing.assert_allclose(got[n].numpy(), blurred, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fused", [True, False])
def test_demodulation_gives_unit_norm_effective_weights(fused):
    """Recover each sample's effective weight through the op itself (delta inputs) and check its norm."""
    x, w, s = inputs(n=2, i=3, o=4, k=3)
    s = s * torch.tensor([[5.0], [0.1]], dtype=torch.float64)  # very different style scales per sample
    recovered = torch.empty(2, 4, 3, 3, 3, dtype=torch.float64)  # [N, O, I, k, k]
    for i in range(3):
        delta = torch.zeros(2, 3, 3, 3, dtype=torch.float64)
        delta[:, i, 1, 1] = 1.0  # a centred impulse in channel i
        recovered[:, :, i] = modulated_conv2d(delta, w, s, fused=fused).flip([2, 3])  # [N, O, 3, 3]
    norms = recovered.square().sum(dim=[2, 3, 4])  # [N, O]
    torch.testing.assert_close(norms, torch.ones(2, 4, dtype=torch.float64), rtol=0, atol=1e-6)
    torch.testing.assert_close(recovered, effective_weight(w, s, True), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(modulated_weight(w, s).square().sum(dim=[2, 3, 4]), norms, rtol=1e-12, atol=1e-12)
    # consequence: scaling the styles changes nothing when demodulating, and scales the output when not
    torch.testing.assert_close(modulated_conv2d(x, w, 7 * s, fused=fused), modulated_conv2d(x, w, s, fused=fused),
                               rtol=1e-5, atol=1e-6)  # up to the 1e-8 eps
    torch.testing.assert_close(modulated_conv2d(x, w, 7 * s, demodulate=False, fused=fused),
                               7 * modulated_conv2d(x, w, s, demodulate=False, fused=fused))


def test_padding_argument():
    x, w, s = inputs()
    weff = effective_weight(w, s, True)
    for fused in (True, False):
        got = modulated_conv2d(x, w, s, padding=0, fused=fused)
        assert got.shape == (2, 4, 6, 6)
        torch.testing.assert_close(got, torch.cat([F.conv2d(x[n:n + 1], weff[n]) for n in range(2)]))
        assert modulated_conv2d(x, w, s, padding=(2, 0), fused=fused).shape == (2, 4, 10, 6)
    with pytest.raises(ValueError, match="padding applies to up=1 only"):
        modulated_conv2d(x, w, s, up=2, resample_filter=BLUR, padding=1)


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("fused", [True, False])
def test_gradcheck_and_gradgradcheck(up, fused):
    x, w, s = inputs(n=2, i=2, o=2, hw=4, seed=up)
    for t in (x, w, s):
        t.requires_grad_(True)
    fn = lambda a, b, c: modulated_conv2d(a, b, c, up=up, resample_filter=BLUR, fused=fused)  # noqa: E731
    assert gradcheck(fn, (x, w, s))
    assert gradgradcheck(fn, (x, w, s))


def test_argument_errors_are_clear():
    x, w, s = inputs()
    with pytest.raises(ValueError, match=r"needs weight \[O, 3, k, k\] and styles \[2, 3\]; found weight "
                                         r"\(4, 3, 3, 3\) and styles \(2, 4\)"):
        modulated_conv2d(x, w, torch.ones(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"needs weight \[O, 3, k, k\]"):
        modulated_conv2d(x, w[:, :2], s)
    with pytest.raises(ValueError, match=r"expected x \[N, I, H, W\]"):
        modulated_conv2d(x[0], w, s)
    with pytest.raises(ValueError, match="up must be 1 or 2; got 4"):
        modulated_conv2d(x, w, s, up=4)
    with pytest.raises(ValueError, match="up=2 needs resample_filter"):
        modulated_conv2d(x, w, s, up=2)
    with pytest.raises(ValueError, match="up=2 expects a 3x3 weight and a 4-tap resample_filter"):
        modulated_conv2d(x, w, s, up=2, resample_filter=setup_filter([1, 2, 1]).double())
