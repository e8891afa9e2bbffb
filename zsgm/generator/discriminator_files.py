"""Discriminator files: rosinality ``.pt`` (key ``d``), NVIDIA ``.pkl`` (object ``D``), zsgm ``.safetensors``.

The format is detected from the content (:func:`zsgm.generator.checkpoints.detect_format`); nothing in a user
file executes code (``torch.load(weights_only=True)``, NVIDIA pickles through
:mod:`zsgm.generator.nvidia_pkl`). The architecture comes from the file (tensor shapes, NVIDIA init kwargs or
zsgm metadata), is bounded by :class:`DiscriminatorArch` and checked against the tensors before anything is
allocated; non-finite weights are refused. A file that holds no discriminator raises
:class:`DiscriminatorNotFound` (a :class:`CheckpointError`) naming the file and the keys it has.

NVIDIA -> rosinality names (stylegan2-ada-pytorch / stylegan3 ``Discriminator``, ``architecture='resnet'``),
with ``k = log2(size) - log2(r) + 1``:

============================================  =============================================
``b{size}.fromrgb.weight`` / ``.bias``        ``convs.0.0.weight`` / ``convs.0.1.bias``
``b{r}.conv0.weight`` / ``.bias``             ``convs.{k}.conv1.0.weight`` / ``.conv1.1.bias``
``b{r}.conv1.weight`` / ``.bias``             ``convs.{k}.conv2.1.weight`` / ``.conv2.2.bias``
``b{r}.conv1.resample_filter``                ``convs.{k}.conv2.0.kernel`` (same normalised filter)
``b{r}.skip.weight``                          ``convs.{k}.skip.1.weight``
``b{r}.skip.resample_filter``                 ``convs.{k}.skip.0.kernel``
``b4.conv.weight`` / ``.bias``                ``final_conv.0.weight`` / ``final_conv.1.bias``
``b4.fc.*`` / ``b4.out.*``                    ``final_linear.0.*`` / ``final_linear.1.*``
other ``resample_filter`` buffers             unused, dropped
============================================  =============================================

Weights copy unchanged: both use ``weight / sqrt(fan_in)`` at run time, NVIDIA's ``gain = sqrt(0.5)`` on conv1
and skip equals rosinality's ``(conv2 + skip) / sqrt(2)``, its down-sampling conv (pad, blur, stride-2 conv;
for 1x1: blur-and-decimate, then conv) is rosinality's blur-then-stride-2 conv, and NVIDIA's minibatch-std
layer groups samples the same way. zsgm runs fp32 without ``conv_clamp``; ``info["nvidia"]`` records what the
network was trained with.
"""

from __future__ import annotations

import json
import numbers
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from zsgm.generator.checkpoints import detect_format, read_torch_file
from zsgm.generator.checks import short
from zsgm.generator.discriminator import Discriminator, DiscriminatorArch, discriminator_state_shapes
from zsgm.generator.errors import CheckpointError
from zsgm.io_utils import atomic_write_bytes
from zsgm.tensor_checks import nonfinite_names

FORMAT_TAG = "zsgm-discriminator"
FORMAT_VERSION = "1"
_VALUE_ERRORS = (KeyError, ValueError, TypeError, OverflowError, RecursionError)


class DiscriminatorNotFound(CheckpointError):
    """The file is readable but holds no discriminator (the message names the file and the keys found).

    Attributes:
        path: the file.
        keys: its top-level keys (or a type name).
        run_checkpoint: the file is a zsgm run checkpoint (its discriminator is its source generator's).
    """

    def __init__(self, message: str, *, path: str, keys, run_checkpoint: bool = False):
        super().__init__(message)
        self.path, self.keys, self.run_checkpoint = path, keys, run_checkpoint


# --------------------------------------------------------------------------------------------- layout


