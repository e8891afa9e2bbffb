"""The cross-run cache of reference latents: a found ``w_ref`` keyed by what determines it.

Key: sha256 over the reference file's bytes, a fingerprint of the source generator's weights and the search
settings (every option of the search, the run seed, the CLIP models and preprocessing, the LPIPS network). Folder:
``$ZSGM_CACHE``, else ``$XDG_CACHE_HOME/zsgm``, else ``~/.cache/zsgm``; entries under ``reference-latents/``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from zsgm.cache import cache_root, weights_fingerprint  # noqa: F401 (re-exported)
from zsgm.io_utils import atomic_write_bytes

CACHE_SUBDIR = "reference-latents"
LATENT_NAME = "w_ref"


def cache_key(image_bytes: bytes, generator_fingerprint: str, settings: dict) -> str:
    """sha256 hex of (image bytes, generator fingerprint, settings as canonical JSON)."""
    h = hashlib.sha256()
    h.update(hashlib.sha256(image_bytes).digest())
    h.update(generator_fingerprint.encode())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()


def latent_bytes(w_ref: torch.Tensor, metadata: dict[str, str]) -> bytes:
    """A safetensors file holding ``w_ref`` (``[1, n_latent, D]`` float32) and string metadata."""
    from safetensors.torch import save

    return save({LATENT_NAME: w_ref.detach().float().cpu().contiguous()}, metadata=metadata)


def write_latent(path: Path, w_ref: torch.Tensor, metadata: dict[str, str]) -> None:
    """Write ``w_ref`` atomically (:func:`latent_bytes`)."""
    atomic_write_bytes(path, latent_bytes(w_ref, metadata))


def read_latent(path: Path, shape: tuple[int, ...]) -> torch.Tensor | None:
    """``w_ref`` from a latent file, or None when it is missing, unreadable, of another shape or not finite."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        w = load_file(str(path))[LATENT_NAME]
    except (OSError, KeyError, SafetensorError, ValueError):
        return None
    if tuple(w.shape) != tuple(shape) or not torch.isfinite(w).all():
        return None
    return w.float()
