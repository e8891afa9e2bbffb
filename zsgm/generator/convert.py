"""``zsgm convert``: rewrite a generator checkpoint in another format."""

from __future__ import annotations

from pathlib import Path

from zsgm.generator.checkpoints import export_rosinality, load_generator, save_generator
from zsgm.generator.errors import CheckpointError

WRITERS = {".pt": export_rosinality, ".safetensors": save_generator}


def convert_checkpoint(src: str | Path, dst: str | Path) -> dict:
    """Load ``src`` (any supported format, detected from the content) and write ``dst`` atomically.

    Args:
        src: rosinality ``.pt``, NVIDIA ``.pkl`` or zsgm ``.safetensors``.
        dst: ``.pt`` (rosinality ``{"g_ema", "latent_avg"}``) or ``.safetensors`` (zsgm format), by suffix.

    Returns:
        The ``info`` dict of the loaded source.

    Raises:
        CheckpointError: unreadable ``src`` or an unsupported ``dst`` suffix (checked before reading ``src``).
    """
    suffix = Path(dst).suffix.lower()
    if suffix not in WRITERS:
        raise CheckpointError(f"{dst}: unsupported output suffix {suffix!r} (use {' or '.join(WRITERS)})")
    generator, info = load_generator(src)
    WRITERS[suffix](generator, dst)
    return info


__all__ = ["WRITERS", "convert_checkpoint"]
