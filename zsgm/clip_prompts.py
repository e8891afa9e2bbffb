"""Learned-context (CoOp-style) prompts for CLIP's text tower (METHODS.md 3.2 IPL, 5.1(b) AIR).

A prompt for class ``c`` is the token sequence of ``"<ctx_init> <c>."``::

    [SOS] ctx_1 .. ctx_n  <c> .  [EOT] pad ...
    prefix  (n_ctx slots) suffix ----------------

:func:`build_context_prompt` tokenises it once and keeps the frozen pieces: the [SOS] embedding (``prefix``) and
everything after the ``n_ctx`` context slots (``suffix``: the class words, the full stop, [EOT], padding). A
caller fills the slots with learned vectors ``ctx`` (``[n_ctx, W]`` shared, or ``[T, n_ctx, W]`` per row) and
gets unnormalised text features through :meth:`ContextPrompt.encode` (``ClipModel.encode_token_embeddings``,
differentiable w.r.t. ``ctx``). ``ctx_init`` only fixes the number of slots and the fixed prompt text; whether
the learned vectors start from its word embeddings (:attr:`ContextPrompt.init`) is the caller's choice (IPL does
not, CoOp does). AIR's interpolated initialisation mixes two prompts' :meth:`ClipModel.token_embeddings`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import attrs
import torch

if TYPE_CHECKING:  # pragma: no cover
    from zsgm.clip import ClipModel


@attrs.define(frozen=True, kw_only=True)
class ContextPrompt:
    """The frozen pieces of ``T`` learned-context prompts (see the module docstring).

    Attributes:
        texts: the tokenised prompt strings ``"<ctx_init> <class>."``, one per class.
        n_ctx: number of context slots (positions ``1 .. n_ctx``).
        tokens: ``[T, L]`` token ids (they locate [EOT] for the text tower's pooling).
        prefix: ``[T, 1, W]`` [SOS] embeddings.
        suffix: ``[T, L - 1 - n_ctx, W]`` embeddings after the context slots.
        init: ``[n_ctx, W]`` token embeddings of ``ctx_init``'s words (a possible starting point).

    ``prompt["tokens"]`` etc. also work (dict-style access to the same attributes).
    """

    texts: tuple[str, ...]
    n_ctx: int
    tokens: torch.Tensor
    prefix: torch.Tensor
    suffix: torch.Tensor
    init: torch.Tensor

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in ("tokens", "prefix", "suffix", "init"):
            raise KeyError(f"ContextPrompt has tokens, prefix, suffix, init; got {key!r}")
        return getattr(self, key)

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def assemble(self, ctx: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``[T, L, W]`` with ``ctx`` in the context slots.

        Args:
            ctx: ``[n_ctx, W]`` (the same vectors for every row) or ``[T, n_ctx, W]``.
        """
        t, w = self.prefix.shape[0], self.prefix.shape[-1]
        if tuple(ctx.shape) not in ((self.n_ctx, w), (t, self.n_ctx, w)):
            raise ValueError(f"ctx: expected [{self.n_ctx}, {w}] or [{t}, {self.n_ctx}, {w}], "
                             f"got {list(ctx.shape)}")
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(t, -1, -1)  # [T, n_ctx, W]
        return torch.cat([self.prefix, ctx.to(self.prefix.dtype), self.suffix], dim=1)  # [T, L, W]

    def encode(self, model: "ClipModel", ctx: torch.Tensor) -> torch.Tensor:
        """Unnormalised text features ``[T, D]`` of the prompts with ``ctx`` in the slots (differentiable)."""
        return model.encode_token_embeddings(self.assemble(ctx), self.tokens)


def build_context_prompt(model: "ClipModel", class_names: list[str], n_ctx: int = 4,
                         ctx_init: Optional[str] = "a photo of a") -> ContextPrompt:
    """Tokenise ``"<ctx_init> <class>."`` for each class and cut it into prefix / slots / suffix.

    Args:
        model: the CLIP model (its tokenizer and token embedding are used).
        class_names: ``T`` class texts ("photo", "pencil sketch").
        n_ctx: number of context slots.
        ctx_init: the fixed prompt text; it must tokenise to exactly ``n_ctx`` tokens. ``None`` or ``""`` uses
            ``n_ctx`` placeholder "X" tokens (CoOp's random-init prompt).

    Returns:
        A :class:`ContextPrompt`. With ``ctx = prompt.init`` the features equal those of the plain text
        ``"<ctx_init> <class>."``.

    Raises:
        ValueError: ``ctx_init`` is not ``n_ctx`` tokens long, no class names, or the prompt does not fit the
            model's context length.
    """
    if n_ctx < 1:
        raise ValueError(f"n_ctx must be >= 1, got {n_ctx}")
    class_names = list(class_names)
    if not class_names:
        raise ValueError("class_names: expected at least one class text, got none")
    sot = getattr(model.tokenizer, "sot_token_id", None)
    eot = getattr(model.tokenizer, "eot_token_id", None)
    if sot is None or eot is None:
        raise NotImplementedError(f"{model.name}: learned-context prompts need CLIP's BPE tokenizer "
                                  f"([SOS] words [EOT] 0-padding); this model uses {type(model.tokenizer).__name__}")
    ctx_init = (ctx_init or "").strip() or " ".join(["X"] * n_ctx)
    init_tokens, _ = model.token_embeddings([ctx_init])  # [1, L]
    n_init = int((init_tokens[0] != 0).sum()) - 2  # minus [SOS] and [EOT]
    if n_init != n_ctx:
        raise ValueError(f"ctx_init {ctx_init!r} is {n_init} tokens long but n_ctx = {n_ctx}; give a fixed "
                         f"prompt of exactly n_ctx tokens")
    texts = tuple(f"{ctx_init} {c}." for c in class_names)
    tokens, embeds = model.token_embeddings(list(texts))  # [T, L], [T, L, W]
    for row, text in zip(tokens, texts):
        if int(row[-1]) != 0:
            raise ValueError(f"prompt {text!r} does not fit the context length {tokens.shape[1]} "
                             f"(it needs fewer than {tokens.shape[1]} tokens with [SOS] and [EOT])")
        if int(row[0]) != sot or not torch.equal(row[1:1 + n_ctx], init_tokens[0, 1:1 + n_ctx]):
            raise ValueError(f"prompt {text!r}: the first {n_ctx} tokens differ from ctx_init {ctx_init!r} "
                             f"(the class text merged with it when tokenised)")
    return ContextPrompt(texts=texts, n_ctx=n_ctx, tokens=tokens, prefix=embeds[:, :1].clone(),
                         suffix=embeds[:, 1 + n_ctx:].clone(), init=embeds[0, 1:1 + n_ctx].clone())
