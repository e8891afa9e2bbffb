"""Where CLIP weights come from: small built-in models, zsgm CLIP files, and open_clip names/tags/files.

Every loader returns a :class:`LoadedClip` (a bare open_clip model plus what :class:`zsgm.clip.ClipModel`
needs to wrap it); :func:`zsgm.clip.load_clip_model` picks the loader. Nothing here runs at import: open_clip,
huggingface_hub and safetensors are imported inside the functions.

Sources:

- ``"tiny-random"``: a tiny open_clip ``CLIP`` built straight from :data:`TINY_RANDOM_CONFIG` (no change to
  open_clip's model registry), random weights fixed by a seed. For tests and smoke runs.
- zsgm CLIP files: ``.safetensors`` whose metadata holds ``format = "zsgm-clip"``, the open_clip config as JSON
  (``config``), the model ``name``, ``mean``/``std`` (JSON lists) and the ``tokenizer`` ("simple" or an
  open_clip model name). Written by :func:`write_clip_file`. The shapes-world CLIP is such a file, shipped as
  ``zsgm/toy/assets/shapes_clip.safetensors``.
- open_clip: a built-in name ("ViT-B-32") with a pretrained tag ("openai", downloaded by open_clip into its
  caches), a local weights file, or nothing (random init); or an ``hf-hub:org/repo`` / ``local-dir:/folder``
  name (also accepted as ``pretrained``).

Offline use (EVAL.md section 3):

- ``HF_HUB_OFFLINE=1`` is honoured at load time, even when huggingface_hub was imported before the variable was
  set: a tag whose weights are not already cached fails at once with a :class:`ClipLoadError` (no network
  attempt), and open_clip's own Hub calls run with huggingface_hub's offline switch on.
- Local files need no network: ``pretrained="/path/to/open_clip_pytorch_model.bin"`` (or ``.safetensors``).
  State-dict files are read with ``torch.load(weights_only=True)``.
- OpenAI's original TorchScript ``.pt`` files (``ViT-B-32.pt`` ...) cannot be read with ``weights_only=True``.
  zsgm detects TorchScript archives and reads them with ``torch.jit.load`` (TorchScript code and tensors, no
  arbitrary Python pickle) and copies their state dict into the open_clip model; it never falls back to
  ``weights_only=False``. Only load files you trust all the same.
- OpenAI weights were trained with QuickGELU: use the ``*-quickgelu`` names (``ViT-B-32-quickgelu``). zsgm warns
  when a tag's QuickGELU setting differs from the model's, and forces QuickGELU for TorchScript archives (all of
  them are OpenAI's), with a warning naming the ``-quickgelu`` model.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any, Optional

import attrs
import torch
from torch import nn

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
FILE_FORMAT = "zsgm-clip"
FILE_FORMAT_VERSION = "1"
BUILTIN_NAMES = ("tiny-random", "shapes", "local")
SCHEMA_PREFIXES = ("hf-hub:", "local-dir:")

# Tiny CLIP for tests: ViT 32 px, patch 8, width 64, 2 layers; text width 64, 2 layers, context 32.
TINY_RANDOM_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TINY_RANDOM_SEED = 4321


class ClipLoadError(RuntimeError):
    """A CLIP model cannot be loaded; the message names the model, the weights and what to do."""


@attrs.define(kw_only=True)
class LoadedClip:
    """A bare open_clip model and what its wrapper needs.

    Attributes:
        model: the open_clip ``CLIP`` / ``CustomTextCLIP`` (fp32, CPU).
        tokenizer: callable ``list[str] -> LongTensor [T, L]``.
        name: display name.
        mean / std: the model's input normalisation (3 floats each).
        config: the open_clip model config dict (needed to save a zsgm CLIP file), or None if unknown.
        tokenizer_name: "simple" (open_clip's BPE SimpleTokenizer with the config's context length) or the
            open_clip model name whose tokenizer to use.
    """

    model: nn.Module
    tokenizer: Any
    name: str
    mean: tuple[float, ...] = OPENAI_MEAN
    std: tuple[float, ...] = OPENAI_STD
    config: Optional[dict] = None
    tokenizer_name: str = "simple"
    templates: Optional[tuple[str, ...]] = None


# ----------------------------------------------------------------------------------------- building blocks


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

    cfg = copy.deepcopy(config)
    custom = bool(cfg.pop("custom_text", False)) or "hf_model_name" in cfg.get("text_cfg", {})
    cls = CoCa if "multimodal_cfg" in cfg else (CustomTextCLIP if custom else CLIP)
    if "hf_model_name" in cfg.get("text_cfg", {}):
        cfg["text_cfg"]["hf_model_pretrained"] = False  # weights come from the file, never from the Hub
    try:
        return cls(**cfg)
    except (TypeError, KeyError, ValueError) as exc:
        raise ClipLoadError(f"CLIP config does not describe an open_clip model ({type(exc).__name__}: {exc}); "
                            f"expected keys embed_dim, vision_cfg, text_cfg; got {sorted(config)}") from None


def simple_tokenizer(context_length: int):
    """open_clip's BPE tokenizer (its vocabulary ships inside the wheel, so this works offline)."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=int(context_length))


