"""StyleGAN2 building blocks with rosinality parameter names, written from the published semantics."""

from __future__ import annotations

import math

import torch
from torch import nn

from zsgm.ops import bias_act, modulated_conv2d, setup_filter, upfirdn2d


class PixelNorm(nn.Module):
    """``z * rsqrt(mean(z^2) + 1e-8)`` over the feature axis."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Equalised-lr linear layer: ``W = W_raw * lr_mul / sqrt(in)``, ``b = b_raw * lr_mul``; optional fused lrelu.

    Parameters: ``weight`` [out, in] (initialised ``randn / lr_mul``), ``bias`` [out].
    """

    def __init__(self, in_dim: int, out_dim: int, *, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation
        self.impl = "auto"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, in] -> [N, out]
        out = x @ (self.weight * self.scale).t()
        return bias_act(out, self.bias * self.lr_mul, act="lrelu" if self.activation else "linear",
                        impl=self.impl)


class ModulatedConv2d(nn.Module):
    """Modulated conv; ``weight`` [1, O, I, k, k] scaled by ``1/sqrt(I k^2)``; ``modulation`` maps w to styles [N, I].

    With ``upsample`` a ``blur`` child holds the resampling filter (rosinality stores it x 4 as ``kernel``).
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int, *,
                 demodulate: bool = True, upsample: bool = False, blur_kernel=(1, 3, 3, 1)):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size ** 2)
        self.demodulate = demodulate
        self.upsample = upsample
        if upsample:
            self.blur = FilterBuffer(blur_kernel, factor=2)
        self.fused = True
        self.impl = "auto"

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:  # x [N, I, H, W], w [N, D]
        return self.forward_styles(x, self.modulation(w))

    def forward_styles(self, x: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
        """The conv with precomputed styles ``[N, I]`` (``modulation(w)``, or an edited StyleSpace code)."""
        return modulated_conv2d(x, self.weight[0] * self.scale, styles, demodulate=self.demodulate,
                                up=2 if self.upsample else 1,
                                resample_filter=self.blur.kernel / 4 if self.upsample else None,
                                fused=self.fused, impl=self.impl)


class FilterBuffer(nn.Module):
    """Holds the resampling filter as buffer ``kernel`` = normalised outer product x factor^2 (rosinality layout)."""

    def __init__(self, taps, *, factor: int):
        super().__init__()
        self.register_buffer("kernel", setup_filter(list(taps)) * factor ** 2)


class NoiseInjection(nn.Module):
    """``x + weight * noise``; ``weight`` [1] initialised to 0."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        return x if noise is None else x + self.weight * noise.to(x.dtype)


class FusedLeakyReLU(nn.Module):
    """Bias + lrelu(0.2) * sqrt(2); ``bias`` [C]."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.impl = "auto"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bias_act(x, self.bias, act="lrelu", impl=self.impl)


class StyledConv(nn.Module):
    """Modulated 3x3 conv -> noise -> bias + lrelu * sqrt(2)."""

    def __init__(self, in_channel: int, out_channel: int, style_dim: int, *, upsample: bool = False,
                 blur_kernel=(1, 3, 3, 1)):
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, 3, style_dim, upsample=upsample,
                                    blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x, w, noise=None):
        return self.forward_styles(x, self.conv.modulation(w), noise)

    def forward_styles(self, x, styles, noise=None):
        """As :meth:`forward` with precomputed styles ``[N, I]`` instead of ``w`` (see StyleSpace)."""
        return self.activate(self.noise(self.conv.forward_styles(x, styles), noise))


class ToRGB(nn.Module):
    """1x1 modulated conv without demodulation + bias [1, 3, 1, 1], added to the upsampled skip image."""

    def __init__(self, in_channel: int, style_dim: int, *, upsample: bool = True, blur_kernel=(1, 3, 3, 1)):
        super().__init__()
        if upsample:
            self.upsample = FilterBuffer(blur_kernel, factor=2)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.impl = "auto"

    def forward(self, x, w, skip=None):  # x [N, C, r, r] -> [N, 3, r, r]
        out = self.conv(x, w) + self.bias
        if skip is not None:
            # skip [N, 3, r/2, r/2] -> [N, 3, r, r]: up 2, pad (2, 1), rosinality's kernel already holds gain 4
            out = out + upfirdn2d(skip, self.upsample.kernel, up=2, padding=(2, 1, 2, 1), impl=self.impl)
        return out


class ConstantInput(nn.Module):
    """Learned constant ``input`` [1, C, 4, 4], repeated over the batch."""

    def __init__(self, channel: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.repeat(batch, 1, 1, 1)
