"""Parameter-name conversion between NVIDIA (stylegan2-ada-pytorch) and rosinality layouts (OPS.md 3.4)."""

from __future__ import annotations

import math
import numbers
from typing import Mapping

import torch

from zsgm.generator.arch import MAX_CHANNELS, MAX_MLP, MAX_SIZE, MAX_STYLE_DIM, GeneratorArch


def _blocks(arch: GeneratorArch):
    """Yield ``(r, j)`` for every block above 4x4 (j = log2(r) - 3)."""
    for k in range(3, arch.log_size + 1):
        yield 2 ** k, k - 3


# NVIDIA tensors that carry nothing the rosinality layout needs (rebuilt from the architecture, or latent_avg)
_NVIDIA_IGNORED_SUFFIXES = ("resample_filter", "mapping.w_avg")


def nvidia_to_rosinality(state: dict[str, torch.Tensor], arch: GeneratorArch) -> dict[str, torch.Tensor]:
    """Rename and reshape an NVIDIA ``G_ema`` state dict into the rosinality layout (OPS.md 3.4 mapping table).

    Args:
        state: NVIDIA names (``mapping.fc0.weight``, ``synthesis.b8.conv0.affine.bias``, ...).
        arch: the architecture the names are read for.

    Returns:
        rosinality names; ``noise_const`` buffers become ``noises.noise_{n}`` [1, 1, r, r]; resample filters
        and ``mapping.w_avg`` are not included (the caller keeps ``w_avg`` as ``latent_avg``). The tensors are
        views of ``state`` (nothing is copied before the caller has checked the shapes).

    Raises:
        ValueError: naming a missing key, a tensor that cannot take the target shape, or keys left over
            (e.g. a StyleGAN3 or conditional generator).
    """
    if "synthesis.b4.const" not in state:
        sample = sorted(state)[:4]
        raise ValueError(f"missing NVIDIA key 'synthesis.b4.const': not a StyleGAN2 G_ema (found keys like "
                         f"{sample})")
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(src: str, dst: str, shape: tuple[int, ...] | None = None, *, optional: bool = False):
        if src not in state:
            if optional:
                return
            raise ValueError(f"missing NVIDIA key {src!r}")
        t = state[src]
        if shape is not None:
            if t.numel() != math.prod(shape):
                raise ValueError(f"NVIDIA key {src!r} has shape {tuple(t.shape)}, cannot become {list(shape)} "
                                 f"for {dst!r}")
            t = t.reshape(shape)  # adds unit dims (a view) or reshapes a tensor as small as the architecture's
        out[dst] = t  # no copy: a file's tensor may be a stride-0 view claiming any shape, checked only later
        used.add(src)

    for i in range(arch.n_mlp):
        take(f"mapping.fc{i}.weight", f"style.{i + 1}.weight")
        take(f"mapping.fc{i}.bias", f"style.{i + 1}.bias")
    const = state["synthesis.b4.const"]  # [C, 4, 4] -> [1, C, 4, 4]
    take("synthesis.b4.const", "input.input", (1, *const.shape))

    def lead(src: str) -> tuple[int, ...]:  # add a leading 1 to whatever shape the weight has
        return (1, *state[src].shape) if src in state else ()

    def styled(src: str, dst: str, noise_index: int, r: int):
        take(f"{src}.weight", f"{dst}.conv.weight", lead(f"{src}.weight"))  # [O, I, 3, 3] -> [1, O, I, 3, 3]
        take(f"{src}.affine.weight", f"{dst}.conv.modulation.weight")
        take(f"{src}.affine.bias", f"{dst}.conv.modulation.bias")
        take(f"{src}.noise_strength", f"{dst}.noise.weight", (1,))  # [] -> [1]
        take(f"{src}.bias", f"{dst}.activate.bias")
        take(f"{src}.noise_const", f"noises.noise_{noise_index}", (1, 1, r, r), optional=True)  # [r, r]

    def torgb(src: str, dst: str):
        take(f"{src}.weight", f"{dst}.conv.weight", lead(f"{src}.weight"))  # [3, C, 1, 1] -> [1, 3, C, 1, 1]
        take(f"{src}.affine.weight", f"{dst}.conv.modulation.weight")
        take(f"{src}.affine.bias", f"{dst}.conv.modulation.bias")
        take(f"{src}.bias", f"{dst}.bias", (1, 3, 1, 1))  # [3] -> [1, 3, 1, 1]

    styled("synthesis.b4.conv1", "conv1", 0, 4)
    torgb("synthesis.b4.torgb", "to_rgb1")
    for r, j in _blocks(arch):
        styled(f"synthesis.b{r}.conv0", f"convs.{2 * j}", 2 * j + 1, r)
        styled(f"synthesis.b{r}.conv1", f"convs.{2 * j + 1}", 2 * j + 2, r)
        torgb(f"synthesis.b{r}.torgb", f"to_rgbs.{j}")
    left = sorted(k for k in state if k not in used and not k.endswith(_NVIDIA_IGNORED_SUFFIXES))
    if left:
        raise ValueError(f"NVIDIA keys not part of a {arch.size}px StyleGAN2 generator: {left[:6]}"
                         f"{' ...' if len(left) > 6 else ''}")
    return out


