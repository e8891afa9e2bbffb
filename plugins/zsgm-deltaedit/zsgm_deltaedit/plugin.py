"""Registrations of the DeltaEdit plugin (entry point ``zsgm = deltaedit``): the ``zsgm edit`` command."""

from __future__ import annotations

from zsgm.commands import CommandSpec
from zsgm.hookspecs import hookimpl


def _add_arguments(parser) -> None:
    from zsgm_deltaedit.cli import add_edit_arguments

    add_edit_arguments(parser)


def _run(args) -> int:
    from zsgm_deltaedit.cli import cmd_edit

    return cmd_edit(args)


@hookimpl
def zsgm_register_commands(register):
    register(CommandSpec(
        name="edit", add_arguments=_add_arguments, run=_run,
        help="text-driven edits of a generator's images with a DeltaEdit mapper (trained on first use)",
        description="Edit generated images (seeds, as zsgm sample draws them) or W+ codes of real images from a "
                    "neutral text to a target text with a DeltaEdit delta mapper in StyleSpace. The mapper is the "
                    "generator's cached one, trained on first use (deltaedit-shapes for the shapes world, else the "
                    "published deltaedit setup), or --mapper DIR."))
