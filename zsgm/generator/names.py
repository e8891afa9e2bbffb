"""Parameter-name conversion between NVIDIA (stylegan2-ada-pytorch) and rosinality layouts (OPS.md 3.4)."""

from __future__ import annotations

import math

import torch

from zsgm.generator.arch import GeneratorArch


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
        and ``mapping.w_avg`` are not included (the caller keeps ``w_avg`` as ``latent_avg``).

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
            t = t.reshape(shape)
        out[dst] = t.clone()
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


def arch_from_nvidia_kwargs(kwargs: dict) -> GeneratorArch:
    """Architecture from ``G_ema``'s ``_init_kwargs`` (OPS.md 3.2).

    Reads ``z_dim``, ``w_dim``, ``c_dim``, ``img_resolution``, ``img_channels``, ``mapping_kwargs.{num_layers,
    lr_multiplier}`` and ``synthesis_kwargs.{channel_base, channel_max, architecture}``; NVIDIA's defaults fill
    absent optional entries.

    Raises:
        ValueError: a missing required entry or a generator the rosinality layout cannot hold.
    """
    missing = [k for k in ("img_resolution", "w_dim") if k not in kwargs]
    if missing:
        raise ValueError(f"G_ema init kwargs lack {missing} (found {sorted(map(str, kwargs))})")
    size = int(kwargs["img_resolution"])
    w_dim = int(kwargs["w_dim"])
    z_dim = int(kwargs.get("z_dim", w_dim))
    if z_dim != w_dim:
        raise ValueError(f"z_dim {z_dim} != w_dim {w_dim} is not supported by the rosinality layout")
    if int(kwargs.get("c_dim", 0) or 0) != 0:
        raise ValueError(f"conditional generators (c_dim {kwargs['c_dim']}) are not supported")
    if int(kwargs.get("img_channels", 3)) != 3:
        raise ValueError(f"img_channels {kwargs['img_channels']} is not supported (RGB generators only)")
    synth = dict(kwargs.get("synthesis_kwargs") or {})
    mapping = dict(kwargs.get("mapping_kwargs") or {})
    arch = synth.get("architecture", "skip")
    if arch != "skip":
        raise ValueError(f"synthesis architecture {arch!r} is not supported (only 'skip', StyleGAN2 config-f)")
    layer_features = mapping.get("layer_features")
    if layer_features is not None and int(layer_features) != w_dim:
        raise ValueError(f"mapping layer_features {layer_features} != w_dim {w_dim} is not supported")
    return GeneratorArch.nvidia(size, style_dim=w_dim, n_mlp=int(mapping.get("num_layers", 8)),
                                channel_base=int(synth.get("channel_base", 32768)),
                                channel_max=int(synth.get("channel_max", 512)),
                                lr_mlp=float(mapping.get("lr_multiplier", 0.01)))
