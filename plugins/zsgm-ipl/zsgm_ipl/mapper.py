"""IPL's latent mapper: a W code -> ``n_ctx`` learned prompt context vectors (METHODS.md 3.1).

``PixelNorm -> 3 x EqualLinear(D -> D) -> EqualLinear(D -> n_ctx * W)``, every layer with lr_mul 0.01 and the
fused leaky ReLU (the last one too, as IPL's mapper/latent_mappers.py does). ``D`` is the generator's
``style_dim`` (512 for real StyleGAN2s; IPL hard-codes 512 for the hidden width, we use ``style_dim``) and
``W`` the CLIP text width (ln_final / token-embedding width, 512 for ViT-B/32).
"""

from __future__ import annotations

import torch
from torch import nn

from zsgm.generator.layers import EqualLinear, PixelNorm

LR_MUL = 0.01
N_HIDDEN = 3


class LatentMapper(nn.Module):
    """``w [B, D] -> ctx [B, n_ctx, W]``.

    Args:
        style_dim: width ``D`` of the input W code (and of the hidden layers).
        n_ctx: number of context vectors.
        text_width: width ``W`` of each context vector (the CLIP text tower's token width).
        lr_mul: equalised-lr multiplier of every layer.
    """

    def __init__(self, style_dim: int, n_ctx: int, text_width: int, *, lr_mul: float = LR_MUL):
        super().__init__()
        self.n_ctx = n_ctx
        self.text_width = text_width
        layers: list[nn.Module] = [PixelNorm()]
        for _ in range(N_HIDDEN):
            layers.append(EqualLinear(style_dim, style_dim, lr_mul=lr_mul, activation=True))
        layers.append(EqualLinear(style_dim, n_ctx * text_width, lr_mul=lr_mul, activation=True))
        self.mapping = nn.Sequential(*layers)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        out = self.mapping(w)  # [B, n_ctx * W]
        return out.reshape(w.shape[0], self.n_ctx, self.text_width)  # [B, n_ctx, W]

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Re-draw the weights as EqualLinear does (``randn / lr_mul``, zero bias), from ``generator`` (CPU).

        Makes the initialisation depend only on the run's seed, not on the global torch RNG.
        """
        for layer in self.mapping:
            if isinstance(layer, EqualLinear):
                raw = torch.randn(tuple(layer.weight.shape), generator=generator) / layer.lr_mul
                layer.weight.copy_(raw.to(layer.weight))
                layer.bias.zero_()
