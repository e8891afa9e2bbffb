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

- A pretrained tag whose weights are already cached (Hugging Face cache or ``~/.cache/clip``) loads from the cache
  without any network. Otherwise one quick probe (:data:`HUB_PROBE_TIMEOUT_S`, no retries) asks the Hub first:
  when it cannot be reached, the load fails at once with a :class:`ClipLoadError` instead of sitting through
  huggingface_hub's retries (about a minute), and ``hf-hub:`` repos are read from the cache only.
- ``HF_HUB_OFFLINE=1`` is honoured at load time, even when huggingface_hub was imported before the variable was
  set: a tag whose weights are not already cached fails at once with a :class:`ClipLoadError` (no network
  attempt), and open_clip's own Hub calls run with huggingface_hub's offline switch on.
- Local files need no network: ``pretrained="/path/to/open_clip_pytorch_model.bin"`` (or ``.safetensors``).

Files (every failure is one :class:`ClipLoadError` line naming the file: missing, a folder, empty, unreadable,
corrupt, no state dict, weights that do not fit, NaN/inf weights):

- Local files are read by zsgm itself, never by code from the file: ``.safetensors`` with safetensors, anything
  else with ``torch.load(weights_only=True)`` (a pickle that would build other objects, e.g. call ``os.system``,
  is refused with one line); ``.npz`` (big_vision) with ``numpy.load(allow_pickle=False)``.
- OpenAI's original TorchScript ``.pt`` files (``ViT-B-32.pt`` ...) cannot be read that way: ``torch.jit.load``
  runs TorchScript code stored in the file. zsgm refuses them unless the spec says the user trusts the file
  (``ClipModelSpec.trust_torchscript``, recipe field ``clip.models[i].trust_torchscript = true``); then it copies
  their state dict into the open_clip model. It never falls back to ``weights_only=False``.
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
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any, Mapping, Optional

import attrs
import torch
from torch import nn

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
FILE_FORMAT = "zsgm-clip"
FILE_FORMAT_VERSION = "1"
BUILTIN_NAMES = ("tiny-random", "shapes", "local")
SCHEMA_PREFIXES = ("hf-hub:", "local-dir:")
HUB_PROBE_TIMEOUT_S = 5.0  # one HEAD request to the Hub before a download; no retries

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


# ----------------------------------------------------------------------------------------- local files, safely


