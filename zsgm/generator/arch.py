"""Generator architecture: everything needed to build a StyleGAN2 generator, JSON-serialisable."""

from __future__ import annotations

import math
import numbers
import re
from typing import Mapping

import attrs
import torch

from zsgm.generator.layout import element_count

# Bounds on any architecture, so that no file (metadata, init kwargs or tensor shapes) can ask for an absurd
# allocation. StyleGAN2 config-f at 1024 px has 33,167,164 values; these leave ample room above it.
MAX_SIZE = 4096
MAX_CHANNELS = 4096
MAX_STYLE_DIM = 4096
MAX_MLP = 64
MAX_ELEMENTS = 1 << 29  # 2 GiB of float32 parameters and buffers


def _as_int(value):
    """Integral numbers (not bools) become ``int``; anything else is kept for the field check to name."""
    return int(value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value


def _as_ints(values):
    return tuple(_as_int(v) for v in values)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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

    size: int = attrs.field(converter=_as_int)
    style_dim: int = attrs.field(default=512, converter=_as_int)
    n_mlp: int = attrs.field(default=8, converter=_as_int)
    channels: tuple[int, ...] = attrs.field(converter=_as_ints)
    lr_mlp: float = attrs.field(default=0.01, converter=float)
    blur_kernel: tuple[int, ...] = attrs.field(default=(1, 3, 3, 1), converter=_as_ints)

    def __attrs_post_init__(self):
        if not _is_int(self.size) or not 4 <= self.size <= MAX_SIZE or self.size & (self.size - 1):
            raise ValueError(f"size must be a power of two from 4 to {MAX_SIZE}, got {self.size!r}")
        k = _log2_int(self.size)
        if len(self.channels) != k - 1:
            raise ValueError(f"channels must list one count per resolution 4..{self.size} ({k - 1} values), "
                             f"got {len(self.channels)}")
        for name, value, limit in (("style_dim", self.style_dim, MAX_STYLE_DIM), ("n_mlp", self.n_mlp, MAX_MLP)):
            if not _is_int(value) or not 1 <= value <= limit:
                raise ValueError(f"{name} must be an integer from 1 to {limit}, got {value!r}")
        for i, c in enumerate(self.channels):
            if not _is_int(c) or not 1 <= c <= MAX_CHANNELS:
                raise ValueError(f"channels[{i}] (resolution {2 ** (i + 2)}) must be from 1 to {MAX_CHANNELS}, "
                                 f"got {c!r}")
        if not math.isfinite(self.lr_mlp) or self.lr_mlp <= 0:
            raise ValueError(f"lr_mlp must be a finite positive number, got {self.lr_mlp}")
        if len(self.blur_kernel) != 4 or not all(_is_int(t) for t in self.blur_kernel):
            raise ValueError(f"blur_kernel must have 4 taps (the 4x4 StyleGAN2 resampling filter), "
                             f"got {self.blur_kernel}")
        if sum(self.blur_kernel) == 0 or max(abs(t) for t in self.blur_kernel) > 1 << 16:
            raise ValueError(f"blur_kernel taps must have a non-zero sum and stay below 65536, got "
                             f"{self.blur_kernel}")
        n = element_count(self)
        if n > MAX_ELEMENTS:
            raise ValueError(f"the architecture has {n:,} parameter and buffer values, above the limit of "
                             f"{MAX_ELEMENTS:,} ({MAX_ELEMENTS * 4 / 2 ** 30:.0f} GiB of float32): "
                             f"size {self.size}, style_dim {self.style_dim}, n_mlp {self.n_mlp}, "
                             f"channels {list(self.channels)}")

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
        """JSON-able dict (lists instead of tuples)."""
        return {"size": self.size, "style_dim": self.style_dim, "n_mlp": self.n_mlp,
                "channels": list(self.channels), "lr_mlp": self.lr_mlp, "blur_kernel": list(self.blur_kernel)}

    @classmethod
    def from_dict(cls, data: Mapping) -> "GeneratorArch":
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: unknown or missing keys, or values that do not make an architecture.
        """
        return arch_from_dict(cls, data, what="generator")


def arch_from_dict(cls, data: Mapping, *, what: str):
    """An attrs architecture class built from a table with ``size`` and ``channels`` required; ``what`` names it
    in the one-line ``ValueError`` for a non-table, unknown or missing keys, or values that do not fit."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{what} architecture should be a table of keys, found {type(data).__name__}")
    known = {f.name for f in attrs.fields(cls)}
    extra = set(data) - known
    if extra:
        raise ValueError(f"unknown {what} architecture keys: {sorted(extra)} (known: {sorted(known)})")
    missing = {"size", "channels"} - set(data)
    if missing:
        raise ValueError(f"{what} architecture lacks {sorted(missing)}")
    try:
        return cls(**dict(data))
    except (TypeError, OverflowError) as exc:
        raise ValueError(f"bad {what} architecture {dict(data)}: {exc}") from None


