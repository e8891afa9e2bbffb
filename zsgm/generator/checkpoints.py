"""Generator checkpoint formats: rosinality ``.pt``, NVIDIA ``.pkl`` (safe), zsgm ``.safetensors``.

The format is detected from the file's content (not its suffix). The architecture is always read from the
file, so users never re-type resolution or channel settings; it is bounded (:class:`GeneratorArch`) and checked
against the file's tensor names and shapes before any generator is allocated, and non-finite weights are refused
(:mod:`zsgm.generator.checks`). Nothing loaded from a user file executes code: torch files go through
``torch.load(weights_only=True)`` (with ``argparse.Namespace`` allow-listed for rosinality ``train.py``
checkpoints), NVIDIA pickles through :mod:`zsgm.generator.nvidia_pkl`. A zsgm run checkpoint
(``checkpoints/last.pt``) is handed to :mod:`zsgm.generator.sources`, which takes its architecture from the run's
source generator. Every failure is a :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path
from typing import Any, Mapping

import torch

from zsgm.generator.arch import GeneratorArch, infer_arch_from_rosinality_state
from zsgm.generator.checks import check_layout, check_values, short
from zsgm.generator.errors import CheckpointError
from zsgm.generator.layout import state_shapes
from zsgm.generator.names import arch_from_nvidia_kwargs, nvidia_to_rosinality, rosinality_to_nvidia, synthesis_kwargs
from zsgm.generator.stylegan2 import Generator
from zsgm.io_utils import atomic_torch_save, atomic_write_bytes

FORMAT_TAG = "zsgm-generator"
FORMAT_VERSION = "1"
RUN_CHECKPOINT_FORMAT = "zsgm-run-checkpoint"  # the tag of a run's checkpoints/last.pt (zsgm.checkpoint.FORMAT)
# torch.save's legacy (non-zip) format: a protocol-2 pickle that starts with torch's magic number.
_TORCH_LEGACY_HEAD = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
# Errors of reading a user's file that are not CheckpointErrors yet (bad values in metadata or kwargs).
_VALUE_ERRORS = (KeyError, ValueError, TypeError, OverflowError, RecursionError)


def detect_format(path: str | Path) -> str:
    """Identify a checkpoint from its first bytes.

    Returns:
        ``"torch"`` (zip-based ``torch.save``), ``"torch-legacy"`` (pre-1.6 ``torch.save``), ``"pickle"``
        (plain pickle: NVIDIA network pickles) or ``"safetensors"``.

    Raises:
        CheckpointError: empty, truncated or unknown files.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    if len(head) < 8:
        raise CheckpointError(f"{path}: file is empty or truncated ({len(head)} bytes)")
    header_len = int.from_bytes(head[:8], "little")  # safetensors: u64 JSON header length, then "{"
    if head[8:9] == b"{" and 0 < header_len < 100_000_000:
        return "safetensors"
    if head[:4] == b"PK\x03\x04":
        return "torch"
    if head[:len(_TORCH_LEGACY_HEAD)] == _TORCH_LEGACY_HEAD:
        return "torch-legacy"
    if head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle PROTO opcode
        return "pickle"
    raise CheckpointError(f"{path}: unknown file format (expected a rosinality .pt, an NVIDIA .pkl or a zsgm "
                          f".safetensors; the first bytes are {head[:8]!r})")


def build_generator(arch: GeneratorArch, state: Mapping[str, Any], *, source: str,
                    latent_avg: torch.Tensor | None = None,
                    origin: str = "the architecture read from the file") -> tuple[Generator, dict]:
    """Check ``state`` (rosinality names) against ``arch``, then build ``Generator(arch)`` and load it.

    Nothing is allocated before the names, shapes, dtypes and values have passed :mod:`zsgm.generator.checks`.

    Args:
        arch: the architecture read from the file.
        state: rosinality-named tensors; ``noises.*`` and ``*.kernel`` buffers may be missing or extra.
        source: the file, for error messages.
        latent_avg: ``[style_dim]`` or ``[1, style_dim]`` mean latent, or None.
        origin: where ``arch`` came from, for messages.

    Returns:
        ``(generator in eval mode, report)`` where report lists ``missing_buffers`` (kept at their
        initial values: the rebuilt filters, random noise constants) and ``ignored_buffers``.

    Raises:
        CheckpointError: missing or unexpected weights, non-tensor or non-float values, wrong shapes, NaN or inf.
    """
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{source}: generator entries that are not tensors: {short(not_tensors)}")
    check_layout(arch, {k: tuple(v.shape) for k, v in state.items()}, source=source, origin=origin)
    expected = state_shapes(arch)
    used = {k: v for k, v in state.items() if k in expected}  # ignored extra buffers are never read
    if latent_avg is not None:
        if not isinstance(latent_avg, torch.Tensor) or latent_avg.numel() != arch.style_dim:
            found = list(latent_avg.shape) if isinstance(latent_avg, torch.Tensor) else type(latent_avg).__name__
            raise CheckpointError(f"{source}: latent_avg should have {arch.style_dim} values, found {found}")
        used["latent_avg"] = latent_avg
    check_values(used, source=source)
    generator = Generator(arch)  # allocated only now
    generator.load_state_dict({k: v for k, v in used.items() if k != "latent_avg"}, strict=False)
    if latent_avg is not None:
        generator.latent_avg = latent_avg.detach().reshape(-1).float().clone()
    report = {"missing_buffers": sorted(k for k in expected if k not in state),
              "ignored_buffers": sorted(k for k in state if k not in expected)}
    return generator.eval(), report


