"""The field's metrics from the libraries it trusts, as :class:`zsgm.registry.MetricSpec` entries.

Registered by the built-in plugin's ``zsgm_register_metrics`` (``for spec in library_metrics(): register(spec)``).
Importing this module loads no metric library (torch-fidelity, lpips, open_clip are imported when a metric runs).
Protocols, weight files and the reporting record: docs/EVALUATION.md.
"""

from __future__ import annotations

from typing import Optional

from zsgm.metrics.api import EvalContext
from zsgm.metrics.clip_score import compute_clip_image, compute_clip_text, needs_judge_and_images, needs_judge_and_text
from zsgm.metrics.common import int_option
from zsgm.metrics.fid import compute_fid, compute_kid, needs_real_dir
from zsgm.metrics.identity import compute_identity, needs_source_and_arcface
from zsgm.metrics.intra_lpips import compute_intra_lpips
from zsgm.metrics.sifid import compute_sifid, needs_target_images
from zsgm.registry import MetricSpec


def intra_lpips_applies(ctx: EvalContext) -> Optional[str]:
    """``applies`` of intra-lpips: protocol B needs at least k samples (protocol A any 2)."""
    opt = ctx.options.get("intra-lpips", {})
    protocol_a = bool(opt.get("centres")) and str(opt.get("protocol", "A")).upper() == "A"
    need = 2 if protocol_a else int_option(ctx, "intra-lpips", "k", 10)
    n = int(ctx.generated.shape[0]) if hasattr(ctx.generated, "shape") else 0
    if n < need:
        return (f"needs at least {need} samples ({'pairs in a cluster' if protocol_a else f'k-medoids, k={need}'}); "
                f"got {n}")
    return None


def library_metrics() -> list[MetricSpec]:
    """fid, kid, intra-lpips, clip-text, clip-image, sifid, identity (fixed names; families fid, lpips, clip,
    sifid, identity). All are defaults: each one's ``applies`` skips it where its inputs are absent."""
    return [
        MetricSpec(name="fid", compute=compute_fid, applies=needs_real_dir, family="fid", default=True,
                   description="FID vs a folder of real images (torch-fidelity, TF-ported Inception; --real DIR)"),
        MetricSpec(name="kid", compute=compute_kid, applies=needs_real_dir, family="fid", default=True,
                   description="KID vs a folder of real images (torch-fidelity; subset size lowered for small sets)"),
        MetricSpec(name="intra-lpips", compute=compute_intra_lpips, applies=intra_lpips_applies, family="lpips",
                   default=True,
                   description="intra-cluster LPIPS diversity (lpips VGG; k-medoids protocol, or given centres)"),
        MetricSpec(name="clip-text", compute=compute_clip_text, applies=needs_judge_and_text, family="clip",
                   default=True, description="CLIP cosine of samples to the target text (judge CLIP, --clip)"),
        MetricSpec(name="clip-image", compute=compute_clip_image, applies=needs_judge_and_images, family="clip",
                   default=True, description="CLIP cosine of samples to the target images (judge CLIP, --clip)"),
        MetricSpec(name="sifid", compute=compute_sifid, applies=needs_target_images, family="sifid", default=True,
                   description="SIFID to the target images (Inception block 0, torch-fidelity's port)"),
        MetricSpec(name="identity", compute=compute_identity, applies=needs_source_and_arcface, family="identity",
                   default=True, description="ArcFace IR-SE50 cosine, source vs adapted sample (faces only)"),
    ]
