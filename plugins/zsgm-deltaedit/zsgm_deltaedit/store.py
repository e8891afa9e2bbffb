"""Where DeltaEdit's per-generator files live, and the keys that name them.

Everything trained or computed for one generator sits in one folder keyed by a fingerprint of its weights::

    <cache root>/deltaedit/<generator fingerprint, 16 hex>/
        codes-<key>/                  training codes (codes.py): chunk-*.safetensors, real-*.safetensors, manifest.json
        mapper-<preset>-<key>/        one trained mapper (train.py): mapper.json, fit/ (the fit run), relevance.safetensors

The cache root is ``$ZSGM_CACHE``, else ``$XDG_CACHE_HOME/zsgm``, else ``~/.cache/zsgm`` (the same rule as the
one-shot plugin's reference cache). A key is a short sha256 of the settings that decide the files' contents, so a
changed setting never reuses a stale file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

CACHE_SUBDIR = "deltaedit"
KEY_LENGTH = 16


def cache_root() -> Path:
    """``$ZSGM_CACHE`` or ``$XDG_CACHE_HOME/zsgm`` or ``~/.cache/zsgm``."""
    if os.environ.get("ZSGM_CACHE"):
        return Path(os.environ["ZSGM_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "zsgm"
    return Path.home() / ".cache" / "zsgm"


def weights_fingerprint(module: torch.nn.Module) -> str:
    """sha256 hex over every parameter and buffer (name, dtype, shape, bytes) in name order, plus the generator's
    ``latent_avg`` when it has one (it sets the truncation centre, not part of the state dict)."""
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


def settings_key(settings: dict) -> str:
    """Short sha256 of ``settings`` as canonical JSON."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


def generator_dir(fingerprint: str, *, root: Path | None = None) -> Path:
    """The folder of one generator's DeltaEdit files."""
    return (cache_root() if root is None else Path(root)) / CACHE_SUBDIR / fingerprint[:KEY_LENGTH]
