"""StyleSpace (S): the per-layer modulation outputs of a StyleGAN2 generator's convolutions.

Each modulated 3x3 conv ``L`` turns its W+ slot ``w`` into styles ``s_L = L.conv.modulation(w)`` ``[N, I_L]``
(one scale per input channel). StyleSpace is the concatenation of these codes over the conv layers in
synthesis order (``conv1``, ``convs.0``, ``convs.1``, ...); the ToRGB layers' styles are *not* part of it, and
decoding from S keeps reading their W+ slots (as DeltaEdit and StyleCLIP's global directions do). For a
1024-px config-f generator that is 17 layers and 6,048 channels.

Decoding unedited S codes gives exactly the W+ image (same operations in the same order).
"""

from __future__ import annotations

from typing import Sequence

import attrs
import torch

__all__ = ["StyleLayer", "join_styles", "split_styles", "style_layout", "synthesis_from_styles", "torgb_slots",
           "ws_to_styles"]


@attrs.frozen
class StyleLayer:
    """One conv layer's block of StyleSpace.

    Attributes:
        name: module name in the generator ("conv1", "convs.3", ...).
        slot: the W+ slot whose ``w`` it modulates with.
        channels: its number of styles (the conv's input channels).
        offset: first index of its block in the concatenated code ``[N, C_total]``.
    """

    name: str
    slot: int
    channels: int
    offset: int

    @property
    def stop(self) -> int:
        """One past the last index of its block."""
        return self.offset + self.channels


def style_layout(generator) -> list[StyleLayer]:
    """The StyleSpace layout: the conv layers in synthesis order (ToRGB layers excluded).

    Args:
        generator: a :class:`~zsgm.generator.stylegan2.Generator`, or just its
            :class:`~zsgm.generator.arch.GeneratorArch` (nothing is built; e.g. for 1024 px config-f).

    Layer ``conv1`` (slot 0) has ``channels[0]`` styles; at resolution ``2^(j+3)``, ``convs.{2j}`` (slot
    ``2j+1``, upsampling) has the previous resolution's channels and ``convs.{2j+1}`` (slot ``2j+2``) its own.
    """
    arch = getattr(generator, "arch", generator)
    c = arch.channels  # per resolution 4, 8, ..., size
    rows = [("conv1", 0, c[0])]
    for j in range(len(c) - 1):
        rows += [(f"convs.{2 * j}", 2 * j + 1, c[j]), (f"convs.{2 * j + 1}", 2 * j + 2, c[j + 1])]
    out, offset = [], 0
    for name, slot, channels in rows:
        out.append(StyleLayer(name=name, slot=slot, channels=int(channels), offset=offset))
        offset += int(channels)
    return out


def torgb_slots(generator) -> list[int]:
    """The W+ slots the ToRGB layers read, in synthesis order (``to_rgb1``: 1, then ``to_rgbs.j``: ``2j + 3``);
    :func:`synthesis_from_styles` reads ``ws`` only there."""
    arch = getattr(generator, "arch", generator)
    return [1 + 2 * j for j in range(len(arch.channels))]


def _total(layout: Sequence[StyleLayer]) -> int:
    return layout[-1].stop if layout else 0


def _check_ws(generator, ws: torch.Tensor, where: str) -> None:
    want = (generator.n_latent, generator.arch.style_dim)
    if not isinstance(ws, torch.Tensor) or ws.ndim != 3 or tuple(ws.shape[1:]) != want:
        found = tuple(ws.shape) if isinstance(ws, torch.Tensor) else type(ws).__name__
        raise ValueError(f"{where}: ws must be [N, {want[0]}, {want[1]}], found {found}")


def _check_s(s: torch.Tensor, layout: Sequence[StyleLayer], where: str) -> None:
    total = _total(layout)
    if not isinstance(s, torch.Tensor) or s.ndim != 2 or s.shape[1] != total:
        found = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
        raise ValueError(f"{where}: S codes must be [N, {total}] ({len(layout)} conv layers), found {found}")


def ws_to_styles(generator, ws: torch.Tensor) -> torch.Tensor:
    """W+ codes ``[N, n_latent, D]`` to StyleSpace codes ``[N, C_total]`` (differentiable)."""
    _check_ws(generator, ws, "ws_to_styles")
    layout = style_layout(generator)
    return join_styles([generator.get_submodule(layer.name).conv.modulation(ws[:, layer.slot])
                        for layer in layout])


def split_styles(s: torch.Tensor, layout: Sequence[StyleLayer]) -> list[torch.Tensor]:
    """``s`` ``[N, C_total]`` -> one view ``[N, channels]`` per layer of ``layout``."""
    _check_s(s, layout, "split_styles")
    return [s[:, layer.offset:layer.stop] for layer in layout]


def join_styles(parts: Sequence[torch.Tensor], layout: Sequence[StyleLayer] | None = None) -> torch.Tensor:
    """Per-layer codes ``[N, channels]`` -> ``[N, C_total]``; with ``layout``, their widths are checked."""
    if layout is not None:
        widths = [int(p.shape[-1]) for p in parts]
        want = [layer.channels for layer in layout]
        if widths != want:
            raise ValueError(f"join_styles: per-layer widths {widths} do not match the layout's {want}")
    return torch.cat(list(parts), dim=1)


def synthesis_from_styles(generator, s: torch.Tensor, ws: torch.Tensor, *, noise=None, noise_mode: str = "random",
                          rng: torch.Generator | None = None) -> torch.Tensor:
    """Images from StyleSpace codes: the convs use ``s``, the ToRGB layers still read their ``ws`` slots.

    Args:
        generator: a :class:`~zsgm.generator.stylegan2.Generator`.
        s: ``[N, C_total]`` S codes (e.g. ``ws_to_styles(generator, ws)`` plus an edit).
        ws: ``[N, n_latent, D]``, the W+ codes for the ToRGB layers.
        noise, noise_mode, rng: as in ``Generator.synthesis`` (DeltaEdit decodes with ``noise_mode="const"``).

    Returns:
        ``[N, 3, size, size]``; ``s = ws_to_styles(generator, ws)`` gives exactly ``generator.synthesis(ws)``
        with the same noise.
    """
    _check_ws(generator, ws, "synthesis_from_styles")
    layout = style_layout(generator)
    _check_s(s, layout, "synthesis_from_styles")
    n = ws.shape[0]
    if s.shape[0] != n:
        raise ValueError(f"synthesis_from_styles: s has {s.shape[0]} rows, ws has {n}")
    noise = generator.make_noise(n, mode=noise_mode, rng=rng) if noise is None else generator._check_noise(noise, n)
    styles = split_styles(s, layout)  # styles[0]: conv1, styles[k]: convs.{k-1}
    rgb_slots = torgb_slots(generator)
    x = generator.input(n)  # [N, C4, 4, 4]
    x = generator.conv1.forward_styles(x, styles[0], noise[0])
    skip = generator.to_rgb1(x, ws[:, rgb_slots[0]])  # [N, 3, 4, 4]
    for j, rgb in enumerate(generator.to_rgbs):
        x = generator.convs[2 * j].forward_styles(x, styles[2 * j + 1], noise[2 * j + 1])  # upsampling conv
        x = generator.convs[2 * j + 1].forward_styles(x, styles[2 * j + 2], noise[2 * j + 2])
        skip = rgb(x, ws[:, rgb_slots[j + 1]], skip)
    return skip
