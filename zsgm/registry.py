"""What plugins register: technique, preset, generator, CLIP and metric specs, and loss terms."""

from __future__ import annotations

import difflib
from typing import Any, Callable

import attrs
import torch


@attrs.define(frozen=True)
class TechniqueSpec:
    """A technique that recipes can ``use``.

    Attributes:
        name: the recipe name (``use = "directional"``).
        config: an attrs class holding the technique's options (keyword-only, with defaults).
        build: ``build(config, *, run_context)`` or a class taking ``(config)``; returns the
            ``torch.nn.Module`` implementing run hooks.
        description: one line for ``zsgm plugins``.
        needs: what the technique reads from each step, e.g. ``{"src_images"}``; informative.
        produces_loss: it returns loss terms, so the recipe's ``weight`` and ``every`` apply to it. A
            technique without (a controller such as layer freezing, a pure direction provider) refuses
            ``weight``/``every`` other than 1 when the recipe is built.
        provides_directions: it implements ``zsgm_directions``; a recipe may hold one such technique.
        unique: at most one entry of this technique per recipe (two would silently compete).
        requires: technique names that must always also be in the recipe, whatever the options; a need that
            depends on an option goes in ``check`` instead (``moment`` reads ``semantic-variations`` only with
            ``text_set = "variations"``).
        requires_other_loss: it is useless unless some *other* technique produces a loss term (layer
            freezing; AIR, whose adaptive term starts mid-run).
        reads_target_images: it reads the recipe's ``target_images`` (so ``--target-image`` means something).
        reads_directions: it reads the step's text directions (``batch.directions()``) or a provider's direction
            set, so a direction provider in the same recipe has a use.
        check: optional ``check(config, recipe) -> list[str]``, called when the recipe is built (before any
            model loads): problems that need the whole recipe, e.g. a schedule that never fires within
            ``optim.steps``. Each string is ``"option: message"`` (the loader prefixes the entry's path).
    """

    name: str
    config: type
    build: Callable[..., torch.nn.Module]
    description: str = ""
    needs: frozenset = frozenset()
    produces_loss: bool = True
    provides_directions: bool = False
    unique: bool = False
    requires: frozenset = frozenset()
    requires_other_loss: bool = False
    reads_target_images: bool = False
    reads_directions: bool = False
    check: Callable[[Any, Any], list] | None = None


@attrs.define(frozen=True)
class PresetSpec:
    """A named recipe. ``build(**context)`` returns a recipe dict.

    Attributes:
        sized: the preset scales itself to the generator: ``build`` is then called with ``generator_size`` (the
            generator's output side in pixels, or None when it is not known yet). ``zsgm adapt --preset`` reads the
            size of the generator the command names (``--generator``, else the recipe file's) before building.
            A sized preset says in its description what it changes for which sizes.
    """

    name: str
    build: Callable[..., dict]
    description: str = ""
    sized: bool = False


@attrs.define(frozen=True)
class GeneratorSpec:
    """A named generator. ``load(device)`` returns ``(Generator, info)``.

    Attributes:
        load_discriminator: optional ``load_discriminator(device) -> (Discriminator, info)``, the discriminator
            trained with this generator (:func:`zsgm.generator.discriminator_files.load_discriminator_source`);
            None when there is none.
        lpips: optional LPIPS network this generator's world should use (e.g. ``"standin"``), read by a
            technique option ``lpips = "auto"``; None: the preset's choice.
    """

    name: str
    load: Callable[..., Any]
    description: str = ""
    load_discriminator: Callable[..., Any] | None = None
    lpips: str | None = None


@attrs.define(frozen=True)
class ClipSpec:
    """A named CLIP model. ``load(spec, device)`` returns a :class:`zsgm.clip.ClipModel`."""

    name: str
    load: Callable[..., Any]
    description: str = ""


@attrs.define(frozen=True)
class MetricSpec:
    """A named evaluation metric (interface: :mod:`zsgm.metrics.api`).

    Attributes:
        compute: ``compute(ctx: EvalContext) -> MetricResult``.
        applies: ``applies(ctx) -> None | str``: None when the metric can run on ``ctx``, else one line saying
            why not; None (the default) means it always applies.
        family: metrics computed together share a family name ("shapes", "fid"); ``zsgm eval --metrics shapes``
            selects a family.
        default: computed by ``zsgm eval`` when no ``--metrics`` are given (and it applies).
    """

    name: str
    compute: Callable[..., Any]
    description: str = ""
    applies: Callable[..., Any] | None = None
    family: str = ""
    default: bool = False


@attrs.define
class Term:
    """One named, unweighted loss term returned by a technique.

    Attributes:
        owner: the technique instance that produced it (the loop reads its weight from there).
        name: short name, unique within the owner (``"directional"``).
        value: scalar tensor.
    """

    owner: Any
    name: str
    value: torch.Tensor


class RegistryError(ValueError):
    """A name is unknown or registered twice."""


def unknown_name_message(kind: str, name: str, known: list[str]) -> str:
    """An error message naming the installed alternatives and the closest match."""
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    listing = ", ".join(sorted(known)) or "(none installed)"
    return f"unknown {kind} {name!r}.{hint} Installed: {listing}."


class Table:
    """A name -> spec table that remembers which plugin registered each entry."""

    def __init__(self, kind: str):
        self.kind = kind
        self._specs: dict[str, Any] = {}
        self._origin: dict[str, str] = {}
        self.conflicts: list[str] = []

    def add(self, spec: Any, origin: str) -> None:
        if spec.name in self._specs:
            self.conflicts.append(
                f"{self.kind} {spec.name!r} registered by both {self._origin[spec.name]} and {origin}; "
                f"keeping the first"
            )
            return
        self._specs[spec.name] = spec
        self._origin[spec.name] = origin

    def get(self, name: str) -> Any:
        try:
            return self._specs[name]
        except KeyError:
            raise RegistryError(unknown_name_message(self.kind, name, list(self._specs))) from None

    def origin(self, name: str) -> str:
        return self._origin[name]

    def names(self) -> list[str]:
        return sorted(self._specs)

    def __contains__(self, name: str) -> bool:
        return name in self._specs
