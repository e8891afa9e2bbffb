"""The Hugging Face Hub, asked as little as possible: is offline mode requested, is the Hub reachable (one quick
probe), and is a pretrained tag's weights file already cached (no network at all).

A tag whose weights are cached (Hugging Face cache or ``~/.cache/clip``) loads without network. Otherwise one
probe (:data:`HUB_PROBE_TIMEOUT_S`, no retries) asks the Hub first, so an unreachable Hub fails at once instead
of after about a minute of huggingface_hub's retries. ``HF_HUB_OFFLINE=1`` is honoured at load time, even when
huggingface_hub was imported before the variable was set (:func:`hub_offline_switch`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Optional

from zsgm.clip_loaded import one_line

HUB_PROBE_TIMEOUT_S = 5.0  # one HEAD request to the Hub before a download; no retries


def hf_offline_requested() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set to a true value right now."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


@contextlib.contextmanager
def hub_offline_switch(offline: bool):
    """While loading, make huggingface_hub cache-only (its ``HF_HUB_OFFLINE``, read at each request) if asked."""
    try:
        from huggingface_hub import constants
    except ImportError:
        constants = None
    if not offline or constants is None or getattr(constants, "HF_HUB_OFFLINE", True):
        yield  # nothing to switch, or already offline
        return
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = False


def hub_unreachable_reason(repo_id: str, filename: str) -> Optional[str]:
    """``None`` when the Hugging Face Hub answers, else why it cannot be reached.

    One HEAD request for ``repo_id/filename`` with a :data:`HUB_PROBE_TIMEOUT_S` timeout and no retries. Any HTTP
    answer (200, 404, 401, 5xx), or a connection that is only slow to answer (read timeout), counts as reachable: the
    real download then reports (and retries) the rest. Only a network failure (no DNS, refused connection, connect
    timeout, proxy error) counts as unreachable.
    """
    try:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url
        from huggingface_hub.errors import HfHubHTTPError
    except ImportError:
        return None  # no huggingface_hub: open_clip downloads from plain URLs (no retries)
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename), timeout=HUB_PROBE_TIMEOUT_S)
    except HfHubHTTPError:
        return None
    except Exception as exc:  # noqa: BLE001 - httpx/requests network errors differ between versions
        if type(exc).__name__ == "ReadTimeout":
            return None  # connected, only slow to answer: let the download (and its retries) go on
        return f"{type(exc).__name__}: {one_line(exc, 160)}"
    return None


def split_hub(hub: str) -> tuple[str, str]:
    """open_clip's ``hf_hub`` field -> (repo id, file): ``"org/repo/"`` names open_clip's default weights file."""
    if hub.endswith("/"):
        return hub.rstrip("/"), "open_clip_pytorch_model.bin"
    repo, filename = os.path.split(hub)
    return repo, filename


def _weights_source(tag_cfg: dict) -> str:
    parts = []
    if tag_cfg.get("hf_hub"):
        parts.append(f"Hugging Face repo {tag_cfg['hf_hub'].rstrip('/')!r}")
    if tag_cfg.get("url"):
        parts.append(f"URL {tag_cfg['url']}")
    return " or ".join(parts) or "its source"


def offline_advice(name: str, tag_cfg: Optional[dict] = None) -> str:
    source = _weights_source(tag_cfg) if tag_cfg else "the weights"
    return (f"Without network access, download {source} on a machine that has it and pass the file as "
            f"pretrained (ClipModelSpec(name={name!r}, pretrained='/path/to/weights.safetensors'), or "
            f"`--clip {name}:/path/to/weights` on the command line); or populate the Hugging Face cache and set "
            f"HF_HUB_OFFLINE=1")


def _hf_cache_dir() -> Optional[str]:
    return os.environ.get("HF_HUB_CACHE") or None


def cached_tag_file(tag_cfg: dict) -> Optional[str]:
    """The local file of a pretrained tag if it is already in the HF cache or open_clip's URL cache, else None.

    Never touches the network.
    """
    hub = tag_cfg.get("hf_hub", "")
    if hub:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            repo, filename = os.path.split(hub)
            names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
            if filename.endswith(".bin"):
                names.insert(0, filename[:-4].replace("pytorch_model", "model") + ".safetensors")
            for fname in names:
                found = try_to_load_from_cache(repo, fname, cache_dir=_hf_cache_dir())
                if isinstance(found, str) and os.path.isfile(found):
                    return found
    url = tag_cfg.get("url", "")
    if url:
        path = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if path.is_file():
            return str(path)
    return None
