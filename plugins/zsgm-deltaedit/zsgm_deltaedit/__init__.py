"""DeltaEdit for zsgm (Lyu et al., CVPR 2023, arXiv 2303.06285; METHODS.md 7): text-free trained edits in StyleSpace.

- :mod:`zsgm_deltaedit.mapper`: the delta mapper (coarse / medium / fine levels over S codes), its training
  condition and loss.
- :mod:`zsgm_deltaedit.codes`: the training codes (W+, S, CLIP image embedding) from the generator, in resumable
  safetensors chunks; real-image W+ files (:mod:`zsgm_deltaedit.latent_files`).
- :mod:`zsgm_deltaedit.recipe`: the mapper recipe and the ``deltaedit`` / ``deltaedit-shapes`` presets.
- :mod:`zsgm_deltaedit.train`: the mapper training as a :class:`zsgm.fit.FitTask` on random pairs.
- :mod:`zsgm_deltaedit.relevance`: StyleCLIP's global-direction channel relevance, computed for any generator.
- :mod:`zsgm_deltaedit.edit`: text delta, relevance gate, edited images (``edit_images``).
- :mod:`zsgm_deltaedit.mappers`: a generator's mapper found in the cache or built on first use.
- :mod:`zsgm_deltaedit.cli` / :mod:`zsgm_deltaedit.plugin`: ``zsgm edit``.
- :mod:`zsgm_deltaedit.shapes_eval`: the shapes-world judgement of edits.
"""