def _indices(state: Mapping[str, torch.Tensor], pattern: str) -> list[int]:
    """Sorted integer captures of ``pattern`` (one group) over the keys of ``state``."""
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state if (m := rx.fullmatch(k))})


def infer_arch_from_rosinality_state(state: Mapping[str, torch.Tensor], *, source: str = "state dict") \
        -> GeneratorArch:
    """Read size, style_dim, n_mlp and per-resolution channels from rosinality-layout tensor shapes.

    Args:
        state: a rosinality ``Generator`` state dict (``ckpt["g_ema"]``); ``noises.*`` and ``*.kernel``
            buffers are not needed.
        source: how to name the state in error messages (e.g. the file path).

    Returns:
        The architecture (``lr_mlp`` and ``blur_kernel`` take their StyleGAN2 defaults: no tensor records them).

    Raises:
        ValueError: naming the missing key or the key whose shape or numbering is odd.
    """
    def need(key: str, ndim: int) -> torch.Tensor:
        if key not in state:
            raise ValueError(f"{source}: missing key {key!r}; expected a rosinality StyleGAN2 generator state dict")
        t = state[key]
        if not isinstance(t, torch.Tensor) or t.ndim != ndim:
            found = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{source}: key {key!r} should be a {ndim}-D tensor, found {found}")
        return t

    def contiguous(what: str, found: list[int], first: int) -> None:
        want = list(range(first, first + len(found)))
        if found != want:
            raise ValueError(f"{source}: {what} indices should run {first}..{first + len(found) - 1} without "
                             f"gaps, found {found}")

    def bounded(key: str, what: str, value: int, limit: int) -> int:
        if not 1 <= value <= limit:
            raise ValueError(f"{source}: key {key!r} gives {what} {value}, outside 1..{limit} (the bounds on any "
                             f"generator architecture)")
        return value

    const = need("input.input", 4)  # [1, C4, 4, 4]
    if const.shape[0] != 1 or tuple(const.shape[2:]) != (4, 4):
        raise ValueError(f"{source}: key 'input.input' should have shape [1, C, 4, 4], found {tuple(const.shape)}")
    style_ids = _indices(state, r"style\.(\d+)\.weight")
    if not style_ids:
        raise ValueError(f"{source}: missing key 'style.1.weight' (no mapping network); expected a rosinality "
                         f"StyleGAN2 generator state dict")
    contiguous("mapping layer 'style.{i}.weight'", style_ids, 1)
    bounded(f"style.{style_ids[-1]}.weight", "mapping layers", len(style_ids), MAX_MLP)
    style_w = need("style.1.weight", 2)  # [D, D]
    if style_w.shape[0] != style_w.shape[1]:
        raise ValueError(f"{source}: key 'style.1.weight' should be square [D, D], found {tuple(style_w.shape)}")
    bounded("style.1.weight", "style_dim", int(style_w.shape[1]), MAX_STYLE_DIM)
    rgb_ids = _indices(state, r"to_rgbs\.(\d+)\.conv\.weight")
    if rgb_ids:
        contiguous("'to_rgbs.{j}.conv.weight'", rgb_ids, 0)
        bounded(f"to_rgbs.{rgb_ids[-1]}.conv.weight", "resolution", 2 ** min(len(rgb_ids) + 2, 64), MAX_SIZE)
    conv_ids = _indices(state, r"convs\.(\d+)\.conv\.weight")
    if conv_ids != list(range(2 * len(rgb_ids))):
        raise ValueError(f"{source}: {len(rgb_ids)} 'to_rgbs.*' layers need 'convs.0..{2 * len(rgb_ids) - 1}"
                         f".conv.weight', found convs {conv_ids}")
    channels = [bounded("input.input", "channels", int(const.shape[1]), MAX_CHANNELS)]
    for j in range(len(rgb_ids)):
        w = need(f"convs.{2 * j}.conv.weight", 5)  # [1, C(r), C(r/2), 3, 3]
        if w.shape[2] != channels[-1]:
            raise ValueError(f"{source}: key 'convs.{2 * j}.conv.weight' has {w.shape[2]} input channels, the "
                             f"previous resolution has {channels[-1]}")
        channels.append(bounded(f"convs.{2 * j}.conv.weight", "channels", int(w.shape[1]), MAX_CHANNELS))
    try:
        return GeneratorArch(size=2 ** (len(rgb_ids) + 2), style_dim=int(style_w.shape[1]), n_mlp=len(style_ids),
                             channels=channels)
    except ValueError as exc:
        raise ValueError(f"{source}: the architecture read from the tensor shapes is refused: {exc}") from None
