"""Generator architecture: everything needed to build a StyleGAN2 generator, JSON-serialisable."""

from __future__ import annotations

import math
import re
from typing import Mapping

import attrs
import torch


def _log2_int(size: int) -> int:
    k = int(math.log2(size)) if size > 0 else 0
    if size < 4 or 2 ** k != size:
        raise ValueError(f"generator size must be a power of two >= 4, got {size}")
    return k


@attrs.frozen(kw_only=True)
class GeneratorArch:
    """StyleGAN2 ("skip" generator) architecture.

    Attributes:
        size: output resolution (power of two).
        style_dim: width of z and w.
        n_mlp: mapping layers.
        channels: feature channels per resolution 4, 8, ..., size.
        lr_mlp: equalised-lr multiplier of the mapping.
        blur_kernel: 1-D taps of the resampling filter (outer product, normalised).
    """

    size: int
    style_dim: int = 512
    n_mlp: int = 8
    channels: tuple[int, ...] = attrs.field(converter=tuple)
    lr_mlp: float = 0.01
    blur_kernel: tuple[int, ...] = attrs.field(default=(1, 3, 3, 1), converter=tuple)

    def __attrs_post_init__(self):
        k = _log2_int(self.size)
        if len(self.channels) != k - 1:
            raise ValueError(f"channels must list one count per resolution 4..{self.size} ({k - 1} values), "
                             f"got {len(self.channels)}")

    @property
    def log_size(self) -> int:
        return _log2_int(self.size)

    @property
    def n_latent(self) -> int:
        """W+ slots: 2 * log2(size) - 2."""
        return self.log_size * 2 - 2

    def channel(self, resolution: int) -> int:
        """Channels at ``resolution``."""
        return self.channels[_log2_int(resolution) - 2]

    @classmethod
    def rosinality(cls, size: int, *, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                   channel_max: int = 512, lr_mlp: float = 0.01) -> "GeneratorArch":
        """rosinality's channel table ``{4-32: 512, 64: 256 cm, 128: 128 cm, ...}``, capped at ``channel_max``."""
        table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier, 128: 128 * channel_multiplier,
                 256: 64 * channel_multiplier, 512: 32 * channel_multiplier, 1024: 16 * channel_multiplier,
                 2048: 8 * channel_multiplier}
        channels = [min(table[2 ** k], channel_max) for k in range(2, _log2_int(size) + 1)]
        return cls(size=size, style_dim=style_dim, n_mlp=n_mlp, channels=channels, lr_mlp=lr_mlp)

    @classmethod
    def nvidia(cls, size: int, *, style_dim: int = 512, n_mlp: int = 8, channel_base: int = 32768,
               channel_max: int = 512, lr_mlp: float = 0.01) -> "GeneratorArch":
        """NVIDIA's ``C(r) = min(channel_base / r, channel_max)``."""
        channels = [min(channel_base // 2 ** k, channel_max) for k in range(2, _log2_int(size) + 1)]
        return cls(size=size, style_dim=style_dim, n_mlp=n_mlp, channels=channels, lr_mlp=lr_mlp)

    def to_dict(self) -> dict:
        return {"size": self.size, "style_dim": self.style_dim, "n_mlp": self.n_mlp,
                "channels": list(self.channels), "lr_mlp": self.lr_mlp, "blur_kernel": list(self.blur_kernel)}

    @classmethod
    def from_dict(cls, data: Mapping) -> "GeneratorArch":
        known = {f.name for f in attrs.fields(cls)}
        extra = set(data) - known
        if extra:
            raise ValueError(f"unknown generator architecture keys: {sorted(extra)}")
        return cls(**dict(data))


def infer_arch_from_rosinality_state(state: Mapping[str, torch.Tensor], *, source: str = "state dict") \
        -> GeneratorArch:
    """Read size, style_dim, n_mlp and channels from rosinality-layout tensor shapes."""
    def need(key):
        if key not in state:
            raise KeyError(f"{source}: missing key {key!r} (not a rosinality StyleGAN2 generator?)")
        return state[key]

    const = need("input.input")  # [1, C4, 4, 4]
    style_w = need("style.1.weight")  # [D, D]
    n_mlp = len({int(m.group(1)) for k in state if (m := re.match(r"style\.(\d+)\.weight$", k))})
    n_rgbs = len({int(m.group(1)) for k in state if (m := re.match(r"to_rgbs\.(\d+)\.conv\.weight$", k))})
    size = 2 ** (n_rgbs + 2)
    channels = [int(const.shape[1])]
    for j in range(n_rgbs):
        w = need(f"convs.{2 * j}.conv.weight")  # [1, C(r), C(r/2), 3, 3]
        channels.append(int(w.shape[1]))
    return GeneratorArch(size=size, style_dim=int(style_w.shape[1]), n_mlp=n_mlp, channels=channels)