def _tokenizer(tokenizer_name: str, config: Optional[dict]):
    if tokenizer_name == "simple":
        return simple_tokenizer((config or {}).get("text_cfg", {}).get("context_length", 77))
    import open_clip

    return open_clip.get_tokenizer(tokenizer_name)


def _text_context_length(config: dict) -> int:
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


# ----------------------------------------------------------------------------------------- zsgm CLIP files


def shapes_clip_path() -> Path:
    """Where the shapes-world CLIP ships: ``zsgm/toy/assets/shapes_clip.safetensors``."""
    return Path(__file__).parent / "toy" / "assets" / "shapes_clip.safetensors"


def read_clip_file_metadata(path: str | Path) -> Optional[dict]:
    """The safetensors metadata of ``path`` if it is a zsgm CLIP file, else None (never raises)."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception:  # noqa: BLE001 - not a readable safetensors file: not ours
        return None
    return meta if meta.get("format") == FILE_FORMAT else None


def write_clip_file(model: nn.Module, path: str | Path, *, config: dict, name: str, mean, std,
                    tokenizer_name: str = "simple", templates=None) -> None:
    """Write a zsgm CLIP file atomically: ``model.state_dict()`` + config, name, mean/std in the metadata."""
    from safetensors.torch import save_file

    from zsgm.io_utils import atomic_write

    state = model.state_dict()
    tensors, seen = {}, {}
    for key, value in state.items():  # safetensors refuses shared storage: store each tensor once, by copy
        value = value.detach().cpu()
        ptr = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape))
        tensors[key] = value.clone().contiguous() if ptr in seen else value.contiguous()
        seen[ptr] = key
    meta = {"format": FILE_FORMAT, "format_version": FILE_FORMAT_VERSION, "name": str(name),
            "config": json.dumps(config, sort_keys=True), "mean": json.dumps([float(v) for v in mean]),
            "std": json.dumps([float(v) for v in std]), "tokenizer": tokenizer_name}
    if templates:
        meta["templates"] = json.dumps(list(templates))  # the phrasings the model was trained on
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def read_clip_file(path: str | Path, *, expected_name: Optional[str] = None) -> LoadedClip:
    """Load a zsgm CLIP file.

    Args:
        path: the ``.safetensors`` file.
        expected_name: if given (and not "local"), the name stored in the file must match.

    Raises:
        ClipLoadError: missing file, not a zsgm CLIP file, name mismatch, or weights that do not fit the config.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ClipLoadError(f"CLIP weights file {str(path)!r} does not exist; pass pretrained = the path of a "
                            f"zsgm CLIP .safetensors file (written by zsgm.clip.save_clip_model)")
    meta = read_clip_file_metadata(path)
    if meta is None:
        raise ClipLoadError(f"CLIP weights file {str(path)!r} is not a zsgm CLIP file (expected a .safetensors "
                            f"file with metadata format = {FILE_FORMAT!r}); for open_clip weights give the "
                            f"open_clip model name (e.g. name='ViT-B-32-quickgelu') with pretrained = this file")
    try:
        config = json.loads(meta["config"])
        mean = tuple(json.loads(meta.get("mean") or "null") or OPENAI_MEAN)
        std = tuple(json.loads(meta.get("std") or "null") or OPENAI_STD)
    except (KeyError, json.JSONDecodeError) as exc:
        raise ClipLoadError(f"CLIP weights file {str(path)!r}: broken metadata ({type(exc).__name__}: {exc})") \
            from None
    stored = meta.get("name", path.stem)
    if expected_name not in (None, "local", stored):
        raise ClipLoadError(f"CLIP weights file {str(path)!r} holds model {stored!r}, but the spec names "
                            f"{expected_name!r}; use name = {stored!r} or 'local'")
    model = build_clip_from_config(config)
    try:
        model.load_state_dict(load_file(str(path)), strict=True)
    except RuntimeError as exc:
        raise ClipLoadError(f"CLIP weights file {str(path)!r} does not fit its own config: {exc}") from None
    tokenizer_name = meta.get("tokenizer", "simple")
    templates = tuple(json.loads(meta["templates"])) if meta.get("templates") else None
    return LoadedClip(model=model, tokenizer=_tokenizer(tokenizer_name, config), name=stored, mean=mean, std=std,
                      config=config, tokenizer_name=tokenizer_name, templates=templates)


