"""StyleGAN2 generator and its checkpoint formats."""

from zsgm.generator.arch import GeneratorArch, infer_arch_from_rosinality_state
from zsgm.generator.checkpoints import export_rosinality, load_generator, save_generator, to_nvidia_state_dict
from zsgm.generator.convert import convert_checkpoint
from zsgm.generator.errors import CheckpointError
from zsgm.generator.sources import load_generator_source
from zsgm.generator.stylegan2 import Generator

__all__ = ["CheckpointError", "Generator", "GeneratorArch", "convert_checkpoint", "export_rosinality",
           "infer_arch_from_rosinality_state", "load_generator", "load_generator_source", "save_generator",
           "to_nvidia_state_dict"]
