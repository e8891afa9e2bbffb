"""Registrations of the NADA plugin (entry point ``zsgm = nada``)."""

from __future__ import annotations

from zsgm.hookspecs import hookimpl
from zsgm.registry import PresetSpec, TechniqueSpec

from zsgm_nada.image_target import ImageTarget, ImageTargetConfig, check_image_target
from zsgm_nada.layer_freeze import LayerFreeze, LayerFreezeConfig
from zsgm_nada.losses import Directional, DirectionalConfig, GlobalConfig, GlobalLoss, check_global
from zsgm_nada.presets import nada_preset


@hookimpl
def zsgm_register_techniques(register):
    register(TechniqueSpec(name="directional", config=DirectionalConfig, build=Directional,
                           description="directional CLIP loss (StyleGAN-NADA)", needs=frozenset({"src_images"}),
                           reads_directions=True))
    register(TechniqueSpec(name="global", config=GlobalConfig, build=GlobalLoss,
                           description="global CLIP loss towards the target text (StyleGAN-NADA)",
                           check=check_global))
    register(TechniqueSpec(name="layer-freeze", config=LayerFreezeConfig, build=LayerFreeze,
                           description="adaptive layer freezing by a W+ probe, top-k slots (StyleGAN-NADA)",
                           produces_loss=False, unique=True, requires_other_loss=True))
    register(TechniqueSpec(name="image-target", config=ImageTargetConfig, build=ImageTarget,
                           description="direction from generated source images to a few style images "
                                       "(StyleGAN-NADA image target)",
                           produces_loss=False, provides_directions=True, reads_target_images=True,
                           requires_other_loss=True, check=check_image_target))


@hookimpl
def zsgm_register_presets(register):
    register(PresetSpec(name="nada", build=nada_preset,
                        description="StyleGAN-NADA paper-style run: B/32 + B/16, 301 steps, batch 2, k = 18"))
