"""CUDA kernel sources (``*.cu``) shipped inside the wheel as ``zsgm._cuda``.

Only text lives here; nothing is compiled at import. The CuPy backend reads a source with
:func:`kernel_source` and compiles it lazily on first use.
"""

from importlib import resources


def kernel_source(name: str) -> str:
    """The text of ``cuda/<name>`` (for example ``"bias_act.cu"``)."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
