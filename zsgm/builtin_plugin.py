"""The core's own registrations: small built-in generators usable without any download."""

from __future__ import annotations

import torch

from zsgm.hookspecs import hookimpl
from zsgm.registry import GeneratorSpec

TINY_SEED = 1234


def tiny_random_generator(device="cpu", *, seed: int = TINY_SEED):
    """A 32-px StyleGAN2 with 32 channels and random weights (deterministic from ``seed``).

    For smoke tests and demos of the pipeline: its images are noise-like, not a real domain.
    """
    from zsgm.generator import Generator, GeneratorArch

    arch = GeneratorArch.rosinality(32, style_dim=64, n_mlp=2, channel_multiplier=1, channel_max=32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = Generator(arch)
    return generator.to(device), {"name": "tiny-random", "format": "builtin"}


def shapes_generator(device="cpu"):
    """The shapes-world generator shipped in ``zsgm/toy/assets`` (see :mod:`zsgm.toy`)."""
    from zsgm.toy.assets import load_shapes_generator

    return load_shapes_generator(device=device)


@hookimpl
def zsgm_register_generators(register):
    register(GeneratorSpec(name="tiny-random", load=tiny_random_generator,
                           description="32-px random StyleGAN2 for smoke tests (no real domain)"))
    register(GeneratorSpec(name="shapes", load=shapes_generator,
                           description="32-px StyleGAN2 fitted to the shapes world's photo domain"))
