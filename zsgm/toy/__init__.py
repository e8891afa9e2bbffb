"""The embedded "shapes" world: a procedural renderer with captions, and ground-truth judges.

- :mod:`zsgm.toy.render`: :class:`ShapeParams`, :func:`sample_params`, :func:`render`,
  :func:`render_batch`, :func:`foreground_mask`, :func:`style_background`, contact sheets.
- :mod:`zsgm.toy.captions`: :func:`caption`, :func:`style_words`, :func:`colour_words`.
- :mod:`zsgm.toy.masks`: background estimate, ink / filled masks of any image batch (torch, no scipy).
- :mod:`zsgm.toy.judges`: :func:`classify_style`, :func:`classify_colour`, :func:`content_iou`,
  :func:`background_change`, :func:`diversity`, :func:`diversity_ratio`, :func:`judge_batch`.
- :mod:`zsgm.toy.evaluate` (``zsgm eval``) and :mod:`zsgm.toy.benchmark`: judge runs, write the table.
- :mod:`zsgm.toy.assets`: the shipped generator (``--generator shapes``); the shipped CLIP is loaded by
  :mod:`zsgm.clip_loading` (``--clip shapes``).
- Training the assets: :mod:`zsgm.toy.train_generator` (with :mod:`zsgm.toy.latents`,
  :mod:`zsgm.toy.generator_quality`), :mod:`zsgm.toy.train_clip` (with :mod:`zsgm.toy.clip_data`,
  :mod:`zsgm.toy.eval_clip`) and :mod:`zsgm.toy.mine_fakes` (the CLIP's hard negatives). See docs/SHAPES.md.
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