# --------------------------------------------------------------------------------------------- readers


def read_torch_file(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU (``argparse.Namespace`` allowed), errors made clear.

    Raises:
        CheckpointError: the safe loader refused the file, or the file is not a readable torch file.
    """
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: refused by the safe torch loader (the file holds code or classes other "
                              f"than tensors, plain containers and argparse.Namespace): {first}") from None
    except Exception as exc:  # noqa: BLE001 - truncated zips, bad records: one clear error
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(exc).__name__}: {first}); the file "
                              f"may be truncated or damaged") from None


def _load_torch(path: Path) -> tuple[Generator, dict]:
    ckpt = read_torch_file(path)
    if isinstance(ckpt, dict) and ckpt.get("format") == RUN_CHECKPOINT_FORMAT:
        from zsgm.generator.sources import generator_from_run_checkpoint

        return generator_from_run_checkpoint(path, ckpt)
    return _rosinality_generator(path, ckpt)


def _rosinality_generator(path: Path, ckpt: Any) -> tuple[Generator, dict]:
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a dict with key 'g_ema' or 'g', found a {type(ckpt).__name__}")
    key = "g_ema" if "g_ema" in ckpt else "g" if "g" in ckpt else None
    if key is None:
        raise CheckpointError(f"{path}: no generator in the checkpoint (expected key 'g_ema' or 'g'; found "
                              f"{sorted(map(str, ckpt))[:8]})")
    state = ckpt[key]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: {key!r} should be a state dict, found a {type(state).__name__}")
    try:
        arch = infer_arch_from_rosinality_state(state, source=f"{path} [{key}]")
    except _VALUE_ERRORS as exc:
        raise CheckpointError(str(exc) if isinstance(exc, ValueError) else f"{path} [{key}]: {exc!r}") from None
    generator, report = build_generator(arch, state, source=str(path), latent_avg=ckpt.get("latent_avg"))
    extra = {k: ckpt[k] for k in ("g", "d") if k in ckpt and k != key}
    info = {"format": "rosinality", "path": str(path), "key": key, "arch": arch.to_dict(), **report,
            "extra": extra, "args": vars(ckpt["args"]) if isinstance(ckpt.get("args"), argparse.Namespace) else None}
    return generator, info


def _load_nvidia(path: Path) -> tuple[Generator, dict]:
    from zsgm.generator.nvidia_pkl import read_nvidia_pickle

    nv_state, kwargs, d_state = read_nvidia_pickle(str(path))
    try:
        arch = arch_from_nvidia_kwargs(kwargs)
    except _VALUE_ERRORS as exc:
        raise CheckpointError(f"{path}: G_ema init kwargs: {exc}") from None
    try:
        state = nvidia_to_rosinality(nv_state, arch)
    except _VALUE_ERRORS as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    generator, report = build_generator(arch, state, source=str(path), latent_avg=nv_state.get("mapping.w_avg"),
                                        origin=f"the architecture read from G_ema's init kwargs (channels "
                                               f"{list(arch.channels)} at 4..{arch.size}px)")
    synth = synthesis_kwargs(kwargs)
    info = {"format": "nvidia-pkl", "path": str(path), "arch": arch.to_dict(), **report,
            # zsgm runs fp32 without clamp; these record what the network was trained with (OPS.md 1.5)
            "nvidia": {"conv_clamp": synth.get("conv_clamp"), "num_fp16_res": synth.get("num_fp16_res")},
            "extra": {"d": d_state} if d_state is not None else {}}
    return generator, info


def _load_zsgm(path: Path) -> tuple[Generator, dict]:
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # header only: no data read
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, truncated headers
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None
    if meta.get("format") != FORMAT_TAG:
        raise CheckpointError(f"{path}: a safetensors file but not a zsgm generator (metadata format "
                              f"{meta.get('format')!r}, expected {FORMAT_TAG!r})")
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: zsgm generator format version {meta.get('version')!r} is not supported "
                              f"(this zsgm reads version {FORMAT_VERSION!r})")
    if "arch" not in meta:
        raise CheckpointError(f"{path}: the metadata lacks key 'arch' (the generator architecture)")
    try:
        arch = GeneratorArch.from_dict(json.loads(meta["arch"]))
    except _VALUE_ERRORS as exc:
        raise CheckpointError(f"{path}: bad architecture in metadata key 'arch' ({exc})") from None
    avg_shape = shapes.pop("latent_avg", None)
    check_layout(arch, shapes, source=str(path), origin="the architecture in metadata key 'arch'")
    if avg_shape is not None and avg_shape not in ((arch.style_dim,), (1, arch.style_dim)):
        raise CheckpointError(f"{path}: latent_avg should have {arch.style_dim} values, found {list(avg_shape)}")
    try:
        state = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - data section truncated after a good header
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None
    latent_avg = state.pop("latent_avg", None)
    generator, report = build_generator(arch, state, source=str(path), latent_avg=latent_avg)
    return generator, {"format": "zsgm", "path": str(path), "arch": arch.to_dict(), **report}


_READERS = {"torch": _load_torch, "torch-legacy": _load_torch, "pickle": _load_nvidia, "safetensors": _load_zsgm}


def load_generator(path: str | Path, *, map_location: str | torch.device = "cpu") -> tuple[Generator, dict]:
    """Load a generator from a rosinality ``.pt``, an NVIDIA ``.pkl``, a zsgm ``.safetensors`` or a zsgm run
    checkpoint (``checkpoints/last.pt``, see :func:`zsgm.generator.sources.generator_from_run_checkpoint`).

    Args:
        path: the checkpoint; its format is detected from the content.
        map_location: device for the returned generator.

    Returns:
        ``(Generator in eval mode, info)``; info has ``format``, ``path``, ``arch``, ``missing_buffers``,
        ``ignored_buffers`` and, depending on the format, ``key`` (``g_ema`` or ``g``), ``extra`` (raw
        ``d`` / ``g`` state dicts), ``args``, ``nvidia`` (conv_clamp, num_fp16_res) and, for run checkpoints,
        ``weights`` (``ema`` or ``target``) and ``source`` (the run's source generator).

    Raises:
        CheckpointError: naming the file and what was expected and found.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: a directory, not a checkpoint file (zsgm sample and zsgm convert take a run "
                              f"directory; in Python use zsgm.generator.sources.load_generator_source)")
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a regular file (a generator checkpoint is a file)")
    generator, info = _READERS[detect_format(path)](path)
    return generator.to(map_location), info


# --------------------------------------------------------------------------------------------- writers


def save_generator(generator: Generator, path: str | Path) -> None:
    """Write the zsgm format atomically: safetensors tensors (state dict, plus ``latent_avg`` when set) with
    metadata ``{"format": "zsgm-generator", "version": "1", "arch": <JSON>}``."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    if generator.latent_avg is not None:
        tensors["latent_avg"] = generator.latent_avg.detach().cpu().reshape(-1).contiguous()
    meta = {"format": FORMAT_TAG, "version": FORMAT_VERSION, "arch": json.dumps(generator.arch.to_dict())}
    atomic_write_bytes(path, save(tensors, metadata=meta))  # in memory first: a full disk is a WriteError


def export_rosinality(generator: Generator, path: str | Path) -> None:
    """Write rosinality's layout atomically: ``{"g_ema": state_dict, "latent_avg": [style_dim]}`` (the key is
    omitted when the generator has no ``latent_avg``)."""
    ckpt: dict[str, Any] = {"g_ema": {k: v.detach().cpu() for k, v in generator.state_dict().items()}}
    if generator.latent_avg is not None:
        ckpt["latent_avg"] = generator.latent_avg.detach().cpu().reshape(-1)
    atomic_torch_save(ckpt, path)


def to_nvidia_state_dict(generator: Generator) -> dict[str, torch.Tensor]:
    """The generator's weights with NVIDIA ``G_ema`` names and shapes (OPS.md 3.4, reverse mapping).

    Resample filters are rebuilt as the normalised [4, 4] filter, ``noise_const`` comes from ``noises.*`` and
    ``mapping.w_avg`` from ``latent_avg`` (omitted when None).
    """
    state = rosinality_to_nvidia(generator.state_dict(), generator.arch)
    if generator.latent_avg is not None:
        state["mapping.w_avg"] = generator.latent_avg.detach().reshape(-1).clone()
    return state


__all__ = ["FORMAT_TAG", "FORMAT_VERSION", "build_generator", "detect_format", "export_rosinality",
           "load_generator", "save_generator", "to_nvidia_state_dict"]
