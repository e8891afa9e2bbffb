"""DeltaEdit for zsgm (Lyu et al., CVPR 2023, arXiv 2303.06285; METHODS.md 7): text-free trained edits in StyleSpace.

- :mod:`zsgm_deltaedit.mapper`: the delta mapper (coarse / medium / fine levels over S codes), its training
  condition and loss.
"""
