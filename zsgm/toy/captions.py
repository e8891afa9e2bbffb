"""Captions of shapes-world images and the words users type as source / target domains.

Every caption of a style contains that style's word from :func:`style_words` ("photo", "sketch",
"night", "pastel"), so that the text direction "photo" -> "sketch" means something to a CLIP trained
on these captions, and the kind word. Styles that show colour always name the colour; sketch captions
mostly do not (the sketch does not show it).
"""

from __future__ import annotations

import numpy as np

from zsgm.toy.render import COLOURS, KINDS, ShapeParams

# Templates: {c} colour, {k} kind. The first template of each style is the canonical caption.
CAPTION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "photo": (
        "a photo of a {c} {k}",
        "a {c} {k} in a photo",
        "a close-up photo of a {c} {k}",
        "a bright photo of the {c} {k}",
    ),
    "sketch": (
        "a sketch of a {k}",
        "a pencil sketch of a {k}",
        "a sketch drawing of a {k}",
        "a black and white sketch of a {k}",
        "a sketch of a {c} {k}",
    ),
    "night": (
        "a {c} {k} at night",
        "a photo of a {c} {k} at night",
        "a night photo of a {c} {k}",
        "a glowing {c} {k} in the night",
    ),
    "pastel": (
        "a pastel {c} {k}",
        "a pastel drawing of a {c} {k}",
        "a {c} {k} in pastel colours",
        "a soft pastel picture of a {c} {k}",
    ),
}

# Captions of images that show no style of the world (the mined fakes of :mod:`zsgm.toy.mine_fakes`): the
# CLIP learns that a generator's noisy, washed-out or half-formed images are none of "photo", "sketch", ...
OTHER_CAPTIONS: tuple[str, ...] = (
    "a glitched picture",
    "a broken image",
    "a corrupted picture",
    "a noisy smudge",
    "a washed out blur",
    "a strange blurry mess",
    "a meaningless picture",
    "a glitch",
)

_STYLE_WORDS = {"photo": "photo", "sketch": "sketch", "night": "night", "pastel": "pastel"}


def style_words() -> dict[str, str]:
    """Map each style to the word a user types as source / target text ("photo" -> "sketch")."""
    return dict(_STYLE_WORDS)


def colour_words() -> tuple[str, ...]:
    """The colour names used in captions (the palette names)."""
    return COLOURS


def kind_words() -> tuple[str, ...]:
    """The shape names used in captions."""
    return KINDS


def caption(params: ShapeParams, *, rng: np.random.Generator | None = None) -> str:
    """One caption of the image ``params`` renders.

    Args:
        params: the shape.
        rng: when given, a template of the style is drawn uniformly; when None, the canonical (first)
            template is used (deterministic).

    Returns:
        the caption, e.g. "a photo of a red circle", "a sketch of a triangle", "a red square at night".
    """
    templates = CAPTION_TEMPLATES[params.style]
    i = 0 if rng is None else int(rng.integers(len(templates)))
    return templates[i].format(c=params.colour, k=params.kind)


def all_captions(params: ShapeParams) -> list[str]:
    """Every caption phrasing of ``params`` (for zero-shot classification with a text encoder)."""
    return [t.format(c=params.colour, k=params.kind) for t in CAPTION_TEMPLATES[params.style]]

