"""SIFID (SinGAN): Frechet distance between the *spatial* Inception block-0 features of one sample and one reference.

Features: torch-fidelity's ``FeatureExtractorInceptionV3`` exposes its 64-channel block-0 output only spatially
averaged (feature "64"), so zsgm runs that extractor's own first modules (``Conv2d_1a_3x3``, ``Conv2d_2a_3x3``,
``Conv2d_2b_3x3``, ``MaxPool_1``; the layers behind its "64" feature) and keeps the map ``[64, h, w]``; each spatial
position is one 64-d sample (SinGAN's ``sifid_score.py``, which AIR copies, does the same with pytorch-fid's port of
the same TF Inception). Inputs are uint8 images (samples quantised as a PNG holds them, references as read), at their
own size (``resize`` None, as SinGAN/AIR: no resize to 299), normalised as pytorch-fid's port does, ``x / 127.5 - 1``,
the input SinGAN/AIR's scores saw (option ``normalize = "torch-fidelity"``: ``(x - 128) / 128`` as torch-fidelity's
forward); the record names the one used.

Value: SIFID of every sample against every reference, averaged over samples per reference, then over references (AIR:
1,000 samples against each reference folder, averaged). The Frechet distance is torch-fidelity's
(:mod:`zsgm.metrics.frechet`).

Weights: the FID Inception file (``--weights inception=PATH`` or torch-fidelity's hub cache; see
:mod:`zsgm.metrics.fid`). Options (``ctx.options["sifid"]``): ``resize`` (None | int: torch-fidelity's
TF1-compatible bilinear to that side), ``normalize`` ("pytorch-fid", the default, | "torch-fidelity"), ``batch_size`` (32),
``block0`` (a module mapping normalised ``[B, 3, H, W]`` to ``[B, C, h, w]``, used instead of Inception: tests).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from zsgm.metrics.api import EvalContext, MetricError, MetricResult
from zsgm.metrics.common import (base_record, batches, check_images, int_option, library_version, to_uint8,
                                 weight_record)
from zsgm.metrics.frechet import frechet_from_statistics, gaussian_statistics

NORMALIZE = {"pytorch-fid": lambda x: x / 127.5 - 1, "torch-fidelity": lambda x: (x - 128) / 128}
#: The default: pytorch-fid's, which SinGAN's ``sifid_score.py`` and AIR (a copy of it) feed their Inception.
DEFAULT_NORMALIZE = "pytorch-fid"
NORMALIZE_FORMULA = {"pytorch-fid": "x/127.5 - 1 (pytorch-fid's, as SinGAN/AIR)",
                     "torch-fidelity": "(x - 128)/128 (torch-fidelity's forward; not SinGAN/AIR's)"}


def needs_target_images(ctx: EvalContext) -> Optional[str]:
    """``applies`` of sifid."""
    if not ctx.target_images:
        return "needs target images (a one-shot run's reference images)"
    return None


class InceptionBlock0(torch.nn.Module):
    """Block 0 of a torch-fidelity ``FeatureExtractorInceptionV3`` (shares its modules): ``[B, 3, H, W]`` normalised
    -> ``[B, 64, h, w]``."""

    def __init__(self, inception: torch.nn.Module):
        super().__init__()
        self.layers = torch.nn.Sequential(inception.Conv2d_1a_3x3, inception.Conv2d_2a_3x3, inception.Conv2d_2b_3x3,
                                          inception.MaxPool_1)
        self.dtype = getattr(inception, "feature_extractor_internal_dtype", torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.to(self.dtype)).float()


@torch.no_grad()
def spatial_statistics(block0: Callable, images_uint8: torch.Tensor, *, normalize: str = DEFAULT_NORMALIZE,
                       resize: Optional[int] = None, device="cpu") -> list[dict]:
    """Per image of ``images_uint8`` ``[B, 3, H, W]``: torch-fidelity's ``{"mu", "sigma"}`` of its block-0 features,
    one 64-d row per spatial position."""
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    x = images_uint8.to(device).float()
    if resize is not None:
        x = interpolate_bilinear_2d_like_tensorflow1x(x, size=(resize, resize), align_corners=False)
    feats = block0(NORMALIZE[normalize](x))  # [B, C, h, w]
    if feats.shape[-1] * feats.shape[-2] < 2:
        raise MetricError(f"sifid: images of {tuple(images_uint8.shape[-2:])} px leave {tuple(feats.shape[-2:])} "
                          f"feature positions; need at least 2 (use larger images)")
    rows = feats.flatten(2).transpose(1, 2).cpu()  # [B, h*w, C]
    return [gaussian_statistics(r, what="sifid") for r in rows]


def sifid_matrix(gen_stats: list[dict], ref_stats: list[dict]) -> torch.Tensor:
    """``[N, R]`` SIFID of every sample against every reference."""
    return torch.tensor([[frechet_from_statistics(g, r) for r in ref_stats] for g in gen_stats], dtype=torch.float64)


def _read_uint8(path: Path) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise MetricError(f"sifid: target image {path}: no such file")
    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise MetricError(f"sifid: target image {path}: unreadable ({type(exc).__name__})") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None]  # [1, 3, H, W] uint8


def _block0(ctx: EvalContext) -> tuple[Callable, dict[str, Any]]:
    custom = ctx.option("sifid", "block0")
    if custom is not None:
        return custom, {"feature_extractor": "custom block0 (NOT Inception: not comparable with published SIFID)",
                        "weights": {}}
    from zsgm.metrics.fid import inception_weights, load_inception

    path = inception_weights(ctx, "sifid")
    # the same extractor FID and KID load (its features list does not matter to block 0): one model, one cache
    return InceptionBlock0(load_inception(path, device=ctx.device)), {
        "feature_extractor": "torch-fidelity inception-v3-compat block 0 (Conv2d_1a..MaxPool_1), 64-d spatial",
        "weights": {"inception": weight_record(path)}}


def compute_sifid(ctx: EvalContext) -> MetricResult:
    """SIFID of ``ctx.generated`` against ``ctx.target_images`` (see the module docstring)."""
    gen = check_images(ctx.generated, "sifid: generated samples")
    if not ctx.target_images:
        raise MetricError("sifid: needs target images (a one-shot run's reference images)")
    normalize = str(ctx.option("sifid", "normalize", DEFAULT_NORMALIZE))
    if normalize not in NORMALIZE:
        raise MetricError(f"sifid: option normalize must be one of {', '.join(NORMALIZE)}; got {normalize!r}")
    resize = int_option(ctx, "sifid", "resize", None)
    batch_size = int_option(ctx, "sifid", "batch_size", 32)
    refs = [_read_uint8(p) for p in ctx.target_images]
    block0, fields = _block0(ctx)
    kw = dict(normalize=normalize, resize=resize, device=ctx.device)
    ref_stats = [spatial_statistics(block0, r, **kw)[0] for r in refs]
    gen_stats = []
    for b in batches(gen, batch_size):
        gen_stats += spatial_statistics(block0, to_uint8(b), **kw)
    m = sifid_matrix(gen_stats, ref_stats)  # [N, R]
    per_ref = m.mean(0)
    record = base_record(ctx, metric="sifid", protocol="SIFID (SinGAN): Frechet distance of block-0 spatial "
                         "Inception features, every sample vs every reference; mean over samples per reference, "
                         "then over references (AIR)", library=library_version("torch-fidelity"),
                         n_generated=gen.shape[0])
    record.update(fields)
    record.update({
        "reference": {"images": [weight_record(Path(p)) for p in ctx.target_images], "n": len(refs)},
        "per_target": [float(v) for v in per_ref],
        "resize": ("samples quantised to uint8; " + ("no resize (SinGAN/AIR)" if resize is None else
                                                    f"TF1-compatible bilinear resize to {resize}")),
        "normalize": normalize, "normalize_formula": NORMALIZE_FORMULA[normalize]})
    per_image = m.mean(1)
    return MetricResult(values={"sifid": float(per_ref.mean()),
                                "sifid_std": float(per_image.std()) if per_image.numel() > 1 else 0.0},
                        record=record)
