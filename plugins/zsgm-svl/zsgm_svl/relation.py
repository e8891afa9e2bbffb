"""The ``relation`` technique: SVL's relation consistency (paper Sec. 3.5, METHODS.md 4.3).

``L_rel = KL(softmax_row(M_s) || softmax_row(M_t))`` with ``M = X X^T`` (``N x N``) and ``X`` the step's *unit*
CLIP image embeddings of the source (``M_s``, no grad) and target (``M_t``) images. Summed over the CLIP ensemble
with the model weights. It keeps the pairwise structure of the batch, so the adapted images stay as different
from each other as their sources were.

Choices where the paper is silent (all options): ``X`` unit-normalised (zsgm's embeddings always are);
``temperature`` 1 (none), so logits lie in [-1, 1] and rows are near-uniform -- the loss is small, hence the
paper's large weight lambda_rel = 1e2; ``reduction = "batchmean"`` (mean over rows of each row's KL); the diagonal
kept (``include_self``). With the paper's N = 4 each row has 4 entries; with N = 2 only one off-diagonal entry per
row carries information and the loss is weak (and identically 0 with ``include_self = false``).
"""

from __future__ import annotations

import attrs
import torch

from zsgm import validators as v
from zsgm.hookspecs import hookimpl
from zsgm.technique import Technique
from zsgm_svl.formulas import RELATION_REDUCTIONS, relation_loss


@attrs.define(kw_only=True)
class RelationConfig:
    """Options of relation consistency (its weight, the paper's lambda_rel = 1e2, is the recipe entry's ``weight``).

    Attributes:
        temperature: softmax temperature tau (``softmax(M / tau)``).
        reduction: "batchmean", "sum" or "mean" (see :func:`zsgm_svl.formulas.relation_loss`).
        include_self: keep the diagonal of ``M`` in the softmax.
    """

    temperature: float = attrs.field(default=1.0, validator=v.positive)
    reduction: str = attrs.field(default="batchmean", validator=v.one_of(RELATION_REDUCTIONS))
    include_self: bool = True


def check_relation(config: RelationConfig, recipe) -> list[str]:
    """Problems of a ``relation`` entry within the whole recipe (``TechniqueSpec.check``): a batch too small for
    the rows of ``M`` to carry anything makes the loss identically 0, so it is refused when the recipe is built."""
    needed = 2 if config.include_self else 3
    n = recipe.optim.batch_size
    if n < needed:
        option = "use" if config.include_self else "include_self"
        return [f"{option}: 'relation' compares each image with the others of the batch, and with optim.batch_size "
                f"= {n}{'' if config.include_self else ' and include_self = false'} it is identically 0 (it needs "
                f"a batch of at least {needed})"]
    return []


class Relation(Technique):
    """KL between the row-softmaxed similarity matrices of the source and target batch."""

    @hookimpl
    def zsgm_loss(self, run, step):
        cfg = self.config
        batch = run.batch
        total = torch.zeros((), device=run.device)
        for i, weight in enumerate(run.clip_weights):
            if weight == 0:
                continue
            total = total + weight * relation_loss(batch.src_embeds(i), batch.tgt_embeds(i),
                                                   temperature=cfg.temperature, reduction=cfg.reduction,
                                                   include_self=cfg.include_self)
        return [self.term("relation", total)]
