"""The stage-2 CLIP losses (``clip-consistency``, ``patch-contrastive``) and ``reference-reconstruction``.

``clip-consistency`` and ``patch-contrastive`` read only the step's source and target images, so they work with text
targets too (beside ``directional``, say). On the reference steps of a recipe with ``reference-reconstruction`` they
are off by default (``reference_steps = "skip"``), as in the released loop (:mod:`zsgm_oneshot.common`).
"""

from __future__ import annotations

import attrs
import torch

from zsgm import validators as v
from zsgm.hookspecs import hookimpl
from zsgm.technique import Technique

from zsgm_oneshot.common import (
    RECONSTRUCTION,
    REFERENCE_STEP_CHOICES,
    SEARCH,
    is_reference_step,
    load_reference,
    load_run_lpips,
    reference_image_problems,
    technique_by_use,
)
from zsgm_oneshot.formulas import (
    GROUPINGS,
    consistency_loss,
    crop_offsets,
    crop_side,
    group_crops,
    patch_nce_loss,
    take_crops,
)


def _batch_problems(recipe, technique: str) -> list[str]:
    if recipe.optim.batch_size < 2:
        return [f"use: {technique!r} compares the samples of a step with each other, so it needs optim.batch_size "
                f">= 2 (got {recipe.optim.batch_size})"]
    return []


# --------------------------------------------------------------------------------------------- clip-consistency


@attrs.define(kw_only=True)
class ClipConsistencyConfig:
    """Options of L_con (its lambda, 10 in the paper, is the recipe entry's ``weight``).

    Attributes:
        reference_steps: "skip" (no term on reference steps, as released) or "run".
    """

    reference_steps: str = attrs.field(default="skip", validator=v.one_of(REFERENCE_STEP_CHOICES))


def check_clip_consistency(config: ClipConsistencyConfig, recipe) -> list[str]:
    return _batch_problems(recipe, "clip-consistency")


class ClipConsistency(Technique):
    """``L_con = mean_{i != j} [cos(q_i, q_j) - cos(k_i, k_j)]^2``, q = E_I(G_t(w_n)), k = E_I(G_s(w_n)) detached;
    weighted sum over the CLIP ensemble."""

    @hookimpl
    def zsgm_loss(self, run, step):
        if self.config.reference_steps == "skip" and is_reference_step(run, step):
            return []
        batch = run.batch
        total = 0.0
        for i, weight in enumerate(run.clip_weights):
            if weight:
                total = total + weight * consistency_loss(batch.tgt_embeds(i), batch.src_embeds(i))
        return [self.term("consistency", torch.as_tensor(total, device=run.device))]


# --------------------------------------------------------------------------------------------- patch-contrastive


@attrs.define(kw_only=True)
class PatchContrastiveConfig:
    """Options of L_patch (its lambda, 1 in the paper, is the recipe entry's ``weight``).

    Attributes:
        crop_frac: crop side as a fraction of the image side (the released 128 px of 1024).
        n_crops: crops per image, at the same locations in the source and target images.
        tau: temperature.
        grouping: which crops are each other's negatives: "image" (the other crops of the same image, the
            paper's description), "released" (the released code's grouping, which mixes images: see
            :func:`zsgm_oneshot.formulas.group_crops`) or "all" (every crop of the step, ``nce_allbatch``).
        reference_steps: "skip" (no term on reference steps, as released) or "run".
    """

    crop_frac: float = attrs.field(default=128 / 1024, validator=v.in_closed_range(1e-6, 1.0))
    n_crops: int = attrs.field(default=16, validator=v.positive)
    tau: float = attrs.field(default=1.0, validator=v.positive)
    grouping: str = attrs.field(default="image", validator=v.one_of(GROUPINGS))
    reference_steps: str = attrs.field(default="skip", validator=v.one_of(REFERENCE_STEP_CHOICES))


