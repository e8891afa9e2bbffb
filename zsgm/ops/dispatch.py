"""One dispatch point for every custom op: ``impl = "auto" | "cuda" | "ref"``.

``auto`` uses a registered CUDA implementation for CUDA tensors when it loads, else the torch reference,
warning once with the reason. ``impl="cuda"`` raises instead of falling back, and so does ``auto`` when
``ZSGM_OPS_STRICT=1``. Backends register a *loader* (called lazily on first use, never at import).
"""

from __future__ import annotations

import os
import warnings
from typing import Callable

import torch

IMPLS = ("auto", "cuda", "ref")
STRICT_ENV = "ZSGM_OPS_STRICT"

_loaders: dict[str, Callable[[], Callable]] = {}
_loaded: dict[str, Callable | BaseException] = {}
_warned: set[str] = set()


class OpUnavailableError(RuntimeError):
    """The CUDA implementation of an op was requested but cannot be used."""


def register_cuda_impl(op: str, loader: Callable[[], Callable]) -> None:
    """Register ``loader() -> function`` as the CUDA implementation of ``op`` (loaded on first use)."""
    _loaders[op] = loader
    _loaded.pop(op, None)


def _strict() -> bool:
    return os.environ.get(STRICT_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def cuda_impl(op: str) -> Callable:
    """The loaded CUDA implementation of ``op``; raises :class:`OpUnavailableError` with the reason."""
    if op not in _loaded:
        loader = _loaders.get(op)
        if loader is None:
            _loaded[op] = OpUnavailableError(f"no CUDA implementation of {op!r} is registered")
        else:
            try:
                _loaded[op] = loader()
            except Exception as exc:  # noqa: BLE001 - any build/import failure becomes the reason
                _loaded[op] = OpUnavailableError(f"CUDA implementation of {op!r} failed to load: "
                                                 f"{type(exc).__name__}: {exc}")
    found = _loaded[op]
    if isinstance(found, BaseException):
        raise found
    return found


def select_impl(op: str, impl: str, *tensors: torch.Tensor) -> str:
    """Decide which implementation runs ``op`` on ``tensors``: ``"cuda"`` or ``"ref"``."""
    if impl not in IMPLS:
        raise ValueError(f"{op}: impl must be one of {', '.join(map(repr, IMPLS))}; got {impl!r}")
    if impl == "ref":
        return "ref"
    on_cuda = all(t.is_cuda for t in tensors if isinstance(t, torch.Tensor))
    if impl == "cuda":
        if not on_cuda:
            raise OpUnavailableError(f"{op}: impl='cuda' needs CUDA tensors")
        cuda_impl(op)
        return "cuda"
    if not on_cuda:
        return "ref"
    try:
        cuda_impl(op)
        return "cuda"
    except OpUnavailableError as exc:
        if _strict():
            raise
        if op not in _warned:
            _warned.add(op)
            warnings.warn(f"zsgm.ops: using the torch reference for {op}: {exc}", stacklevel=3)
        return "ref"


def reset() -> None:
    """Forget loaded implementations and warnings (tests)."""
    _loaded.clear()
    _warned.clear()
