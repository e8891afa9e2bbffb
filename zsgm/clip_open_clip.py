"""open_clip models by name: with a pretrained tag, a local weights file, ``hf-hub:``/``local-dir:``, or random
weights (:func:`load_open_clip`).

Tags come from the caches when they hold them, else are downloaded after one probe of the Hub
(:mod:`zsgm.clip_hub`); local files are read by zsgm itself (:mod:`zsgm.clip_files`, :mod:`zsgm.clip_torchscript`,
:mod:`zsgm.clip_zsgm_file`); whatever open_clip itself loads goes through :func:`_create`, so every failure is
one :class:`ClipLoadError` line that says what to do.
"""

from __future__ import annotations

import difflib
import os
import warnings
from pathlib import Path
from typing import Optional

from torch import nn

from zsgm.clip_build import load_state_into
from zsgm.clip_files import read_state_dict_file, refuse_unusable_file, weights_only_reason
from zsgm.clip_hub import cached_tag_file, hf_offline_requested, hub_offline_switch, hub_unreachable_reason, \
    offline_advice, split_hub
from zsgm.clip_loaded import OPENAI_MEAN, OPENAI_STD, ClipLoadError, LoadedClip, one_line
from zsgm.clip_torchscript import is_torchscript, load_torchscript
from zsgm.clip_zsgm_file import read_clip_file, read_clip_file_metadata

BUILTIN_NAMES = ("tiny-random", "shapes", "local")
SCHEMA_PREFIXES = ("hf-hub:", "local-dir:")


def _quickgelu_hint(name: str, reason: str) -> None:
    warnings.warn(f"CLIP {name!r}: {reason}; the model's activation is GELU, so features will be off. Use the "
                  f"QuickGELU variant {name + '-quickgelu'!r} instead.", UserWarning, stacklevel=4)


def _model_from_file(name: str, path: Path, config: dict, *, trust_torchscript: bool,
                     force_preprocess_cfg: Optional[dict] = None):
    """open_clip model ``name`` holding the weights of the local file ``path``; returns ``(model, config)``.

    Only zsgm reads the file: TorchScript is refused unless trusted; ``.npz`` goes to open_clip's big_vision reader
    (``numpy.load``, no pickles); anything else through :func:`read_state_dict_file`.
    """
    import open_clip

    if is_torchscript(path):
        return load_torchscript(name, path, trust_torchscript=trust_torchscript)
    where = f"CLIP {name!r}: weights file {str(path)!r}"
    if path.suffix in (".npz", ".npy"):
        return _create(name, repr(str(path)), "check that the file holds big_vision weights of this model",
                       pretrained=str(path), force_preprocess_cfg=force_preprocess_cfg or {}), config
    state = read_state_dict_file(path, f"CLIP {name!r}: weights file")
    if "openai" in path.name.lower() and not config.get("quick_gelu"):
        _quickgelu_hint(name, f"{path.name!r} looks like OpenAI weights, which use QuickGELU")
    model = open_clip.create_model(name, pretrained=None, device="cpu", pretrained_text=False,
                                   force_preprocess_cfg=force_preprocess_cfg or {})
    load_state_into(model, state, where)
    return model, config