# ----------------------------------------------------------------------------------------- open_clip


def hf_offline_requested() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set to a true value right now."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


@contextlib.contextmanager
def _hub_offline_switch(offline: bool):
    """While loading, make huggingface_hub offline if it was imported before ``HF_HUB_OFFLINE`` was set."""
    import sys

    constants = sys.modules.get("huggingface_hub.constants")
    if not offline or constants is None or getattr(constants, "HF_HUB_OFFLINE", True):
        yield  # not imported yet (it reads the variable on import) or already offline
        return
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = False


def _weights_source(tag_cfg: dict) -> str:
    parts = []
    if tag_cfg.get("hf_hub"):
        parts.append(f"Hugging Face repo {tag_cfg['hf_hub'].rstrip('/')!r}")
    if tag_cfg.get("url"):
        parts.append(f"URL {tag_cfg['url']}")
    return " or ".join(parts) or "its source"


def _offline_advice(name: str, tag_cfg: Optional[dict] = None) -> str:
    source = _weights_source(tag_cfg) if tag_cfg else "the weights"
    return (f"Without network access, download {source} on a machine that has it and pass the file as "
            f"pretrained (ClipModelSpec(name={name!r}, pretrained='/path/to/weights.safetensors'), or "
            f"`--clip {name}:/path/to/weights` on the command line); or populate the Hugging Face cache and set "
            f"HF_HUB_OFFLINE=1")


def _hf_cache_dir() -> Optional[str]:
    return os.environ.get("HF_HUB_CACHE") or None


def cached_tag_file(tag_cfg: dict) -> Optional[str]:
    """The local file of a pretrained tag if it is already in the HF cache or open_clip's URL cache, else None.

    Never touches the network.
    """
    hub = tag_cfg.get("hf_hub", "")
    if hub:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            repo, filename = os.path.split(hub)
            names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
            if filename.endswith(".bin"):
                names.insert(0, filename[:-4].replace("pytorch_model", "model") + ".safetensors")
            for fname in names:
                found = try_to_load_from_cache(repo, fname, cache_dir=_hf_cache_dir())
                if isinstance(found, str) and os.path.isfile(found):
                    return found
    url = tag_cfg.get("url", "")
    if url:
        path = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if path.is_file():
            return str(path)
    return None


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with ``constants.pkl`` and ``code/`` (plain ``torch.save`` has neither)."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as zf:
            return any(n.split("/")[-1] == "constants.pkl" for n in zf.namelist())
    except OSError:
        return False


