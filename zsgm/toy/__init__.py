"""The embedded "shapes" world: a procedural renderer with captions, and ground-truth judges.

- :mod:`zsgm.toy.render`: :class:`ShapeParams`, :func:`sample_params`, :func:`render`,
  :func:`render_batch`, :func:`foreground_mask`, :func:`style_background`, contact sheets.
- :mod:`zsgm.toy.captions`: :func:`caption`, :func:`style_words`, :func:`colour_words`.
- :mod:`zsgm.toy.masks`: background estimate, ink / filled masks of any image batch (torch, no scipy).
- :mod:`zsgm.toy.judges`: :func:`classify_style`, :func:`classify_colour`, :func:`content_iou`,
  :func:`background_change`, :func:`diversity`, :func:`diversity_ratio`, :func:`judge_batch`.
"""

from zsgm.toy.captions import caption, colour_words, kind_words, style_words
from zsgm.toy.judges import (
    analyse,
    background_change,
    classify_colour,
    classify_style,
    content_iou,
    diversity,
    diversity_ratio,
    judge_batch,
)
from zsgm.toy.masks import estimate_background, foreground_mask_from_image
from zsgm.toy.render import (
    COLOURS,
    KINDS,
    STYLES,
    ShapeParams,
    foreground_mask,
    render,
    render_batch,
    sample_params,
    save_contact_sheet,
    style_background,
)

__all__ = [
    "COLOURS", "KINDS", "STYLES", "ShapeParams", "analyse", "background_change", "caption",
    "classify_colour", "classify_style", "colour_words", "content_iou", "diversity", "diversity_ratio",
    "estimate_background", "foreground_mask", "foreground_mask_from_image", "judge_batch", "kind_words",
    "render", "render_batch", "sample_params", "save_contact_sheet", "style_background", "style_words",
]
