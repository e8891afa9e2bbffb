"""StyleGAN-NADA (Gal et al., SIGGRAPH 2022) as zsgm techniques."""
