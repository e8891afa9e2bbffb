"""One-shot CLIP (Kwon & Ye, TPAMI 2023): adapt a generator from a single reference image (METHODS.md section 6).

Techniques, each usable alone: ``reference-search`` (stage 1: the source latent closest to the reference),
``clip-consistency`` (L_con), ``patch-contrastive`` (InfoNCE over same-location crops), ``reference-reconstruction``
(LPIPS + MSE of G_t(w_ref) against the reference on the reference steps), ``adversarial`` (logistic loss against
the source's discriminator, patch and global modes, lazy R1) and ``frozen-layers``; preset ``oneclip``.
"""
