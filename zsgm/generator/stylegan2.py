"""The StyleGAN2 generator (config-f "skip" architecture) with rosinality parameter names.

Mapping ``z -> w``; synthesis from W+ codes ``[N, n_latent, style_dim]``. Slot usage: slot 0 drives
``conv1``; slot 1 drives ``to_rgb1`` and ``convs.0``; slot j >= 2 drives ``convs.{j-1}``, and odd
j >= 3 also ``to_rgbs.{(j-3)//2}``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from zsgm.generator.arch import GeneratorArch
from zsgm.generator.layers import ConstantInput, EqualLinear, PixelNorm, StyledConv, ToRGB

NOISE_MODES = ("random", "const", "none")


def _called(layer: nn.Module, *args):
    return layer(*args)


def _recomputed(layer: nn.Module, *args):
    """``layer(*args)`` keeping only its inputs for backward; its activations are recomputed there
    (``optim.grad_checkpointing``; noise is an input, so the recomputation is exact)."""
    return checkpoint(layer, *args, use_reentrant=False)


class Generator(nn.Module):
    """StyleGAN2 generator.

    Args:
        arch: the architecture (see :class:`GeneratorArch`).

    Attributes:
        latent_avg: mean w ``[style_dim]`` from the checkpoint, or None (not part of the state dict).
    """

    def __init__(self, arch: GeneratorArch):
        super().__init__()
        self.arch = arch
        d = arch.style_dim
        self.style = nn.Sequential(PixelNorm(), *[EqualLinear(d, d, lr_mul=arch.lr_mlp, activation=True)
                                                  for _ in range(arch.n_mlp)])
        c4 = arch.channel(4)
        self.input = ConstantInput(c4)
        self.conv1 = StyledConv(c4, c4, d, blur_kernel=arch.blur_kernel)
        self.to_rgb1 = ToRGB(c4, d, upsample=False)
        self.convs = nn.ModuleList()
        self.upsamples = nn.ModuleList()  # empty; kept for layout compatibility
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        self.num_layers = (arch.log_size - 2) * 2 + 1
        for i in range(self.num_layers):
            r = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, r, r))
        in_ch = c4
        for k in range(3, arch.log_size + 1):
            out_ch = arch.channel(2 ** k)
            self.convs.append(StyledConv(in_ch, out_ch, d, upsample=True, blur_kernel=arch.blur_kernel))
            self.convs.append(StyledConv(out_ch, out_ch, d, blur_kernel=arch.blur_kernel))
            self.to_rgbs.append(ToRGB(out_ch, d, blur_kernel=arch.blur_kernel))
            in_ch = out_ch
        self.n_latent = arch.n_latent
        self.latent_avg: torch.Tensor | None = None
        self.grad_checkpointing = False  # recompute each block in backward (optim.grad_checkpointing)
        self._mean_cache: tuple[tuple, torch.Tensor] | None = None  # (mapping weights' versions, mean w)

    def _apply(self, fn, *args, **kwargs):
        """Also move/cast ``latent_avg`` (a plain attribute, not a buffer) with ``.to()`` / ``.cuda()`` / ``.half()``."""
        super()._apply(fn, *args, **kwargs)
        if self.latent_avg is not None:
            self.latent_avg = fn(self.latent_avg)
        self._mean_cache = None
        return self

    # ------------------------------------------------------------------------------------- ops knobs

    def set_impl(self, impl: str) -> None:
        """Route every custom op through ``impl`` ("auto" | "cuda" | "ref")."""
        for m in self.modules():
            if hasattr(m, "impl"):
                m.impl = impl

    def set_fused_modconv(self, fused: bool) -> None:
        """Grouped (True) or shared-weight (False) modulated convolutions."""
        for m in self.modules():
            if hasattr(m, "fused"):
                m.fused = fused

    # ------------------------------------------------------------------------------------- latents

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` [N, D] -> ``w`` [N, D]."""
        if z.ndim != 2 or z.shape[1] != self.arch.style_dim:
            raise ValueError(f"mapping: z must be [N, {self.arch.style_dim}], found {tuple(z.shape)}")
        return self.style(z)

    @torch.no_grad()
    def mean_latent(self, n: int = 4096, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean of ``mapping(randn(n, D))``.

        Args:
            n: number of samples.
            generator: RNG for ``z`` (a CPU generator unless it lives on the model's device).

        Returns:
            ``[1, D]`` on the generator's device. ``z`` is drawn on ``generator``'s device (CPU by default) and
            then moved, so a CPU seed gives the same mean on every device.
        """
        device = self.input.input.device
        gen_device = generator.device if generator is not None else torch.device("cpu")
        z = torch.randn((n, self.arch.style_dim), generator=generator, device=gen_device).to(device)
        return self.mapping(z).mean(0, keepdim=True)

    def default_mean_latent(self) -> torch.Tensor:
        """The truncation centre: ``latent_avg`` if set, else ``mean_latent(4096)`` with seed 0 (cached until the
        mapping weights change). Returns ``[1, D]``."""
        if self.latent_avg is not None:
            return self.latent_avg.reshape(1, -1)
        with torch.no_grad():  # cheap fingerprint of the mapping weights (catches in-place edits through .data too)
            key = tuple((p.data_ptr(), p._version, float(p.double().sum())) for p in self.style.parameters())
        if self._mean_cache is None or self._mean_cache[0] != key:
            self._mean_cache = (key, self.mean_latent(4096, generator=torch.Generator().manual_seed(0)))
        return self._mean_cache[1]

    def style_layers(self) -> list[tuple[int, str]]:
        """``(slot, module name)`` for every synthesis layer that reads a W+ slot."""
        out = [(0, "conv1"), (1, "to_rgb1")]
        for i in range(len(self.convs)):
            out.append((i + 1, f"convs.{i}"))
        for j in range(len(self.to_rgbs)):
            out.append((2 * j + 3, f"to_rgbs.{j}"))
        return sorted(out)

    # ------------------------------------------------------------------------------------- synthesis

    def make_noise(self, n: int, *, mode: str = "random", rng: torch.Generator | None = None) \
            -> list[torch.Tensor | None]:
        """Per-layer noise maps ``[n, 1, r, r]`` (random from ``rng``, the stored constants, or None)."""
        if mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}; got {mode!r}")
        bufs = [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]
        if mode == "none":
            return [None] * self.num_layers
        if mode == "const":
            return [b.expand(n, -1, -1, -1) for b in bufs]
        gen_device = rng.device if rng is not None else bufs[0].device
        return [torch.randn((n, 1, *b.shape[2:]), generator=rng, device=gen_device).to(b.device) for b in bufs]

    def _check_noise(self, noise, n: int) -> list[torch.Tensor | None]:
        """Validate an explicit per-layer noise list: ``num_layers`` entries, each None or ``[N or 1, 1, r, r]``."""
        noise = list(noise)
        if len(noise) != self.num_layers:
            raise ValueError(f"synthesis: expected {self.num_layers} noise maps (one per conv layer), got {len(noise)}")
        for i, t in enumerate(noise):
            r = 2 ** ((i + 5) // 2)
            if t is not None and (t.ndim != 4 or t.shape[0] not in (1, n) or tuple(t.shape[1:]) != (1, r, r)):
                raise ValueError(f"synthesis: noise[{i}] must be [{n} or 1, 1, {r}, {r}], found {tuple(t.shape)}")
        return noise

    def synthesis(self, ws: torch.Tensor, *, noise_mode: str = "random", noise=None,
                  rng: torch.Generator | None = None) -> torch.Tensor:
        """W+ codes to images.

        Args:
            ws: ``[N, n_latent, D]``; slot usage as in :meth:`style_layers`.
            noise_mode: "random" (fresh maps, from ``rng`` when given), "const" (the ``noises.*`` buffers) or
                "none"; ignored when ``noise`` is given.
            noise: explicit per-layer maps, ``num_layers`` entries of ``[N or 1, 1, r, r]`` or None.
            rng: ``torch.Generator`` for reproducible random noise.

        Returns:
            ``[N, 3, size, size]``, roughly in [-1, 1], not clamped.
        """
        if ws.ndim != 3 or ws.shape[1:] != (self.n_latent, self.arch.style_dim):
            raise ValueError(f"synthesis: ws must be [N, {self.n_latent}, {self.arch.style_dim}], "
                             f"found {tuple(ws.shape)}")
        n = ws.shape[0]
        noise = self.make_noise(n, mode=noise_mode, rng=rng) if noise is None else self._check_noise(noise, n)
        call = _recomputed if self.grad_checkpointing and torch.is_grad_enabled() else _called
        x = self.input(n)  # [N, C4, 4, 4]
        x = call(self.conv1, x, ws[:, 0], noise[0])
        skip = call(self.to_rgb1, x, ws[:, 1])  # [N, 3, 4, 4]
        i = 1
        for j, rgb in enumerate(self.to_rgbs):
            x = call(self.convs[2 * j], x, ws[:, i], noise[2 * j + 1])  # upsampling conv
            x = call(self.convs[2 * j + 1], x, ws[:, i + 1], noise[2 * j + 2])
            skip = call(rgb, x, ws[:, i + 2], skip)
            i += 2
        return skip

    def truncate(self, w: torch.Tensor, truncation: float, truncation_latent: torch.Tensor | None) -> torch.Tensor:
        """``mean + psi * (w - mean)``; the mean is ``truncation_latent``, else ``latent_avg``, else sampled."""
        if truncation >= 1:
            return w
        mean = truncation_latent if truncation_latent is not None else self.default_mean_latent()
        mean = mean.reshape(*([1] * (w.ndim - 1)), -1).to(w)
        return mean + truncation * (w - mean)

    def forward(self, z: torch.Tensor | None = None, *, w: torch.Tensor | None = None,
                ws: torch.Tensor | None = None, truncation: float = 1.0,
                truncation_latent: torch.Tensor | None = None, noise_mode: str = "random", noise=None,
                rng: torch.Generator | None = None) -> torch.Tensor:
        """Generate from exactly one of ``z`` [N, D], ``w`` [N, D] or ``ws`` [N, n_latent, D].

        Args:
            truncation: psi; below 1 every slot is pulled towards ``truncation_latent``, else ``latent_avg``,
                else :meth:`default_mean_latent`.
            noise_mode, noise, rng: as in :meth:`synthesis`.

        Returns:
            ``[N, 3, size, size]`` images.
        """
        given = [name for name, v in (("z", z), ("w", w), ("ws", ws)) if v is not None]
        if len(given) != 1:
            raise ValueError(f"Generator: give exactly one of z, w, ws (got {given or 'none'})")
        if w is not None and (w.ndim != 2 or w.shape[1] != self.arch.style_dim):
            raise ValueError(f"Generator: w must be [N, {self.arch.style_dim}], found {tuple(w.shape)}")
        if ws is None:
            w = self.mapping(z) if z is not None else w
            ws = w[:, None, :].repeat(1, self.n_latent, 1)
        ws = self.truncate(ws, truncation, truncation_latent)
        return self.synthesis(ws, noise_mode=noise_mode, noise=noise, rng=rng)
