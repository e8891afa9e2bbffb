"""StyleGAN2 generator and its checkpoint formats."""

from zsgm.generator.arch import GeneratorArch, infer_arch_from_rosinality_state
from zsgm.generator.checkpoints import export_rosinality, load_generator, save_generator, to_nvidia_state_dict
from zsgm.generator.convert import convert_checkpoint
from zsgm.generator.discriminator import (
    Discriminator,
    DiscriminatorArch,
    discriminator_arch_for,
    patch_taps,
    random_discriminator,
)
from zsgm.generator.discriminator_files import (
    DiscriminatorNotFound,
    load_discriminator,
    load_discriminator_source,
    save_discriminator,
)
from zsgm.generator.errors import CheckpointError
from zsgm.generator.sources import load_generator_source
from zsgm.generator.stylegan2 import Generator
from zsgm.generator.stylespace import (
    StyleLayer,
    join_styles,
    split_styles,
    style_layout,
    synthesis_from_styles,
    ws_to_styles,
)

__all__ = ["CheckpointError", "Discriminator", "DiscriminatorArch", "DiscriminatorNotFound", "Generator",
           "GeneratorArch", "convert_checkpoint", "discriminator_arch_for", "export_rosinality",
           "infer_arch_from_rosinality_state", "load_discriminator", "load_discriminator_source", "load_generator",
           "load_generator_source", "patch_taps", "random_discriminator", "save_discriminator",
           "StyleLayer", "join_styles", "split_styles", "style_layout", "synthesis_from_styles", "to_nvidia_state_dict",
           "ws_to_styles"]
