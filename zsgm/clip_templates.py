"""Prompt templates for text ensembles (METHODS.md section 1, "Prompt-template ensembles").

``IMAGENET_TEMPLATES``: the 79 ImageNet prompt templates of CLIP's prompt-engineering ensemble (OpenAI CLIP
notebook, MIT licence), in the order StyleGAN-NADA, IPL and AIR list them (``imagenet_templates`` in their
``utils/text_templates.py``). Every aggregate zsgm computes is a mean, so the order only matters at the level of
float rounding; keeping the reference order makes reproductions bit-for-bit closer.

Each template holds exactly one ``{}`` placeholder, filled with a class text ("photo", "sketch").
"""

from __future__ import annotations

from typing import Iterable

IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)


def format_templates(text: str, templates: Iterable[str] = IMAGENET_TEMPLATES) -> list[str]:
    """Fill every template's ``{}`` with ``text``.

    Args:
        text: the class text, e.g. "sketch".
        templates: strings with exactly one ``{}`` placeholder each.

    Returns:
        ``[template.format(text) for template in templates]``.

    Raises:
        ValueError: a template has no ``{}`` or more than one (names the template), or the list is empty.
    """
    templates = list(templates)
    if not templates:
        raise ValueError("templates: expected at least one template with a '{}' placeholder, got none")
    out = []
    for i, template in enumerate(templates):
        if template.count("{}") != 1:
            raise ValueError(f"templates[{i}] = {template!r}: expected exactly one '{{}}' placeholder, "
                             f"found {template.count('{}')}")
        out.append(template.replace("{}", text))
    return out
