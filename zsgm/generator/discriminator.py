"""The StyleGAN2 discriminator (residual, config-f) with rosinality's module layout and parameter names.

Layout (``size`` = S, ``C(r)`` the channel table, ``k = log2(S) - log2(r) + 1`` for the block at input
resolution r = S, S/2, ..., 8):

- ``convs.0``: from-RGB, 1x1 conv 3 -> C(S) + bias + lrelu * sqrt(2) (``convs.0.0.weight``, ``convs.0.1.bias``);
- ``convs.{k}``: ResBlock C(r) -> C(r/2), r -> r/2:
  ``conv1`` 3x3 C(r) -> C(r) + lrelu (``conv1.0.weight``, ``conv1.1.bias``);
  ``conv2`` blur (pad 2, 2) then 3x3 stride 2, C(r) -> C(r/2) + lrelu (``conv2.0.kernel``, ``conv2.1.weight``,
  ``conv2.2.bias``);
  ``skip`` blur (pad 1, 1) then 1x1 stride 2, no bias, linear (``skip.0.kernel``, ``skip.1.weight``);
  output ``(conv2 + skip) / sqrt(2)``;
- minibatch stddev on the 4x4 map (``stddev_feat`` extra channels, groups of ``min(N, stddev_group)``);
- ``final_conv``: 3x3 C(4) + F -> C(4) + lrelu; ``final_linear.0``: C(4)*16 -> C(4) + lrelu;
  ``final_linear.1``: C(4) -> 1.

Convolutions are equalised-lr (weights scaled by ``1/sqrt(fan_in)`` at run time); the blur is the normalised
outer product of ``blur_kernel`` (no gain), applied with :func:`zsgm.ops.upfirdn2d`; bias + lrelu go through
:func:`zsgm.ops.bias_act` (the generator's :class:`~zsgm.generator.layers.FusedLeakyReLU` and
:class:`~zsgm.generator.layers.EqualLinear`).

Patch mode. Besides the logits, :meth:`Discriminator.features` returns intermediate maps ("taps"), named:
``convs.0`` (from-RGB output), ``convs.{k}.conv1`` and ``convs.{k}.conv2`` (inside block k; conv2 *before* the
skip is added) and ``convs.{k}`` (the block's output). cyclomon/OneshotCLIP's ``Patch_Discriminator`` walks the
blocks from the highest resolution, collects the conv1 and conv2 maps that have 512 channels and a side of 32 or
16 (never the from-RGB output, never a block output), stops at the fourth, and scores ``feat[p_ind]`` with its
``Extra`` head (a 3x3 ``ConvLayer(512, 1)`` per map, lrelu included); with its default ``highp = 1`` only the
first one is used. At 1024 px (channel multiplier 2) these are ``convs.5.conv2`` [512, 32, 32],
``convs.6.conv1`` [512, 32, 32], ``convs.6.conv2`` [512, 16, 16], ``convs.7.conv1`` [512, 16, 16]; at 256 px
the same four maps are ``convs.3.conv2``, ``convs.4.conv1``, ``convs.4.conv2``, ``convs.5.conv1``.
:func:`patch_taps` computes that selection for any architecture.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from zsgm.generator.arch import (MAX_CHANNELS, MAX_ELEMENTS, MAX_SIZE, GeneratorArch, _as_int, _as_ints, _is_int,
                                 arch_from_dict)
from zsgm.generator.layers import EqualLinear, FilterBuffer, FusedLeakyReLU
from zsgm.ops import upfirdn2d

MAX_STDDEV_GROUP = 1 << 16


@attrs.frozen(kw_only=True)
class DiscriminatorArch:
    """StyleGAN2 residual discriminator architecture (JSON-serialisable, bounded).

    Attributes:
        size: input resolution (power of two, 8..4096).
        channels: feature channels per resolution 4, 8, ..., size (as :class:`GeneratorArch`).
        blur_kernel: 4 taps of the down-sampling filter (normalised outer product).
        stddev_group: minibatch-stddev group size (a batch of N uses groups of ``min(N, stddev_group)``;
            N must be a multiple of that).
        stddev_feat: minibatch-stddev feature channels (must divide C(4)).
    """

    size: int = attrs.field(converter=_as_int)
    channels: tuple[int, ...] = attrs.field(converter=_as_ints)
    blur_kernel: tuple[int, ...] = attrs.field(default=(1, 3, 3, 1), converter=_as_ints)
    stddev_group: int = attrs.field(default=4, converter=_as_int)
    stddev_feat: int = attrs.field(default=1, converter=_as_int)

    def __attrs_post_init__(self):
        if not _is_int(self.size) or not 8 <= self.size <= MAX_SIZE or self.size & (self.size - 1):
            raise ValueError(f"discriminator size must be a power of two from 8 to {MAX_SIZE}, got {self.size!r}")
        if len(self.channels) != self.log_size - 1:
            raise ValueError(f"channels must list one count per resolution 4..{self.size} ({self.log_size - 1} "
                             f"values), got {len(self.channels)}")
        for i, c in enumerate(self.channels):
            if not _is_int(c) or not 1 <= c <= MAX_CHANNELS:
                raise ValueError(f"channels[{i}] (resolution {2 ** (i + 2)}) must be from 1 to {MAX_CHANNELS}, "
                                 f"got {c!r}")
        if len(self.blur_kernel) != 4 or not all(_is_int(t) for t in self.blur_kernel) \
                or sum(self.blur_kernel) == 0 or max(abs(t) for t in self.blur_kernel) > 1 << 16:
            raise ValueError(f"blur_kernel must be 4 integer taps with a non-zero sum, got {self.blur_kernel}")
        if not _is_int(self.stddev_group) or not 1 <= self.stddev_group <= MAX_STDDEV_GROUP:
            raise ValueError(f"stddev_group must be an integer from 1 to {MAX_STDDEV_GROUP}, got "
                             f"{self.stddev_group!r}")
        c4 = self.channels[0]
        if not _is_int(self.stddev_feat) or not 1 <= self.stddev_feat <= c4 or c4 % self.stddev_feat:
            raise ValueError(f"stddev_feat must divide the 4x4 channel count {c4}, got {self.stddev_feat!r}")
        n = sum(math.prod(s) for s in discriminator_state_shapes(self).values())
        if n > MAX_ELEMENTS:
            raise ValueError(f"the discriminator has {n:,} parameter and buffer values, above the limit of "
                             f"{MAX_ELEMENTS:,}: size {self.size}, channels {list(self.channels)}")

    @property
    def log_size(self) -> int:
        return self.size.bit_length() - 1

    def channel(self, resolution: int) -> int:
        """Channels at ``resolution``."""
        return self.channels[resolution.bit_length() - 3]

    @classmethod
    def rosinality(cls, size: int, *, channel_multiplier: int = 2, channel_max: int = 512,
                   blur_kernel=(1, 3, 3, 1), stddev_group: int = 4, stddev_feat: int = 1) -> "DiscriminatorArch":
        """rosinality's table ``{4-32: 512, 64: 256 cm, 128: 128 cm, ...}`` capped at ``channel_max``."""
        table = GeneratorArch.rosinality(size, channel_multiplier=channel_multiplier, channel_max=channel_max,
                                         style_dim=1, n_mlp=1).channels
        return cls(size=size, channels=table, blur_kernel=blur_kernel, stddev_group=stddev_group,
                   stddev_feat=stddev_feat)

    def to_dict(self) -> dict:
        return {"size": self.size, "channels": list(self.channels), "blur_kernel": list(self.blur_kernel),
                "stddev_group": self.stddev_group, "stddev_feat": self.stddev_feat}

    @classmethod
    def from_dict(cls, data: Mapping) -> "DiscriminatorArch":
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: unknown or missing keys, or values that do not make an architecture.
        """
        return arch_from_dict(cls, data, what="discriminator")

    def tap_shapes(self) -> dict[str, tuple[int, int, int]]:
        """``{tap name: (C, H, W)}`` of every map :meth:`Discriminator.features` can return, in computing order."""
        out = {"convs.0": (self.channels[-1], self.size, self.size)}
        for k in range(1, self.log_size - 1):
            r = self.size >> (k - 1)
            c_in, c_out = self.channel(r), self.channel(r // 2)
            out[f"convs.{k}.conv1"] = (c_in, r, r)
            out[f"convs.{k}.conv2"] = (c_out, r // 2, r // 2)
            out[f"convs.{k}"] = (c_out, r // 2, r // 2)
        return out

    def block_taps(self) -> list[str]:
        """The ResBlock outputs ``convs.1 .. convs.{log2(size) - 2}``, highest resolution first."""
        return [f"convs.{k}" for k in range(1, self.log_size - 1)]


def discriminator_state_shapes(arch: DiscriminatorArch) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of ``Discriminator(arch).state_dict()`` (same order), computed without allocating."""
    out: dict[str, tuple[int, ...]] = {}
    c_top = arch.channels[-1]
    out["convs.0.0.weight"] = (c_top, 3, 1, 1)
    out["convs.0.1.bias"] = (c_top,)
    for k in range(1, arch.log_size - 1):
        r = arch.size >> (k - 1)
        c_in, c_out = arch.channel(r), arch.channel(r // 2)
        out[f"convs.{k}.conv1.0.weight"] = (c_in, c_in, 3, 3)
        out[f"convs.{k}.conv1.1.bias"] = (c_in,)
        out[f"convs.{k}.conv2.0.kernel"] = (4, 4)
        out[f"convs.{k}.conv2.1.weight"] = (c_out, c_in, 3, 3)
        out[f"convs.{k}.conv2.2.bias"] = (c_out,)
        out[f"convs.{k}.skip.0.kernel"] = (4, 4)
        out[f"convs.{k}.skip.1.weight"] = (c_out, c_in, 1, 1)
    c4 = arch.channels[0]
    out["final_conv.0.weight"] = (c4, c4 + arch.stddev_feat, 3, 3)
    out["final_conv.1.bias"] = (c4,)
    out["final_linear.0.weight"] = (c4, c4 * 16)
    out["final_linear.0.bias"] = (c4,)
    out["final_linear.1.weight"] = (1, c4)
    out["final_linear.1.bias"] = (1,)
    return out


# ------------------------------------------------------------------------------------------------- layers


class Blur(FilterBuffer):
    """FIR filter (buffer ``kernel``: the normalised outer product, no gain) with zero padding ``pad`` per side."""

    def __init__(self, taps, *, pad: tuple[int, int]):
        super().__init__(taps, factor=1)
        self.pad = pad
        self.impl = "auto"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, H, W] -> [N, C, H + p0 + p1 - 3, ...]
        p0, p1 = self.pad
        return upfirdn2d(x, self.kernel, padding=(p0, p1, p0, p1), impl=self.impl)


