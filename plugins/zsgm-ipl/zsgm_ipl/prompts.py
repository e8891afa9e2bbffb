"""IPL's CoOp-style prompts for one CLIP model (METHODS.md 3.2).

``P_c(w) = [SOS] M(w)_1 .. M(w)_n <class_c> [EOT] pad``: the [SOS] embedding (prefix) and the embeddings after
position ``1 + n_ctx`` (suffix) come from tokenising ``"<ctx_init> <class_c>"`` *without* a full stop, as IPL's
train.py does; the mapper output fills the ``n_ctx`` context slots (nothing is initialised from the ``ctx_init``
words: they only fix the token count and the fixed "hard" prompts). The same ``M(w)`` builds the source and the
target prompt. Only the stage-1 hard prompt ``"<ctx_init> <class_c>."`` carries a full stop (IPL's
``prompt_prefix + " {}."``); the released stage-2 hard prompt is the bare ``"<ctx_init>"``.
"""

from __future__ import annotations

import torch

from zsgm.clip import ClipModel, build_context_prompt
from zsgm_ipl.formulas import residual_feature

HARD_PROMPTS = ("class", "classless")


def learned_prompt_texts(classes: list[str], ctx_init: str) -> list[str]:
    """The texts whose tokens frame IPL's learned prompts: ``"<ctx_init> <class>"``, no full stop (IPL train.py)."""
    return [f"{ctx_init} {c}" for c in classes]


def learned_prompt_tokens(model: ClipModel, classes: list[str], *, n_ctx: int,
                          ctx_init: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens [T, L], embeds [T, L, W])`` of :func:`learned_prompt_texts`, checked like CoOp prompts.

    :func:`zsgm.clip.build_context_prompt` checks that ``ctx_init`` is ``n_ctx`` tokens, that no class text merges
    with it and that the prompts fit the context (its texts carry a full stop, one token more than ours, so a
    prompt it accepts fits here too); the tokens used are those of the texts without the full stop.

    Raises:
        ValueError: as :func:`zsgm.clip.build_context_prompt`.
    """
    build_context_prompt(model, classes, n_ctx=n_ctx, ctx_init=ctx_init)  # validation only
    return model.token_embeddings(learned_prompt_texts(classes, ctx_init))


class DomainPrompts:
    """The constant pieces of one CLIP model's source/target prompts, and their features.

    Args:
        model: the CLIP model.
        source / target: the class texts ("photo", "sketch").
        n_ctx: number of learned context vectors.
        ctx_init: the fixed prompt text (``n_ctx`` tokens), e.g. "a photo of a".

    Attributes:
        tokens: ``[2, L]`` token ids of ``"<ctx_init> <source>"`` and ``"<ctx_init> <target>"`` (no full stop).
        prefix / suffix: ``[2, 1, W]`` / ``[2, L - 1 - n_ctx, W]`` frozen token embeddings.
        hard: ``{"class": [2, D], "classless": [2, D]}`` unnormalised features of the fixed prompts: the
            class-bearing ``"<ctx_init> <class>."`` per domain, or the bare ``"<ctx_init>"`` (same row twice).
    """

    def __init__(self, model: ClipModel, source: str, target: str, *, n_ctx: int, ctx_init: str):
        self.model = model
        self.n_ctx = n_ctx
        self.tokens, embeds = learned_prompt_tokens(model, [source, target], n_ctx=n_ctx, ctx_init=ctx_init)
        self.prefix = embeds[:, :1].clone()  # [2, 1, W]: [SOS]
        self.suffix = embeds[:, 1 + n_ctx:].clone()  # [2, L - 1 - n_ctx, W]: class, [EOT], padding
        classless = self.fixed_features([ctx_init])  # [1, D]
        self.hard = {
            "class": self.fixed_features([f"{ctx_init} {source}.", f"{ctx_init} {target}."]),  # [2, D]
            "classless": classless.expand(2, -1),  # [2, D]
        }

    @torch.no_grad()
    def fixed_features(self, texts: list[str]) -> torch.Tensor:
        """Unnormalised CLIP text features ``[T, D]`` of plain prompts (the same tower path as learned ones)."""
        tokens, embeds = self.model.token_embeddings(texts)
        return self.model.encode_token_embeddings(embeds, tokens).float()

    def prompt_features(self, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unnormalised features ``E_T(P_src(w))``, ``E_T(P_tgt(w))``, each ``[B, D]``, in one text-tower pass.

        Args:
            ctx: ``[B, n_ctx, W]`` mapper output (gradients flow back to it).
        """
        b = ctx.shape[0]
        prefix = self.prefix.repeat_interleave(b, dim=0)  # [2B, 1, W]: B source rows, then B target rows
        suffix = self.suffix.repeat_interleave(b, dim=0)  # [2B, L - 1 - n_ctx, W]
        tokens = self.tokens.repeat_interleave(b, dim=0)  # [2B, L]
        embeds = torch.cat([prefix, ctx.repeat(2, 1, 1).to(prefix.dtype), suffix], dim=1)  # [2B, L, W]
        features = self.model.encode_token_embeddings(embeds, tokens).float()  # [2B, D]
        return features[:b], features[b:]

    def residual_features(self, ctx: torch.Tensor, *, hard: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(t_src, t_tgt)``: unit residual features ``normalize(E_T(P_c(w)) + E_T(hard_c))``, ``[B, D]`` each.

        Args:
            ctx: ``[B, n_ctx, W]`` mapper output.
            hard: "class" (``"<ctx_init> <class>."``, IPL stage 1) or "classless" (``"<ctx_init>"`` for both
                domains, IPL's released stage 2).
        """
        p_src, p_tgt = self.prompt_features(ctx)
        h = self.hard[hard]
        return residual_feature(p_src, h[0]), residual_feature(p_tgt, h[1])
