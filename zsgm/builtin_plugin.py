"""The core's own registrations: small built-in generators usable without any download, the metrics, the
logging technique and the `zsgm plot` command."""

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


SHAPES_DISCRIMINATOR_FILE = "shapes_discriminator.safetensors"
SHAPES_DISCRIMINATOR_TRAIN_COMMAND = ("python -m zsgm.toy.train_discriminator --out "
                                      "zsgm/toy/assets/shapes_discriminator.safetensors --seed 0 --threads 1")


def shapes_discriminator(device="cpu"):
    """The discriminator shipped with the shapes generator (``zsgm/toy/assets/shapes_discriminator.safetensors``,
    trained by :mod:`zsgm.toy.train_discriminator`); ``info["record"]`` is its training record.

    Raises:
        FileNotFoundError: the weights are missing (names the file and the command that makes them).
    """
    import json

    from zsgm.generator.discriminator_files import load_discriminator
    from zsgm.toy.assets import ASSETS_DIR

    path = ASSETS_DIR / SHAPES_DISCRIMINATOR_FILE
    if not path.is_file():
        raise FileNotFoundError(f"the shapes-world discriminator weights are missing: expected {path} (shipped "
                                f"with zsgm). Reinstall zsgm, or train them with: {SHAPES_DISCRIMINATOR_TRAIN_COMMAND}")
    d, info = load_discriminator(path, map_location=device)
    record_path = path.with_suffix(".json")
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    return d, {**info, "name": "shapes", "record": record}


@hookimpl
def zsgm_register_generators(register):
    register(GeneratorSpec(name="tiny-random", load=tiny_random_generator, lpips="standin",
                           description="32-px random StyleGAN2 for smoke tests (no real domain)"))
    register(GeneratorSpec(name="shapes", load=shapes_generator, load_discriminator=shapes_discriminator,
                           lpips="standin",
                           description="32-px StyleGAN2 fitted to the shapes world's photo domain"))


@hookimpl
def zsgm_register_techniques(register):
    from zsgm.tensorboard_log import tensorboard_technique

    register(tensorboard_technique())


@hookimpl
def zsgm_register_commands(register):
    from zsgm.plots import plot_command

    register(plot_command())


@hookimpl
def zsgm_register_metrics(register):
    """The shapes world's judges (family "shapes") and the field's metrics (:mod:`zsgm.metrics.library`)."""
    from zsgm.metrics.library import library_metrics
    from zsgm.toy.metrics import shapes_metrics

    for spec in [*shapes_metrics(), *library_metrics()]:
        register(spec)
