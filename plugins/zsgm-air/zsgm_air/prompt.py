"""AIR's text anchor by prompt learning (METHODS.md 5.1(b)) for one CLIP model.

At each refresh the token embeddings of ``"<ctx_init> <src>"`` and ``"<ctx_init> <tgt>"`` (no full stop, as in
the released train.py) are interpolated, ``(1 - α)·TokEmb(src) + α·TokEmb(tgt)`` with ``α = step / steps``,
over the whole sequence (the [SOS] prefix, the ``n_ctx`` context slots and the class token(s)). Only the
context slots are then optimised (Adam, betas 0.9/0.999) so that the text offset from the previous anchor to
the prompt matches the image offset; prefix and suffix stay frozen at their interpolated values. Every refresh
starts afresh from the interpolation (the released code's ``--redefine_prompt``, on in its published runs).

The text tower pools at the [EOT] position of the *target* prompt, as the released code does. When the source
and target class texts tokenise to different lengths the interpolation mixes positions that do not
correspond (and the pooled position may hold a class token of the longer text at small α); the setup record
of ``air.jsonl`` reports both lengths.

``batch_prompt`` copies: the released code learns 5 identical copies and averages their unit features. They
start equal, see the same loss through the same average, hence get identical gradients (each 1/B of a single
copy's) and stay equal; Adam is invariant to that gradient scale except through its epsilon, so B copies
reproduce one copy up to ~eps-level differences (checked in the tests). The ``air`` preset uses 1.
"""

from __future__ import annotations

import torch

from zsgm.clip import ClipModel, build_context_prompt
from zsgm_air.formulas import interpolate_token_embeddings, pool_prompt_features, prompt_alignment_loss


class AnchorPrompt:
    """The interpolated anchor prompt of one CLIP model.

    Args:
        model: the CLIP model.
        source / target: the class texts.
        n_ctx: number of learned context slots.
        ctx_init: the fixed prompt text, exactly ``n_ctx`` tokens ("a photo of a").

    Attributes:
        src_embeds / tgt_embeds: ``[1, L, W]`` token embeddings of the two prompts.
        tokens: ``[1, L]`` token ids of the target prompt (they locate [EOT]).
        token_lengths: ``(source, target)`` token counts including [SOS] and [EOT].
    """

    def __init__(self, model: ClipModel, source: str, target: str, *, n_ctx: int, ctx_init: str):
        # validation only: ctx_init is n_ctx tokens and neither class merges with it or overflows the context
        build_context_prompt(model, [source, target], n_ctx=n_ctx, ctx_init=ctx_init)
        self.model = model
        self.n_ctx = n_ctx
        tokens, embeds = model.token_embeddings([f"{ctx_init} {source}", f"{ctx_init} {target}"])
        self.src_embeds, self.tgt_embeds = embeds[:1].float(), embeds[1:].float()  # [1, L, W]
        self.tokens = tokens[1:]  # [1, L]
        self.token_lengths = tuple(int((row != 0).sum()) for row in tokens)

    def initial_embeddings(self, alpha: float) -> torch.Tensor:
        """``[1, L, W]``: ``(1 - α)·TokEmb(src) + α·TokEmb(tgt)``."""
        return interpolate_token_embeddings(self.src_embeds, self.tgt_embeds, alpha)

    def features(self, prefix: torch.Tensor, ctx: torch.Tensor, suffix: torch.Tensor) -> torch.Tensor:
        """Unnormalised features ``[B, D]`` of ``B`` prompts with context ``ctx`` ``[B, n_ctx, W]``."""
        b = ctx.shape[0]
        embeds = torch.cat([prefix.expand(b, -1, -1), ctx, suffix.expand(b, -1, -1)], dim=1)  # [B, L, W]
        return self.model.encode_token_embeddings(embeds, self.tokens.expand(b, -1)).float()

    def learn(self, delta_i: torch.Tensor, t_last: torch.Tensor, *, alpha: float, iters: int, lr: float,
              batch_prompt: int = 1) -> dict:
        """Learn the anchor prompt for the image offset ``delta_i``.

        Args:
            delta_i: ``[D]`` unit image offset ``ΔI_A``.
            t_last: ``[K, D]`` source template features or ``[1, D]`` previous anchor prompt (unit).
            alpha: interpolation weight of the initial token embeddings.
            iters: Adam steps (``prompt_align_iter``).
            lr: Adam learning rate (``prompt_lr``).
            batch_prompt: identical prompt copies (see the module docstring).

        Returns:
            ``{"t_prompt": [1, D] unit, "ctx": [n_ctx, W], "loss_start": float, "loss_end": float}`` where the
            losses are the objective before the first and after the last update.
        """
        init = self.initial_embeddings(alpha).detach()  # [1, L, W]
        prefix, suffix = init[:, :1], init[:, 1 + self.n_ctx:]
        ctx = torch.nn.Parameter(init[:, 1:1 + self.n_ctx].repeat(batch_prompt, 1, 1).clone())  # [B, n_ctx, W]
        optim = torch.optim.Adam([ctx], lr=lr, betas=(0.9, 0.999))
        delta_i = delta_i.detach().float()
        t_last = t_last.detach().float()
        loss_start = None
        with torch.enable_grad():
            for _ in range(iters):
                t_prompt = pool_prompt_features(self.features(prefix, ctx, suffix))  # [1, D]
                loss = prompt_alignment_loss(delta_i, t_prompt, t_last)
                if loss_start is None:
                    loss_start = float(loss.detach())
                optim.zero_grad(set_to_none=True)
                loss.backward()
                optim.step()
        with torch.no_grad():
            t_prompt = pool_prompt_features(self.features(prefix, ctx, suffix))
            loss_end = float(prompt_alignment_loss(delta_i, t_prompt, t_last))
        return {"t_prompt": t_prompt.detach(), "ctx": ctx.detach()[0].clone(),
                "loss_start": loss_end if loss_start is None else loss_start, "loss_end": loss_end}
