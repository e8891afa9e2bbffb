"""Loading the shapes-world assets shipped in ``zsgm/toy/assets/``.

- ``shapes_generator.safetensors``: the 32-px StyleGAN2 fitted to the photo domain (zsgm's generator
  format), trained by :mod:`zsgm.toy.train_generator`;
- ``shapes_generator.json``: its training record (seed, steps, seconds, loss, torch version, parameter
  count, measured quality).

(This module shares its name with the data folder beside it; Python imports the module.)
"""

from __future__ import annotations

import json
from pathlib import Path

ASSETS_DIR = Path(__file__).parent / "assets"
GENERATOR_FILE = "shapes_generator.safetensors"
GENERATOR_RECORD = "shapes_generator.json"
GENERATOR_TRAIN_COMMAND = ("python -m zsgm.toy.train_generator --out zsgm/toy/assets/shapes_generator.safetensors "
                           "--seed 0 --threads 2")


def shapes_generator_path() -> Path:
    """Where the shapes generator ships."""
    return ASSETS_DIR / GENERATOR_FILE


def load_shapes_generator(device="cpu"):
    """The shipped shapes-world generator.

    Args:
        device: torch device to put it on.

    Returns:
        ``(Generator, info)``: the generator in eval mode with ``latent_avg`` set; ``info`` holds ``name``,
        ``format``, ``path`` and, under ``record``, the training record (empty when the JSON is missing).

    Raises:
        FileNotFoundError: the weights file is missing (it names the file and the command that makes it).
    """
    from zsgm.generator import load_generator

    path = shapes_generator_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"the shapes-world generator weights are missing: expected {path} (shipped with zsgm). "
            f"Reinstall zsgm, or train them with: {GENERATOR_TRAIN_COMMAND}")
    generator, info = load_generator(path, map_location=device)
    record_path = ASSETS_DIR / GENERATOR_RECORD
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    info = {**info, "name": "shapes", "path": str(path), "record": record}
    return generator.to(device).eval(), info