def _quickgelu_hint(name: str, reason: str) -> None:
    warnings.warn(f"CLIP {name!r}: {reason}; the model's activation is GELU, so features will be off. Use the "
                  f"QuickGELU variant {name + '-quickgelu'!r} instead.", UserWarning, stacklevel=4)


def _load_state_into(model: nn.Module, state: dict) -> None:
    """open_clip's checkpoint fix-ups (3rd-party layouts, custom text towers, position sizes), then strict load."""
    from open_clip.convert import convert_state_dict
    from open_clip.model import convert_to_custom_text_state_dict, resize_pos_embed, resize_text_pos_embed

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
    model.load_state_dict(state, strict=True)


def _load_torchscript(name: str, path: Path):
    """OpenAI's TorchScript ``.pt`` archive -> open_clip model (QuickGELU forced, never ``weights_only=False``)."""
    import open_clip

    config = open_clip.get_model_config(name) or {}
    if not (name.endswith("-quickgelu") or config.get("quick_gelu")):
        warnings.warn(f"CLIP {name!r}: {str(path)!r} is a TorchScript archive (OpenAI's format, trained with "
                      f"QuickGELU); building the model with QuickGELU. Name it {name + '-quickgelu'!r} to say so.",
                      UserWarning, stacklevel=3)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated", category=FutureWarning)
            archive = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - any failure becomes one message
        raise ClipLoadError(f"CLIP {name!r}: cannot read TorchScript archive {str(path)!r} ({type(exc).__name__}: "
                            f"{exc}); pass the open_clip/HF state-dict file instead") from None
    state = {k: v for k, v in archive.state_dict().items()
             if k not in ("input_resolution", "context_length", "vocab_size")}
    model = open_clip.create_model(name, pretrained=None, force_quick_gelu=True, device="cpu")
    persistent = set(model.state_dict())
    transient = {n for n, _ in model.named_buffers()} - persistent  # e.g. attn_mask: traced archives keep it
    state = {k: v for k, v in state.items() if k not in transient}
    try:
        _load_state_into(model, state)
    except Exception as exc:  # noqa: BLE001
        raise ClipLoadError(f"CLIP {name!r}: the TorchScript archive {str(path)!r} does not fit this model "
                            f"({type(exc).__name__}: {str(exc)[:400]}); check the model name") from None
    config["quick_gelu"] = True
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
    import open_clip

    try:
        return open_clip.create_model(name, device="cpu", **kwargs)
    except Exception as exc:  # noqa: BLE001 - network, checksum, pickle, shape: all become one clear message
        msg = f"{type(exc).__name__}: {str(exc)[:600]}"
        if "weights_only" in msg or "Unpickl" in msg:
            advice = ("the file is not a plain state dict loadable with torch.load(weights_only=True); re-save "
                      "its state dict (or convert it to .safetensors) on a machine you trust")
        raise ClipLoadError(f"cannot load CLIP {label}: {msg}. {advice}") from None


