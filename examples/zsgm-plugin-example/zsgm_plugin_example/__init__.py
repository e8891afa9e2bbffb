"""Example zsgm plugin: the ``weight-anchor`` technique.

``L = mean over synthesis parameters of (theta_t - theta_s)^2``: a plain L2 pull towards the source
weights, the simplest form of "keep what the source generator knew". Use it from a recipe::

    [[techniques]]
    use = "weight-anchor"
    weight = 10.0
    layers = "all"          # or "convs" for the convolution weights only
"""

from __future__ import annotations

import attrs
import torch

from zsgm.hookspecs import hookimpl
from zsgm.registry import TechniqueSpec
from zsgm.technique import Technique
from zsgm.validators import one_of


@attrs.define(kw_only=True)
class WeightAnchorConfig:
    """Options: which parameters are anchored."""

    layers: str = attrs.field(default="all", validator=one_of(["all", "convs"]))


class WeightAnchor(Technique):
    """Implements the run hook ``zsgm_loss``; ``zsgm_setup`` snapshots nothing because the source
    generator stays available on the run."""

    def _pairs(self, run):
        source = dict(run.g_source.named_parameters())
        for name, p in run.g_target.named_parameters():
            if name.startswith("style."):
                continue
            if self.config.layers == "convs" and not name.endswith("conv.weight"):
                continue
            yield p, source[name]

    @hookimpl
    def zsgm_loss(self, run, step):
        diffs = [((p - q) ** 2).sum() for p, q in self._pairs(run)]
        count = sum(q.numel() for _, q in self._pairs(run))
        return [self.term("l2", torch.stack(diffs).sum() / count)]


@hookimpl
def zsgm_register_techniques(register):
    register(TechniqueSpec(name="weight-anchor", config=WeightAnchorConfig, build=WeightAnchor,
                           description="L2 pull of the adapted weights towards the source (example plugin)"))
