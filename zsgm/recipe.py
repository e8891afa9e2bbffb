"""Recipes: one structure, three spellings (Python objects, a dict, a TOML file).

A recipe names the source/target domains, the generator, the CLIP ensemble, the optimiser, the run
settings and a list of techniques. Every validation error carries the path of the bad field::

    RecipeError: recipe.toml: 2 problems
      techniques[1].k: must be > 0, got -3
      optim.stepz: unknown field (did you mean 'steps'?)
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any, Optional

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from zsgm import validators as v
from zsgm.registry import RegistryError
from zsgm.tomlwrite import dumps_toml


class RecipeError(ValueError):
    """A recipe is invalid. ``problems`` lists ``"path: message"`` strings."""

    def __init__(self, problems: list[str], *, source: str = "recipe"):
        self.problems = problems
        self.source = source
        count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
        super().__init__(f"{source}: {count}\n  " + "\n  ".join(problems))


@attrs.define(kw_only=True)
class GeneratorConfig:
    """Which generator to adapt.

    Attributes:
        checkpoint: a file (rosinality ``.pt``, NVIDIA ``.pkl``, zsgm ``.safetensors``) or a registered
            name such as ``"shapes"`` or ``"tiny-random"``.
        sample_truncation: truncation psi for image grids and sampling (training uses psi = 1).
    """

    checkpoint: str = attrs.field(default="shapes", validator=v.non_empty)
    sample_truncation: float = attrs.field(default=0.7, validator=v.in_closed_range(0.0, 1.0))


@attrs.define(kw_only=True)
class ClipModelConfig:
    """One CLIP model of the ensemble: an open_clip name plus a pretrained tag or local file.

    Attributes:
        trust_torchscript: allow ``pretrained`` to be a TorchScript archive (OpenAI's original ``.pt``
            files). Loading one runs code stored in the file, so it is refused unless this says the file is
            trusted.
    """

    name: str = attrs.field(validator=v.non_empty)
    pretrained: Optional[str] = None
    weight: float = attrs.field(default=1.0, validator=v.non_negative)
    trust_torchscript: bool = False


@attrs.define(kw_only=True)
class ClipConfig:
    """The CLIP ensemble and how generator images and texts reach it.

    Attributes:
        templates: prompt templates for text ensembles ("a {} shape"); default: the CLIP model's own templates
            if its file names some (the shapes CLIP does), else the 79 ImageNet ones.
    """

    models: list[ClipModelConfig] = attrs.field(
        factory=lambda: [ClipModelConfig(name="ViT-B-32", pretrained="openai")], validator=v.non_empty
    )
    preprocess: str = attrs.field(default="nada", validator=v.one_of(["nada", "oneshot", "deltaedit"]))
    text_aggregate: str = attrs.field(default="nada", validator=v.one_of(["nada", "air"]))
    templates: Optional[list[str]] = attrs.field(default=None)

    @templates.validator
    def _check_templates(self, _attr, value):
        if value is not None:
            if not value:
                raise ValueError("must not be empty (omit it for the 79 ImageNet templates)")
            bad = [t for t in value if t.count("{}") != 1]
            if bad:
                raise ValueError(f"each template needs exactly one '{{}}' placeholder; found {bad[:3]}")

    def template_list(self, model=None) -> list[str]:
        """Prompt templates of text ensembles: the recipe's; else the CLIP model's own (a domain CLIP such as the
        shapes world's ships the phrasings it was trained on); else the 79 ImageNet templates."""
        from zsgm.clip_templates import IMAGENET_TEMPLATES

        if self.templates is not None:
            return list(self.templates)
        own = getattr(model, "templates", None)
        return list(own) if own else list(IMAGENET_TEMPLATES)


@attrs.define(kw_only=True)
class OptimConfig:
    """Optimiser and schedule (rosinality convention: lr * reg_ratio, betas (beta1, beta2 ** reg_ratio)).

    Attributes:
        ema_decay: decay of the EMA copy of the target generator; None keeps no EMA (as NADA).
        mixing: style-mixing probability for training latents.
        noise: per-layer noise of the training forwards. "fresh" (the released code of NADA, IPL, AIR and
            One-shot CLIP: rosinality's ``randomize_noise``) gives every generator forward its own draw, so
            the source, target and anchor images of one latent differ by their noise; "shared" feeds one
            draw per step to all of them, so the image direction measures the weights' change alone.
    """

    steps: int = attrs.field(default=300, validator=v.positive)
    batch_size: int = attrs.field(default=2, validator=v.positive)
    lr: float = attrs.field(default=0.002, validator=v.positive)
    reg_ratio: float = attrs.field(default=0.8, validator=v.in_closed_range(1e-6, 1.0))
    beta1: float = attrs.field(default=0.0, validator=v.in_half_open_range(0.0, 1.0))
    beta2: float = attrs.field(default=0.99, validator=v.in_half_open_range(0.0, 1.0))
    ema_decay: Optional[float] = attrs.field(default=None)
    mixing: float = attrs.field(default=0.0, validator=v.in_closed_range(0.0, 1.0))
    noise: str = attrs.field(default="fresh", validator=v.one_of(["fresh", "shared"]))

    @ema_decay.validator
    def _check_ema(self, _attr, value):
        if value is not None:
            v.in_half_open_range(0.0, 1.0)(self, _attr, value)


@attrs.define(kw_only=True)
class RunConfig:
    """Where and how the run executes and what it writes.

    Attributes:
        device: "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", ...
        sample_every: write a source/target image grid every N steps (0: only at the end).
        checkpoint_every: write a resumable checkpoint every N steps (0: only at the end).
        n_samples: images per grid row (fixed latents, the same for the whole run).
    """

    seed: int = 0
    device: str = "auto"
    sample_every: int = attrs.field(default=50, validator=v.non_negative)
    checkpoint_every: int = attrs.field(default=50, validator=v.non_negative)
    n_samples: int = attrs.field(default=8, validator=v.positive)
    progress: bool = True


@attrs.define(kw_only=True)
class TechniqueUse:
    """One entry of ``[[techniques]]``: the technique name, its weight and interval, its options."""

    use: str
    weight: float = 1.0
    every: int = attrs.field(default=1, validator=v.positive)
    label: Optional[str] = None
    config: Any = None

    @property
    def name(self) -> str:
        """The label used in logs: ``label`` if given, else ``use``."""
        return self.label or self.use


@attrs.define(kw_only=True)
class Recipe:
    """A complete adaptation recipe.

    Attributes:
        source: text describing the generator's domain ("photo").
        target: text describing the target domain ("sketch"); optional when ``target_images`` is given.
        target_images: reference images for image-guided techniques (one-shot, NADA's image target).
    """

    source: str = attrs.field(validator=v.non_empty)
    target: Optional[str] = None
    target_images: list[str] = attrs.field(factory=list)
    generator: GeneratorConfig = attrs.field(factory=GeneratorConfig)
    clip: ClipConfig = attrs.field(factory=ClipConfig)
    optim: OptimConfig = attrs.field(factory=OptimConfig)
    run: RunConfig = attrs.field(factory=RunConfig)
    techniques: list[TechniqueUse] = attrs.field(factory=list)


_USE_KEYS = ("use", "weight", "every", "label")


def _converter() -> cattrs.Converter:
    return cattrs.Converter(forbid_extra_keys=True)


def _flatten_errors(exc: BaseException, path: str) -> list[str]:
    """Turn a cattrs exception tree into ``path: message`` lines."""
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        lines: list[str] = []
        for sub in exc.exceptions:
            notes = [n for n in getattr(sub, "__notes__", []) if hasattr(n, "name") or hasattr(n, "index")]
            sub_path = path
            for note in notes:
                if hasattr(note, "name"):
                    sub_path = f"{path}.{note.name}" if path else note.name
                else:
                    sub_path = f"{path}[{note.index}]"
            lines.extend(_flatten_errors(sub, sub_path))
        return lines
    if isinstance(exc, ForbiddenExtraKeysError):
        lines = []
        known = [a.name for a in attrs.fields(exc.cl)] if attrs.has(exc.cl) else []
        for key in sorted(exc.extra_fields):
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
            lines.append(f"{path + '.' if path else ''}{key}: unknown field{hint}")
        return lines
    if isinstance(exc, KeyError):
        return [f"{path}: required field missing"]
    if isinstance(exc, RecipeError):
        return [f"{path}.{p}" if path else p for p in exc.problems]
    message = str(exc) or type(exc).__name__
    if isinstance(exc, (TypeError, ValueError)) and ("invalid literal" in message or "could not convert" in message):
        message = f"invalid value ({message})"
    return [f"{path}: {message}"]


def _validate_tree(obj: Any, path: str) -> list[str]:
    """Run every attrs validator of ``obj`` and its children, collecting ``path: message`` lines."""
    problems: list[str] = []
    if attrs.has(type(obj)):
        for field in attrs.fields(type(obj)):
            value = getattr(obj, field.name)
            field_path = f"{path}.{field.name}" if path else field.name
            if isinstance(obj, TechniqueUse) and field.name == "config":
                field_path = path  # technique options sit beside 'use' in the recipe
            if field.validator is not None:
                try:
                    field.validator(obj, field, value)
                except (ValueError, TypeError) as exc:
                    problems.append(f"{field_path}: {exc}")
                    continue
            problems.extend(_validate_tree(value, field_path))
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            problems.extend(_validate_tree(item, f"{path}[{i}]"))
    return problems


def _structure_technique(conv: cattrs.Converter, data: Any, registry, path: str) -> TechniqueUse:
    if not isinstance(data, dict):
        raise RecipeError([f"{path}: expected a table with a 'use' key, got {type(data).__name__}"])
    if "use" not in data:
        raise RecipeError([f"{path}.use: required field missing (the technique name)"])
    name = data["use"]
    try:
        spec = registry.techniques.get(name)
    except RegistryError as exc:
        raise RecipeError([f"{path}.use: {exc}"]) from None
    head = {k: data[k] for k in _USE_KEYS if k in data}
    options = {k: val for k, val in data.items() if k not in _USE_KEYS}
    problems: list[str] = []
    try:
        use = conv.structure({**head}, TechniqueUse)
    except Exception as exc:  # noqa: BLE001 - converted to path messages
        problems.extend(_flatten_errors(exc, path))
        use = None
    try:
        config = conv.structure(options, spec.config)
    except Exception as exc:  # noqa: BLE001
        problems.extend(_flatten_errors(exc, path))
        config = None
    if problems:
        raise RecipeError(problems)
    use.config = config
    return use


def _structure_sections(conv: cattrs.Converter, body: dict, problems: list[str]) -> Recipe | None:
    """Structure each top-level section on its own so that problems in all sections are reported."""
    attrs.resolve_types(Recipe)  # field types are strings under postponed annotations
    fields = {f.name: f for f in attrs.fields(Recipe) if f.name != "techniques"}
    values: dict[str, Any] = {}
    for key in body:
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields) + ["techniques"], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(fields)}, techniques)"
            problems.append(f"{key}: unknown field{hint}")
    for name, field in fields.items():
        if name not in body:
            if field.default is attrs.NOTHING:
                problems.append(f"{name}: required field missing")
            continue
        try:
            values[name] = conv.structure(body[name], field.type)
        except Exception as exc:  # noqa: BLE001 - converted to path messages
            problems.extend(_flatten_errors(exc, name))
    try:
        return Recipe(**values)
    except TypeError:
        return None  # a required field is missing; already reported