def infer_discriminator_arch(state: Mapping[str, Any], *, source: str = "state dict",
                             stddev_group: int = 4) -> DiscriminatorArch:
    """Size, channels and ``stddev_feat`` from rosinality-layout tensor shapes (``stddev_group`` is not stored).

    Raises:
        ValueError: naming the missing or oddly shaped key.
    """
    def shape(key: str, ndim: int) -> tuple[int, ...]:
        t = state.get(key)
        if not isinstance(t, torch.Tensor) or t.ndim != ndim:
            found = "missing" if key not in state else (tuple(t.shape) if isinstance(t, torch.Tensor)
                                                        else type(t).__name__)
            raise ValueError(f"{source}: key {key!r} should be a {ndim}-D tensor ({found}); expected a rosinality "
                             f"StyleGAN2 discriminator state dict")
        return tuple(t.shape)

    blocks = sorted({int(k.split(".")[1]) for k in state if k.startswith("convs.") and k.split(".")[1].isdigit()
                     and ".conv2." in k})
    if blocks != list(range(1, len(blocks) + 1)) or not blocks:
        raise ValueError(f"{source}: ResBlocks 'convs.{{k}}.conv2' should run 1..n without gaps, found {blocks}")
    channels = [shape("convs.0.0.weight", 4)[0]]  # C(size), then C(size/2) ... C(4)
    for k in blocks:
        channels.append(shape(f"convs.{k}.conv2.1.weight", 4)[0])
    c4 = channels[-1]
    final_in = shape("final_conv.0.weight", 4)[1]
    try:
        return DiscriminatorArch(size=2 ** (len(blocks) + 2), channels=channels[::-1], stddev_group=stddev_group,
                                 stddev_feat=final_in - c4)
    except ValueError as exc:
        raise ValueError(f"{source}: the architecture read from the tensor shapes is refused: {exc}") from None


def build_discriminator(arch: DiscriminatorArch, state: Mapping[str, Any], *, source: str) -> Discriminator:
    """Check names, shapes, dtypes and values of ``state`` against ``arch``, then build and load it (eval mode).

    ``*.kernel`` buffers may be missing (rebuilt from ``arch.blur_kernel``); every other key must be there with
    its shape. Half-precision tensors are accepted and loaded into the fp32 model.

    Raises:
        CheckpointError: naming the file and the first bad key.
    """
    expected = discriminator_state_shapes(arch)
    missing = [k for k in expected if k not in state and not k.endswith(".kernel")]
    if missing:
        raise CheckpointError(f"{source}: missing discriminator weights {short(missing)} for the {arch.size}px "
                              f"discriminator read from the file")
    unexpected = sorted(k for k in state if k not in expected)
    if unexpected:
        raise CheckpointError(f"{source}: unexpected discriminator entries {short(unexpected)}")
    for key, want in expected.items():
        t = state.get(key)
        if t is None:
            continue
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            what = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
            raise CheckpointError(f"{source}: key {key!r} should be a floating-point tensor, found {what}")
        if tuple(t.shape) != want:
            raise CheckpointError(f"{source}: key {key!r} has shape {list(t.shape)}, the discriminator read from "
                                  f"the file expects {list(want)}")
    bad = nonfinite_names(dict(state))
    if bad:
        raise CheckpointError(f"{source}: {len(bad)} discriminator tensors hold NaN or inf, the first is "
                              f"{bad[0]!r}; the file is damaged or comes from a run that diverged")
    d = Discriminator.from_arch(arch)
    kernel = d.convs[1].conv2[0].kernel
    for key, t in state.items():
        if key.endswith(".kernel") and not torch.allclose(t.float(), kernel, atol=1e-6):
            raise CheckpointError(f"{source}: key {key!r} holds a down-sampling filter other than the blur kernel "
                                  f"{list(arch.blur_kernel)} of the architecture")
    d.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    return d.eval()


# --------------------------------------------------------------------------------------------- NVIDIA names


def _nvidia_pairs(arch: DiscriminatorArch) -> list[tuple[str, str]]:
    """(NVIDIA name, rosinality name) of every discriminator tensor, filters included."""
    pairs = [(f"b{arch.size}.fromrgb.weight", "convs.0.0.weight"), (f"b{arch.size}.fromrgb.bias", "convs.0.1.bias")]
    for k in range(1, arch.log_size - 1):
        r = arch.size >> (k - 1)
        pairs += [(f"b{r}.conv0.weight", f"convs.{k}.conv1.0.weight"), (f"b{r}.conv0.bias", f"convs.{k}.conv1.1.bias"),
                  (f"b{r}.conv1.resample_filter", f"convs.{k}.conv2.0.kernel"),
                  (f"b{r}.conv1.weight", f"convs.{k}.conv2.1.weight"), (f"b{r}.conv1.bias", f"convs.{k}.conv2.2.bias"),
                  (f"b{r}.skip.resample_filter", f"convs.{k}.skip.0.kernel"),
                  (f"b{r}.skip.weight", f"convs.{k}.skip.1.weight")]
    pairs += [("b4.conv.weight", "final_conv.0.weight"), ("b4.conv.bias", "final_conv.1.bias"),
              ("b4.fc.weight", "final_linear.0.weight"), ("b4.fc.bias", "final_linear.0.bias"),
              ("b4.out.weight", "final_linear.1.weight"), ("b4.out.bias", "final_linear.1.bias")]
    return pairs