def load_open_clip(name: str, pretrained: Optional[str]) -> LoadedClip:
    """An open_clip model by name, with a tag, a local file, ``hf-hub:``/``local-dir:`` or random weights.

    Raises:
        ClipLoadError: unknown name (with close matches), unknown tag, missing file, offline without a cached
            copy, download failure, or weights that do not fit; each message says what to do.
    """
    if name in ("hf-hub", "local-dir") and pretrained:  # "--clip hf-hub:org/repo" split at the first colon
        name, pretrained = f"{name}:{pretrained}", None
    offline = hf_offline_requested()
    with _hub_offline_switch(offline):
        import open_clip

        name_schema, pre_schema = name.startswith(SCHEMA_PREFIXES), (pretrained or "").startswith(SCHEMA_PREFIXES)
        if name_schema or pre_schema:
            if name_schema and pretrained and pretrained != name:
                raise ClipLoadError(f"CLIP {name!r}: pretrained={pretrained!r} cannot be combined with an "
                                    f"'{name.split(':')[0]}:' name (the name already says where the weights are)")
            source = name if name_schema else pretrained
            advice = (f"Without network access, download the repo's open_clip_config.json and weights file on a "
                      f"machine that has it into one folder and use name='local-dir:/that/folder'; or populate the "
                      f"Hugging Face cache and set HF_HUB_OFFLINE=1") if source.startswith("hf-hub:") else \
                "The folder needs open_clip_config.json (with model_cfg) and a weights file"
            model = _create(source, repr(source), advice, require_pretrained=True)
            try:
                config = open_clip.get_model_config(source)
            except Exception:  # noqa: BLE001 - the config is only needed for saving
                config = None
            return _wrap(model, name=source, tokenizer_name=source, config=config)

        known = open_clip.list_models()
        if name not in known:
            raise ClipLoadError(unknown_model_message(name, known))
        config = open_clip.get_model_config(name)
        label = f"{name!r} with pretrained={pretrained!r}"
        if pretrained is None:
            return _wrap(_create(name, label, ""), name=name, tokenizer_name=name, config=config)

        tag_cfg = open_clip.get_pretrained_cfg(name, pretrained)
        if tag_cfg:
            if tag_cfg.get("quick_gelu") and not config.get("quick_gelu"):
                _quickgelu_hint(name, f"the {pretrained!r} weights were trained with QuickGELU")
            if offline:
                path = cached_tag_file(tag_cfg)
                if path is None:
                    raise ClipLoadError(
                        f"cannot load CLIP {label}: HF_HUB_OFFLINE is set and the weights are not in the local "
                        f"cache (looked in the Hugging Face cache and ~/.cache/clip). {_offline_advice(name, tag_cfg)}")
                pp = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg}
                model = _create(name, label, _offline_advice(name, tag_cfg), pretrained=path, force_preprocess_cfg=pp)
            else:
                model = _create(name, label, _offline_advice(name, tag_cfg), pretrained=pretrained)
            return _wrap(model, name=name, tokenizer_name=name, config=config)

        path = Path(pretrained).expanduser()
        if not path.is_file():
            tags = open_clip.list_pretrained_tags_by_model(name)
            if len(tags) > 8:
                tags = tags[:8] + [f"... ({len(tags) - 8} more: open_clip.list_pretrained_tags_by_model({name!r}))"]
            if os.sep in pretrained or "/" in pretrained or path.suffix:
                raise ClipLoadError(f"CLIP {name!r}: weights file {pretrained!r} does not exist. Pass the path of "
                                    f"an existing weights file, or one of the pretrained tags of {name}: "
                                    f"{', '.join(tags) or '(none)'}")
            raise ClipLoadError(f"CLIP {name!r}: {pretrained!r} is neither a pretrained tag of {name} (known: "
                                f"{', '.join(tags) or 'none'}) nor an existing file; pass a local file path")
        if read_clip_file_metadata(path) is not None:
            return read_clip_file(path, expected_name=name)
        if _is_torchscript(path):
            model, config = _load_torchscript(name, path)
            return _wrap(model, name=name, tokenizer_name=name, config=config)
        if "openai" in path.name.lower() and not config.get("quick_gelu"):
            _quickgelu_hint(name, f"{path.name!r} looks like OpenAI weights, which use QuickGELU")
        model = _create(name, label, "check that the file holds weights of this model", pretrained=str(path))
        return _wrap(model, name=name, tokenizer_name=name, config=config)
