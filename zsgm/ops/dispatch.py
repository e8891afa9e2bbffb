"""One dispatch point for every custom op: ``impl = "auto" | "cuda" | "ref"`` (OPS.md 5).

- ``"ref"``: always the pure-torch reference.
- ``"cuda"``: the registered CUDA implementation; raises :class:`OpUnavailableError` (a ``RuntimeError``)
  with the reason when the inputs are not on a CUDA device or no implementation is registered / loads.
- ``"auto"``: the CUDA implementation when every input tensor is on a CUDA device and it loads; otherwise
  the reference. CPU inputs take the reference silently; CUDA inputs that fall back warn **once per op**
  (:class:`OpFallbackWarning`, with the reason), or raise when the environment sets ``ZSGM_OPS_STRICT=1``.

Backends register a *loader* with :func:`register_cuda_impl`; it is called lazily the first time a CUDA
tensor asks for the op (never at import) and its result, or its failure, is cached. The function a loader
returns may carry an ``unavailable_reason(*args, **kwargs) -> str | None`` attribute: the op's front end
(:func:`run_op`) asks it before every CUDA call, and a reason (unsupported dtype or argument, a kernel that
failed to compile or failed its check on that device) sends the call to the reference through
:func:`fall_back` (warn once per op and reason; raise under ``impl="cuda"`` or strict mode).
"""

from __future__ import annotations

import os
import warnings
from typing import Callable

import torch

IMPLS = ("auto", "cuda", "ref")
STRICT_ENV = "ZSGM_OPS_STRICT"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")

# Simple caches (no work happens at import): op -> loader, op -> loaded function or its load failure.
_loaders: dict[str, Callable[[], Callable]] = {}
_loaded: dict[str, Callable | OpUnavailableError] = {}
_warned: set[str] = set()


class OpUnavailableError(RuntimeError):
    """The CUDA implementation of an op was required (``impl="cuda"`` or strict mode) but cannot be used."""


class OpFallbackWarning(UserWarning):
    """``impl="auto"`` ran the torch reference on CUDA tensors because the CUDA implementation is unavailable."""


def register_cuda_impl(op: str, loader: Callable[[], Callable]) -> None:
    """Register the CUDA implementation of ``op``.

    Args:
        op: op name, e.g. ``"bias_act"`` or ``"upfirdn2d"``.
        loader: ``loader() -> function``; called on first CUDA use (import CuPy, compile, ...). Any
            exception it raises becomes the reason reported by the fallback warning or error. The
            function it returns is called with the op's own arguments (minus ``impl``).
    """
    if not isinstance(op, str) or not op:
        raise ValueError(f"register_cuda_impl: op must be a non-empty string; got {op!r}")
    if not callable(loader):
        raise TypeError(f"register_cuda_impl({op!r}): loader must be callable; got {type(loader).__name__}")
    _loaders[op] = loader
    _loaded.pop(op, None)
    _warned.discard(op)


def strict_mode() -> bool:
    """Whether ``ZSGM_OPS_STRICT`` forbids ``auto`` from falling back on CUDA tensors."""
    value = os.environ.get(STRICT_ENV, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"environment variable {STRICT_ENV}={os.environ[STRICT_ENV]!r}: expected one of "
                     f"{', '.join(repr(v) for v in _TRUE + _FALSE[1:])} (or unset)")


def cuda_impl(op: str) -> Callable:
    """The loaded CUDA implementation of ``op``.

    Raises:
        OpUnavailableError: none is registered, or its loader failed (the message holds the reason).
    """
    if op not in _loaded:
        loader = _loaders.get(op)
        if loader is None:
            registered = ", ".join(sorted(_loaders)) or "none"
            _loaded[op] = OpUnavailableError(f"no CUDA implementation of {op!r} is registered "
                                             f"(registered: {registered})")
        else:
            try:
                _loaded[op] = loader()
            except Exception as exc:  # noqa: BLE001 - any import/compile failure becomes the reason
                _loaded[op] = OpUnavailableError(f"the CUDA implementation of {op!r} failed to load: "
                                                 f"{type(exc).__name__}: {exc}")
    found = _loaded[op]
    if isinstance(found, OpUnavailableError):
        raise OpUnavailableError(str(found))
    return found


def _is_cuda(t: torch.Tensor) -> bool:
    """Whether ``t`` lives on a CUDA device (one function, so tests can stand CPU tensors in for CUDA ones)."""
    return t.is_cuda


