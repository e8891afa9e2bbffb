"""What an evaluation metric receives and returns.

A metric is registered through the ``zsgm_register_metrics`` hook as a :class:`zsgm.registry.MetricSpec`::

    register(MetricSpec(name="clip-text", compute=clip_text_score, applies=needs_target_text,
                        description="cosine of generated images to the target text (judge CLIP)"))

``applies(ctx)`` returns None when the metric can be computed on ``ctx`` and otherwise one line saying why not
(``zsgm eval`` refuses an explicitly requested metric with that line and skips it among the defaults).
``compute(ctx)`` returns a :class:`MetricResult`. Metrics never generate images themselves: ``zsgm eval`` draws
the samples once (batched, seeded) and every metric reads the same :class:`EvalContext`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import attrs
import torch


class MetricError(ValueError):
    """A metric cannot run on this input (missing weights, too few images); one line naming what and where."""


@attrs.define(kw_only=True)
class EvalContext:
    """Everything a metric may read. Images are CPU float32 tensors in [-1, 1].

    Attributes:
        generated: ``[N, 3, S, S]`` samples of the evaluated generator.
        source: ``[N, 3, S, S]`` the source generator's samples for the *same* latents and noise (paired metrics:
            content IoU, identity, SCS), or None when there is no source generator (a bare checkpoint).
        source_text / target_text: the run's domain texts (None when unknown).
        target_images: the run's reference images (one-shot runs), as files.
        real_dir: a folder of real target-domain images (FID/KID), or None.
        generator_name: the registered name of the (source) generator ("shapes", "tiny-random"), or None for a
            file; metric families tied to one world check it in ``applies``.
        seed / truncation / noise_mode: how the samples were drawn (recorded with every result).
        weights: local weight files by key ("inception", "lpips", "lpips-net", "arcface", ...) given on the command line.
        clip_judge: the CLIP model that judges CLIP scores (a :class:`zsgm.clip.ClipModel`), or None.
        clip_judge_is_guide: True when the judge is one of the CLIP models that guided the run (scores inflated).
        device: where metrics may run their networks.
        options: free-form per-metric options (``{"intra-lpips": {"k": 10}}``).
    """

    generated: torch.Tensor
    source: Optional[torch.Tensor] = None
    source_text: Optional[str] = None
    target_text: Optional[str] = None
    target_images: list[Path] = attrs.Factory(list)
    real_dir: Optional[Path] = None
    generator_name: Optional[str] = None
    seed: int = 0
    truncation: float = 1.0
    noise_mode: str = "random"
    weights: dict[str, str] = attrs.Factory(dict)
    clip_judge: Any = None
    clip_judge_is_guide: bool = False
    device: torch.device = attrs.Factory(lambda: torch.device("cpu"))
    options: dict[str, dict[str, Any]] = attrs.Factory(dict)

    def option(self, metric: str, key: str, default: Any = None) -> Any:
        """``options[metric][key]`` or ``default``."""
        return self.options.get(metric, {}).get(key, default)


@attrs.define(kw_only=True)
class MetricResult:
    """A metric's numbers and how they were obtained.

    Attributes:
        values: ``{"fid": 12.3}`` or several (``{"kid": .., "kid_std": ..}``), plain floats.
        record: the reporting record the field asks for (docs/EVALUATION.md): protocol variant, library and version, weight
            file checksums, image counts, reference set, resize; what a reader needs to compare the number.
    """

    values: dict[str, float]
    record: dict[str, Any] = attrs.Factory(dict)


Applies = Callable[[EvalContext], Optional[str]]
Compute = Callable[[EvalContext], MetricResult]
