"""OpenAI's original TorchScript ``.pt`` CLIP archives (``ViT-B-32.pt`` ...): recognised without reading them,
refused unless the user trusts the file, and otherwise copied into an open_clip model.

``torch.jit.load`` runs TorchScript code stored in the file, so zsgm refuses an archive unless the spec says the
user trusts it (``ClipModelSpec.trust_torchscript``, recipe field ``clip.models[i].trust_torchscript = true``).
It never falls back to ``torch.load(weights_only=False)``. All archives are OpenAI's, trained with QuickGELU,
so the model is built with QuickGELU (with a warning naming the ``-quickgelu`` model when the name lacks it).
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import torch

from zsgm.clip_build import load_state_into
from zsgm.clip_loaded import ClipLoadError, one_line

def is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with ``constants.pkl`` and ``code/`` (plain ``torch.save`` has neither)."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as zf:
            return any(n.split("/")[-1] == "constants.pkl" for n in zf.namelist())
    except OSError:
        return False


def refuse_untrusted_torchscript(name: str, path: Path) -> None:
    """The one line that refuses a TorchScript archive the user has not said they trust."""
    raise ClipLoadError(
        f"CLIP {name!r}: {str(path)!r} is a TorchScript archive, and loading one runs code stored in the file; "
        f"refused. If you trust this file, set trust_torchscript = true in its [[clip.models]] entry of the recipe "
        f"(clip.models[i].trust_torchscript; ClipModelSpec(trust_torchscript=True) in Python), or convert it to "
        f".safetensors on a machine you trust")


def load_torchscript(name: str, path: Path, *, trust_torchscript: bool):
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
    load_state_into(model, state, f"CLIP {name!r}: the TorchScript archive {str(path)!r}")
    config["quick_gelu"] = True
    return model, config
