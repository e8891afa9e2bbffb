"""Generator checkpoint formats: rosinality ``.pt``, NVIDIA ``.pkl`` (safe), zsgm ``.safetensors``.

The format is detected from the file's content. The architecture is always read from the file, so users
never re-type resolution or channel settings. Nothing loaded from a user file executes code.
"""

from __future__ import annotations

import argparse
import json
import pickle
import zipfile
from pathlib import Path

import torch

from zsgm.generator.arch import GeneratorArch, infer_arch_from_rosinality_state
from zsgm.generator.errors import CheckpointError
from zsgm.generator.names import arch_from_nvidia_kwargs, nvidia_to_rosinality
from zsgm.generator.stylegan2 import Generator
from zsgm.io_utils import atomic_write

FORMAT_TAG = "zsgm-generator"
FORMAT_VERSION = "1"
_OPTIONAL_SUFFIXES = (".kernel",)  # buffers rebuilt from the architecture


def detect_format(path: str | Path) -> str:
    """``"safetensors"``, ``"torch"`` (zip-based torch.save) or ``"pickle"``, from the first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    if len(head) < 8:
        raise CheckpointError(f"{path}: file is empty or truncated ({len(head)} bytes)")
    if head[:2] == b"PK":
        return "torch"
    if head[0] == 0x80:  # pickle protocol marker
        return "pickle"
    header_len = int.from_bytes(head[:8], "little")
    if head[8:9] == b"{" and 0 < header_len < 100_000_000:
        return "safetensors"
    raise CheckpointError(f"{path}: unknown file format (expected a rosinality .pt, an NVIDIA .pkl or a zsgm "
                          f".safetensors; the first bytes are {head[:8]!r})")


def _build(arch: GeneratorArch, state: dict[str, torch.Tensor], *, path, latent_avg=None) -> Generator:
    generator = Generator(arch)
    expected = generator.state_dict()
    missing = [k for k in expected if k not in state and not k.startswith("noises.")
               and not k.endswith(_OPTIONAL_SUFFIXES)]
    if missing:
        raise CheckpointError(f"{path}: missing generator keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    for key, tensor in state.items():
        if key in expected and tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(f"{path}: key {key!r} has shape {tuple(tensor.shape)}, the architecture read "
                                  f"from the file expects {tuple(expected[key].shape)}")
    usable = {k: v for k, v in state.items() if k in expected}
    generator.load_state_dict(usable, strict=False)
    if latent_avg is not None:
        generator.latent_avg = latent_avg.detach().reshape(-1).float().clone()
    return generator.eval()


def _load_rosinality(path) -> tuple[Generator, dict]:
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: refused by the safe loader (it may contain code or unknown classes): "
                              f"{str(exc).splitlines()[0]}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(exc).__name__}: {exc}); "
                              f"the file may be truncated") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a dict with 'g_ema' or 'g', found {type(ckpt).__name__}")
    key = "g_ema" if "g_ema" in ckpt else "g" if "g" in ckpt else None
    if key is None:
        raise CheckpointError(f"{path}: no generator in the checkpoint (expected key 'g_ema' or 'g'; found "
                              f"{sorted(map(str, ckpt))[:8]})")
    state = ckpt[key]
    try:
        arch = infer_arch_from_rosinality_state(state, source=str(path))
    except (KeyError, ValueError) as exc:
        raise CheckpointError(str(exc).strip("'\"")) from None
    generator = _build(arch, state, path=path, latent_avg=ckpt.get("latent_avg"))
    info = {"format": "rosinality", "path": str(path), "key": key,
            "extra": {k: ckpt[k] for k in ("d", "g") if k in ckpt and k != key}}
    return generator, info


def _load_nvidia(path) -> tuple[Generator, dict]:
    from zsgm.generator.nvidia_pkl import read_nvidia_pickle

    nv_state, kwargs, d_state = read_nvidia_pickle(str(path))
    try:
        arch = arch_from_nvidia_kwargs(kwargs)
        state = nvidia_to_rosinality(nv_state, arch)
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: {str(exc).strip(chr(39))}") from None
    generator = _build(arch, state, path=path, latent_avg=nv_state.get("mapping.w_avg"))
    return generator, {"format": "nvidia-pkl", "path": str(path), "extra": {"d": d_state} if d_state else {}}


def _load_zsgm(path) -> tuple[Generator, dict]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    if meta.get("format") != FORMAT_TAG:
        raise CheckpointError(f"{path}: a safetensors file but not a zsgm generator (metadata format "
                              f"{meta.get('format')!r}, expected {FORMAT_TAG!r})")
    try:
        arch = GeneratorArch.from_dict(json.loads(meta["arch"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: bad architecture metadata ({exc})") from None
    latent_avg = state.pop("latent_avg", None)
    return _build(arch, state, path=path, latent_avg=latent_avg), {"format": "zsgm", "path": str(path)}


def load_generator(path: str | Path, *, map_location="cpu") -> tuple[Generator, dict]:
    """Load a generator from any supported file. Returns ``(Generator, info)``.

    Raises:
        CheckpointError: naming the file and what was wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    kind = detect_format(path)
    loader = {"torch": _load_rosinality, "pickle": _load_nvidia, "safetensors": _load_zsgm}[kind]
    if kind == "pickle" and path.suffix == ".pt":
        loader = _load_rosinality  # legacy (non-zip) torch.save files
    generator, info = loader(path)
    return generator.to(map_location), info


def save_generator(generator: Generator, path: str | Path) -> None:
    """zsgm format: safetensors tensors + JSON architecture in the metadata (atomic)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    if generator.latent_avg is not None:
        tensors["latent_avg"] = generator.latent_avg.detach().cpu().reshape(-1).contiguous()
    meta = {"format": FORMAT_TAG, "version": FORMAT_VERSION, "arch": json.dumps(generator.arch.to_dict())}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def export_rosinality(generator: Generator, path: str | Path) -> None:
    """rosinality layout: ``{"g_ema": state_dict, "latent_avg": tensor}`` (atomic)."""
    ckpt = {"g_ema": {k: v.detach().cpu() for k, v in generator.state_dict().items()}}
    if generator.latent_avg is not None:
        ckpt["latent_avg"] = generator.latent_avg.detach().cpu()
    atomic_write(path, lambda tmp: torch.save(ckpt, tmp))


def to_nvidia_state_dict(generator: Generator) -> dict[str, torch.Tensor]:
    """The generator's weights with NVIDIA ``G_ema`` names (for round trips and interop)."""
    from zsgm.generator.names import rosinality_to_nvidia

    state = rosinality_to_nvidia(generator.state_dict(), generator.arch)
    if generator.latent_avg is not None:
        state["mapping.w_avg"] = generator.latent_avg.detach().clone()
    return state


def convert_checkpoint(src: str | Path, dst: str | Path) -> None:
    """Convert ``src`` (any supported format) to ``dst`` chosen by suffix: ``.pt`` or ``.safetensors``."""
    generator, _ = load_generator(src)
    suffix = Path(dst).suffix.lower()
    if suffix == ".pt":
        export_rosinality(generator, dst)
    elif suffix == ".safetensors":
        save_generator(generator, dst)
    else:
        raise CheckpointError(f"{dst}: unsupported output suffix {suffix!r} (use .pt or .safetensors)")


__all__ = ["load_generator", "save_generator", "export_rosinality", "to_nvidia_state_dict", "convert_checkpoint",
           "detect_format", "CheckpointError"]