class PatchContrastive(Technique):
    """InfoNCE between CLIP embeddings of same-location crops of G_t(w) and G_s(w) (METHODS.md 6.2).

    Crop locations come from ``run.rng(step, "<entry>/crops")``, shared by every image of the step (as released);
    each crop reaches CLIP through the recipe's preprocessing (resized to the model's input).
    """

    @hookimpl
    def zsgm_loss(self, run, step):
        if self.config.reference_steps == "skip" and is_reference_step(run, step):
            return []
        c, batch = self.config, run.batch
        x_s, x_t = batch.src_images, batch.tgt_images  # [N, 3, S, S]
        n, side = x_t.shape[0], x_t.shape[-1]
        crop = crop_side(side, c.crop_frac)
        offsets = crop_offsets(side, crop, c.n_crops, run.rng(step, f"{self.use.name}/crops"))
        crops_s, crops_t = take_crops(x_s, offsets, crop), take_crops(x_t, offsets, crop)  # [P*N, 3, c, c]
        total = 0.0
        for model, weight in zip(run.clip_models, run.clip_weights):
            if not weight:
                continue
            with torch.no_grad():
                k = model.encode_image(crops_s)  # [P*N, D]
            q = model.encode_image(crops_t)
            q, k = (group_crops(e, n_images=n, n_crops=c.n_crops, grouping=c.grouping) for e in (q, k))
            total = total + weight * patch_nce_loss(q, k, tau=c.tau).mean()
        return [self.term("patch", torch.as_tensor(total, device=run.device))]


# --------------------------------------------------------------------------------------------- reconstruction


@attrs.define(kw_only=True)
class ReferenceReconstructionConfig:
    """Options of the reference term.

    Attributes:
        ref_freq: every ``ref_freq``-th step (``step % ref_freq == 0``) is a reference step; this term is computed
            only there, and it defines the reference steps for the other one-shot techniques of the recipe.
        lpips / lpips_backbone: the LPIPS network ("auto": the generator's own choice, else "alex") and an
            optional local backbone weights file.
        mse: add the pixel MSE (the released code does).
    """

    ref_freq: int = attrs.field(default=4, validator=v.positive)
    lpips: str = attrs.field(default="auto", validator=v.one_of(["auto", "alex", "vgg", "squeeze", "standin"]))
    lpips_backbone: str | None = attrs.field(default=None, validator=v.optional_non_empty)
    mse: bool = True


def _produces_loss(name: str) -> bool:
    from zsgm.plugins import get_registry

    techniques = get_registry().techniques
    return name in techniques and techniques.get(name).produces_loss


def check_reference_reconstruction(config: ReferenceReconstructionConfig, recipe) -> list[str]:
    """Its schedule is ``ref_freq`` (``every`` would make a second, conflicting one); with ``ref_freq > 1`` some other
    technique must train the other steps; a reference image is needed."""
    problems = []
    mine = [u for u in recipe.techniques if u.config is config]
    if mine and mine[0].every != 1:
        problems.append(f"every: the reference steps of 'reference-reconstruction' are set by its ref_freq "
                        f"(got every = {mine[0].every}); use ref_freq = {mine[0].every} instead")
    others = [u for u in recipe.techniques if u.config is not config and u.weight != 0 and _produces_loss(u.use)]
    if config.ref_freq > 1 and not others:
        problems.append(f"ref_freq: only every {config.ref_freq}th step is a reference step and no other technique "
                        f"produces a loss for the steps between; add one (e.g. 'clip-consistency') or set "
                        f"ref_freq = 1")
    return problems + reference_image_problems(recipe, config)


class ReferenceReconstruction(Technique):
    """``LPIPS(G_t(w_ref), I_ref) + MSE(G_t(w_ref), I_ref)`` on the reference steps (two terms, "lpips" and "mse")."""

    def __init__(self, config: ReferenceReconstructionConfig):
        super().__init__(config)
        self._lpips = None
        self._reference: torch.Tensor | None = None

    @hookimpl
    def zsgm_setup(self, run):
        self._lpips = load_run_lpips(run, self.config.lpips, self.config.lpips_backbone)
        self._reference = load_reference(run)  # [1, 3, S, S]

    @hookimpl
    def zsgm_loss(self, run, step):
        if step % self.config.ref_freq != 0:
            return []
        image = technique_by_use(run, SEARCH).render_target(run, step)  # [1, 3, S, S]
        terms = [self.term("lpips", self._lpips(image, self._reference).mean())]
        if self.config.mse:
            terms.append(self.term("mse", ((image - self._reference) ** 2).mean()))
        return terms


__all__ = [
    "ClipConsistency", "ClipConsistencyConfig", "PatchContrastive", "PatchContrastiveConfig",
    "ReferenceReconstruction", "ReferenceReconstructionConfig", "RECONSTRUCTION", "check_clip_consistency",
    "check_reference_reconstruction",
]
