"""Registrations of the SVL plugin (entry point ``zsgm = svl``)."""

from __future__ import annotations

from zsgm.hookspecs import hookimpl
from zsgm.registry import PresetSpec, TechniqueSpec

from zsgm_svl.ewc import EWC, EWCConfig
from zsgm_svl.moment import Moment, MomentConfig, check_moment
from zsgm_svl.presets import svl_preset
from zsgm_svl.relation import Relation, RelationConfig, check_relation
from zsgm_svl.variations import SemanticVariations, SemanticVariationsConfig, check_semantic_variations


@hookimpl
def zsgm_register_techniques(register):
    register(TechniqueSpec(name="semantic-variations", config=SemanticVariationsConfig, build=SemanticVariations,
                           description="K learned variations of the target text feature, trained before step 0; "
                                       "direction provider exposing the whole direction set (SVL stage 1)",
                           produces_loss=False, provides_directions=True, unique=True,
                           check=check_semantic_variations))
    register(TechniqueSpec(name="moment", config=MomentConfig, build=Moment,
                           description="directional moment loss: mean and second moment of image vs text "
                                       "direction sets (SVL)", needs=frozenset({"src_images"}),
                           # needs semantic-variations only with text_set = "variations": check_moment says so
                           check=check_moment, reads_directions=True))
    register(TechniqueSpec(name="ewc", config=EWCConfig, build=EWC,
                           description="elastic weight consolidation to the source generator with a diagonal "
                                       "empirical Fisher computed at setup (SVL; replaces layer freezing)",
                           requires_other_loss=True))  # a pull to the source alone trains towards nothing
    register(TechniqueSpec(name="relation", config=RelationConfig, build=Relation,
                           description="relation consistency: KL between row-softmaxed batch similarity "
                                       "matrices of source and target images (SVL)", needs=frozenset({"src_images"}),
                           check=check_relation, requires_other_loss=True))


@hookimpl
def zsgm_register_presets(register):
    register(PresetSpec(name="svl", build=svl_preset,
                        description="SVL paper settings (give --target): K = 6 variations (2,000 it), then 300 "
                                    "steps, batch 4, B/32, L_dm on unit directions with mean-scaled moments "
                                    "(lambda_cov 1, balanced; the paper's 1e3 is an option) + 1e7 EWC + 1e2 "
                                    "relation, Adam 0.002 (0, 0.99)"))