def rosinality_to_nvidia(state: dict[str, torch.Tensor], arch: GeneratorArch) -> dict[str, torch.Tensor]:
    """The reverse of :func:`nvidia_to_rosinality` (resample filters rebuilt as normalised [4, 4])."""
    from zsgm.ops import setup_filter

    out: dict[str, torch.Tensor] = {}
    filt = setup_filter(list(arch.blur_kernel))
    for i in range(arch.n_mlp):
        out[f"mapping.fc{i}.weight"] = state[f"style.{i + 1}.weight"].clone()
        out[f"mapping.fc{i}.bias"] = state[f"style.{i + 1}.bias"].clone()
    out["synthesis.b4.const"] = state["input.input"][0].clone()

    def styled(dst: str, src: str, noise_index: int, r: int, up: bool):
        out[f"{dst}.weight"] = state[f"{src}.conv.weight"][0].clone()
        out[f"{dst}.affine.weight"] = state[f"{src}.conv.modulation.weight"].clone()
        out[f"{dst}.affine.bias"] = state[f"{src}.conv.modulation.bias"].clone()
        out[f"{dst}.noise_strength"] = state[f"{src}.noise.weight"].reshape(()).clone()
        out[f"{dst}.bias"] = state[f"{src}.activate.bias"].clone()
        out[f"{dst}.resample_filter"] = filt.clone()
        key = f"noises.noise_{noise_index}"
        out[f"{dst}.noise_const"] = state[key][0, 0].clone() if key in state else torch.zeros(r, r)

    def torgb(dst: str, src: str):
        out[f"{dst}.weight"] = state[f"{src}.conv.weight"][0].clone()
        out[f"{dst}.affine.weight"] = state[f"{src}.conv.modulation.weight"].clone()
        out[f"{dst}.affine.bias"] = state[f"{src}.conv.modulation.bias"].clone()
        out[f"{dst}.bias"] = state[f"{src}.bias"].reshape(3).clone()

    out["synthesis.b4.resample_filter"] = filt.clone()
    styled("synthesis.b4.conv1", "conv1", 0, 4, False)
    torgb("synthesis.b4.torgb", "to_rgb1")
    for r, j in _blocks(arch):
        out[f"synthesis.b{r}.resample_filter"] = filt.clone()
        styled(f"synthesis.b{r}.conv0", f"convs.{2 * j}", 2 * j + 1, r, True)
        styled(f"synthesis.b{r}.conv1", f"convs.{2 * j + 1}", 2 * j + 2, r, False)
        torgb(f"synthesis.b{r}.torgb", f"to_rgbs.{j}")
    return out


def synthesis_kwargs(kwargs: Mapping) -> Mapping:
    """Where a ``G_ema``'s synthesis settings sit in its init kwargs.

    stylegan2-ada-pytorch's ``training/networks.py`` Generator takes them as a ``synthesis_kwargs`` dict;
    stylegan3's ``training/networks_stylegan2.py`` Generator takes them as keyword arguments of its own, so
    ``channel_base``, ``channel_max``, ``num_fp16_res``, ``conv_clamp``, ``architecture`` sit at the top level.
    (NVIDIA's own ``legacy.py`` reads them the same way: the nested dict when present, else the top level.)
    """
    nested = kwargs.get("synthesis_kwargs")
    return nested if isinstance(nested, Mapping) else kwargs


def _kwarg_name(kwargs: Mapping, synth: Mapping, key: str) -> str:
    return f"synthesis_kwargs.{key}" if synth is not kwargs else key


def _int_kwarg(table: Mapping, key: str, default: int | None, name: str, *, low: int, high: int) -> int:
    """``table[key]`` as an int in ``[low, high]``; ``name`` is how the message spells the key."""
    if key not in table or table[key] is None:
        if default is None:
            raise ValueError(f"missing {name!r}")
        return default
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name!r} should be an integer, found {value!r}")
    if not low <= int(value) <= high:
        raise ValueError(f"{name!r} = {int(value)} is outside {low}..{high}")
    return int(value)