class EqualConv2d(nn.Module):
    """Equalised-lr conv: ``weight`` [O, I, k, k] (init randn) used as ``weight / sqrt(I k^2)``; optional ``bias``."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, *, stride: int = 1, padding: int = 0,
                 bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channel, in_channel, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channel)) if bias else None
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size ** 2)
        self.stride = stride
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


class ConvLayer(nn.Sequential):
    """[Blur] -> EqualConv2d -> [bias + lrelu * sqrt(2)], rosinality's ``ConvLayer`` layout.

    With ``downsample`` the blur pads ``((p + 1) // 2, p // 2)``, ``p = 4 - 2 + k - 1``, and the conv has stride 2
    and no padding (``r -> r/2``); otherwise the conv pads ``k // 2`` ("same"). With ``activate`` the bias lives
    in the activation (``.{last}.bias``), else in the conv when ``bias``.
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, *, downsample: bool = False,
                 blur_kernel=(1, 3, 3, 1), bias: bool = True, activate: bool = True):
        if activate and not bias:
            raise ValueError("ConvLayer: an activated layer carries its bias in the activation (bias=True)")
        layers: list[nn.Module] = []
        if downsample:
            p = len(blur_kernel) - 2 + kernel_size - 1
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            conv = EqualConv2d(in_channel, out_channel, kernel_size, stride=2, padding=0, bias=bias and not activate)
        else:
            conv = EqualConv2d(in_channel, out_channel, kernel_size, padding=kernel_size // 2,
                               bias=bias and not activate)
        layers.append(conv)
        if activate:
            layers.append(FusedLeakyReLU(out_channel))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """``(conv2(conv1(x)) + skip(x)) / sqrt(2)``: C_in x r x r -> C_out x r/2 x r/2."""

    def __init__(self, in_channel: int, out_channel: int, blur_kernel=(1, 3, 3, 1)):
        super().__init__()
        self.conv1 = ConvLayer(in_channel, in_channel, 3)
        self.conv2 = ConvLayer(in_channel, out_channel, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_channel, out_channel, 1, downsample=True, blur_kernel=blur_kernel,
                              activate=False, bias=False)

    def parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(conv1 map, conv2 map before the skip, block output)``."""
        h1 = self.conv1(x)
        h2 = self.conv2(h1)
        return h1, h2, (h2 + self.skip(x)) / math.sqrt(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.parts(x)[2]


def minibatch_stddev(x: torch.Tensor, *, group: int, feat: int) -> torch.Tensor:
    """Append ``feat`` channels of the within-group standard deviation (StyleGAN2's minibatch stddev).

    Sample n is grouped with the samples n' = n mod (N/G) (G = min(N, group)); the std over each group is
    averaged over (C/feat, H, W) and broadcast back.

    Args:
        x: [N, C, H, W] with N a multiple of min(N, group) and C a multiple of feat.

    Returns:
        [N, C + feat, H, W].
    """
    n, c, h, w = x.shape
    g = min(n, group)
    if n % g:
        raise ValueError(f"minibatch stddev: a batch of {n} is not a multiple of the group size {g} "
                         f"(stddev_group {group}); use a batch that is")
    y = x.reshape(g, -1, feat, c // feat, h, w)  # [G, N/G, F, C/F, H, W]
    y = torch.sqrt(y.var(dim=0, unbiased=False) + 1e-8)  # [N/G, F, C/F, H, W]
    y = y.mean(dim=(2, 3, 4)).reshape(-1, feat, 1, 1).repeat(g, 1, h, w)  # [N, F, H, W]
    return torch.cat([x, y], dim=1)


# ------------------------------------------------------------------------------------------------- model


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator (rosinality names; see the module docstring for the layout).

    Args:
        size: input resolution.
        channel_multiplier, channel_max: rosinality's channel table (ignored when ``channels`` is given).
        blur_kernel, stddev_group, stddev_feat: see :class:`DiscriminatorArch`.
        channels: explicit channels per resolution 4..size.

    Attributes:
        arch: the :class:`DiscriminatorArch` (saved with the weights).
    """

    def __init__(self, size: int, *, channel_multiplier: int = 2, channel_max: int = 512, blur_kernel=(1, 3, 3, 1),
                 stddev_group: int = 4, stddev_feat: int = 1, channels: Sequence[int] | None = None):
        super().__init__()
        if channels is None:
            arch = DiscriminatorArch.rosinality(size, channel_multiplier=channel_multiplier, channel_max=channel_max,
                                                blur_kernel=blur_kernel, stddev_group=stddev_group,
                                                stddev_feat=stddev_feat)
        else:
            arch = DiscriminatorArch(size=size, channels=channels, blur_kernel=blur_kernel,
                                     stddev_group=stddev_group, stddev_feat=stddev_feat)
        self.arch = arch
        convs: list[nn.Module] = [ConvLayer(3, arch.channels[-1], 1)]
        for k in range(1, arch.log_size - 1):
            r = arch.size >> (k - 1)
            convs.append(ResBlock(arch.channel(r), arch.channel(r // 2), arch.blur_kernel))
        self.convs = nn.Sequential(*convs)
        c4 = arch.channels[0]
        self.final_conv = ConvLayer(c4 + arch.stddev_feat, c4, 3)
        self.final_linear = nn.Sequential(EqualLinear(c4 * 16, c4, activation=True), EqualLinear(c4, 1))

    @classmethod
    def from_arch(cls, arch: DiscriminatorArch) -> "Discriminator":
        return cls(arch.size, channels=arch.channels, blur_kernel=arch.blur_kernel, stddev_group=arch.stddev_group,
                   stddev_feat=arch.stddev_feat)

    def set_impl(self, impl: str) -> None:
        """Route every custom op through ``impl`` ("auto" | "cuda" | "ref")."""
        for m in self.modules():
            if hasattr(m, "impl"):
                m.impl = impl

    def _check_input(self, x: torch.Tensor) -> None:
        s = self.arch.size
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != (3, s, s):
            found = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"discriminator input must be [N, 3, {s}, {s}] images in [-1, 1], found {found}")

    def _walk(self, x: torch.Tensor, want: set[str]) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Run the convs, keeping the maps named in ``want``; stops after the last one wanted (then returns
        ``None`` as the trunk output) unless ``want`` is empty."""
        got: dict[str, torch.Tensor] = {}

        def keep(name: str, t: torch.Tensor) -> bool:
            if name in want:
                got[name] = t
            return bool(want) and len(got) == len(want)

        x = self.convs[0](x)
        if keep("convs.0", x):
            return got, None
        for k in range(1, len(self.convs)):
            h1, h2, x = self.convs[k].parts(x)
            if keep(f"convs.{k}.conv1", h1) | keep(f"convs.{k}.conv2", h2) | keep(f"convs.{k}", x):
                return got, None
        return got, x

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """The global head on the last block's 4x4 map: [N, C(4), 4, 4] -> logits [N, 1]."""
        x = minibatch_stddev(x, group=self.arch.stddev_group, feat=self.arch.stddev_feat)
        x = self.final_conv(x)
        return self.final_linear(x.reshape(x.shape[0], -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Global mode: images [N, 3, S, S] in [-1, 1] -> logits [N, 1] (N a multiple of min(N, stddev_group))."""
        self._check_input(x)
        _, trunk = self._walk(x, set())
        return self.head(trunk)

    def features(self, x: torch.Tensor, taps: Sequence[str] | None = None) -> list[torch.Tensor]:
        """Patch mode: intermediate maps of images [N, 3, S, S].

        Args:
            x: images in [-1, 1].
            taps: names from ``self.arch.tap_shapes()`` (see the module docstring); None: every ResBlock's
                output, highest resolution first (``[N, C(r/2), r/2, r/2]`` for r = S .. 8). Computation stops
                at the last map asked for.

        Returns:
            the maps, in the order of ``taps``.

        Raises:
            ValueError: an unknown tap name (the message lists the known ones).
        """
        self._check_input(x)
        names = self.arch.block_taps() if taps is None else list(taps)
        known = self.arch.tap_shapes()
        unknown = [t for t in names if t not in known]
        if unknown or not names:
            raise ValueError(f"unknown discriminator taps {unknown or names} (known: {list(known)})")
        got, _ = self._walk(x, set(names))
        return [got[t] for t in names]


def patch_taps(arch: DiscriminatorArch, *, channels: int | None = 512, sides: Sequence[int] = (32, 16),
               limit: int = 4) -> list[str]:
    """The maps cyclomon/OneshotCLIP's patch discriminator collects, as tap names (highest resolution first).

    Walks ``convs.{k}.conv1`` then ``convs.{k}.conv2`` for k = 1, 2, ... and keeps those with ``channels``
    channels (None: any) and a side in ``sides``, up to ``limit``. With the defaults at 1024 px this gives the
    four maps of the module docstring; a small discriminator may give fewer (or none).
    """
    out = []
    for name, (c, h, _) in arch.tap_shapes().items():
        if name.endswith((".conv1", ".conv2")) and (channels is None or c == channels) and h in sides:
            out.append(name)
    return out[:limit]


def discriminator_arch_for(generator, *, channel_max: int | None = None) -> DiscriminatorArch:
    """The discriminator matching a generator: same size and channel table (optionally capped at
    ``channel_max``), the generator's blur kernel, rosinality's stddev settings (group 4, 1 feature)."""
    arch = generator.arch if hasattr(generator, "arch") else generator
    channels = [min(c, channel_max) if channel_max is not None else c for c in arch.channels]
    return DiscriminatorArch(size=arch.size, channels=channels, blur_kernel=arch.blur_kernel)


def random_discriminator(arch: DiscriminatorArch, *, seed: int) -> Discriminator:
    """``Discriminator(arch)`` with rosinality's initialisation drawn from ``seed`` (the global RNG is untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return Discriminator.from_arch(arch)


__all__ = ["Blur", "ConvLayer", "Discriminator", "DiscriminatorArch", "EqualConv2d", "ResBlock",
           "discriminator_arch_for", "discriminator_state_shapes", "minibatch_stddev", "patch_taps",
           "random_discriminator"]
