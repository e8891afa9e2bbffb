"""How the ``zsgm`` command line reports a failure: which exceptions are the user's, and their one line.

User mistakes (bad options, bad recipe fields, unknown names, foreign checkpoints, unreadable images, any
operating-system error such as a missing file, a directory given as a file, a refused permission or a full
disk) print one clear message and exit with status :data:`USER_ERROR_EXIT`; any other exception is a bug of
zsgm and keeps its traceback. :func:`zsgm.cli.main` applies this.
"""

from __future__ import annotations

import errno

USER_ERROR_EXIT = 2
INTERRUPTED_EXIT = 130


class CommandLineError(Exception):
    """A command-line option is wrong; the message names the option."""


def user_error_classes() -> tuple[type[BaseException], ...]:
    """The exception classes that are the user's mistake or the environment's, not a bug of zsgm."""
    import torch

    from zsgm.checkpoint import CheckpointMismatchError
    from zsgm.clip import ClipLoadError
    from zsgm.generator.errors import CheckpointError
    from zsgm.recipe import RecipeError
    from zsgm.registry import RegistryError
    from zsgm.run import RunError

    out_of_memory = (torch.OutOfMemoryError,) if hasattr(torch, "OutOfMemoryError") else ()
    return (CommandLineError, RecipeError, RegistryError, RunError, CheckpointError, CheckpointMismatchError,
            ClipLoadError, OSError, ValueError, MemoryError, *out_of_memory)


def describe_error(exc: BaseException) -> str:
    """The message printed after ``zsgm: error:``.

    OS errors read ``PATH: reason`` (``[Errno 21]`` prefixes dropped; a full disk says so); a recipe error with
    one problem reads ``SOURCE: field: message`` (several problems keep one line each); out-of-memory errors
    keep torch's first sentence and say what to lower.
    """
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc) or type(exc).__name__
        if exc.errno == errno.ENOSPC and "disk" not in reason.lower():
            reason += " (the disk is full)"
        if exc.filename is not None:
            names = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else f"{exc.filename}"
            return f"{names}: {reason}"
        return reason
    problems = getattr(exc, "problems", None)
    if isinstance(problems, list) and len(problems) == 1:  # a RecipeError with one problem: one line
        return f"{getattr(exc, 'source', 'recipe')}: {problems[0]}"
    if type(exc).__name__ == "OutOfMemoryError":
        first = str(exc).split(". ")[0].strip()
        return f"{first}; lower --batch-size or the CLIP ensemble, or use --device cpu"
    if isinstance(exc, MemoryError):
        return f"out of memory{': ' + str(exc) if str(exc) else ''}; lower --batch-size or the CLIP ensemble"
    return str(exc)

