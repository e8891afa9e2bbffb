"""SVL (Jeon et al., ICCV 2023): improving diversity in zero-shot GAN adaptation with semantic variations.

Four techniques, each usable alone (METHODS.md section 4): ``semantic-variations`` (stage 1, a direction
provider exposing the whole text-direction set), ``moment`` (directional moment loss), ``ewc`` (elastic weight
consolidation with a diagonal empirical Fisher) and ``relation`` (relation consistency), plus the ``svl`` preset.
"""
