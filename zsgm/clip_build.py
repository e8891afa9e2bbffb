"""open_clip models built from a config dict (no change to open_clip's model registry), and state dicts fitted
into them: the tiny random CLIP, the models of zsgm CLIP files, and weights in other layouts.

Every failure is one :class:`ClipLoadError` line: a config that is no open_clip config, or weights that do not
fit the model (missing or unexpected keys, shapes), summarised by :func:`state_mismatch`.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping, Optional

import torch
from torch import nn

from zsgm.clip_loaded import ClipLoadError, LoadedClip, one_line

# Tiny CLIP for tests: ViT 32 px, patch 8, width 64, 2 layers; text width 64, 2 layers, context 32.
TINY_RANDOM_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TINY_RANDOM_SEED = 4321


def build_clip_from_config(config: dict) -> nn.Module:
    """An open_clip model (random init) from a config dict, without touching open_clip's registry.

    Args:
        config: ``{"embed_dim", "vision_cfg", "text_cfg", ["quick_gelu"], ["custom_text"], ...}`` as in
            open_clip's ``model_configs/*.json``.

    Returns:
        ``open_clip.model.CLIP``, or ``CustomTextCLIP`` when ``custom_text`` is set or the text tower is a HF
        model, or ``CoCa`` when ``multimodal_cfg`` is present.
    """
    from open_clip.coca_model import CoCa
    from open_clip.model import CLIP, CustomTextCLIP

    if not isinstance(config, dict) or not isinstance(config.get("text_cfg", {}), dict):
        raise ClipLoadError(f"CLIP config must be a JSON object with embed_dim, vision_cfg, text_cfg; got "
                            f"{one_line(config, 120)}")
    cfg = copy.deepcopy(config)
    custom = bool(cfg.pop("custom_text", False)) or "hf_model_name" in cfg.get("text_cfg", {})
    cls = CoCa if "multimodal_cfg" in cfg else (CustomTextCLIP if custom else CLIP)
    if "hf_model_name" in cfg.get("text_cfg", {}):
        cfg["text_cfg"]["hf_model_pretrained"] = False  # weights come from the file, never from the Hub
    try:
        return cls(**cfg)
    except Exception as exc:  # noqa: BLE001 - TypeError, KeyError, AttributeError, ...: one line
        raise ClipLoadError(f"CLIP config does not describe an open_clip model ({type(exc).__name__}: "
                            f"{one_line(exc, 200)}); "
                            f"expected keys embed_dim, vision_cfg, text_cfg; got {sorted(config)}") from None


def simple_tokenizer(context_length: int):
    """open_clip's BPE tokenizer (its vocabulary ships inside the wheel, so this works offline)."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=int(context_length))


def tokenizer_by_name(tokenizer_name: str, config: Optional[dict]):
    """``"simple"``: :func:`simple_tokenizer` at the config's context length; else open_clip's tokenizer of that
    model name."""
    if tokenizer_name == "simple":
        return simple_tokenizer(_text_context_length(config or {}))
    import open_clip

    return open_clip.get_tokenizer(tokenizer_name)


def _text_context_length(config: dict) -> int:
    """The text tower's context length (open_clip's default 77 when the config does not say)."""
    return int(config.get("text_cfg", {}).get("context_length", 77))


def load_tiny_random(*, seed: int = TINY_RANDOM_SEED, config: Optional[dict] = None) -> LoadedClip:
    """The tiny random CLIP (deterministic for a given ``seed``; the global RNG is left untouched).

    Args:
        seed: the torch seed used for initialisation.
        config: defaults to :data:`TINY_RANDOM_CONFIG`.
    """
    config = copy.deepcopy(config or TINY_RANDOM_CONFIG)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = build_clip_from_config(config)
    return LoadedClip(model=model, tokenizer=simple_tokenizer(_text_context_length(config)), name="tiny-random",
                      config=config)


def parse_tiny_seed(pretrained: Optional[str]) -> int:
    """``None`` -> default seed; ``"seed:7"`` -> 7. Anything else is an error (tiny-random has no weights)."""
    if pretrained is None:
        return TINY_RANDOM_SEED
    if pretrained.startswith("seed:") and pretrained[5:].lstrip("-").isdigit():
        return int(pretrained[5:])
    raise ClipLoadError(f"CLIP 'tiny-random' has random weights; pretrained must be empty or 'seed:<int>', "
                        f"got {pretrained!r}")


def state_mismatch(model: nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    """``""`` when ``state`` fits ``model`` exactly, else a one-line summary of what differs."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} is {list(state[k].shape)} in the file, {list(own[k].shape)} in the model"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) (e.g. {', '.join(unexpected[:3])})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es) (e.g. {'; '.join(shapes[:2])})")
    return "; ".join(parts)


def build_clip_for_state(config: dict, state: Mapping[str, torch.Tensor], where: str) -> nn.Module:
    """The open_clip model of ``config`` holding ``state``; the config is checked against the tensors on the meta
    device first, so a config that asks for a huge model allocates nothing.

    Raises:
        ClipLoadError: the config is no open_clip config, or the tensors do not fit it (one-line summary).
    """
    with torch.device("meta"):
        skeleton = build_clip_from_config(config)
    problem = state_mismatch(skeleton, state)
    if problem:
        raise ClipLoadError(f"{where} does not fit its own config: {problem}")
    model = build_clip_from_config(config)
    model.load_state_dict(state, strict=True)
    return model


def load_state_into(model: nn.Module, state: dict, where: str) -> None:
    """open_clip's checkpoint fix-ups (3rd-party layouts, custom text towers, position sizes), then strict load.

    Raises:
        ClipLoadError: ``where`` does not fit ``model`` (one-line summary of missing/unexpected keys, shapes).
    """
    from open_clip.convert import convert_state_dict
    from open_clip.model import convert_to_custom_text_state_dict, resize_pos_embed, resize_text_pos_embed

    try:
        if next(iter(state)).startswith("module."):
            state = {k[len("module."):]: v for k, v in state.items()}
        state = convert_state_dict(model, state)
        if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
            state = convert_to_custom_text_state_dict(state)
        if "logit_scale" in state and model.logit_scale.ndim != state["logit_scale"].ndim:
            state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
        if getattr(model, "logit_bias", None) is not None and "logit_bias" not in state:
            state["logit_bias"] = torch.zeros_like(model.logit_bias)
        resize_pos_embed(state, model)
        resize_text_pos_embed(state, model)
    except Exception as exc:  # noqa: BLE001 - open_clip's converters fail in many ways on foreign weights
        raise ClipLoadError(f"{where} does not fit this model ({type(exc).__name__}: {one_line(exc, 200)}); check "
                            f"that the file holds weights of this model") from None
    problem = state_mismatch(model, state)
    if problem:
        raise ClipLoadError(f"{where} does not fit this model: {problem}; check that the file holds weights of "
                            f"this model (or the model name)")
    model.load_state_dict(state, strict=True)
