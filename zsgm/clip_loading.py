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

Modules (each name below is importable from here too): :mod:`zsgm.clip_loaded` (:class:`LoadedClip`,
:class:`ClipLoadError`), :mod:`zsgm.clip_build` (models from a config, the tiny random CLIP, fitting state dicts),
:mod:`zsgm.clip_files` (reading weights files safely), :mod:`zsgm.clip_zsgm_file` (zsgm CLIP files),
:mod:`zsgm.clip_hub` (offline mode, the Hub probe, the caches), :mod:`zsgm.clip_torchscript` (OpenAI's archives)
and :mod:`zsgm.clip_open_clip` (open_clip names, tags and files: :func:`load_open_clip`).
"""

from __future__ import annotations

from zsgm.clip_build import (
    TINY_RANDOM_CONFIG,
    TINY_RANDOM_SEED,
    build_clip_for_state,
    build_clip_from_config,
    load_tiny_random,
    parse_tiny_seed,
    simple_tokenizer,
    state_mismatch,
)
from zsgm.clip_files import is_safetensors_file, read_state_dict_file, refuse_unusable_file, weights_only_reason
from zsgm.clip_hub import HUB_PROBE_TIMEOUT_S, cached_tag_file, hf_offline_requested, hub_unreachable_reason
from zsgm.clip_loaded import OPENAI_MEAN, OPENAI_STD, ClipLoadError, LoadedClip, one_line
from zsgm.clip_open_clip import BUILTIN_NAMES, SCHEMA_PREFIXES, load_open_clip, unknown_model_message
from zsgm.clip_torchscript import refuse_untrusted_torchscript
from zsgm.clip_zsgm_file import (
    FILE_FORMAT,
    FILE_FORMAT_VERSION,
    read_clip_file,
    read_clip_file_metadata,
    shapes_clip_path,
    write_clip_file,
)

__all__ = [
    "BUILTIN_NAMES", "FILE_FORMAT", "FILE_FORMAT_VERSION", "HUB_PROBE_TIMEOUT_S", "OPENAI_MEAN", "OPENAI_STD",
    "SCHEMA_PREFIXES", "TINY_RANDOM_CONFIG", "TINY_RANDOM_SEED", "ClipLoadError", "LoadedClip",
    "build_clip_for_state", "build_clip_from_config", "cached_tag_file", "hf_offline_requested",
    "hub_unreachable_reason", "is_safetensors_file", "load_open_clip", "load_tiny_random", "one_line",
    "parse_tiny_seed", "read_clip_file", "read_clip_file_metadata", "read_state_dict_file",
    "refuse_unusable_file", "refuse_untrusted_torchscript", "shapes_clip_path", "simple_tokenizer",
    "state_mismatch", "unknown_model_message", "weights_only_reason", "write_clip_file",
]
