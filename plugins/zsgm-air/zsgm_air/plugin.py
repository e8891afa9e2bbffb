"""Registrations of the AIR plugin (entry point ``zsgm = air``)."""

from __future__ import annotations

from zsgm.hookspecs import hookimpl
from zsgm.registry import PresetSpec, TechniqueSpec

from zsgm_air.presets import air_preset
from zsgm_air.technique import Air, AirConfig


@hookimpl
def zsgm_register_techniques(register):
    register(TechniqueSpec(name="air", config=AirConfig, build=Air,
                           description="AIR: iterative anchor refresh with a prompt-learned text anchor and the "
                                       "adaptive directional loss from the anchor",
                           needs=frozenset({"tgt_images"}), unique=True, requires_other_loss=True))


@hookimpl
def zsgm_register_presets(register):
    register(PresetSpec(name="air", build=air_preset,
                        description="AIR photo->sketch: B/32, 301 steps, batch 2, k = 18, EMA 0.99, t_int 30, "
                                    "t_thresh 150, AIR template rule"))