def unknown_model_message(name: str, known: list[str]) -> str:
    """``unknown CLIP model 'X'; did you mean A, B?`` plus the forms that are accepted."""
    close = difflib.get_close_matches(name, list(known) + list(BUILTIN_NAMES), n=4, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return (f"unknown CLIP model {name!r}{hint} Expected an open_clip model name (open_clip.list_models(), e.g. "
            f"'ViT-B-32-quickgelu'), 'hf-hub:org/repo', 'local-dir:/folder', or one of {', '.join(BUILTIN_NAMES)}")


def _wrap(model: nn.Module, *, name: str, tokenizer_name: str, config: Optional[dict]) -> LoadedClip:
    import open_clip

    pp = open_clip.get_model_preprocess_cfg(model) or {}
    try:
        tokenizer = open_clip.get_tokenizer(tokenizer_name)
    except Exception as exc:  # noqa: BLE001 - HF tokenizers may need the network
        raise ClipLoadError(f"CLIP {name!r}: cannot build the tokenizer ({type(exc).__name__}: {exc}). This "
                            f"model's tokenizer comes from the Hugging Face Hub: populate the Hugging Face cache "
                            f"(then HF_HUB_OFFLINE=1 works), or use a model with CLIP's BPE tokenizer") from None
    return LoadedClip(model=model, tokenizer=tokenizer, name=name, mean=tuple(pp.get("mean", OPENAI_MEAN)),
                      std=tuple(pp.get("std", OPENAI_STD)), config=config, tokenizer_name=tokenizer_name)


def _create(name: str, label: str, advice: str, **kwargs) -> nn.Module:
    """``open_clip.create_model`` (which reads files with ``weights_only=True``); any failure is one line."""
    import open_clip

    try:
        return open_clip.create_model(name, device="cpu", **kwargs)
    except ClipLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - network, checksum, pickle, shape: all become one clear message
        text = str(exc)
        if "weights_only" in text or "Weights only" in text or "Unpickl" in text:
            msg = f"{type(exc).__name__}: {weights_only_reason(exc)}"
            advice = ("the weights file is not a plain state dict loadable with torch.load(weights_only=True), which "
                      "zsgm never bypasses as that can run code from the file; re-save its state dict (or convert "
                      "it to .safetensors) on a machine you trust")
        else:
            msg = f"{type(exc).__name__}: {one_line(text, 400)}"
        raise ClipLoadError(f"cannot load CLIP {label}: {msg}. {advice}") from None


def _load_schema(source: str, offline: bool) -> LoadedClip:
    """An ``hf-hub:org/repo`` or ``local-dir:/folder`` model (config and weights from the repo or folder).

    For ``hf-hub:`` a quick probe asks the Hub first; when it cannot be reached the repo is read from the
    Hugging Face cache only, and fails at once if it is not there.
    """
    import open_clip

    hub = source.startswith("hf-hub:")
    if hub:
        advice = ("Without network access, download the repo's open_clip_config.json and weights file on a machine "
                  "that has it into one folder and use name='local-dir:/that/folder'; or populate the Hugging Face "
                  "cache and set HF_HUB_OFFLINE=1")
        reason = None if offline else hub_unreachable_reason(source[len("hf-hub:"):], "open_clip_config.json")
    else:
        folder = Path(source[len("local-dir:"):]).expanduser()
        if not folder.is_dir():
            state = "is a file, not a folder (pass it as pretrained with its open_clip model name)" \
                if folder.exists() else "does not exist"
            raise ClipLoadError(f"CLIP {source!r}: folder {str(folder)!r} {state}")
        if not (folder / "open_clip_config.json").is_file():
            raise ClipLoadError(f"CLIP {source!r}: folder {str(folder)!r} has no open_clip_config.json (it needs "
                                f"that file, with model_cfg, and a weights file)")
        advice, reason = "The folder needs open_clip_config.json (with model_cfg) and a weights file", None
    with hub_offline_switch(reason is not None):
        try:
            model = _create(source, repr(source), advice, require_pretrained=True, pretrained_text=False)
        except ClipLoadError as exc:
            if reason is None:
                raise
            raise ClipLoadError(f"cannot load CLIP {source!r}: the Hugging Face Hub cannot be reached ({reason}) "
                                f"and the repo is not in the local Hugging Face cache. {advice}") from None
        try:
            config = open_clip.get_model_config(source)
        except Exception:  # noqa: BLE001 - the config is only needed for saving
            config = None
        return _wrap(model, name=source, tokenizer_name=source, config=config)


def _load_tag(name: str, pretrained: str, tag_cfg: dict, config: dict, *, offline: bool,
              trust_torchscript: bool) -> LoadedClip:
    """Model ``name`` with the weights of open_clip tag ``pretrained``: from the caches without any network when
    they hold it, else downloaded after a quick probe of the Hub (a failed probe fails at once, no retries)."""
    label = f"{name!r} with pretrained={pretrained!r}"
    if tag_cfg.get("quick_gelu") and not config.get("quick_gelu"):
        _quickgelu_hint(name, f"the {pretrained!r} weights were trained with QuickGELU")
    path = cached_tag_file(tag_cfg)
    if path is not None:
        pp = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg}
        model, config = _model_from_file(name, Path(path), config, trust_torchscript=trust_torchscript,
                                         force_preprocess_cfg=pp)
        return _wrap(model, name=name, tokenizer_name=name, config=config)
    if offline:
        raise ClipLoadError(f"cannot load CLIP {label}: HF_HUB_OFFLINE is set and the weights are not in the local "
                            f"cache (looked in the Hugging Face cache and ~/.cache/clip). "
                            f"{offline_advice(name, tag_cfg)}")
    if tag_cfg.get("hf_hub"):
        reason = hub_unreachable_reason(*split_hub(tag_cfg["hf_hub"]))
        if reason is not None:
            raise ClipLoadError(f"cannot load CLIP {label}: the weights are not in the local cache and the Hugging "
                                f"Face Hub cannot be reached ({reason}). {offline_advice(name, tag_cfg)}")
    model = _create(name, label, offline_advice(name, tag_cfg), pretrained=pretrained)
    return _wrap(model, name=name, tokenizer_name=name, config=config)


