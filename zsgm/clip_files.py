"""Weights files read safely: zsgm reads local files itself and never runs code stored in them.

``.safetensors`` is read with safetensors, anything else with ``torch.load(weights_only=True)`` (a pickle that
would build other objects, e.g. call ``os.system``, is refused). Every failure (missing, a folder, empty,
unreadable, corrupt, no state dict) is one :class:`ClipLoadError` line naming the file.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Mapping

import torch

from zsgm.clip_loaded import ClipLoadError, one_line


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