def nvidia_to_rosinality_d(state: Mapping[str, torch.Tensor], arch: DiscriminatorArch) -> dict[str, torch.Tensor]:
    """Rename an NVIDIA ``D`` state dict to rosinality's layout (table in the module docstring).

    Raises:
        ValueError: an NVIDIA key that has no rosinality counterpart (other than the unused filters).
    """
    pairs = dict(_nvidia_pairs(arch))
    unknown = sorted(k for k in state if k not in pairs and not k.endswith("resample_filter"))
    if unknown:
        raise ValueError(f"discriminator entries with no rosinality counterpart: {short(unknown)} (only the "
                         f"unconditional 'resnet' discriminator is supported)")
    return {pairs[k]: v for k, v in state.items() if k in pairs}


def rosinality_to_nvidia_d(state: Mapping[str, torch.Tensor], arch: DiscriminatorArch) -> dict[str, torch.Tensor]:
    """The reverse of :func:`nvidia_to_rosinality_d` (the filters NVIDIA also keeps elsewhere are not made)."""
    back = {ros: nv for nv, ros in _nvidia_pairs(arch)}
    return {back[k]: v for k, v in state.items() if k in back}


def _int(table: Mapping, key: str, default, *, low: int, high: int) -> int:
    value = table.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= int(value) <= high:
        raise ValueError(f"D init kwarg {key!r} should be an integer in {low}..{high}, found {value!r}")
    return int(value)


