"""The ``zsgm`` command line: adapt, sample, eval, plugins, convert, sweep, and the commands plugins add
(``zsgm_register_commands``, :mod:`zsgm.commands`).

User mistakes (bad options, bad recipe fields, unknown names, foreign checkpoints, unreadable images, any
operating-system error such as a missing file, a directory given as a file, a refused permission or a full
disk) print one clear message and exit with status 2, without a traceback; ``ZSGM_DEBUG=1`` shows the
traceback. Ctrl-C exits with 130 and says how to resume.

``zsgm sample`` follows the conventions of NVIDIA's ``gen_images.py``: ``--seeds 0-35,40``, ``--trunc``,
``--outdir`` with one ``seedNNNN.png`` per seed, and the latent of seed ``s`` is
``np.random.RandomState(s).randn(1, z_dim)`` (see :func:`seed_latent`).

This module wires the commands together and runs one (:func:`make_parser`, :func:`main`); each command lives
in its own module: :mod:`zsgm.cli_adapt` (with :mod:`zsgm.cli_summary`), :mod:`zsgm.cli_sample` (with
:mod:`zsgm.cli_seeds`), :mod:`zsgm.cli_eval` (eval) and :mod:`zsgm.cli_tools` (plugins, convert).
:mod:`zsgm.cli_options` holds the option types, :mod:`zsgm.cli_errors` what counts as a user error and how it
reads. Their public names are importable from here too.
"""

from __future__ import annotations

import argparse
import os
import sys

from zsgm.cli_adapt import (
    add_adapt_parser,
    build_recipe_dict,
    check_run_dir,
    check_target_image_files,
    check_target_images_are_read,
    cmd_adapt,
)
from zsgm.cli_errors import INTERRUPTED_EXIT, USER_ERROR_EXIT, CommandLineError, describe_error, user_error_classes
from zsgm.cli_options import FROM_RECIPE, OneLineParser
from zsgm.cli_sample import (
    DEFAULT_GRID_COLS,
    DEFAULT_SAMPLE_SEEDS,
    DEFAULT_SAMPLE_TRUNCATION,
    GRID_MAX_IMAGES,
    add_sample_parser,
    cmd_sample,
    sample_outputs,
    sample_seeds,
)
from zsgm.cli_seeds import MAX_SEEDS, SEED_LIMIT, parse_seeds, render_seed, seed_latent
from zsgm.cli_summary import run_summary
from zsgm.cli_eval import add_eval_parser, cmd_eval
from zsgm.cli_tools import add_convert_parser, add_plugins_parser, cmd_convert, cmd_plugins
from zsgm.sweep import add_sweep_parser, cmd_sweep

__all__ = [
    "DEFAULT_GRID_COLS", "DEFAULT_SAMPLE_SEEDS", "DEFAULT_SAMPLE_TRUNCATION", "FROM_RECIPE", "GRID_MAX_IMAGES",
    "INTERRUPTED_EXIT", "MAX_SEEDS", "SEED_LIMIT", "USER_ERROR_EXIT", "CommandLineError", "build_recipe_dict",
    "check_run_dir", "check_target_image_files", "check_target_images_are_read", "cmd_adapt", "cmd_convert",
    "cmd_eval", "cmd_plugins", "cmd_sample", "cmd_sweep", "describe_error", "main", "make_parser", "parse_seeds",
    "render_seed", "run_summary", "sample_outputs", "sample_seeds", "seed_latent", "zsgm_version",
]


def zsgm_version() -> str:
    """The installed distribution's version (the package's ``__version__`` when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("zsgm")
    except PackageNotFoundError:
        from zsgm import __version__

        return __version__


def make_parser() -> argparse.ArgumentParser:
    """The ``zsgm`` parser: each subcommand's options come from its module, its handler from this module's
    ``cmd_*`` names (read at each call, so a test may replace one)."""
    parser = OneLineParser(prog="zsgm", description="CLIP-guided adaptation of StyleGAN2 generators")
    parser.add_argument("--version", action="version", version=f"zsgm {zsgm_version()}",
                        help="print the zsgm version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_adapt_parser(sub).set_defaults(func=cmd_adapt)
    add_sample_parser(sub).set_defaults(func=cmd_sample)
    add_plugins_parser(sub).set_defaults(func=cmd_plugins)
    add_eval_parser(sub).set_defaults(func=cmd_eval)
    add_convert_parser(sub).set_defaults(func=cmd_convert)
    add_sweep_parser(sub).set_defaults(func=cmd_sweep)
    _add_plugin_commands(sub)
    return parser


CORE_COMMANDS = frozenset({"adapt", "sample", "plugins", "eval", "convert", "sweep"})


def _add_plugin_commands(sub) -> None:
    """Subcommands registered by plugins (``zsgm_register_commands``), e.g. ``edit`` from zsgm-deltaedit."""
    from zsgm.commands import add_plugin_commands
    from zsgm.plugins import get_registry

    add_plugin_commands(sub, get_registry(), taken=set(CORE_COMMANDS))


def _debug() -> bool:
    return os.environ.get("ZSGM_DEBUG", "") not in ("", "0")


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (0, 2 for a user error, 130 when interrupted)."""
    args = None
    try:
        args = make_parser().parse_args(argv)
        return args.func(args)
    except KeyboardInterrupt:
        if getattr(args, "command", None) == "adapt":
            print(f"zsgm: interrupted; resume with `zsgm adapt --resume --out {args.out}`", file=sys.stderr)
        else:
            print("zsgm: interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT
    except Exception as exc:  # noqa: BLE001 - only the user-error classes are caught below; others re-raise
        if _debug() or not isinstance(exc, user_error_classes()):
            raise
        print(f"zsgm: error: {describe_error(exc)}", file=sys.stderr)
        return USER_ERROR_EXIT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
