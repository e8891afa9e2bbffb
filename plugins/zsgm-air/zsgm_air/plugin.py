"""Registrations of the AIR plugin (entry point ``zsgm = air``)."""

from __future__ import annotations

from zsgm.hookspecs import hookimpl
from zsgm.registry import PresetSpec, TechniqueSpec

from zsgm_air.presets import air_preset
from zsgm_air.technique import Air, AirConfig, check_air


@hookimpl
def zsgm_register_techniques(register):
    register(TechniqueSpec(name="air", config=AirConfig, build=Air,
                           description="AIR: iterative anchor refresh with a prompt-learned text anchor and the "
                                       "adaptive directional loss from the anchor",
                           needs=frozenset({"tgt_images"}), unique=True, requires_other_loss=True,
                           check=check_air))


@hookimpl
def zsgm_register_presets(register):
    register(PresetSpec(name="air", build=air_preset,
                        description="AIR adaptation.sh (give --target): B/32, 301 steps (no update at step 0), "
                                    "batch 2, k = 18, EMA 0.99, refreshes from 50% of the run every 10% (150/30 "
                                    "at 301 steps), AIR template rule"))