def arch_from_nvidia_d_kwargs(kwargs: Mapping) -> DiscriminatorArch:
    """Architecture from ``D._init_kwargs``: ``img_resolution``, ``img_channels``, ``c_dim``, ``architecture``,
    ``channel_base``, ``channel_max``, ``epilogue_kwargs.{mbstd_group_size, mbstd_num_channels}`` (NVIDIA's
    defaults fill absent entries).

    Raises:
        ValueError: naming the kwarg that is missing, mistyped or unsupported.
    """
    if not isinstance(kwargs, Mapping):
        raise ValueError(f"D init kwargs should be a table, found a {type(kwargs).__name__}")
    size = _int(kwargs, "img_resolution", None, low=8, high=4096)
    if size & (size - 1):
        raise ValueError(f"D init kwarg 'img_resolution' = {size} is not a power of two")
    if _int(kwargs, "img_channels", 3, low=1, high=1 << 20) != 3:
        raise ValueError("D init kwarg 'img_channels' is not 3 (RGB discriminators only)")
    if _int(kwargs, "c_dim", 0, low=0, high=1 << 20) != 0:
        raise ValueError("conditional discriminators (D init kwarg 'c_dim' > 0) are not supported")
    if kwargs.get("architecture", "resnet") != "resnet":
        raise ValueError(f"D init kwarg 'architecture' = {kwargs.get('architecture')!r} is not supported (only "
                         f"'resnet', StyleGAN2 config-f)")
    base = _int(kwargs, "channel_base", 32768, low=1, high=1 << 24)
    cmax = _int(kwargs, "channel_max", 512, low=1, high=4096)
    epi = kwargs.get("epilogue_kwargs") or {}
    if not isinstance(epi, Mapping):
        raise ValueError(f"D init kwarg 'epilogue_kwargs' should be a table, found a {type(epi).__name__}")
    group = _int(epi, "mbstd_group_size", 4, low=1, high=1 << 16)
    feat = _int(epi, "mbstd_num_channels", 1, low=1, high=4096)
    channels = [min(base // 2 ** k, cmax) for k in range(2, size.bit_length())]
    return DiscriminatorArch(size=size, channels=channels, stddev_group=group, stddev_feat=feat)


# --------------------------------------------------------------------------------------------- readers


def _not_found(path: Path, keys, what: str, *, run_checkpoint: bool = False) -> DiscriminatorNotFound:
    return DiscriminatorNotFound(f"{path}: no discriminator in the file ({what}; found {keys})", path=str(path),
                                 keys=keys, run_checkpoint=run_checkpoint)


def _load_torch(path: Path) -> tuple[Discriminator, dict]:
    from zsgm.generator.checkpoints import RUN_CHECKPOINT_FORMAT

    ckpt = read_torch_file(path)
    if not isinstance(ckpt, dict):
        raise _not_found(path, type(ckpt).__name__, "expected a rosinality checkpoint dict with key 'd'")
    keys = sorted(map(str, ckpt))[:12]
    if ckpt.get("format") == RUN_CHECKPOINT_FORMAT:
        raise _not_found(path, keys, "a zsgm run checkpoint; its run's source generator holds the discriminator",
                         run_checkpoint=True)
    if "d" not in ckpt:
        raise _not_found(path, keys, "expected key 'd'")
    state = ckpt["d"]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: 'd' should be a state dict, found a {type(state).__name__}")
    try:
        arch = infer_discriminator_arch(state, source=f"{path} [d]")
    except _VALUE_ERRORS as exc:
        raise CheckpointError(str(exc) if isinstance(exc, ValueError) else f"{path} [d]: {exc!r}") from None
    d = build_discriminator(arch, state, source=str(path))
    return d, {"format": "rosinality", "path": str(path), "key": "d", "arch": arch.to_dict()}


def _load_nvidia(path: Path) -> tuple[Discriminator, dict]:
    from zsgm.generator.nvidia_pkl import PersistentStub, flatten_stub, load_pickle_safely

    data = load_pickle_safely(str(path))
    keys = sorted(map(str, data))[:12] if isinstance(data, dict) else type(data).__name__
    if not isinstance(data, dict) or not isinstance(data.get("D"), PersistentStub):
        raise _not_found(path, keys, "expected an NVIDIA network pickle with a network record under 'D'")
    stub = data["D"]
    kwargs = stub.state.get("_init_kwargs") if isinstance(stub.state, dict) else None
    try:
        arch = arch_from_nvidia_d_kwargs(kwargs)
        state = nvidia_to_rosinality_d(flatten_stub(stub), arch)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: 'D': {exc}") from None
    except _VALUE_ERRORS as exc:
        raise CheckpointError(f"{path}: 'D': {exc}") from None
    d = build_discriminator(arch, state, source=f"{path} [D]")
    return d, {"format": "nvidia-pkl", "path": str(path), "arch": arch.to_dict(),
               "nvidia": {"conv_clamp": kwargs.get("conv_clamp"), "num_fp16_res": kwargs.get("num_fp16_res")}}


def _load_zsgm(path: Path) -> tuple[Discriminator, dict]:
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            keys = list(fh.keys())
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, truncated headers
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None
    if meta.get("format") != FORMAT_TAG:
        raise _not_found(path, sorted(keys)[:12], f"a safetensors file with metadata format "
                                                  f"{meta.get('format')!r}, expected {FORMAT_TAG!r}")
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: zsgm discriminator format version {meta.get('version')!r} is not "
                              f"supported (this zsgm reads version {FORMAT_VERSION!r})")
    try:
        arch = DiscriminatorArch.from_dict(json.loads(meta["arch"]))
    except (*_VALUE_ERRORS, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: bad or missing discriminator architecture in metadata key 'arch' "
                              f"({exc})") from None
    expected = discriminator_state_shapes(arch)
    if set(keys) - set(expected):
        raise CheckpointError(f"{path}: unexpected discriminator entries {short(sorted(set(keys) - set(expected)))}")
    try:
        state = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - data section truncated after a good header
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None
    d = build_discriminator(arch, state, source=str(path))
    return d, {"format": "zsgm", "path": str(path), "arch": arch.to_dict(),
               "dtype": str(next(iter(state.values())).dtype).removeprefix("torch.") if state else None}


_READERS = {"torch": _load_torch, "torch-legacy": _load_torch, "pickle": _load_nvidia, "safetensors": _load_zsgm}


def load_discriminator(path: str | Path, *, map_location: str | torch.device = "cpu") -> tuple[Discriminator, dict]:
    """Load a discriminator from a rosinality ``.pt`` (``d``), an NVIDIA ``.pkl`` (``D``) or a zsgm
    ``.safetensors`` (:func:`save_discriminator`).

    Returns:
        ``(Discriminator in eval mode, fp32, on map_location, info)``; info has ``format``, ``path``, ``arch``
        and, for NVIDIA pickles, ``nvidia`` (conv_clamp, num_fp16_res the network was trained with).

    Raises:
        DiscriminatorNotFound: the file is readable but holds no discriminator.
        CheckpointError: anything else wrong with the file (one line naming it).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {'not a regular file' if path.exists() else 'no such file'} (a "
                              f"discriminator checkpoint is a file)")
    d, info = _READERS[detect_format(path)](path)
    return d.to(map_location), info


# --------------------------------------------------------------------------------------------- writer


def save_discriminator(d: Discriminator, path: str | Path, *, dtype: torch.dtype | None = None) -> None:
    """Write zsgm's format atomically: safetensors tensors (``dtype``: None keeps the model's, e.g.
    ``torch.float16`` halves the file) with metadata ``{"format": "zsgm-discriminator", "version": "1",
    "arch": <JSON>}``."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().to(dtype or v.dtype).contiguous() for k, v in d.state_dict().items()}
    meta = {"format": FORMAT_TAG, "version": FORMAT_VERSION, "arch": json.dumps(d.arch.to_dict())}
    atomic_write_bytes(path, save(tensors, metadata=meta))


