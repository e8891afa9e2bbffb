"""Registrations of the One-shot CLIP plugin (entry point ``zsgm = oneshot``)."""

from __future__ import annotations

from zsgm.hookspecs import hookimpl
from zsgm.registry import PresetSpec, TechniqueSpec

from zsgm_oneshot.adversarial import Adversarial, AdversarialConfig, check_adversarial
from zsgm_oneshot.frozen import FrozenLayers, FrozenLayersConfig
from zsgm_oneshot.losses import (
    ClipConsistency,
    ClipConsistencyConfig,
    PatchContrastive,
    PatchContrastiveConfig,
    ReferenceReconstruction,
    ReferenceReconstructionConfig,
    check_clip_consistency,
    check_reference_reconstruction,
)
from zsgm_oneshot.presets import ONECLIP_DESCRIPTION, oneclip_preset
from zsgm_oneshot.reference import ReferenceSearch, ReferenceSearchConfig, check_reference_search


@hookimpl
def zsgm_register_techniques(register):
    register(TechniqueSpec(name="reference-search", config=ReferenceSearchConfig, build=ReferenceSearch,
                           description="stage 1 at setup: the source latent closest to the reference image (CLIP "
                                       "over augmentations + L2 to the mean + LPIPS/MSE); cached (One-shot CLIP)",
                           produces_loss=False, unique=True, reads_target_images=True,
                           check=check_reference_search))
    register(TechniqueSpec(name="clip-consistency", config=ClipConsistencyConfig, build=ClipConsistency,
                           description="L_con: squared difference of the target and source CLIP similarity "
                                       "structures within the batch (One-shot CLIP)",
                           needs=frozenset({"src_images"}), check=check_clip_consistency))
    register(TechniqueSpec(name="patch-contrastive", config=PatchContrastiveConfig, build=PatchContrastive,
                           description="InfoNCE between CLIP embeddings of same-location crops of the target and "
                                       "source images (One-shot CLIP)",
                           needs=frozenset({"src_images"})))
    register(TechniqueSpec(name="reference-reconstruction", config=ReferenceReconstructionConfig,
                           build=ReferenceReconstruction,
                           description="LPIPS + MSE of G_t(w_ref) against the reference every ref_freq steps; its "
                                       "steps are the recipe's reference steps (One-shot CLIP)",
                           unique=True, requires=frozenset({"reference-search"}), reads_target_images=True,
                           check=check_reference_reconstruction))
    register(TechniqueSpec(name="adversarial", config=AdversarialConfig, build=Adversarial,
                           description="non-saturating GAN loss against the source's discriminator (patch head on "
                                       "normal steps, global on reference steps), D steps with lazy R1 "
                                       "(One-shot CLIP)",
                           unique=True, reads_target_images=True, check=check_adversarial))
    register(TechniqueSpec(name="frozen-layers", config=FrozenLayersConfig, build=FrozenLayers,
                           description="keep named synthesis modules frozen every step (One-shot CLIP: to_rgb1, "
                                       "to_rgbs)",
                           produces_loss=False, unique=True, requires_other_loss=True))


@hookimpl
def zsgm_register_presets(register):
    register(PresetSpec(name="oneclip", build=oneclip_preset, description=ONECLIP_DESCRIPTION, sized=True))
