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
from pathlib import Path

from zsgm.cache import cache_root, weights_fingerprint  # noqa: F401 (re-exported)

CACHE_SUBDIR = "deltaedit"
KEY_LENGTH = 16


def settings_key(settings: dict) -> str:
    """Short sha256 of ``settings`` as canonical JSON."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


def generator_dir(fingerprint: str, *, root: Path | None = None) -> Path:
    """The folder of one generator's DeltaEdit files."""
    return (cache_root() if root is None else Path(root)) / CACHE_SUBDIR / fingerprint[:KEY_LENGTH]
