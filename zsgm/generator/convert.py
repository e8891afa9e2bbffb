"""``zsgm convert``: rewrite a generator in another checkpoint format."""

from __future__ import annotations

import os
from pathlib import Path

from zsgm.generator.checkpoints import export_rosinality, save_generator
from zsgm.generator.errors import CheckpointError

WRITERS = {".pt": export_rosinality, ".safetensors": save_generator}


def convert_checkpoint(src: str | os.PathLike, dst: str | Path, *, registry=None) -> dict:
    """Load ``src`` (any generator source) and write ``dst`` atomically.

    Args:
        src: anything :func:`zsgm.generator.sources.load_generator_source` takes: a registered name
            (``"shapes"``), a zsgm run directory, a run's ``checkpoints/last.pt``, or a rosinality ``.pt``,
            NVIDIA ``.pkl`` or zsgm ``.safetensors`` file (format detected from the content).
        dst: ``.pt`` (rosinality ``{"g_ema", "latent_avg"}``) or ``.safetensors`` (zsgm format), by suffix.
        registry: the plugin registry for names (the process-wide one when None).

    Returns:
        The ``info`` dict of the loaded source.

    Raises:
        CheckpointError: an unsupported ``dst`` suffix (checked before reading ``src``), or a source that cannot
            be resolved or loaded.
    """
    from zsgm.generator.sources import load_generator_source

    suffix = Path(dst).suffix.lower()
    if suffix not in WRITERS:
        raise CheckpointError(f"{dst}: unsupported output suffix {suffix!r} (use {' or '.join(WRITERS)})")
    generator, info = load_generator_source(src, registry=registry, device="cpu")
    WRITERS[suffix](generator.cpu(), dst)
    return info


__all__ = ["WRITERS", "convert_checkpoint"]
