"""Tiny models and a tiny mapper recipe for the DeltaEdit tests (imported by conftest.py and the tests; not a
test module)."""

from __future__ import annotations

import torch

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
