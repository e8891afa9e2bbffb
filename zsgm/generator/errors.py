"""Errors of the generator package."""


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, foreign, unsafe or does not fit a generator.

    The message names the file and what was expected and found.
    """
