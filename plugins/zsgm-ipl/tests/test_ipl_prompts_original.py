"""IPL's prompts side by side with the construction of IPL's released train.py and criteria/clip_loss.py.

The ``ipl_*`` helpers below restate, on an open_clip model, what the released code does (read from
Picsart-AI-Research/IPL-Zero-Shot-Generative-Model-Adaptation):

- learned prompts: the prompt prefix (``ctx_init``, or ``n_ctx`` "X" words) and the class joined by a space and
  tokenised *without* a full stop; [SOS] embedding as prefix, the embeddings from position ``1 + n_ctx`` as suffix,
  the mapper's vectors in between; the text tower pools at ``tokens.argmax(-1)`` ([EOT]);
- stage-1 fixed prompt: the template ``prefix + " {}."`` filled with the class (full stop), unnormalised;
- stage-2 fixed prompt of the released code: the template ``prefix`` (no placeholder) filled with the class, i.e.
  the bare prefix, unnormalised;
- residual feature: ``normalize(learned + fixed)``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zsgm.clip import ClipModelSpec, load_clip_model
from zsgm_ipl.prompts import DomainPrompts

FULL_STOP = 269  # CLIP BPE id of "."


@pytest.fixture(scope="module")
def tiny():
    return load_clip_model(ClipModelSpec(name="tiny-random"))


def ipl_prompt_prefix(ctx_init: str, n_ctx: int) -> str:
    return ctx_init.replace("_", " ") if ctx_init != "" else " ".join(["X"] * n_ctx)


def ipl_learned_tokens(tiny, prefix: str, cls: str) -> torch.Tensor:
    return tiny.tokenize([prefix + " " + cls])  # [1, L]


def ipl_text_encoder(clip, embeds: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """IPL's ``text_encoder`` on an open_clip CLIP: positional embedding, transformer, ln_final, [EOT], projection."""
    x = embeds + clip.positional_embedding
    x = clip.transformer(x, attn_mask=clip.attn_mask)
    x = clip.ln_final(x)
    return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ clip.text_projection


def ipl_learned_features(tiny, prefix: str, cls: str, ctx: torch.Tensor, n_ctx: int) -> torch.Tensor:
    tokens = ipl_learned_tokens(tiny, prefix, cls)
    with torch.no_grad():
        embedding = tiny.model.token_embedding(tokens)  # [1, L, W]
    b = ctx.shape[0]
    embeds = torch.cat([embedding[:, :1].expand(b, -1, -1), ctx, embedding[:, 1 + n_ctx:].expand(b, -1, -1)], dim=1)
    return ipl_text_encoder(tiny.model, embeds, tokens.expand(b, -1))  # [B, D] unnormalised


def ipl_fixed_feature(tiny, template: str, cls: str) -> torch.Tensor:
    return tiny.model.encode_text(tiny.tokenize([template.format(cls)]))[0]  # [D] unnormalised


@pytest.mark.parametrize(("ctx_init", "n_ctx"), [("a photo of a", 4), ("", 3)])
def test_learned_prompt_tokens_are_ipls(tiny, ctx_init, n_ctx):
    fixed = ctx_init or " ".join(["X"] * n_ctx)
    prompts = DomainPrompts(tiny, "photo", "pencil sketch", n_ctx=n_ctx, ctx_init=fixed)
    prefix = ipl_prompt_prefix(ctx_init, n_ctx)
    expected = torch.cat([ipl_learned_tokens(tiny, prefix, c) for c in ("photo", "pencil sketch")])
    assert torch.equal(prompts.tokens, expected)
    assert not (prompts.tokens == FULL_STOP).any()  # IPL's learned prompts carry no full stop
    eot = prompts.tokens.argmax(dim=-1)
    assert eot.tolist() == [1 + n_ctx + 1, 1 + n_ctx + 2]  # [SOS], n_ctx slots, the class token(s), then [EOT]


def test_learned_prompt_features_are_ipls(tiny):
    n_ctx = 4
    prompts = DomainPrompts(tiny, "photo", "sketch", n_ctx=n_ctx, ctx_init="a photo of a")
    ctx = torch.randn(3, n_ctx, tiny.text_width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        p_src, p_tgt = prompts.prompt_features(ctx)
        o_src = ipl_learned_features(tiny, "a photo of a", "photo", ctx, n_ctx)
        o_tgt = ipl_learned_features(tiny, "a photo of a", "sketch", ctx, n_ctx)
    assert torch.allclose(p_src, o_src, atol=1e-5) and torch.allclose(p_tgt, o_tgt, atol=1e-5)


@pytest.mark.parametrize(("hard", "template"), [("class", "a photo of a {}."), ("classless", "a photo of a")])
def test_residual_features_are_ipls_for_both_fixed_prompts(tiny, hard, template):
    """Stage 1 (``clip_loss.global_clip_loss``: ``prompt_prefix + " {}."``) and the released stage 2
    (``clip_directional_loss`` with ``templates = prompt_prefix``): only the stage-1 fixed prompt has the full stop."""
    prompts = DomainPrompts(tiny, "photo", "sketch", n_ctx=4, ctx_init="a photo of a")
    ctx = torch.randn(2, 4, tiny.text_width, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        t_src, t_tgt = prompts.residual_features(ctx, hard=hard)
        for cls, ours in (("photo", t_src), ("sketch", t_tgt)):
            learned = ipl_learned_features(tiny, "a photo of a", cls, ctx, 4)
            original = F.normalize(learned + ipl_fixed_feature(tiny, template, cls), dim=-1)
            assert torch.allclose(ours, original, atol=1e-5), cls