def _describe_devices(tensors: list[torch.Tensor]) -> str:
    return ", ".join(sorted({str(t.device) for t in tensors})) or "no tensors"


def check_impl(op: str, impl: str) -> None:
    """Raise ``ValueError`` unless ``impl`` is one of :data:`IMPLS`."""
    if not isinstance(impl, str) or impl not in IMPLS:
        raise ValueError(f"{op}: impl must be one of {', '.join(map(repr, IMPLS))}; got {impl!r}")


def select_impl(op: str, impl: str, *tensors: torch.Tensor | None) -> str:
    """Decide which implementation runs ``op`` on ``tensors``.

    Args:
        op: op name (used for the registry and in messages).
        impl: ``"auto"``, ``"cuda"`` or ``"ref"``.
        tensors: the op's tensor inputs (``None`` entries are ignored).

    Returns:
        ``"cuda"`` or ``"ref"``.

    Raises:
        ValueError: ``impl`` is not one of :data:`IMPLS`.
        OpUnavailableError: ``impl="cuda"`` (or ``auto`` under ``ZSGM_OPS_STRICT=1`` with CUDA inputs) and
            the CUDA implementation cannot run.
    """
    check_impl(op, impl)
    if impl == "ref":
        return "ref"
    present = [t for t in tensors if isinstance(t, torch.Tensor)]
    on_cuda = bool(present) and all(_is_cuda(t) for t in present)
    if impl == "cuda":
        if not on_cuda:
            raise OpUnavailableError(f"{op}: impl='cuda' needs every input on a CUDA device; found "
                                     f"{_describe_devices(present)} (use impl='auto' or 'ref' off the GPU)")
        cuda_impl(op)
        return "cuda"
    if not on_cuda:  # CPU (or mixed) inputs: the reference is the intended path, no warning
        return "ref"
    try:
        cuda_impl(op)
        return "cuda"
    except OpUnavailableError as exc:
        if strict_mode():
            raise OpUnavailableError(f"{op}: {exc} ({STRICT_ENV}=1 forbids falling back to the torch "
                                     f"reference)") from None
        if op not in _warned:
            _warned.add(op)
            warnings.warn(f"zsgm.ops: {op} on CUDA tensors falls back to the slow torch reference: {exc}. "
                          f"Pass impl='ref' to choose it explicitly, or set {STRICT_ENV}=1 to make this an "
                          f"error.", OpFallbackWarning, stacklevel=3)
        return "ref"


def fall_back(op: str, impl: str, reason: str) -> None:
    """A CUDA call the kernels cannot take (``reason``): return to run the reference, or raise.

    Raises :class:`OpUnavailableError` under ``impl="cuda"`` or ``ZSGM_OPS_STRICT=1``; otherwise warns
    (:class:`OpFallbackWarning`) once per (op, reason) and returns.
    """
    if impl == "cuda":
        raise OpUnavailableError(f"{op}: impl='cuda' cannot run this call: {reason}")
    if strict_mode():
        raise OpUnavailableError(f"{op}: {reason} ({STRICT_ENV}=1 forbids falling back to the torch reference)")
    key = f"{op}\0{reason}"
    if key not in _warned:
        _warned.add(key)
        warnings.warn(f"zsgm.ops: {op} on CUDA tensors falls back to the torch reference: {reason}. Pass "
                      f"impl='ref' to choose it explicitly, or set {STRICT_ENV}=1 to make this an error.",
                      OpFallbackWarning, stacklevel=4)


def run_op(op: str, impl: str, ref: Callable, tensors: tuple, *args, **kwargs):
    """Run ``op`` on its CUDA implementation when :func:`select_impl` picks it and it can take these
    arguments (its ``unavailable_reason``), else on ``ref``. ``args``/``kwargs`` are the op's own (no impl)."""
    if select_impl(op, impl, *tensors) == "cuda":
        fn = cuda_impl(op)
        why = getattr(fn, "unavailable_reason", None)
        reason = why(*args, **kwargs) if why is not None else None
        if reason is None:
            return fn(*args, **kwargs)
        fall_back(op, impl, reason)
    return ref(*args, **kwargs)


def reset() -> None:
    """Forget loaded implementations and issued warnings (registrations stay); for tests."""
    _loaded.clear()
    _warned.clear()
