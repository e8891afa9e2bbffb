"""DeltaEdit's delta mapper (METHODS.md 7.3): (S code, CLIP condition) -> predicted S-code delta.

The S code (see :mod:`zsgm.generator.stylespace`) is cut into three levels of consecutive style layers:

- *coarse* and *medium*: one shared :class:`Mapper` triple per level, applied to each layer's block on its own
  (all layers of such a level must have the same width);
- *fine*: the remaining layers as one flat vector.

Per level, a *style* module maps the level's S code, a *condition* module maps the condition
``[c_i ; dc]`` (``2 * clip_dim``) to the same width, and a *fusion* module (no PixelNorm) maps their
concatenation to the level's delta. For a 1024-px config-f generator (17 layers, 6048 channels) with the
default ``levels=(3, 4)`` this is the released model: coarse 3 x 512, medium 4 x 512, fine 2464, and its
module and parameter names (``sm_coarse.mapping.1.weight``, ...) match the released state dict.

Generators with fewer layers get a proportional split, :func:`default_levels`.
"""

from __future__ import annotations

import math
from typing import Sequence

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from zsgm.generator.layers import EqualLinear, PixelNorm

LEVEL_NAMES = ("coarse", "medium", "fine")
REFERENCE_LAYERS = 17  # the 1024-px layout the released split (3, 4, 10) was made for
REFERENCE_LEVELS = (3, 4)
CONDITION_EPS = 1e-5  # DeltaEdit's clamp on the norm of the CLIP delta (train_dataset.py, inference.py)


def default_levels(n_layers: int) -> tuple[int, int]:
    """Numbers of style layers in the coarse and medium levels for a layout of ``n_layers`` conv layers.

    The released split (3, 4, fine = 10 of 17) scaled proportionally: ``round(3 n / 17)`` and
    ``round(4 n / 17)`` (halves round up), each at least 1, shrunk (medium first) until the fine level keeps at
    least one layer. 17 -> (3, 4); 15 (512 px) -> (3, 4); 13 (256 px) -> (2, 3); 11 (128 px) -> (2, 3);
    9 (64 px) -> (2, 2); 7 (32 px) -> (1, 2); 5 -> (1, 1); 3 -> (1, 1).

    Raises:
        ValueError: fewer than 3 layers (three non-empty levels are impossible).
    """
    if not isinstance(n_layers, int) or n_layers < 3:
        raise ValueError(f"the delta mapper needs at least 3 style layers (coarse, medium, fine), got {n_layers!r}")
    coarse, medium = (max(1, math.floor(k * n_layers / REFERENCE_LAYERS + 0.5)) for k in REFERENCE_LEVELS)
    while coarse + medium >= n_layers:
        if medium >= coarse and medium > 1:
            medium -= 1
        else:
            coarse -= 1
    return coarse, medium


@attrs.frozen
class MapperLevel:
    """One level of the mapper's split of the S code.

    Attributes:
        name: "coarse" | "medium" | "fine".
        widths: channels of each style layer in the level.
        per_layer: the level's modules run on each layer's block (True) or on the flat vector (False).
        offset: first index of the level in the S code.
    """

    name: str
    widths: tuple[int, ...] = attrs.field(converter=tuple)
    per_layer: bool
    offset: int

    @property
    def channels(self) -> int:
        """The level's slice width in the S code."""
        return sum(self.widths)

    @property
    def stop(self) -> int:
        return self.offset + self.channels

    @property
    def width(self) -> int:
        """Input and output width of the level's modules: one layer's block, or the whole flat level."""
        return self.widths[0] if self.per_layer else self.channels


