"""``zsgm convert``: re-export of :func:`zsgm.generator.checkpoints.convert_checkpoint`."""

from zsgm.generator.checkpoints import convert_checkpoint

__all__ = ["convert_checkpoint"]
