"""Registrations of the IPL plugin (entry point ``zsgm = ipl``)."""

from __future__ import annotations

from zsgm.hookspecs import hookimpl
from zsgm.registry import PresetSpec, TechniqueSpec

from zsgm_ipl.presets import ipl_preset
from zsgm_ipl.technique import IPL, IPLConfig, check_ipl


@hookimpl
def zsgm_register_techniques(register):
    register(TechniqueSpec(name="ipl", config=IPLConfig, build=IPL,
                           description="image-specific prompt learning: a latent mapper trained before step 0 "
                                       "gives per-sample text directions (IPL)",
                           produces_loss=False, provides_directions=True, requires_other_loss=True,
                           check=check_ipl))


@hookimpl
def zsgm_register_presets(register):
    register(PresetSpec(name="ipl", build=ipl_preset,
                        description="IPL README run (give --target): mapper 300 it x 32, then 300 steps, batch 2, "
                                    "B/32, EMA 0.99, "
                                    "layer freezing with k = 2/3 of the W+ slots"))