def mapper_levels(layout: Sequence, levels: tuple[int, int] | None = None) -> tuple[MapperLevel, ...]:
    """Split a StyleSpace layout into the coarse, medium (per layer) and fine (flat) levels.

    Args:
        layout: :class:`~zsgm.generator.stylespace.StyleLayer` rows (``style_layout(generator)``) or plain
            per-layer widths.
        levels: ``(coarse, medium)`` numbers of style layers; the fine level takes the rest. None:
            :func:`default_levels` of the layout's length.

    Raises:
        ValueError: a level would be empty, or a per-layer level mixes layer widths.
    """
    widths = [int(getattr(row, "channels", row)) for row in layout]
    if levels is None:
        levels = default_levels(len(widths))
    if (len(levels) != 2 or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in levels)
            or sum(levels) >= len(widths)):
        raise ValueError(f"delta mapper levels must be two positive layer counts (coarse, medium) leaving at least "
                         f"one fine layer of the {len(widths)} style layers, got {tuple(levels)!r}")
    coarse, medium = levels
    cuts = [(LEVEL_NAMES[0], 0, coarse, True), (LEVEL_NAMES[1], coarse, coarse + medium, True),
            (LEVEL_NAMES[2], coarse + medium, len(widths), False)]
    out = []
    for name, a, b, per_layer in cuts:
        part = widths[a:b]
        if per_layer and len(set(part)) != 1:
            raise ValueError(f"delta mapper level {name!r} (style layers {a}..{b - 1}) shares one mapper over its "
                             f"layers, so their widths must agree; found {part}. Choose other levels=(coarse, "
                             f"medium)")
        out.append(MapperLevel(name=name, widths=part, per_layer=per_layer, offset=sum(widths[:a])))
    return tuple(out)


class Mapper(nn.Module):
    """Optional PixelNorm, then ``n_linear`` EqualLinear layers (``lr_mul``, fused leaky ReLU): ``[M, in] -> [M, out]``.

    The first layer maps ``in -> out``, the others ``out -> out``. Child names follow the released
    ``Mapper``: ``mapping.0`` is the PixelNorm when present.
    """

    def __init__(self, in_dim: int, out_dim: int, *, norm: bool = True, n_linear: int = 4, lr_mul: float = 0.01):
        super().__init__()
        layers = [PixelNorm()] if norm else []
        layers += [EqualLinear(in_dim if k == 0 else out_dim, out_dim, lr_mul=lr_mul, activation=True)
                   for k in range(n_linear)]
        self.mapping = nn.Sequential(*layers)
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [M, in] -> [M, out]
        return self.mapping(x)

    def linears(self, x: torch.Tensor) -> torch.Tensor:
        """The EqualLinear stack alone (no PixelNorm): ``[M, in] -> [M, out]``."""
        return self.mapping[1:](x) if self.norm else self.mapping(x)


