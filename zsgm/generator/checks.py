"""Checks a checkpoint's tensors pass before any generator is built from them.

Every reader calls these in the same order: the architecture's expected names and shapes against what the file
holds (shapes only, so that it can run on a safetensors header before any data is read), then dtypes, then finite
values. Each failure is one :class:`CheckpointError` naming the file and the key.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from zsgm.generator.errors import CheckpointError
from zsgm.generator.layout import state_shapes
from zsgm.tensor_checks import nonfinite_names

# Buffers a file may lack or carry in excess: rebuilt from the architecture (kernels) or re-drawn (noises).
OPTIONAL_PREFIXES = ("noises.",)
OPTIONAL_SUFFIXES = (".kernel",)


def optional(key: str) -> bool:
    """Whether a generator key may be missing from (or extra in) a file."""
    return key.startswith(OPTIONAL_PREFIXES) or key.endswith(OPTIONAL_SUFFIXES)


def short(keys: list[str], n: int = 5) -> str:
    """``['a', 'b'] ... (12 in all)``: a few keys of a long list."""
    return f"{keys[:n]}{' ...' if len(keys) > n else ''} ({len(keys)} in all)"


def check_layout(arch, shapes: Mapping[str, tuple[int, ...]], *, source: str,
                 origin: str = "the architecture read from the file") -> None:
    """The file's tensor names and shapes must be those of ``Generator(arch)`` (optional buffers aside).

    Args:
        arch: the architecture read from the file (already bounded by :class:`GeneratorArch`).
        shapes: ``{name: shape}`` of the file's generator tensors (rosinality names).
        source: the file, for messages.
        origin: where ``arch`` came from, for messages.

    Raises:
        CheckpointError: missing or unexpected weights, or the first key whose shape differs.
    """
    expected = state_shapes(arch)
    missing = [k for k in expected if k not in shapes and not optional(k)]
    if missing:
        raise CheckpointError(f"{source}: missing generator weights {short(missing)} for the {arch.size}px "
                              f"generator of {origin}")
    unexpected = sorted(k for k in shapes if k not in expected and not optional(k))
    if unexpected:
        raise CheckpointError(f"{source}: unexpected entries {short(unexpected)} for the {arch.size}px "
                              f"generator of {origin}")
    for key, want in expected.items():
        if key in shapes and tuple(shapes[key]) != want:
            raise CheckpointError(f"{source}: key {key!r} has shape {list(shapes[key])}, {origin} expects "
                                  f"{list(want)}")


def check_values(state: Mapping[str, Any], *, source: str) -> None:
    """Every entry is a floating-point tensor and every value is finite.

    Raises:
        CheckpointError: naming the first non-tensor or non-float key, or the first key holding NaN or inf
            together with how many tensors (and values of that key) are affected.
    """
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{source}: generator entries that are not tensors: {short(not_tensors)}")
    not_float = [k for k, v in state.items() if not v.is_floating_point()]
    if not_float:
        raise CheckpointError(f"{source}: key {not_float[0]!r} has dtype {state[not_float[0]].dtype}, a generator "
                              f"holds floating-point tensors only ({len(not_float)} such keys)")
    bad = {k: int((~torch.isfinite(state[k])).sum()) for k in nonfinite_names(state)}
    if bad:
        first = next(iter(bad))
        raise CheckpointError(f"{source}: {len(bad)} of {len(state)} tensors hold non-finite values (NaN or inf), "
                              f"the first is {first!r} ({bad[first]} of {state[first].numel()} values); the "
                              f"file is damaged or comes from a run that diverged, so it is not loaded")


__all__ = ["OPTIONAL_PREFIXES", "OPTIONAL_SUFFIXES", "check_layout", "check_values", "optional", "short"]