def load_open_clip(name: str, pretrained: Optional[str], *, trust_torchscript: bool = False) -> LoadedClip:
    """An open_clip model by name, with a tag, a local file, ``hf-hub:``/``local-dir:`` or random weights.

    Args:
        name: open_clip model name, ``hf-hub:org/repo`` or ``local-dir:/folder``.
        pretrained: a tag, a local weights file, ``hf-hub:``/``local-dir:``, or None (random init).
        trust_torchscript: allow a TorchScript archive (``pretrained``) to run its code; refused otherwise.

    Raises:
        ClipLoadError: unknown name (with close matches), unknown tag, missing/folder/empty/corrupt file, unsafe
            pickle, untrusted TorchScript, offline or unreachable Hub without a cached copy, download failure, or
            weights that do not fit; each message is one line that says what to do.
    """
    if name in ("hf-hub", "local-dir") and pretrained:  # "--clip hf-hub:org/repo" split at the first colon
        name, pretrained = f"{name}:{pretrained}", None
    offline = hf_offline_requested()
    with hub_offline_switch(offline):
        import open_clip

        name_schema, pre_schema = name.startswith(SCHEMA_PREFIXES), (pretrained or "").startswith(SCHEMA_PREFIXES)
        if name_schema or pre_schema:
            if name_schema and pretrained and pretrained != name:
                raise ClipLoadError(f"CLIP {name!r}: pretrained={pretrained!r} cannot be combined with an "
                                    f"'{name.split(':')[0]}:' name (the name already says where the weights are)")
            return _load_schema(name if name_schema else pretrained, offline)

        known = open_clip.list_models()
        if name not in known:
            raise ClipLoadError(unknown_model_message(name, known))
        config = open_clip.get_model_config(name)
        if pretrained is None:
            label = f"{name!r} with pretrained=None"
            return _wrap(_create(name, label, ""), name=name, tokenizer_name=name, config=config)

        if not pretrained.strip():
            raise ClipLoadError(f"CLIP {name!r}: pretrained is empty; give a pretrained tag (e.g. 'openai'), a weights "
                                f"file, or no pretrained at all for random weights")
        tag_cfg = open_clip.get_pretrained_cfg(name, pretrained)
        if tag_cfg:
            return _load_tag(name, pretrained, tag_cfg, config, offline=offline, trust_torchscript=trust_torchscript)

        path = Path(pretrained).expanduser()
        if not path.exists():
            tags = open_clip.list_pretrained_tags_by_model(name)
            if len(tags) > 8:
                tags = tags[:8] + [f"... ({len(tags) - 8} more: open_clip.list_pretrained_tags_by_model({name!r}))"]
            if os.sep in pretrained or "/" in pretrained or path.suffix:
                raise ClipLoadError(f"CLIP {name!r}: weights file {pretrained!r} does not exist. Pass the path of "
                                    f"an existing weights file, or one of the pretrained tags of {name}: "
                                    f"{', '.join(tags) or '(none)'}")
            raise ClipLoadError(f"CLIP {name!r}: {pretrained!r} is neither a pretrained tag of {name} (known: "
                                f"{', '.join(tags) or 'none'}) nor an existing file; pass a local file path")
        refuse_unusable_file(path, f"CLIP {name!r}: weights file")
        if read_clip_file_metadata(path) is not None:
            return read_clip_file(path, expected_name=name)
        model, config = _model_from_file(name, path, config, trust_torchscript=trust_torchscript)
        return _wrap(model, name=name, tokenizer_name=name, config=config)
