"""Names and shapes of a generator's state dict, computed from the architecture without allocating anything.

A file's architecture (metadata, init kwargs or tensor shapes) is checked against the tensors it holds with
these shapes *before* a :class:`~zsgm.generator.stylegan2.Generator` is built, so a file that asks for a huge
model fails with a message instead of an allocation.
"""

from __future__ import annotations

import math
from typing import Protocol


class _ArchLike(Protocol):
    size: int
    style_dim: int
    n_mlp: int
    channels: tuple[int, ...]


def state_shapes(arch: _ArchLike) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of ``Generator(arch).state_dict()``, in the same order (parameters and buffers).

    Args:
        arch: anything with ``size``, ``style_dim``, ``n_mlp`` and ``channels`` (one count per resolution
            4, 8, ..., size); :class:`~zsgm.generator.arch.GeneratorArch` calls this before it is complete.
    """
    d = arch.style_dim
    log_size = int(math.log2(arch.size))
    out: dict[str, tuple[int, ...]] = {}
    for i in range(1, arch.n_mlp + 1):
        out[f"style.{i}.weight"] = (d, d)
        out[f"style.{i}.bias"] = (d,)

    def styled(name: str, c_in: int, c_out: int, up: bool) -> None:
        out[f"{name}.conv.weight"] = (1, c_out, c_in, 3, 3)
        out[f"{name}.conv.modulation.weight"] = (c_in, d)
        out[f"{name}.conv.modulation.bias"] = (c_in,)
        if up:
            out[f"{name}.conv.blur.kernel"] = (4, 4)
        out[f"{name}.noise.weight"] = (1,)
        out[f"{name}.activate.bias"] = (c_out,)

    def to_rgb(name: str, c_in: int, up: bool) -> None:
        out[f"{name}.bias"] = (1, 3, 1, 1)
        if up:
            out[f"{name}.upsample.kernel"] = (4, 4)
        out[f"{name}.conv.weight"] = (1, 3, c_in, 1, 1)
        out[f"{name}.conv.modulation.weight"] = (c_in, d)
        out[f"{name}.conv.modulation.bias"] = (c_in,)

    c4 = arch.channels[0]
    out["input.input"] = (1, c4, 4, 4)
    styled("conv1", c4, c4, False)
    to_rgb("to_rgb1", c4, False)
    for j in range(log_size - 2):  # resolution 2^(j+3): channels[j] -> channels[j+1]
        styled(f"convs.{2 * j}", arch.channels[j], arch.channels[j + 1], True)
        styled(f"convs.{2 * j + 1}", arch.channels[j + 1], arch.channels[j + 1], False)
    for j in range(log_size - 2):  # the to_rgbs ModuleList comes after the convs ModuleList
        to_rgb(f"to_rgbs.{j}", arch.channels[j + 1], True)
    for i in range((log_size - 2) * 2 + 1):
        r = 2 ** ((i + 5) // 2)
        out[f"noises.noise_{i}"] = (1, 1, r, r)
    return out


def element_count(arch: _ArchLike) -> int:
    """Number of values in ``Generator(arch).state_dict()`` (parameters and buffers)."""
    return sum(math.prod(shape) for shape in state_shapes(arch).values())


__all__ = ["element_count", "state_shapes"]
