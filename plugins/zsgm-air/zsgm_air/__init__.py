"""AIR for zsgm (Liu, Abdollahzadeh, Cheung, arXiv 2506.10895; METHODS.md 5).

- :mod:`zsgm_air.technique`: the ``air`` technique (anchor refresh + adaptive loss).
- :mod:`zsgm_air.prompt`: the prompt-learned text anchor.
- :mod:`zsgm_air.formulas`: the formulas on plain tensors.
- :mod:`zsgm_air.misalignment`: offset-misalignment tools and ``python -m zsgm_air.misalignment``.
- :mod:`zsgm_air.presets`: the ``air`` preset.
"""

__version__ = "0.1.0"
