"""Parameter-name conversion between NVIDIA (stylegan2-ada-pytorch) and rosinality layouts (OPS.md 3.4)."""

from __future__ import annotations

import torch

from zsgm.generator.arch import GeneratorArch


def _blocks(arch: GeneratorArch):
    """Yield ``(r, j)`` for every block above 4x4 (j = log2(r) - 3)."""
    for k in range(3, arch.log_size + 1):
        yield 2 ** k, k - 3


def nvidia_to_rosinality(state: dict[str, torch.Tensor], arch: GeneratorArch) -> dict[str, torch.Tensor]:
    """Rename and reshape an NVIDIA ``G_ema`` state dict into the rosinality layout (mapping, synthesis, noise)."""
    out: dict[str, torch.Tensor] = {}

    def take(src: str, dst: str, fn=lambda t: t):
        if src not in state:
            raise KeyError(f"missing NVIDIA key {src!r}")
        out[dst] = fn(state[src]).clone()

    for i in range(arch.n_mlp):
        take(f"mapping.fc{i}.weight", f"style.{i + 1}.weight")
        take(f"mapping.fc{i}.bias", f"style.{i + 1}.bias")
    take("synthesis.b4.const", "input.input", lambda t: t[None])

    def styled(src: str, dst: str, noise_index: int):
        take(f"{src}.weight", f"{dst}.conv.weight", lambda t: t[None])
        take(f"{src}.affine.weight", f"{dst}.conv.modulation.weight")
        take(f"{src}.affine.bias", f"{dst}.conv.modulation.bias")
        take(f"{src}.noise_strength", f"{dst}.noise.weight", lambda t: t.reshape(1))
        take(f"{src}.bias", f"{dst}.activate.bias")
        if f"{src}.noise_const" in state:
            out[f"noises.noise_{noise_index}"] = state[f"{src}.noise_const"][None, None].clone()

    def torgb(src: str, dst: str):
        take(f"{src}.weight", f"{dst}.conv.weight", lambda t: t[None])
        take(f"{src}.affine.weight", f"{dst}.conv.modulation.weight")
        take(f"{src}.affine.bias", f"{dst}.conv.modulation.bias")
        take(f"{src}.bias", f"{dst}.bias", lambda t: t.reshape(1, 3, 1, 1))

    styled("synthesis.b4.conv1", "conv1", 0)
    torgb("synthesis.b4.torgb", "to_rgb1")
    for r, j in _blocks(arch):
        styled(f"synthesis.b{r}.conv0", f"convs.{2 * j}", 2 * j + 1)
        styled(f"synthesis.b{r}.conv1", f"convs.{2 * j + 1}", 2 * j + 2)
        torgb(f"synthesis.b{r}.torgb", f"to_rgbs.{j}")
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
    """Architecture from ``G_ema``'s ``_init_kwargs`` (z_dim, w_dim, img_resolution, mapping/synthesis kwargs)."""
    try:
        size = int(kwargs["img_resolution"])
        w_dim = int(kwargs["w_dim"])
        z_dim = int(kwargs.get("z_dim", w_dim))
    except KeyError as exc:
        raise KeyError(f"init kwargs lack {exc.args[0]!r}") from None
    if z_dim != w_dim:
        raise ValueError(f"z_dim {z_dim} != w_dim {w_dim} is not supported by the rosinality layout")
    synth = dict(kwargs.get("synthesis_kwargs") or {})
    mapping = dict(kwargs.get("mapping_kwargs") or {})
    arch = synth.get("architecture", "skip")
    if arch != "skip":
        raise ValueError(f"synthesis architecture {arch!r} is not supported (only 'skip', StyleGAN2 config-f)")
    return GeneratorArch.nvidia(size, style_dim=w_dim, n_mlp=int(mapping.get("num_layers", 8)),
                                channel_base=int(synth.get("channel_base", 32768)),
                                channel_max=int(synth.get("channel_max", 512)))
