"""Command-line subcommands contributed by plugins (``zsgm edit`` comes from zsgm-deltaedit this way).

A plugin module implements the registration hook ``zsgm_register_commands(register)`` and registers a
:class:`CommandSpec`; ``zsgm --help`` then lists the command next to the core's. The core's own commands
(adapt, sample, plugins, eval, convert) cannot be replaced: a plugin command with one of their names is
reported as a conflict and skipped.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import attrs


@attrs.define(frozen=True)
class CommandSpec:
    """A ``zsgm`` subcommand.

    Attributes:
        name: the subcommand (``"edit"``).
        add_arguments: ``add_arguments(parser)`` adds the options to its ``argparse`` parser.
        run: ``run(args) -> int`` runs the command and returns its exit status. User mistakes raise the
            errors ``zsgm.cli_errors`` treats as such (``CommandLineError``, ``ValueError``, ``OSError``, ...): the
            CLI prints one line and exits with status 2.
        help: one line for ``zsgm --help``.
        description: the command's ``--help`` text (default: ``help``).
    """

    name: str
    add_arguments: Callable[[Any], None]
    run: Callable[[Any], int]
    help: str = ""
    description: str = ""


def add_plugin_commands(sub, registry, *, taken: set[str]) -> list[str]:
    """Add every registered plugin command to the ``argparse`` subparsers ``sub``; returns their names.

    Args:
        sub: the result of ``parser.add_subparsers``.
        registry: the plugin registry.
        taken: the core's command names; a plugin command with one of them is skipped with a warning.
    """
    added = []
    for name in registry.commands.names():
        spec = registry.commands.get(name)
        if name in taken:
            warnings.warn(f"zsgm: plugin command {name!r} ({registry.commands.origin(name)}) has the name of a "
                          f"core command; skipped", stacklevel=2)
            continue
        parser = sub.add_parser(name, help=spec.help, description=spec.description or spec.help)
        spec.add_arguments(parser)
        parser.set_defaults(func=spec.run)
        added.append(name)
    return added
