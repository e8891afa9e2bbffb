"""``frozen-layers``: a fixed set of synthesis modules that never trains (the released code freezes the mapping,
``to_rgb1`` and every ``to_rgbs``; the mapping is always frozen in zsgm).

The core makes every synthesis parameter trainable at the start of each step; this technique's
``zsgm_before_step`` runs after every other technique's (``trylast``), so a layer-freezing technique in the same
recipe cannot unfreeze these modules again.
"""

from __future__ import annotations

import re

import attrs

from zsgm.hookspecs import hookimpl
from zsgm.technique import Technique

NAME_PATTERN = re.compile(r"^(input|conv1|to_rgb1|convs|to_rgbs|convs\.\d+|to_rgbs\.\d+)$")


@attrs.define(kw_only=True)
class FrozenLayersConfig:
    """Options of frozen-layers.

    Attributes:
        modules: synthesis module names (rosinality layout): ``input``, ``conv1``, ``to_rgb1``, ``convs.K``,
            ``to_rgbs.K``, or ``convs`` / ``to_rgbs`` for all of them.
    """

    modules: list[str] = attrs.field(factory=lambda: ["to_rgb1", "to_rgbs"])

    @modules.validator
    def _names(self, _attr, value):
        if not value:
            raise ValueError("must name at least one synthesis module")
        bad = [m for m in value if not isinstance(m, str) or not NAME_PATTERN.match(m)]
        if bad:
            raise ValueError(f"unknown synthesis module names {bad}; use input, conv1, to_rgb1, convs, to_rgbs, "
                             f"convs.K or to_rgbs.K")


def frozen_parameters(run, names: list[str]) -> list:
    """The target generator's parameters of the named modules.

    Raises:
        ValueError: a ``convs.K`` / ``to_rgbs.K`` beyond the generator's layers.
    """
    modules = run.named_synthesis_modules()
    params = []
    for name in names:
        if name in ("convs", "to_rgbs"):
            chosen = [m for key, m in modules.items() if key.startswith(name + ".")]
        elif name in modules:
            chosen = [modules[name]]
        else:
            raise ValueError(f"frozen-layers modules: {name!r} is not a layer of this generator "
                             f"({len(run.g_target.convs)} convs, {len(run.g_target.to_rgbs)} to_rgbs)")
        for module in chosen:
            params.extend(module.parameters())
    return params


class FrozenLayers(Technique):
    """Sets ``requires_grad = False`` on the named modules every step; produces no loss term."""

    def __init__(self, config: FrozenLayersConfig):
        super().__init__(config)
        self._params: list = []

    @hookimpl
    def zsgm_setup(self, run):
        self._params = frozen_parameters(run, self.config.modules)  # a bad index fails here, before training

    @hookimpl(trylast=True)
    def zsgm_before_step(self, run, step):
        for p in self._params:
            p.requires_grad_(False)