def recipe_from_dict(data: dict, *, registry=None, source: str = "recipe") -> Recipe:
    """Build and validate a :class:`Recipe` from a plain dict.

    Raises:
        RecipeError: listing every problem with its field path.
    """
    from zsgm.plugins import get_registry

    registry = registry or get_registry()
    if not isinstance(data, dict):
        raise RecipeError([f"expected a table at the top level, got {type(data).__name__}"], source=source)
    conv = _converter()
    problems: list[str] = []
    body = {k: val for k, val in data.items() if k != "techniques"}
    raw_techniques = data.get("techniques", [])
    with attrs.validators.disabled():
        recipe = _structure_sections(conv, body, problems)
        techniques = []
        if not isinstance(raw_techniques, list):
            problems.append("techniques: expected a list of tables ([[techniques]])")
            raw_techniques = []
        for i, item in enumerate(raw_techniques):
            try:
                techniques.append(_structure_technique(conv, item, registry, f"techniques[{i}]"))
            except RecipeError as exc:
                problems.extend(exc.problems)
    if recipe is not None:
        recipe.techniques = techniques
        problems.extend(_validate_tree(recipe, ""))
        if recipe.target is None and not recipe.target_images:
            problems.append("target: required unless target_images is given")
        labels = [t.name for t in techniques]
        for dup in sorted({n for n in labels if labels.count(n) > 1}):
            problems.append(f"techniques: {dup!r} is used twice; give one of them a distinct 'label'")
    if problems:
        raise RecipeError(problems, source=source)
    return recipe


