"""The user cache shared by plugins: where it is, and how a generator's weights are named in it.

Plugins keep results that are expensive to recompute and are determined by their inputs (One-shot CLIP's reference
latents, DeltaEdit's codes and mappers) under one root, each in its own subfolder, keyed by hashes of what decides
their contents, so a changed input never reuses a stale file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch


def cache_root() -> Path:
    """``$ZSGM_CACHE``, else ``$XDG_CACHE_HOME/zsgm``, else ``~/.cache/zsgm`` (nothing is created here)."""
    if os.environ.get("ZSGM_CACHE"):
        return Path(os.environ["ZSGM_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "zsgm"
    return Path.home() / ".cache" / "zsgm"


def weights_fingerprint(module: torch.nn.Module) -> str:
    """sha256 hex over every parameter and buffer (name, dtype, shape, bytes) in name order, plus a generator's
    ``latent_avg`` when it has one (it sets the truncation centre and is not part of the state dict)."""
    h = hashlib.sha256()
    state = dict(module.state_dict())
    latent_avg = getattr(module, "latent_avg", None)
    if isinstance(latent_avg, torch.Tensor):
        state["<latent_avg>"] = latent_avg
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
