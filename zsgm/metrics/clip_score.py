"""CLIP scores: generated images against the target text ("clip-text") and against the target images ("clip-image").

The judge is ``ctx.clip_judge`` (a :class:`zsgm.clip.ClipModel`, open_clip underneath). Scores are cosines of unit
embeddings (AIR's ``CLIP_global.py`` reports 1 - this cosine as its "global" distance; ``CLIP_similarity.py`` the mean
image-image cosine); ``clip-text_score`` is torchmetrics' ``CLIPScore`` convention, mean of max(100 cos, 0).

Samples are quantised to uint8 first (what a PNG of them holds) and go through the judge's own preprocessing
(``ClipModel.prepare_images``: for "nada", bicubic resize of the short side + centre crop + CLIP mean/std, the
tensor form of CLIP's PIL preprocessing). Target images are read at their own size and preprocessed the same way.

A judge that also guided the run inflates the score (it was optimised against): ``ctx.clip_judge_is_guide`` is
recorded and a warning is written into the record.

Options (``ctx.options["clip-text"]`` / ``["clip-image"]``): ``batch_size`` (64), ``text`` (clip-text: a text
instead of ``ctx.target_text``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from zsgm.metrics.api import EvalContext, MetricError, MetricResult
from zsgm.metrics.common import (base_record, batches, check_images, from_uint8, int_option, library_version, to_uint8,
                                 weight_record)


def needs_judge_and_text(ctx: EvalContext) -> Optional[str]:
    """``applies`` of clip-text."""
    if ctx.clip_judge is None:
        return "needs a CLIP judge (zsgm eval --clip NAME)"
    if not (ctx.target_text or ctx.option("clip-text", "text")):
        return "needs the run's target text"
    return None


def needs_judge_and_images(ctx: EvalContext) -> Optional[str]:
    """``applies`` of clip-image."""
    if ctx.clip_judge is None:
        return "needs a CLIP judge (zsgm eval --clip NAME)"
    if not ctx.target_images:
        return "needs target images (a one-shot run's reference images)"
    return None


@torch.no_grad()
def image_embeddings(judge, x: torch.Tensor, *, batch_size: int = 64, quantise: bool = False) -> torch.Tensor:
    """``[N, D]`` unit embeddings (CPU, float32) of ``x`` ``[N, 3, H, W]`` in [-1, 1], by the judge; with
    ``quantise``, each batch is first rounded to uint8 as a PNG of it holds."""
    out = []
    for b in batches(x, batch_size):
        if quantise:
            b = from_uint8(to_uint8(b))
        out.append(judge.encode_image(b.to(judge.device)).float().cpu())
    return torch.cat(out)


def cosine_to_text(img: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """``[N]`` cosine of each unit image embedding ``[N, D]`` with the unit text embedding ``[D]``."""
    return img @ text


def cosine_to_images(img: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``[N, R]`` cosines of unit image embeddings ``[N, D]`` with unit target embeddings ``[R, D]``."""
    return img @ targets.T


def _judge_record(ctx: EvalContext) -> dict[str, Any]:
    judge = ctx.clip_judge
    rec: dict[str, Any] = {"judge": getattr(judge, "name", type(judge).__name__),
                           "judge_preprocess": getattr(judge, "preprocess", None),
                           "judge_is_guide": bool(ctx.clip_judge_is_guide)}
    if ctx.clip_judge_is_guide:
        rec["warning"] = ("the judge is one of the CLIP models that guided the run: the score is inflated; judge "
                          "with a CLIP the run did not train against")
    return rec


_LAST: dict[str, Any] = {}  # the last samples embedded: judge, samples (held, compared with `is`), version, batch


def sample_embeddings(ctx: EvalContext, metric: str, x: torch.Tensor) -> torch.Tensor:
    """``[N, D]`` the judge's unit embeddings of the samples ``x`` (quantised as a PNG holds them): clip-text and
    clip-image of one sample set share one encode."""
    batch_size = int_option(ctx, metric, "batch_size", 64)
    same = (_LAST.get("judge") is ctx.clip_judge and _LAST.get("x") is x and _LAST.get("version") == x._version
            and _LAST.get("batch_size") == batch_size)
    if not same:
        _LAST.clear()
        _LAST.update(judge=ctx.clip_judge, x=x, version=x._version, batch_size=batch_size,
                     embeddings=image_embeddings(ctx.clip_judge, x, batch_size=batch_size, quantise=True))
    return _LAST["embeddings"]


def _samples(ctx: EvalContext, metric: str) -> torch.Tensor:
    if ctx.clip_judge is None:
        raise MetricError(f"{metric}: needs a CLIP judge (zsgm eval --clip NAME)")
    return check_images(ctx.generated, f"{metric}: generated samples", min_count=1)


def compute_clip_text(ctx: EvalContext) -> MetricResult:
    """Mean cosine between the judge's embeddings of the samples and of the target text."""
    x = _samples(ctx, "clip-text")
    text = ctx.option("clip-text", "text") or ctx.target_text
    if not text:
        raise MetricError("clip-text: needs the run's target text")
    judge = ctx.clip_judge
    img = sample_embeddings(ctx, "clip-text", x)
    txt = judge.encode_text([text])[0].float().cpu()  # [D], unit
    cos = cosine_to_text(img, txt)
    record = base_record(ctx, metric="clip-text", protocol="mean cosine of CLIP image and text embeddings "
                         "(AIR CLIP_global reports 1 - cos); _score = torchmetrics CLIPScore max(100 cos, 0)",
                         library=f"{library_version('open_clip_torch')} via zsgm.clip", n_generated=x.shape[0])
    record.update(_judge_record(ctx))
    record.update({"text": text, "resize": "quantised to uint8, then the judge's preprocessing"})
    std = float(cos.std()) if cos.numel() > 1 else 0.0
    return MetricResult(values={"clip-text": float(cos.mean()), "clip-text_std": std,
                                "clip-text_score": float((100 * cos).clamp(min=0).mean())}, record=record)


def compute_clip_image(ctx: EvalContext) -> MetricResult:
    """Mean cosine between the judge's embeddings of the samples and of each target image."""
    from zsgm.io_utils import load_image

    x = _samples(ctx, "clip-image")
    if not ctx.target_images:
        raise MetricError("clip-image: needs target images (a one-shot run's reference images)")
    judge = ctx.clip_judge
    try:
        targets = [load_image(p) for p in ctx.target_images]  # each [1, 3, H, W], own size
    except ValueError as exc:
        raise MetricError(f"clip-image: {exc}") from None
    tgt = torch.cat([image_embeddings(judge, t) for t in targets])  # [R, D]
    img = sample_embeddings(ctx, "clip-image", x)
    cos = cosine_to_images(img, tgt)  # [N, R]
    per_image = cos.mean(1)
    record = base_record(ctx, metric="clip-image", protocol="mean cosine of CLIP embeddings, every sample against "
                         "every target image (AIR CLIP_similarity)",
                         library=f"{library_version('open_clip_torch')} via zsgm.clip", n_generated=x.shape[0])
    record.update(_judge_record(ctx))
    record.update({"reference": {"images": [weight_record(Path(p)) for p in ctx.target_images],
                                 "n": len(ctx.target_images)},
                   "per_target": [float(v) for v in cos.mean(0)],
                   "resize": "samples quantised to uint8; every image through the judge's preprocessing"})
    std = float(per_image.std()) if per_image.numel() > 1 else 0.0
    return MetricResult(values={"clip-image": float(cos.mean()), "clip-image_std": std}, record=record)
