"""The shapes world's ground-truth judges as the metric family "shapes" (``zsgm eval --metrics shapes``).

Four metrics, each a :class:`zsgm.registry.MetricSpec` registered by :mod:`zsgm.builtin_plugin`:

- ``target-rate``: fraction of samples the judges read as the target style or colour;
- ``content-iou``: mean IoU of each sample's shape with its source sample's shape;
- ``background-artefact``: mean background change against the target style's background;
- ``diversity-ratio``: content diversity of the samples over the source's.

They apply only to the shapes generator (``ctx.generator_name == "shapes"``), need the source samples for the
same latents and noise (``ctx.source``) and a task: the target text (``--target`` or the run's), else the style
the judge reads in the run's first target image. The numbers are those of :func:`zsgm.toy.evaluate.judge_task`
(``zsgm.toy.evaluate.evaluate_run`` for the same samples). The four share one judging of the samples.

Nothing heavy is imported at module level (the registry imports this module on every command).
"""

from __future__ import annotations

from typing import Any, Optional

FAMILY = "shapes"
GENERATOR = "shapes"

# metric name -> (its value key, the record keys it also reports from the judging)
METRICS = {
    "target-rate": ("target_rate", ("colour_rate", "style_kept_rate", "source_style_rate",
                                    "source_target_colour_rate")),
    "content-iou": ("content_iou", ()),
    "background-artefact": ("background_artefact", ()),
    "diversity-ratio": ("diversity_ratio", ("pixel_diversity_ratio",)),
}
DESCRIPTIONS = {
    "target-rate": "shapes world: fraction of samples judged the target style or colour",
    "content-iou": "shapes world: mean IoU of each sample's shape with its source sample's",
    "background-artefact": "shapes world: mean background change against the target style's background",
    "diversity-ratio": "shapes world: content diversity of the samples over the source's",
}

_LAST: dict[str, Any] = {}  # the last judging: {"key": ..., "refs": (generated, source), "scores": ...}


def shapes_target(ctx) -> str:
    """The target text the judges read: ``ctx.target_text``, else the style of the first target image.

    Raises:
        ValueError: neither is there, or the judges cannot read it.
    """
    from zsgm.toy.evaluate import parse_target, reference_target

    if ctx.target_text is not None:
        parse_target(ctx.target_text)
        return ctx.target_text
    if ctx.target_images:
        return reference_target(ctx.target_images[0], size=int(ctx.generated.shape[-1]))
    raise ValueError("no target text or target image to judge against (give --target)")


def applies(ctx) -> Optional[str]:
    """None when the shapes judges can judge ``ctx``, else why not (one line)."""
    if ctx.generator_name != GENERATOR:
        what = f"the generator {ctx.generator_name!r}" if ctx.generator_name else "a generator known only as a file"
        return f"the shapes judges read only the shapes world's generator, not {what}"
    if ctx.source is None:
        return "the shapes judges compare each sample with its source sample; no source generator is known"
    try:
        shapes_target(ctx)
    except ValueError as exc:
        return f"the shapes judges need a task: {exc}"
    return None


def judged(ctx) -> dict[str, Any]:
    """:func:`zsgm.toy.evaluate.judge_task` of ``ctx`` (computed once for the four metrics of one context)."""
    from zsgm.toy.evaluate import judge_task

    target = shapes_target(ctx)
    key = (id(ctx.generated), id(ctx.source), target)
    refs = _LAST.get("refs", (None, None))
    if _LAST.get("key") == key and refs[0] is ctx.generated and refs[1] is ctx.source:
        return _LAST["scores"]
    scores = judge_task(ctx.source, ctx.generated, target=target)
    _LAST.clear()
    _LAST.update(key=key, refs=(ctx.generated, ctx.source), scores=scores)
    return scores


def _compute(name: str):
    value_key, extra = METRICS[name]

    def compute(ctx):
        from zsgm.metrics.api import MetricResult

        scores = judged(ctx)
        record = {"protocol": "zsgm shapes-world ground-truth judges (zsgm.toy.judges)", "task": scores["task"],
                  "target": shapes_target(ctx), "n": int(ctx.generated.shape[0]), "paired": True,
                  **{k: float(scores[k]) for k in extra if k in scores}}
        return MetricResult(values={value_key: float(scores[value_key])}, record=record)

    compute.__name__ = f"shapes_{value_key}"
    return compute


def shapes_metrics() -> list:
    """The four :class:`zsgm.registry.MetricSpec` of the family "shapes" (all defaults)."""
    from zsgm.registry import MetricSpec

    return [MetricSpec(name=name, compute=_compute(name), description=DESCRIPTIONS[name], applies=applies,
                       family=FAMILY, default=True) for name in METRICS]


__all__ = ["FAMILY", "METRICS", "applies", "judged", "shapes_metrics", "shapes_target"]
