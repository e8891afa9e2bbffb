"""argparse building blocks of the ``zsgm`` command line: option types and checks of output paths.

Every type refuses bad text with :class:`argparse.ArgumentTypeError`, which argparse reports naming the
option; :class:`OneLineParser` turns argparse's own errors into one :class:`CommandLineError` line.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from zsgm.cli_errors import CommandLineError

FROM_RECIPE = "(default: the recipe's or preset's value)"


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors reach :func:`zsgm.cli.main` as one line instead of usage text and SystemExit."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        raise CommandLineError(f"{message} (see `{self.prog} --help`)")


def _parse(text: str, cast, expected: str):
    """``cast(text)``; text it cannot read is refused as ``expected EXPECTED, got 'TEXT'``."""
    try:
        return cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def int_at_least(low: int):
    """An argparse type: a whole number >= ``low`` (``2.7`` and ``1e3`` are refused, not rounded)."""

    def convert(text: str) -> int:
        value = _parse(text, int, f"a whole number >= {low}")
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return convert


def finite_float(*, low: float, high: float = math.inf, low_open: bool = False):
    """An argparse type: a finite float in ``[low, high]`` (``(low, high]`` when ``low_open``)."""
    left = "(" if low_open else "["
    span = f"{left}{low:g}, {high:g}]" if math.isfinite(high) else f"{'>' if low_open else '>='} {low:g}"

    def convert(text: str) -> float:
        value = _parse(text, float, "a number")
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if value < low or (low_open and value == low) or value > high:
            wanted = f"in {span}" if math.isfinite(high) else span
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {value:g}")
        return value

    return convert


def non_blank(text: str) -> str:
    """An argparse type: text that is not empty or only spaces."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def clip_override(value: str) -> list[dict]:
    """``--clip shapes`` or ``--clip ViT-B-32:openai,ViT-B-16:openai`` or ``--clip ViT-B-32:/path/w.pt``; a name
    with a schema (``hf-hub:org/repo``, ``local-dir:/folder``) keeps it: its first colon is not the separator."""
    from zsgm.clip_open_clip import SCHEMA_PREFIXES

    models = []
    for part in value.split(","):
        schema = next((s for s in SCHEMA_PREFIXES if part.strip().startswith(s)), "")
        name, _, pretrained = part.strip()[len(schema):].partition(":")
        name = schema + name if name.strip() else name
        if not name.strip():
            raise argparse.ArgumentTypeError(f"{part.strip()!r} in {value!r} has no model name "
                                             f"(give NAME[:PRETRAINED_OR_FILE][,...])")
        entry = {"name": name.strip()}
        if pretrained.strip():
            entry["pretrained"] = pretrained.strip()
        models.append(entry)
    return models



def refuse_file_in_the_way(path: Path, what: str) -> Path | None:
    """The nearest of ``path`` and its parents that exists (None when none does), checked to be a directory.

    Raises:
        CommandLineError: ``WHAT: NEAREST is a file, so no directory can be made under it``.
    """
    from zsgm.io_utils import nearest_existing

    existing = nearest_existing(path)
    if existing is not None and not existing.is_dir():
        raise CommandLineError(f"{what}: {existing} is a file, so no directory can be made under it")
    return existing


def option_device(name: str):
    """``--device NAME`` as a torch device (:func:`zsgm.run.resolve_device`); a bad name is one error line about
    ``--device``."""
    from zsgm.recipe import RecipeError
    from zsgm.run import resolve_device

    try:
        return resolve_device(name, field="--device")
    except RecipeError as exc:
        reasons = [p.removeprefix("--device: ") for p in exc.problems]
        raise CommandLineError(f"--device {name}: {'; '.join(reasons)}") from None
