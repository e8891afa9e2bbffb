"""The mapper recipe: everything that decides a trained DeltaEdit mapper, its relevance and its default edit.

Read from a dict or a TOML file with zsgm's strict recipe converter (no coercion, unknown keys refused with a
suggestion); every problem is reported with its field path (``train.lr: must be > 0, got -1``).

Presets:

- ``deltaedit``: the published setup (METHODS.md 7.5): 200,000 generated samples, batch 64, Adam lr 0.5 (x 0.01
  through the mapper's lr_mul), 201,562 iterations (= 258,000 x 50 / 64 with the released drop_last: one pass
  over 50 partners for each of the released 200k generated + 58k real samples), CLIP ViT-B/32 (OpenAI weights,
  quickgelu) with DeltaEdit's preprocessing, relevance over 100 images at +-5 sigma, theta 0.03, neutral "face".
- ``deltaedit-shapes``: the shapes world (shipped 32-px generator and shapes CLIP) within 10 minutes on 2 CPU
  cores, cache and relevance included (4,096 samples, 3,000 steps, relevance over 8 images); neutral "photo" (the
  shapes generator's domain), theta 0.1, edits restricted to style layers 4-6 (the last 16 px conv and the 32 px
  convs), the ToRGB colour step on (``edit.torgb = 2``, ours), single images at strength 1.5, grid rows at
  strengths 1, 1.5, 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import attrs

import zsgm.validators as v
from zsgm.recipe_checks import field_value_problems
from zsgm.recipe_convert import flatten_errors, strict_converter
from zsgm.recipe_errors import RecipeError, describe_value
from zsgm.recipe_io import merge_dicts, read_recipe_file

__all__ = ["MAPPER_PRESETS", "MapperRecipe", "load_mapper_recipe", "mapper_preset", "mapper_recipe_from_dict",
           "mapper_recipe_to_dict", "merge_recipe"]


def _levels(_inst, _attr, value) -> None:
    if value is not None and (len(value) != 2 or any(k < 1 for k in value)):
        raise ValueError(f"must be two positive layer counts [coarse, medium], got {list(value)}")


def _layer_indices(_inst, _attr, value) -> None:
    if value is not None and (not value or any(k < 0 for k in value) or len(set(value)) != len(value)):
        raise ValueError(f"must be a non-empty list of distinct style-layer indices >= 0, got {list(value)}")


@attrs.define(kw_only=True)
class CodesConfig:
    """Training codes generated from the generator (codes.py).

    Attributes:
        samples: generated samples N (z ~ N(0, I), psi = 1).
        chunk_size: rows per chunk file.
        seed: chunk k draws its latents from (seed, k).
        latent_files: W+ files of real images (e4e / ReStyle, ``.pt`` or ``.npy``) added to the codes.
    """

    samples: int = attrs.field(default=200_000, validator=v.positive)
    chunk_size: int = attrs.field(default=1024, validator=v.positive)
    seed: int = attrs.field(default=0, validator=v.non_negative)
    latent_files: list[str] = attrs.field(factory=list)


@attrs.define(kw_only=True)
class TrainConfig:
    """Mapper training (train.py): random pairs, L2 + cosine on the S-code delta.

    Attributes:
        steps: optimiser steps.
        batch: pairs per step.
        lr: Adam learning rate (the mapper's EqualLinear lr_mul 0.01 scales it: 0.5 acts as 0.005).
        l2_weight, cos_weight: the loss weights.
        levels: [coarse, medium] style-layer counts of the mapper's levels; omitted: scaled from the released
            (3, 4) of 17 layers (``zsgm_deltaedit.mapper.default_levels``).
        seed: the mapper's initial weights and the pairs drawn at each step.
        checkpoint_every: steps between checkpoints.
    """

    steps: int = attrs.field(default=201_562, validator=v.positive)
    batch: int = attrs.field(default=64, validator=v.positive)
    lr: float = attrs.field(default=0.5, validator=v.positive)
    l2_weight: float = attrs.field(default=1.0, validator=v.non_negative)
    cos_weight: float = attrs.field(default=1.0, validator=v.non_negative)
    levels: Optional[list[int]] = attrs.field(default=None, validator=_levels)
    seed: int = attrs.field(default=0, validator=v.non_negative)
    checkpoint_every: int = attrs.field(default=10_000, validator=v.positive)


@attrs.define(kw_only=True)
class RelevanceConfig:
    """Channel relevance (relevance.py, StyleCLIP's global-direction method).

    Attributes:
        images: M images (the first M generated samples); forwards = 2 x channels x M.
        alpha: each channel is set to its mean +- alpha standard deviations.
        batch: images per generator / CLIP forward (memory only).
    """

    images: int = attrs.field(default=100, validator=v.positive)
    alpha: float = attrs.field(default=5.0, validator=v.positive)
    batch: int = attrs.field(default=128, validator=v.positive)


@attrs.define(kw_only=True)
class ClipSection:
    """The CLIP whose image embeddings the mapper is conditioned on (and that measures relevance and texts).

    Attributes:
        name, pretrained: as in a recipe's ``[[clip.models]]`` (an open_clip name and tag or local file,
            "shapes", "tiny-random", ...). A ``name`` given over a preset drops the preset's ``pretrained``.
        preprocess: "deltaedit" (StyleCLIP's x7 upsampling + average pooling, as released), "nada", "oneshot".
        templates: prompt templates of the text ensembles; omitted: the CLIP's own, else the 79 ImageNet ones.
    """

    name: str = attrs.field(default="ViT-B-32-quickgelu", validator=v.non_empty)
    pretrained: Optional[str] = attrs.field(default=None, validator=v.optional_non_empty)
    preprocess: str = attrs.field(default="deltaedit", validator=v.one_of(["nada", "oneshot", "deltaedit"]))
    templates: Optional[list[str]] = attrs.field(default=None)

    @templates.validator
    def _check_templates(self, _attr, value):
        if value is not None and (not value or any(t.count("{}") != 1 for t in value)):
            raise ValueError("must be a non-empty list of templates with one '{}' each")


@attrs.define(kw_only=True)
class EditConfig:
    """Defaults of ``zsgm edit`` with this mapper.

    Attributes:
        neutral: the neutral text (DeltaEdit hard-codes "face").
        theta: relevance threshold; a channel moves only if ``|R_c . dt| >= theta`` (dt unnormalised).
        strength: the edit strength of the single images (``seedNNNN.png``); DeltaEdit applies the gated delta
            once (strength 1).
        strengths: edit strengths of the grid rows.
        layers: indices of the style layers (0 = ``conv1``, then ``convs.0``, ... in synthesis order) whose
            channels an edit may move; omitted: every layer (as released). Ours: on a small generator whose
            coarse layers place and shape the content, the relevance gate alone leaves them free to move.
        torgb: the ToRGB colour step per unit strength, in standard deviations of the mapper's codes along the
            text's W direction (:mod:`zsgm_deltaedit.torgb`); 0: off, as released (DeltaEdit leaves the ToRGB
            layers on the source's W+). Ours: it removes the rim of the old colour a recoloured shape keeps.
    """

    neutral: str = attrs.field(default="face", validator=v.non_empty)
    theta: float = attrs.field(default=0.03, validator=v.non_negative)
    strength: float = 1.0
    strengths: list[float] = attrs.field(factory=lambda: [0.5, 1.0, 1.5], validator=v.non_empty)
    layers: Optional[list[int]] = attrs.field(default=None, validator=_layer_indices)
    torgb: float = attrs.field(default=0.0, validator=v.non_negative)


@attrs.define(kw_only=True)
class MapperRecipe:
    """Everything that decides a trained mapper (sections ``codes``, ``train``, ``relevance``, ``clip``, ``edit``)."""

    preset: str = attrs.field(default="custom", validator=v.non_empty)
    codes: CodesConfig = attrs.field(factory=CodesConfig)
    train: TrainConfig = attrs.field(factory=TrainConfig)
    relevance: RelevanceConfig = attrs.field(factory=RelevanceConfig)
    clip: ClipSection = attrs.field(factory=ClipSection)
    edit: EditConfig = attrs.field(factory=EditConfig)


def _deltaedit() -> dict:
    # the other defaults are the published setup
    return {"preset": "deltaedit", "clip": {"name": "ViT-B-32-quickgelu", "pretrained": "openai"}}


def _deltaedit_shapes() -> dict:
    return {
        "preset": "deltaedit-shapes",
        "codes": {"samples": 4096, "chunk_size": 1024},
        "train": {"steps": 3000, "checkpoint_every": 500},
        "relevance": {"images": 8, "batch": 256},
        "clip": {"name": "shapes"},
        # tuned on seeds 1000-1255 (docs/DELTAEDIT_SHAPES.md): the shapes CLIP's text deltas are long (|dt| ~ 1.2),
        # so theta is higher than the released 0.03; layers 4-6 (the last 16 px conv and the 32 px ones) leave the layers that place and shape the
        # content alone (4 = the second 16 px conv)
        # the ToRGB step (2 sigma per unit strength) and the single images' strength 1.5 were chosen on the same
        # seeds: without the step a yellow shape turned blue keeps a yellow rim (docs/DELTAEDIT_SHAPES.md)
        "edit": {"neutral": "photo", "theta": 0.1, "layers": [4, 5, 6], "torgb": 2.0, "strength": 1.5,
                 "strengths": [1.0, 1.5, 2.0]},
    }


MAPPER_PRESETS = {"deltaedit": _deltaedit, "deltaedit-shapes": _deltaedit_shapes}


def mapper_preset(name: str, overrides: dict | None = None) -> "MapperRecipe":
    """A preset, with ``overrides`` merged in (nested tables key by key).

    Raises:
        ValueError: unknown preset name (listing the known ones).
        RecipeError: the merged recipe is invalid.
    """
    if name not in MAPPER_PRESETS:
        raise ValueError(f"unknown DeltaEdit mapper preset {name!r} (known: {', '.join(MAPPER_PRESETS)})")
    return mapper_recipe_from_dict(merge_recipe(MAPPER_PRESETS[name](), overrides or {}), source=f"preset {name}")


def merge_recipe(base: dict, override: dict) -> dict:
    """Merge mapper-recipe dicts table by table; a ``clip.name`` in ``override`` also drops the base's
    ``clip.pretrained`` (a weights tag or file belongs to its model)."""
    clip = override.get("clip")
    if isinstance(clip, dict) and "name" in clip and isinstance(base.get("clip"), dict):
        base = {**base, "clip": {k: x for k, x in base["clip"].items() if k != "pretrained"}}
    return merge_dicts(base, override)


def mapper_recipe_from_dict(data, *, source: str = "mapper recipe") -> MapperRecipe:
    """Structure and validate a mapper recipe.

    Raises:
        RecipeError: every problem with its field path.
    """
    if not isinstance(data, dict):
        raise RecipeError([f"expected a table at the top level, got {describe_value(data, show_text=False)}"],
                          source=source)
    conv = strict_converter()
    with attrs.validators.disabled():
        try:
            recipe = conv.structure(data, MapperRecipe)
        except Exception as exc:  # noqa: BLE001 - converted to path messages
            raise RecipeError(flatten_errors(exc, ""), source=source) from None
    problems = field_value_problems(recipe, "")
    if problems:
        raise RecipeError(problems, source=source)
    return recipe


def load_mapper_recipe(path: str | Path) -> MapperRecipe:
    """A mapper recipe from a TOML file; a ``preset = "..."`` key starts from that preset.

    Raises:
        RecipeError: unreadable file or invalid fields (naming the file and each field).
    """
    data = read_recipe_file(path)
    name = data.get("preset")
    if isinstance(name, str) and name in MAPPER_PRESETS:
        data = merge_recipe(MAPPER_PRESETS[name](), data)
    return mapper_recipe_from_dict(data, source=str(path))


def mapper_recipe_to_dict(recipe: MapperRecipe) -> dict:
    """Plain dict of the recipe (None entries dropped, TOML-storable)."""
    def drop(obj):
        if isinstance(obj, dict):
            return {k: drop(x) for k, x in obj.items() if x is not None}
        if isinstance(obj, list):
            return [drop(x) for x in obj]
        return obj

    return drop(attrs.asdict(recipe))