def recipe_to_dict(recipe: Recipe) -> dict:
    """The fully resolved recipe as a plain dict (None values dropped, TOML-ready)."""
    conv = _converter()
    out = conv.unstructure(attrs.evolve(recipe, techniques=[]))
    out.pop("techniques")
    techniques = []
    for use in recipe.techniques:
        entry = {"use": use.use, "weight": use.weight, "every": use.every}
        if use.label is not None:
            entry["label"] = use.label
        if use.config is not None:
            entry.update(conv.unstructure(use.config))
        techniques.append(entry)
    out["techniques"] = techniques
    return _drop_none(out)


def _drop_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_none(val) for k, val in obj.items() if val is not None}
    if isinstance(obj, list):
        return [_drop_none(x) for x in obj]
    return obj


def load_recipe(path: str | Path, *, registry=None) -> Recipe:
    """Read a TOML recipe file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError([f"cannot read the file: {exc.strerror or exc}"], source=str(path)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError([f"not valid TOML: {exc}"], source=str(path)) from None
    return recipe_from_dict(data, registry=registry, source=str(path))


def dumps_recipe(recipe: Recipe) -> str:
    """The resolved recipe as TOML text (loads back to an equal recipe)."""
    return dumps_toml(recipe_to_dict(recipe))


def merge_dicts(base: dict, override: dict) -> dict:
    """Recursive dict merge; lists and scalars in ``override`` replace those in ``base``."""
    out = dict(base)
    for key, val in override.items():
        if isinstance(val, dict) and isinstance(out.get(key), dict):
            out[key] = merge_dicts(out[key], val)
        else:
            out[key] = val
    return out