def one_line(text: object, limit: int = 400) -> str:
    """``text`` on one line (torch's messages span several) and at most ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def refuse_unusable_file(path: Path, what: str) -> None:
    """One clear line for a weights path that is missing, a folder, unreadable or empty.

    Args:
        path: the user's path.
        what: how the message starts, e.g. ``"CLIP 'ViT-B-32': weights file"``.
    """
    if path.is_dir():
        raise ClipLoadError(f"{what} {str(path)!r} is a folder, not a file; pass the weights file inside it (for an "
                            f"open_clip folder with open_clip_config.json use name = 'local-dir:{path}')")
    if not path.exists():
        raise ClipLoadError(f"{what} {str(path)!r} does not exist")
    try:
        with open(path, "rb") as fh:
            first = fh.read(1)
    except OSError as exc:
        raise ClipLoadError(f"{what} {str(path)!r} cannot be read ({exc.strerror or type(exc).__name__})") from None
    if not first:
        raise ClipLoadError(f"{what} {str(path)!r} is empty (0 bytes); the download or copy did not finish")


def is_safetensors_file(path: Path) -> bool:
    """safetensors files start with an 8-byte little-endian header size, then the JSON header (``{``)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
        size = path.stat().st_size
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= size - 8


def weights_only_reason(exc: BaseException) -> str:
    """What ``torch.load(weights_only=True)`` objected to, without torch's advice to turn the safety off."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    elif text.startswith("Weights only load failed"):
        parts = [p for p in text.split("\n\n") if p.strip()]
        text = parts[1] if len(parts) >= 3 else ""
    for advice in ("Check the documentation of torch.load", ". Please use", "In PyTorch 2.6, we changed"):
        text = text.split(advice, 1)[0]  # torch's advice ends the reason; part of it says to turn the safety off
    return one_line(text, 200) or type(exc).__name__


def read_state_dict_file(path: Path, what: str) -> dict[str, torch.Tensor]:
    """The tensors of a state-dict file, read without running anything stored in it.

    ``.safetensors`` (by content or suffix) is read with safetensors; anything else with
    ``torch.load(weights_only=True)``, which refuses pickles that would build other objects. Accepts
    ``{key: tensor}`` or ``{"state_dict": {key: tensor}, ...}`` (open_clip training checkpoints).

    Args:
        path: an existing file.
        what: how messages start, e.g. ``"CLIP 'ViT-B-32': weights file"``.

    Raises:
        ClipLoadError: unreadable or corrupt file, a pickle ``weights_only`` refuses, or no state dict inside.
    """
    where = f"{what} {str(path)!r}"
    if path.suffix == ".safetensors" or is_safetensors_file(path):
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - any failure becomes one line
            raise ClipLoadError(f"{where} is not a readable .safetensors file ({type(exc).__name__}: "
                                f"{one_line(exc, 200)})") from None
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch's pickle-protocol notes
                state = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if "GLOBAL" not in str(exc):  # unsupported opcodes: random bytes, or a plain Python pickle
                raise ClipLoadError(f"{where} is not a PyTorch weights file that torch.load(weights_only=True) can "
                                    f"read ({weights_only_reason(exc)}): a corrupt file, or a plain Python pickle, "
                                    f"which zsgm never unpickles as that can run code from the file") from None
            raise ClipLoadError(f"{where} holds Python objects that torch.load(weights_only=True) refuses to build "
                                f"({weights_only_reason(exc)}); zsgm never unpickles those, as that can run code "
                                f"from the file. Re-save its state dict (or convert it to .safetensors) on a machine "
                                f"you trust") from None
        except Exception as exc:  # noqa: BLE001 - corrupt zip, truncated file, TorchScript, ...
            raise ClipLoadError(f"{where} cannot be read as PyTorch or safetensors weights ({type(exc).__name__}: "
                                f"{weights_only_reason(exc)}); is it corrupt or truncated?") from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not (isinstance(state, Mapping) and state and
            all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())):
        found = type(state).__name__ if not isinstance(state, Mapping) else \
            f"a mapping with keys {', '.join(map(repr, list(state)[:5])) or '(none)'}"
        raise ClipLoadError(f"{where} does not hold a state dict (parameter names -> tensors, optionally under "
                            f"'state_dict'); found {found}")
    return dict(state)


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


def _metadata_floats(meta: dict, key: str, default: tuple[float, ...], where: str) -> tuple[float, ...]:
    """``mean`` / ``std`` from the metadata: a JSON list of 3 finite numbers (std > 0), or the OpenAI default."""
    value = json.loads(meta.get(key) or "null") or default
    ok = isinstance(value, (list, tuple)) and len(value) == 3 and \
        all(isinstance(v, (int, float)) and not isinstance(v, bool) and float("-inf") < v < float("inf")
            for v in value) and (key != "std" or all(v > 0 for v in value))
    if not ok:
        raise ClipLoadError(f"{where}: broken metadata: {key} must be a list of 3 finite numbers"
                            f"{' > 0' if key == 'std' else ''}, got {one_line(meta.get(key), 80)}")
    return tuple(float(v) for v in value)


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


def read_clip_file(path: str | Path, *, expected_name: Optional[str] = None) -> LoadedClip:
    """Load a zsgm CLIP file (safetensors only: nothing in it can run).

    Args:
        path: the ``.safetensors`` file.
        expected_name: if given (and not "local"), the name stored in the file must match.

    Raises:
        ClipLoadError: missing, folder, unreadable or empty file, not a zsgm CLIP file, broken metadata, name
            mismatch, or weights that do not fit the config.
    """
    path = Path(path)
    where = f"CLIP weights file {str(path)!r}"
    if not path.exists():
        raise ClipLoadError(f"{where} does not exist; pass pretrained = the path of a zsgm CLIP .safetensors file "
                            f"(written by zsgm.clip.save_clip_model)")
    refuse_unusable_file(path, "CLIP weights file")
    meta = read_clip_file_metadata(path)
    if meta is None:
        raise ClipLoadError(f"{where} is not a zsgm CLIP file (expected a .safetensors file with metadata format = "
                            f"{FILE_FORMAT!r}); for open_clip weights give the open_clip model name (e.g. "
                            f"name='ViT-B-32-quickgelu') with pretrained = this file")
    try:
        config = json.loads(meta["config"])
        mean = _metadata_floats(meta, "mean", OPENAI_MEAN, where)
        std = _metadata_floats(meta, "std", OPENAI_STD, where)
        templates = tuple(json.loads(meta["templates"])) if meta.get("templates") else None
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ClipLoadError(f"{where}: broken metadata ({type(exc).__name__}: {one_line(exc, 200)})") from None
    if not isinstance(config, dict):
        raise ClipLoadError(f"{where}: broken metadata: config must be a JSON object, got {type(config).__name__}")
    if templates is not None and not all(isinstance(t, str) for t in templates):
        raise ClipLoadError(f"{where}: broken metadata: templates must be a list of strings")
    stored = meta.get("name", path.stem)
    if expected_name not in (None, "local", stored):
        raise ClipLoadError(f"{where} holds model {stored!r}, but the spec names {expected_name!r}; use "
                            f"name = {stored!r} or 'local'")
    tokenizer_name = meta.get("tokenizer", "simple")
    if tokenizer_name != "simple":
        import open_clip

        if tokenizer_name not in open_clip.list_models():  # never a Hub name: a file must not start downloads
            raise ClipLoadError(f"{where}: broken metadata: tokenizer must be 'simple' or an open_clip model name, "
                                f"got {one_line(tokenizer_name, 80)!r}")
    model = build_clip_for_state(config, read_state_dict_file(path, "CLIP weights file"), where)
    try:
        tokenizer = _tokenizer(tokenizer_name, config)
    except Exception as exc:  # noqa: BLE001
        raise ClipLoadError(f"{where}: cannot build tokenizer {tokenizer_name!r} ({type(exc).__name__}: "
                            f"{one_line(exc, 200)})") from None
    return LoadedClip(model=model, tokenizer=tokenizer, name=stored, mean=mean, std=std,
                      config=config, tokenizer_name=tokenizer_name, templates=templates)


# ----------------------------------------------------------------------------------------- open_clip


def hf_offline_requested() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set to a true value right now."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


@contextlib.contextmanager
def _hub_offline_switch(offline: bool):
    """While loading, make huggingface_hub cache-only (its ``HF_HUB_OFFLINE``, read at each request) if asked."""
    try:
        from huggingface_hub import constants
    except ImportError:
        constants = None
    if not offline or constants is None or getattr(constants, "HF_HUB_OFFLINE", True):
        yield  # nothing to switch, or already offline
        return
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = False


def hub_unreachable_reason(repo_id: str, filename: str) -> Optional[str]:
    """``None`` when the Hugging Face Hub answers, else why it cannot be reached.

    One HEAD request for ``repo_id/filename`` with a :data:`HUB_PROBE_TIMEOUT_S` timeout and no retries. Any HTTP
    answer (200, 404, 401, 5xx), or a connection that is only slow to answer (read timeout), counts as reachable: the
    real download then reports (and retries) the rest. Only a network failure (no DNS, refused connection, connect
    timeout, proxy error) counts as unreachable.
    """
    try:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url
        from huggingface_hub.errors import HfHubHTTPError
    except ImportError:
        return None  # no huggingface_hub: open_clip downloads from plain URLs (no retries)
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename), timeout=HUB_PROBE_TIMEOUT_S)
    except HfHubHTTPError:
        return None
    except Exception as exc:  # noqa: BLE001 - httpx/requests network errors differ between versions
        if type(exc).__name__ == "ReadTimeout":
            return None  # connected, only slow to answer: let the download (and its retries) go on
        return f"{type(exc).__name__}: {one_line(exc, 160)}"
    return None


def _split_hub(hub: str) -> tuple[str, str]:
    """open_clip's ``hf_hub`` field -> (repo id, file): ``"org/repo/"`` names open_clip's default weights file."""
    if hub.endswith("/"):
        return hub.rstrip("/"), "open_clip_pytorch_model.bin"
    repo, filename = os.path.split(hub)
    return repo, filename


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


def _load_state_into(model: nn.Module, state: dict, where: str) -> None:
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


def refuse_untrusted_torchscript(name: str, path: Path) -> None:
    """The one line that refuses a TorchScript archive the user has not said they trust."""
    raise ClipLoadError(
        f"CLIP {name!r}: {str(path)!r} is a TorchScript archive, and loading one runs code stored in the file; "
        f"refused. If you trust this file, set trust_torchscript = true in its [[clip.models]] entry of the recipe "
        f"(clip.models[i].trust_torchscript; ClipModelSpec(trust_torchscript=True) in Python), or convert it to "
        f".safetensors on a machine you trust")


def _load_torchscript(name: str, path: Path, *, trust_torchscript: bool):
    """OpenAI's TorchScript ``.pt`` archive -> open_clip model (QuickGELU forced, never ``weights_only=False``).

    Refused (before anything reads the archive) unless ``trust_torchscript``: ``torch.jit.load`` runs code
    stored in the file.
    """
    if not trust_torchscript:
        refuse_untrusted_torchscript(name, path)
    import open_clip

    config = open_clip.get_model_config(name) or {}
    if not (name.endswith("-quickgelu") or config.get("quick_gelu")):
        warnings.warn(f"CLIP {name!r}: {str(path)!r} is a TorchScript archive (OpenAI's format, trained with "
                      f"QuickGELU); building the model with QuickGELU. Name it {name + '-quickgelu'!r} to say so.",
                      UserWarning, stacklevel=4)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated", category=FutureWarning)
            archive = torch.jit.load(str(path), map_location="cpu")
        state = {k: v for k, v in archive.state_dict().items()
                 if k not in ("input_resolution", "context_length", "vocab_size")}
    except Exception as exc:  # noqa: BLE001 - any failure becomes one message
        raise ClipLoadError(f"CLIP {name!r}: cannot read TorchScript archive {str(path)!r} ({type(exc).__name__}: "
                            f"{one_line(exc, 200)}); pass the open_clip/HF state-dict file instead") from None
    model = open_clip.create_model(name, pretrained=None, force_quick_gelu=True, device="cpu", pretrained_text=False)
    persistent = set(model.state_dict())
    transient = {n for n, _ in model.named_buffers()} - persistent  # e.g. attn_mask: traced archives keep it
    state = {k: v for k, v in state.items() if k not in transient}
    _load_state_into(model, state, f"CLIP {name!r}: the TorchScript archive {str(path)!r}")
    config["quick_gelu"] = True
    return model, config


def _model_from_file(name: str, path: Path, config: dict, *, trust_torchscript: bool,
                     force_preprocess_cfg: Optional[dict] = None):
    """open_clip model ``name`` holding the weights of the local file ``path``; returns ``(model, config)``.

    Only zsgm reads the file: TorchScript is refused unless trusted; ``.npz`` goes to open_clip's big_vision reader
    (``numpy.load``, no pickles); anything else through :func:`read_state_dict_file`.
    """
    import open_clip

    if _is_torchscript(path):
        return _load_torchscript(name, path, trust_torchscript=trust_torchscript)
    where = f"CLIP {name!r}: weights file {str(path)!r}"
    if path.suffix in (".npz", ".npy"):
        return _create(name, repr(str(path)), "check that the file holds big_vision weights of this model",
                       pretrained=str(path), force_preprocess_cfg=force_preprocess_cfg or {}), config
    state = read_state_dict_file(path, f"CLIP {name!r}: weights file")
    if "openai" in path.name.lower() and not config.get("quick_gelu"):
        _quickgelu_hint(name, f"{path.name!r} looks like OpenAI weights, which use QuickGELU")
    model = open_clip.create_model(name, pretrained=None, device="cpu", pretrained_text=False,
                                   force_preprocess_cfg=force_preprocess_cfg or {})
    _load_state_into(model, state, where)
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
    with _hub_offline_switch(reason is not None):
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
                            f"{_offline_advice(name, tag_cfg)}")
    if tag_cfg.get("hf_hub"):
        reason = hub_unreachable_reason(*_split_hub(tag_cfg["hf_hub"]))
        if reason is not None:
            raise ClipLoadError(f"cannot load CLIP {label}: the weights are not in the local cache and the Hugging "
                                f"Face Hub cannot be reached ({reason}). {_offline_advice(name, tag_cfg)}")
    model = _create(name, label, _offline_advice(name, tag_cfg), pretrained=pretrained)
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
    with _hub_offline_switch(offline):
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
