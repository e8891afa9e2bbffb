"""What every CLIP loader returns or raises: :class:`LoadedClip`, :class:`ClipLoadError`, and :func:`one_line`
for the messages (a CLIP load failure is one line)."""

from __future__ import annotations

from typing import Any, Optional

import attrs
from torch import nn

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipLoadError(RuntimeError):
    """A CLIP model cannot be loaded; the message names the model, the weights and what to do."""


@attrs.define(kw_only=True)
class LoadedClip:
    """A bare open_clip model and what its wrapper needs.

    Attributes:
        model: the open_clip ``CLIP`` / ``CustomTextCLIP`` (fp32, CPU).
        tokenizer: callable ``list[str] -> LongTensor [T, L]``.
        name: display name.
        mean / std: the model's input normalisation (3 floats each).
        config: the open_clip model config dict (needed to save a zsgm CLIP file), or None if unknown.
        tokenizer_name: "simple" (open_clip's BPE SimpleTokenizer with the config's context length) or the
            open_clip model name whose tokenizer to use.
    """

    model: nn.Module
    tokenizer: Any
    name: str
    mean: tuple[float, ...] = OPENAI_MEAN
    std: tuple[float, ...] = OPENAI_STD
    config: Optional[dict] = None
    tokenizer_name: str = "simple"
    templates: Optional[tuple[str, ...]] = None


def one_line(text: object, limit: int = 400) -> str:
    """``text`` on one line (torch's messages span several) and at most ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."

