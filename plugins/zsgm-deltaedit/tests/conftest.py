"""Tiny models shared by the DeltaEdit tests: a 16-px generator (5 style layers of 8 channels) and the tiny CLIP."""

from __future__ import annotations

import pytest
import torch

from zsgm.clip import tiny_random_clip
from zsgm.generator import Generator, GeneratorArch

TINY_RECIPE = """
preset = "tiny"
[codes]
samples = 24
chunk_size = 10
[train]
steps = 4
batch = 8
checkpoint_every = 2
[relevance]
images = 2
batch = 64
[clip]
name = "tiny-random"
[edit]
neutral = "photo"
strengths = [0.5, 1.0]
"""


def make_tiny_generator(seed: int = 0) -> Generator:
    """16 px, style_dim 16, 8 channels: 5 conv layers, 40 S channels (fast on a CPU)."""
    arch = GeneratorArch.rosinality(16, style_dim=16, n_mlp=1, channel_multiplier=1, channel_max=8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g = Generator(arch)
        with torch.no_grad():  # non-trivial modulation biases, so S codes vary between samples
            for name, p in g.named_parameters():
                if name.endswith("modulation.bias"):
                    p.add_(0.3 * torch.randn_like(p))
    return g.eval()


@pytest.fixture
def tiny_generator():
    return make_tiny_generator()


@pytest.fixture(scope="session")
def tiny_clip():
    return tiny_random_clip(preprocess="deltaedit")


@pytest.fixture
def tiny_recipe_file(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_RECIPE)
    return path
