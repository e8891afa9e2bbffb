"""E_T(t), the text feature SVL's formulas use, and the recipe options choosing it.

The paper writes ``E_T(t)`` and defines the variation radius ``eps = ||E_T(t_trg)||_2``, which only means
something if ``E_T`` is *not* unit length, so the default is the unnormalised CLIP text feature. Whether one
prompt or a template ensemble was encoded is not stated (METHODS.md 4.1):

- ``text = "ensemble"`` (default): the class mean over the recipe's prompt templates (``clip.templates``, default
  the 79 ImageNet ones). With ``text_norm = "raw"`` it is the mean of the *unnormalised* template features (not
  renormalised, so it keeps the scale of a CLIP text feature and ``eps`` is its norm); with ``"unit"`` it is the
  mean of the unit template features, renormalised (DeltaEdit's class-mean rule).
- ``text = "single"``: one prompt, ``single_template.format(text)`` (default ``"a {}"``, as zsgm's global loss).

``text_norm = "unit"`` makes ``eps = 1`` and ``dT_0`` the plain difference of unit features (NADA-like). It matters
mostly when directions are not normalised before the moments (``moment``'s ``normalize_directions = False``):
the image side is built from unit image embeddings, so raw text features (norm ~10 for OpenAI CLIPs) would put the
two second moments on very different scales.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F

from zsgm import validators as v
from zsgm.clip import format_templates

TEXT_MODES = ("ensemble", "single")
TEXT_NORMS = ("raw", "unit")


def _one_placeholder(_inst, _attr, value):
    if value.count("{}") != 1:
        raise ValueError(f"needs exactly one '{{}}' placeholder; got {value!r}")


@attrs.define(kw_only=True)
class TextOptions:
    """How E_T(t) is computed (shared by ``semantic-variations``, ``moment`` with ``text_set = "plain"`` and ``ewc``).

    Attributes:
        text: "ensemble" (class mean over the recipe's templates) or "single" (one prompt).
        text_norm: "raw" (unnormalised CLIP text features; default) or "unit".
        single_template: the prompt of ``text = "single"``.
    """

    text: str = attrs.field(default="ensemble", validator=v.one_of(TEXT_MODES))
    text_norm: str = attrs.field(default="raw", validator=v.one_of(TEXT_NORMS))
    single_template: str = attrs.field(default="a {}", validator=_one_placeholder)


def text_feature(model, text: str, *, mode: str = "ensemble", norm: str = "raw", templates=None,
                 single_template: str = "a {}") -> torch.Tensor:
    """``E_T(text)`` ``[D]`` (float32, no grad) under the conventions above.

    Args:
        model: a :class:`zsgm.clip.ClipModel`.
        text: the class text ("cat").
        mode: "ensemble" | "single".
        norm: "raw" | "unit".
        templates: the ensemble's templates (required for "ensemble").
        single_template: the prompt of "single".
    """
    unit = norm == "unit"
    if mode == "single":
        return model.encode_text([single_template.format(text)], normalize=unit)[0]
    if templates is None:
        raise ValueError("text_feature: mode 'ensemble' needs templates")
    feats = model.encode_text(format_templates(text, list(templates)), normalize=unit)  # [T, D]
    mean = feats.mean(0)
    return F.normalize(mean, dim=-1) if unit else mean


def recipe_text_feature(run, model_index: int, text: str, options: TextOptions) -> torch.Tensor:
    """:func:`text_feature` with the options of a technique config and the recipe's templates."""
    return text_feature(run.clip_models[model_index], text, mode=options.text, norm=options.text_norm,
                        templates=run.recipe.clip.template_list(run.clip_models[model_index]),
                        single_template=options.single_template).to(run.device)
