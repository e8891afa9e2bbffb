"""zsgm CLIP files: ``.safetensors`` whose metadata holds ``format = "zsgm-clip"``, the open_clip config as JSON
(``config``), the model ``name``, ``mean``/``std`` (JSON lists), the ``tokenizer`` ("simple" or an open_clip
model name) and optionally the ``templates`` it was trained on. Written by :func:`write_clip_file`, read by
:func:`read_clip_file` (safetensors only: nothing in the file can run). The shapes-world CLIP is such a file,
shipped as ``zsgm/toy/assets/shapes_clip.safetensors``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from torch import nn

from zsgm.clip_build import build_clip_for_state, tokenizer_by_name
from zsgm.clip_files import read_state_dict_file, refuse_unusable_file
from zsgm.clip_loaded import OPENAI_MEAN, OPENAI_STD, ClipLoadError, LoadedClip, one_line

FILE_FORMAT = "zsgm-clip"
FILE_FORMAT_VERSION = "1"


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
        tokenizer = tokenizer_by_name(tokenizer_name, config)
    except Exception as exc:  # noqa: BLE001
        raise ClipLoadError(f"{where}: cannot build tokenizer {tokenizer_name!r} ({type(exc).__name__}: "
                            f"{one_line(exc, 200)})") from None
    return LoadedClip(model=model, tokenizer=tokenizer, name=stored, mean=mean, std=std,
                      config=config, tokenizer_name=tokenizer_name, templates=templates)