# --------------------------------------------------------------------------------------------- sources


def load_discriminator_source(spec: str | os.PathLike, *, registry=None, device: str | torch.device = "cpu") \
        -> tuple[Discriminator | None, dict]:
    """The discriminator that goes with a generator source (see :mod:`zsgm.generator.sources`).

    Args:
        spec: a registered generator name (its :attr:`GeneratorSpec.load_discriminator`), a zsgm run directory
            or run checkpoint (the discriminator of the run's source generator, ``generator.checkpoint`` in its
            ``recipe.toml``; a run's own adversarial state is not read here), or a checkpoint file.
        registry: the plugin registry (the process-wide one when None).
        device: where the discriminator is put.

    Returns:
        ``(Discriminator, info)``, or ``(None, info)`` when the source holds no discriminator; ``info["reason"]``
        then says why (the caller warns and builds a random one).

    Raises:
        GeneratorNotFoundError: ``spec`` is neither a name nor an existing path.
        CheckpointError: a damaged file, a run directory without a recipe...
    """
    from zsgm.generator import sources

    text = os.fspath(spec)
    table = sources._registry(registry).generators
    if text in table:
        gen = table.get(text)
        loader = getattr(gen, "load_discriminator", None)
        if loader is None:
            return None, {"source": text, "reason": f"the registered generator {text!r} has no discriminator"}
        d, info = loader(device)
        return d.to(device), {**info, "source": text}
    path = Path(text)
    if path.is_dir():
        if not (path / sources.RUN_RECIPE).is_file():
            raise CheckpointError(f"{path}: a directory that is not a zsgm run (no {sources.RUN_RECIPE} naming its "
                                  f"source generator, whose discriminator would be used)")
        return _from_run(path / sources.RUN_CHECKPOINT, registry, device, run=path)
    if not path.exists():
        raise sources.GeneratorNotFoundError(f"{text}: not a registered generator name (installed: "
                                             f"{', '.join(table.names()) or 'none'}) and not an existing file or "
                                             f"run directory")
    try:
        d, info = load_discriminator(path, map_location=device)
    except DiscriminatorNotFound as exc:
        if exc.run_checkpoint:
            return _from_run(path, registry, device, run=path.parent.parent)
        return None, {"source": text, "path": str(path), "reason": str(exc)}
    return d, {**info, "source": text}


def _from_run(checkpoint: Path, registry, device, *, run: Path) -> tuple[Discriminator | None, dict]:
    """The discriminator of the source generator named in the run's recipe (cycles refused)."""
    from zsgm.generator import sources

    recipe = sources._run_recipe(checkpoint)
    key = str(recipe.parent.resolve())
    if key in sources._RESOLVING.get():
        raise CheckpointError(f"{run}: the run's source generator (generator.checkpoint in {recipe}) leads back "
                              f"to this run")
    spec = sources._source_spec(recipe)
    token = sources._RESOLVING.set(sources._RESOLVING.get() | {key})
    try:
        d, info = load_discriminator_source(sources.locate_source(spec, recipe.parent, registry), registry=registry,
                                            device=device)
    finally:
        sources._RESOLVING.reset(token)
    return d, {**info, "run": str(run), "source": spec}


__all__ = ["DiscriminatorNotFound", "FORMAT_TAG", "FORMAT_VERSION", "arch_from_nvidia_d_kwargs",
           "build_discriminator", "infer_discriminator_arch", "load_discriminator", "load_discriminator_source",
           "nvidia_to_rosinality_d", "rosinality_to_nvidia_d", "save_discriminator"]
