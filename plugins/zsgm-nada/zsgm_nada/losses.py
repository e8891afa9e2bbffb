"""NADA's CLIP losses: directional (the core of every zero-shot method) and global."""

from __future__ import annotations

import attrs
import torch

from zsgm.hookspecs import hookimpl
from zsgm.technique import Technique, directional_loss, global_clip_loss


@attrs.define(kw_only=True)
class DirectionalConfig:
    """The directional CLIP loss has no options: its directions come from the step (see ``zsgm_directions``)."""


class Directional(Technique):
    """``L_dir = mean_n [1 - cos(normalize(E_I(G_t(w_n)) - E_I(G_s(w_n))), dT_n)]``, summed over the CLIP ensemble
    with the model weights. ``dT`` is whatever the step's direction provider answers (NADA's template direction
    by default; IPL, AIR or image targets replace it)."""

    @hookimpl
    def zsgm_loss(self, run, step):
        batch = run.batch
        directions = batch.directions()
        total = 0.0
        for i, weight in enumerate(run.clip_weights):
            if weight == 0:
                continue
            total = total + weight * directional_loss(batch.src_embeds(i), batch.tgt_embeds(i), directions[i])
        return [self.term("directional", torch.as_tensor(total, device=run.device))]


@attrs.define(kw_only=True)
class GlobalConfig:
    """Options of the global CLIP loss.

    Attributes:
        text: the target text; default ``"a {target}"`` from the recipe's target.
    """

    text: str | None = None


def check_global(config: GlobalConfig, recipe) -> list[str]:
    """Recipe-time problem: no text to pull towards (no recipe target and no ``text`` of its own)."""
    if config.text is None and recipe.target is None:
        return ["text: 'global' needs a target text: set the recipe's target (--target) or its own 'text'"]
    return []


class GlobalLoss(Technique):
    """``L_global = mean_n [1 - cos(E_I(G_t(w_n)), E_T(text))]``. Off in NADA's paper runs: it collapses or is
    fooled adversarially on its own; useful as a small auxiliary term."""

    def target_text(self, run) -> str:
        if self.config.text is not None:
            return self.config.text
        if run.recipe.target is None:
            raise ValueError("technique 'global' needs a target text (recipe.target or its own 'text')")
        return f"a {run.recipe.target}"

    @hookimpl
    def zsgm_loss(self, run, step):
        text = self.target_text(run)
        total = 0.0
        for i, (model, weight) in enumerate(zip(run.clip_models, run.clip_weights)):
            if weight == 0:
                continue
            e_text = model.encode_text([text])[0]  # [D], cached by the model
            total = total + weight * global_clip_loss(run.batch.tgt_embeds(i), e_text)
        return [self.term("global", torch.as_tensor(total, device=run.device))]
