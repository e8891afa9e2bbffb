"""Finiteness checks shared by every reader of weights (checkpoints, generator files, CLIP files, ``zsgm sample``)."""

from __future__ import annotations

from typing import Any, Mapping

import torch


def nonfinite_names(named: Mapping[str, Any]) -> list[str]:
    """Names of the floating tensors in ``named`` holding NaN or inf, in ``named``'s order.

    Entries that are not floating-point tensors are skipped. One host sync per call (not per tensor): the
    per-tensor flags are stacked on the first tensor's device before they are read.
    """
    floats = [(name, t) for name, t in named.items() if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if not floats:
        return []
    flags = [torch.isfinite(t).all() for _, t in floats]
    ok = torch.stack([f.to(flags[0].device) for f in flags]).tolist()
    return [name for (name, _), good in zip(floats, ok) if not good]


__all__ = ["nonfinite_names"]
