"""Channel relevance of StyleSpace to CLIP directions: StyleCLIP's global-direction matrix ("fs3"), computed here.

DeltaEdit gates its predicted S delta with StyleCLIP's per-channel relevance ``R`` ``[C, clip_dim]``
(``models/stylegan2/npy_ffhq/fs3.npy``, FFHQ only, which cannot ship). For each S channel ``c`` of the conv layers
(ToRGB excluded) over ``M`` images ``m`` (StyleCLIP global_torch/SingleChannel.py with manipulate.py):

1. set channel ``c`` of every image's S code to its mean ``mu_c`` over the codes, then make two copies with
   ``s_c = mu_c - alpha sigma_c`` and ``s_c = mu_c + alpha sigma_c`` (``alpha = 5``; the other channels unchanged);
2. decode both (constant noise) and take unit CLIP image embeddings ``e-``, ``e+``;
3. ``d_m = normalize(e+ - e-)``; ``R_c = normalize(mean_m d_m)``.

A channel that changes no image gets ``R_c = 0`` (StyleCLIP's formula divides zero by zero there). Cost:
``2 * C * M`` generator forwards and CLIP image encodes (FFHQ 1024 px with the released M = 100: 1,209,600 of
each), done in batches of ``batch`` images with a progress bar.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from zsgm.generator.stylespace import style_layout, synthesis_from_styles
from zsgm.io_utils import atomic_write_bytes

from zsgm_deltaedit.codes import shared_weight_modconv

__all__ = ["RELEVANCE_FILE", "channel_relevance", "read_relevance", "relevance_from_features", "write_relevance"]

RELEVANCE_FILE = "relevance.safetensors"
RELEVANCE_FORMAT = "zsgm-deltaedit-relevance"
ZERO_CHANGE = 1e-6  # embedding changes below this norm count as no change (float noise of an inert channel)


def relevance_from_features(e_minus: torch.Tensor, e_plus: torch.Tensor) -> torch.Tensor:
    """StyleCLIP's reduction: ``[K, M, D]`` embeddings at -alpha and +alpha -> relevance rows ``[K, D]``.

    The embeddings are normalised first (StyleCLIP normalises the raw CLIP features); per image the difference is
    normalised, averaged over the ``M`` images and normalised again. Zero changes give zero rows.
    """
    diff = F.normalize(e_plus.float(), dim=-1) - F.normalize(e_minus.float(), dim=-1)  # [K, M, D]
    norm = diff.norm(dim=-1, keepdim=True)
    unit = torch.where(norm > ZERO_CHANGE, diff / norm.clamp_min(ZERO_CHANGE), torch.zeros_like(diff))
    mean = unit.mean(dim=1)  # [K, D]
    mnorm = mean.norm(dim=-1, keepdim=True)
    return torch.where(mnorm > ZERO_CHANGE, mean / mnorm.clamp_min(ZERO_CHANGE), torch.zeros_like(mean))


@torch.no_grad()
def channel_relevance(generator, clip_model, ws: torch.Tensor, s: torch.Tensor, mean: torch.Tensor,
                      std: torch.Tensor, *, alpha: float = 5.0, batch: int = 128, progress: bool = True) -> torch.Tensor:
    """The relevance matrix ``R`` ``[C, clip_dim]`` (float32, CPU).

    Args:
        generator: the generator (eval, on its device).
        clip_model: a :class:`zsgm.clip.ClipModel`.
        ws: ``[M, n_latent, D]`` W+ codes of the M images (the ToRGB layers read them).
        s: ``[M, C]`` their S codes.
        mean, std: ``[C]`` per-channel statistics of S codes (over many samples).
        alpha: the perturbation in standard deviations.
        batch: images per forward (memory only).
        progress: show a progress bar (one step per channel).
    """
    device = next(generator.parameters()).device
    n_ch = style_layout(generator)[-1].stop
    m = ws.shape[0]
    if s.shape != (m, n_ch) or mean.shape != (n_ch,) or std.shape != (n_ch,):
        raise ValueError(f"channel_relevance: expected s [{m}, {n_ch}], mean and std [{n_ch}]; got "
                         f"{tuple(s.shape)}, {tuple(mean.shape)}, {tuple(std.shape)}")
    ws, s = ws.to(device), s.to(device)
    mean, std = mean.to(device), std.to(device)
    per_group = max(1, batch // (2 * m))  # channels per group: all 2 M images of a channel stay together
    out = torch.zeros(n_ch, clip_model.embed_dim)
    bar = tqdm(total=n_ch, desc="deltaedit relevance", unit="channel", disable=not progress, dynamic_ncols=True)
    with shared_weight_modconv(generator):
        for first in range(0, n_ch, per_group):
            out[first:first + per_group] = _group_relevance(generator, clip_model, ws, s, mean, std, first,
                                                            min(first + per_group, n_ch), alpha, batch)
            bar.update(min(per_group, n_ch - first))
    bar.close()
    return out


def _group_relevance(generator, clip_model, ws, s, mean, std, first: int, stop: int, alpha: float, batch: int):
    """Relevance rows of channels ``first .. stop - 1``: their 2 M images in batches of ``batch``."""
    device, m, n_ch = ws.device, ws.shape[0], s.shape[1]
    chans = torch.arange(first, stop, device=device)  # [K]
    k = chans.shape[0]
    signs = torch.tensor([-1.0, 1.0], device=device)
    rows_s = s[None, None].repeat(k, 2, 1, 1)  # [K, 2, M, C]
    values = mean[chans][:, None] + signs[None, :] * alpha * std[chans][:, None]  # [K, 2]
    rows_s[torch.arange(k, device=device), :, :, chans] = values[:, :, None]
    rows_s = rows_s.reshape(k * 2 * m, n_ch)
    rows_ws = ws[None].expand(k * 2, -1, -1, -1).reshape(k * 2 * m, *ws.shape[1:])
    emb = []
    for start in range(0, rows_s.shape[0], batch):
        img = synthesis_from_styles(generator, rows_s[start:start + batch], rows_ws[start:start + batch],
                                    noise_mode="const")
        emb.append(clip_model.encode_image(img).float())
    emb = torch.cat(emb).reshape(k, 2, m, -1)
    return relevance_from_features(emb[:, 0], emb[:, 1]).cpu()


def write_relevance(path: str | Path, relevance: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                    settings: dict) -> None:
    """``relevance.safetensors``: ``relevance`` ``[C, D]``, the S statistics, and the settings as metadata (atomic)."""
    from safetensors.torch import save

    tensors = {"relevance": relevance.float().contiguous(), "mean": mean.float().contiguous(),
               "std": std.float().contiguous()}
    meta = {"format": RELEVANCE_FORMAT, "settings": json.dumps(settings, sort_keys=True)}
    atomic_write_bytes(path, save(tensors, metadata=meta))


def read_relevance(path: str | Path, *, settings: dict | None = None) -> torch.Tensor | None:
    """The relevance matrix of ``path``; None when the file is missing or was made with other ``settings``.

    Raises:
        ValueError: the file exists but is not a relevance file (one line naming it).
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = dict(fh.metadata() or {})
            if meta.get("format") != RELEVANCE_FORMAT:
                raise ValueError(f"{path}: not a DeltaEdit relevance file (format {meta.get('format')!r})")
            if settings is not None and json.loads(meta.get("settings", "{}")) != json.loads(
                    json.dumps(settings, sort_keys=True)):
                return None
            return fh.get_tensor("relevance")
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors' own error types
        raise ValueError(f"{path}: not a readable relevance file ({exc})") from None