class DeltaMapper(nn.Module):
    """DeltaEdit's mapper over a StyleSpace layout: ``(s [N, C], cond [N, 2 clip_dim]) -> delta_s [N, C]``.

    Args:
        layout_levels: the split, :func:`mapper_levels` (coarse, medium, fine in this order).
        clip_dim: CLIP embedding width (the condition is ``[c_i ; dc]``, twice as wide).
        n_linear: EqualLinear layers per module (released: 4).
        lr_mul: their equalised-lr multiplier (released: 0.01).
        pixelnorm_over_layers: compatibility option. The released code feeds the coarse and medium style
            modules ``[N, k, 512]`` tensors, and its PixelNorm normalises over dim 1, i.e. each channel *across
            the level's k layers* rather than each layer over its channels. Off (default): each layer's block is
            normalised over its own channels. On: the released behaviour, needed to use its trained weights.
    """

    def __init__(self, layout_levels: Sequence[MapperLevel], *, clip_dim: int = 512, n_linear: int = 4,
                 lr_mul: float = 0.01, pixelnorm_over_layers: bool = False):
        super().__init__()
        names = tuple(level.name for level in layout_levels)
        if names != LEVEL_NAMES:
            raise ValueError(f"DeltaMapper: layout_levels must be the {LEVEL_NAMES} levels in order, got {names}")
        for a, b in zip(layout_levels, layout_levels[1:]):
            if b.offset != a.stop:
                raise ValueError(f"DeltaMapper: level {b.name!r} starts at {b.offset}, expected {a.stop}")
        if layout_levels[0].offset != 0:
            raise ValueError(f"DeltaMapper: the coarse level must start at index 0, got {layout_levels[0].offset}")
        if not isinstance(clip_dim, int) or clip_dim < 1:
            raise ValueError(f"DeltaMapper: clip_dim must be a positive integer, got {clip_dim!r}")
        self.levels = tuple(layout_levels)
        self.clip_dim = clip_dim
        self.n_linear = n_linear
        self.lr_mul = lr_mul
        self.pixelnorm_over_layers = pixelnorm_over_layers
        self.channels = layout_levels[-1].stop
        for level in self.levels:
            w = level.width
            kw = dict(n_linear=n_linear, lr_mul=lr_mul)
            self.add_module(f"sm_{level.name}", Mapper(w, w, **kw))  # style module
            self.add_module(f"cm_{level.name}", Mapper(2 * clip_dim, w, **kw))  # condition module
            self.add_module(f"fm_{level.name}", Mapper(2 * w, w, norm=False, **kw))  # fusion module

    @classmethod
    def for_layout(cls, layout: Sequence, *, levels: tuple[int, int] | None = None, **kwargs) -> "DeltaMapper":
        """Build for ``style_layout(generator)`` (or per-layer widths); ``levels`` as in :func:`mapper_levels`."""
        return cls(mapper_levels(layout, levels), **kwargs)

    def config(self) -> dict:
        """JSON-able settings that rebuild this module's structure (see :meth:`from_config`)."""
        widths = [w for level in self.levels for w in level.widths]
        return {"widths": widths, "levels": [len(self.levels[0].widths), len(self.levels[1].widths)],
                "clip_dim": self.clip_dim, "n_linear": self.n_linear, "lr_mul": self.lr_mul,
                "pixelnorm_over_layers": self.pixelnorm_over_layers}

    @classmethod
    def from_config(cls, config: dict) -> "DeltaMapper":
        cfg = dict(config)
        widths, levels = cfg.pop("widths"), tuple(cfg.pop("levels"))
        return cls.for_layout(widths, levels=levels, **cfg)

    def _style(self, level: MapperLevel, s: torch.Tensor) -> torch.Tensor:
        """Style module on the level's slice: ``[N, channels] -> [N, k, w]`` (per layer) or ``[N, channels]``."""
        sm: Mapper = getattr(self, f"sm_{level.name}")
        if not level.per_layer:
            return sm(s)
        n, k, w = s.shape[0], len(level.widths), level.width
        blocks = s.reshape(n, k, w)
        if self.pixelnorm_over_layers:
            return sm.linears(sm.mapping[0](blocks).reshape(n * k, w)).reshape(n, k, w)  # PixelNorm over dim 1 = k
        return sm(blocks.reshape(n * k, w)).reshape(n, k, w)

    def forward(self, s: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """``s`` [N, C] S codes, ``cond`` [N, 2 clip_dim] (:func:`make_condition`) -> predicted delta [N, C]."""
        if s.ndim != 2 or s.shape[1] != self.channels:
            raise ValueError(f"DeltaMapper: s must be [N, {self.channels}], found {tuple(s.shape)}")
        if cond.ndim != 2 or cond.shape != (s.shape[0], 2 * self.clip_dim):
            raise ValueError(f"DeltaMapper: cond must be [{s.shape[0]}, {2 * self.clip_dim}] ([c_i ; dc]), "
                             f"found {tuple(cond.shape)}")
        n = s.shape[0]
        out = []
        for level in self.levels:
            style = self._style(level, s[:, level.offset:level.stop])
            c = getattr(self, f"cm_{level.name}")(cond)  # [N, w]
            fm: Mapper = getattr(self, f"fm_{level.name}")
            if level.per_layer:
                k, w = style.shape[1], style.shape[2]
                x = torch.cat([style, c[:, None, :].expand(n, k, w)], dim=2)  # [N, k, 2w]
                out.append(fm(x.reshape(n * k, 2 * w)).reshape(n, k * w))
            else:
                out.append(fm(torch.cat([style, c], dim=1)))  # [N, 2 channels] -> [N, channels]
        return torch.cat(out, dim=1)


# ----------------------------------------------------------------------------------------- condition, loss

def _unit(c: torch.Tensor) -> torch.Tensor:
    return c / c.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _condition(c_hat: torch.Tensor, direction: torch.Tensor, eps: float) -> torch.Tensor:
    d = direction / direction.norm(dim=-1, keepdim=True).clamp(min=eps)
    return torch.cat([c_hat, d.expand_as(c_hat)], dim=-1)


def make_condition(c_i: torch.Tensor, c_j: torch.Tensor, *, eps: float = CONDITION_EPS) -> torch.Tensor:
    """Training condition for the pair (i, j): ``[c^_i ; normalize(c^_j - c^_i)]``.

    Args:
        c_i, c_j: CLIP image embeddings ``[N, D]`` (normalised here: ``c^ = c / |c|``).
        eps: lower clamp on ``|c^_j - c^_i|`` (released: 1e-5), so ``i == j`` gives a zero direction.

    Returns:
        ``[N, 2 D]``.
    """
    if c_i.shape != c_j.shape or c_i.ndim != 2:
        raise ValueError(f"make_condition: c_i and c_j must both be [N, D], found {tuple(c_i.shape)} and "
                         f"{tuple(c_j.shape)}")
    ci, cj = _unit(c_i), _unit(c_j)
    return _condition(ci, cj - ci, eps)


def condition_from_direction(c_src: torch.Tensor, direction: torch.Tensor, *, eps: float = CONDITION_EPS) \
        -> torch.Tensor:
    """Inference condition: ``[c^_src ; normalize(direction)]`` with a text direction in place of the image delta.

    Args:
        c_src: source images' CLIP embeddings ``[N, D]`` (normalised here).
        direction: ``[D]`` or ``[N, D]``, e.g. the text delta ``e_T(target) - e_T(neutral)``.

    Returns:
        ``[N, 2 D]``.
    """
    if c_src.ndim != 2 or direction.shape[-1] != c_src.shape[1] or direction.ndim not in (1, 2):
        raise ValueError(f"condition_from_direction: c_src must be [N, D] and direction [D] or [N, D], found "
                         f"{tuple(c_src.shape)} and {tuple(direction.shape)}")
    return _condition(_unit(c_src), direction, eps)


def delta_loss_terms(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"l2": MSE over all elements, "cos": 1 - mean over samples of cos(pred_n, target_n)}`` for ``[N, C]``."""
    if pred.shape != target.shape or pred.ndim != 2:
        raise ValueError(f"delta_loss: pred and target must both be [N, C], found {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    return {"l2": F.mse_loss(pred, target), "cos": 1 - F.cosine_similarity(pred, target, dim=-1).mean()}


def delta_loss(pred: torch.Tensor, target: torch.Tensor, l2: float = 1.0, cos: float = 1.0) -> torch.Tensor:
    """DeltaEdit's training loss ``l2 * MSE + cos * (1 - mean cos)`` (scripts/train.py, both weights 1)."""
    terms = delta_loss_terms(pred, target)
    return l2 * terms["l2"] + cos * terms["cos"]


__all__ = ["CONDITION_EPS", "DeltaMapper", "LEVEL_NAMES", "Mapper", "MapperLevel", "condition_from_direction",
           "default_levels", "delta_loss", "delta_loss_terms", "make_condition", "mapper_levels"]