def arch_from_nvidia_kwargs(kwargs: Mapping) -> GeneratorArch:
    """Architecture from ``G_ema``'s ``_init_kwargs`` (OPS.md 3.2), in either repository's layout.

    Reads ``z_dim``, ``w_dim``, ``c_dim``, ``img_resolution``, ``img_channels``, ``mapping_kwargs.{num_layers,
    lr_multiplier, layer_features}`` and the synthesis settings ``channel_base``, ``channel_max``,
    ``architecture``, ``resample_filter`` (see :func:`synthesis_kwargs` for where they sit); NVIDIA's defaults
    fill absent optional entries. Every value is type- and range-checked before anything is built.

    Raises:
        ValueError: naming the init kwarg that is missing, mistyped, out of range or unsupported.
    """
    if not isinstance(kwargs, Mapping):
        raise ValueError(f"expected a table of init kwargs, found a {type(kwargs).__name__}")
    synth = synthesis_kwargs(kwargs)
    mapping = kwargs.get("mapping_kwargs") or {}
    if not isinstance(mapping, Mapping):
        raise ValueError(f"'mapping_kwargs' should be a table, found a {type(mapping).__name__}")
    size = _int_kwarg(kwargs, "img_resolution", None, "img_resolution", low=4, high=MAX_SIZE)
    if size & (size - 1):
        raise ValueError(f"'img_resolution' = {size} is not a power of two")
    w_dim = _int_kwarg(kwargs, "w_dim", None, "w_dim", low=1, high=MAX_STYLE_DIM)
    z_dim = _int_kwarg(kwargs, "z_dim", w_dim, "z_dim", low=1, high=MAX_STYLE_DIM)
    if z_dim != w_dim:
        raise ValueError(f"z_dim {z_dim} != w_dim {w_dim} is not supported by the rosinality layout")
    c_dim = _int_kwarg(kwargs, "c_dim", 0, "c_dim", low=0, high=1 << 20)
    if c_dim != 0:
        raise ValueError(f"conditional generators (c_dim {c_dim}) are not supported")
    img_channels = _int_kwarg(kwargs, "img_channels", 3, "img_channels", low=1, high=1 << 20)
    if img_channels != 3:
        raise ValueError(f"img_channels {img_channels} is not supported (RGB generators only)")
    arch = synth.get("architecture", "skip")
    if arch != "skip":
        raise ValueError(f"{_kwarg_name(kwargs, synth, 'architecture')!r} = {arch!r} is not supported (only "
                         f"'skip', StyleGAN2 config-f)")
    layer_features = mapping.get("layer_features")
    if layer_features is not None and layer_features != w_dim:
        raise ValueError(f"mapping_kwargs.layer_features {layer_features!r} != w_dim {w_dim} is not supported")
    n_mlp = _int_kwarg(mapping, "num_layers", 8, "mapping_kwargs.num_layers", low=1, high=MAX_MLP)
    base_name, max_name = _kwarg_name(kwargs, synth, "channel_base"), _kwarg_name(kwargs, synth, "channel_max")
    channel_base = _int_kwarg(synth, "channel_base", 32768, base_name, low=1, high=MAX_CHANNELS * MAX_SIZE)
    channel_max = _int_kwarg(synth, "channel_max", 512, max_name, low=1, high=MAX_CHANNELS)
    if channel_base < size:
        raise ValueError(f"{base_name!r} = {channel_base} gives 0 channels at {size}px (NVIDIA's channels at "
                         f"resolution r are min({base_name} // r, {max_name}))")
    lr_mlp = mapping.get("lr_multiplier", 0.01)
    if isinstance(lr_mlp, bool) or not isinstance(lr_mlp, numbers.Real) or not 0 < float(lr_mlp) < math.inf:
        raise ValueError(f"'mapping_kwargs.lr_multiplier' should be a finite positive number, found {lr_mlp!r}")
    taps = synth.get("resample_filter", [1, 3, 3, 1])
    taps_name = _kwarg_name(kwargs, synth, "resample_filter")
    if not isinstance(taps, (list, tuple)) or len(taps) != 4 or not all(
            isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in taps):
        raise ValueError(f"{taps_name!r} should be 4 integer taps, found {taps!r}")
    channels = [min(channel_base // 2 ** k, channel_max) for k in range(2, size.bit_length())]
    return GeneratorArch(size=size, style_dim=w_dim, n_mlp=n_mlp, channels=channels, lr_mlp=float(lr_mlp),
                         blur_kernel=tuple(int(t) for t in taps))
