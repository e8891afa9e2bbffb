"""Inference-time style mixing of One-shot CLIP (Kwon & Ye): the fine W+ slots of every sample are replaced.

OneshotCLIP's ``test_sample.py`` truncates each sample (``lerp(w, w_mean, 0.3)``, psi 0.7), broadcasts it to
the 18 slots of a 1024-px generator, then keeps slots ``< mix_idx = 11`` from the sample and sets slots
``>= 11`` to the source generator's mean latent ``w_mean`` (mean of the mapping over 10,000 samples). Slot 11
drives the first 256-px convolution (and the 128-px ToRGB), so coarse and middle structure come from the sample
and the finest layers from the mean. METHODS.md section 6.3: whether the paper mixes with the reference latent
``w_ref`` instead is unconfirmed, so both are offered (``mix_with = "mean" | "reference"``, default "mean").

Python API: :func:`mix_fine_slots`, :func:`default_mix_slot`, :func:`mixing_latent` and
:func:`load_reference_latent`; ``zsgm sample --mix-with mean|reference --mix-from SLOT`` uses them.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

MIX_WITH = ("mean", "reference")

#: The reference latent written by the one-shot plugin's ``reference-search`` in a run directory.
REFERENCE_LATENT = Path("reference") / "latent.safetensors"
REFERENCE_TENSOR = "w_ref"  # [1, n_latent, D]

#: OneshotCLIP's split for its 1024-px (18-slot) generator: slots >= 11 are mixed.
PAPER_MIX_SLOT, PAPER_N_LATENT = 11, 18


def default_mix_slot(n_latent: int) -> int:
    """The first mixed slot for a generator with ``n_latent`` W+ slots: the paper's 11 of 18, scaled.

    Rule: ``floor(n_latent * 11 / 18 + 0.5)`` (the same fraction of slots, rounded half up), kept within
    ``[1, n_latent - 1]`` so at least one slot comes from each side. So 18 -> 11 (1024 px, as published),
    16 -> 10 (512), 14 -> 9 (256), 12 -> 7 (128), 10 -> 6 (64), 8 -> 5 (32 px, the shapes world and
    tiny-random). The fraction, not "the top three resolutions", is kept: at 32 px the top three resolutions
    would leave only the 4x4 layer to the sample, and the sample's content would be lost.

    Raises:
        ValueError: ``n_latent`` below 2.
    """
    if isinstance(n_latent, bool) or not isinstance(n_latent, int) or n_latent < 2:
        raise ValueError(f"default_mix_slot: n_latent must be an int >= 2; got {n_latent!r}")
    slot = math.floor(n_latent * PAPER_MIX_SLOT / PAPER_N_LATENT + 0.5)
    return min(max(slot, 1), n_latent - 1)


def mix_fine_slots(ws: torch.Tensor, *, with_: torch.Tensor, from_slot: int) -> torch.Tensor:
    """``ws`` with slots ``>= from_slot`` taken from ``with_`` (a new tensor; ``ws`` is not changed).

    Args:
        ws: ``[N, L, D]`` W+ codes of the samples.
        with_: ``[1, L, D]`` (e.g. the reference latent) or ``[1, D]`` (e.g. the mean latent, used in every slot).
        from_slot: first replaced slot, ``0 <= from_slot <= L`` (``L``: nothing replaced, ``0``: everything).

    Returns:
        ``[N, L, D]``: slots ``< from_slot`` from ``ws``, the others from ``with_`` (broadcast over ``N``).

    Raises:
        ValueError: shapes that do not fit, or ``from_slot`` out of range (naming what was given).
    """
    if ws.ndim != 3:
        raise ValueError(f"mix_fine_slots: ws must be [N, L, D]; got {tuple(ws.shape)}")
    _, n_latent, dim = ws.shape
    if tuple(with_.shape) == (1, dim):
        with_ = with_[:, None, :].expand(1, n_latent, dim)  # [1, L, D]
    elif tuple(with_.shape) != (1, n_latent, dim):
        raise ValueError(f"mix_fine_slots: with_ must be [1, {n_latent}, {dim}] or [1, {dim}] to fit ws "
                         f"{tuple(ws.shape)}; got {tuple(with_.shape)}")
    if isinstance(from_slot, bool) or not isinstance(from_slot, int) or not 0 <= from_slot <= n_latent:
        raise ValueError(f"mix_fine_slots: from_slot must be an int in [0, {n_latent}]; got {from_slot!r}")
    with_ = with_.to(device=ws.device, dtype=ws.dtype)
    fine = with_[:, from_slot:].expand(ws.shape[0], -1, -1)  # [N, L - from_slot, D]
    return torch.cat([ws[:, :from_slot], fine], dim=1)


def load_reference_latent(run_dir: str | Path, *, n_latent: int | None = None,
                          style_dim: int | None = None) -> torch.Tensor:
    """The run's reference latent ``w_ref`` ``[1, n_latent, D]`` (float32, CPU) from
    ``<run_dir>/reference/latent.safetensors``, checked against the generator's shape when given.

    Raises:
        ValueError: one line naming the file: missing (the run did not use ``reference-search``), unreadable,
            without ``w_ref``, of the wrong shape, or with non-finite values.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(run_dir) / REFERENCE_LATENT
    if not path.is_file():
        raise ValueError(f"{path}: no reference latent (it is written by the one-shot technique reference-search; "
                         f"was {run_dir} adapted with --reference?)")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable safetensors file ({str(exc).splitlines()[0][:120]})") from None
    if REFERENCE_TENSOR not in tensors:
        raise ValueError(f"{path}: no tensor {REFERENCE_TENSOR!r} (found: {', '.join(sorted(tensors)) or 'none'})")
    w_ref = tensors[REFERENCE_TENSOR]
    want = (1, "n_latent" if n_latent is None else n_latent, "D" if style_dim is None else style_dim)
    if w_ref.ndim != 3 or any(isinstance(n, int) and n != got for n, got in zip(want, w_ref.shape)):
        raise ValueError(f"{path}: {REFERENCE_TENSOR} has shape {list(w_ref.shape)}; the generator needs "
                         f"[{', '.join(map(str, want))}]")
    if not w_ref.is_floating_point() or not bool(torch.isfinite(w_ref).all()):
        raise ValueError(f"{path}: {REFERENCE_TENSOR} must hold finite floating-point values")
    return w_ref.float()


def mixing_latent(generator, mix_with: str, *, run_dir: str | Path | None = None) -> torch.Tensor:
    """What the fine slots are mixed with, on the generator's device.

    ``"mean"``: ``generator.default_mean_latent()`` ``[1, D]``, the same centre as truncation. The adaptation
    keeps the mapping network frozen, so for an adapted generator this is the source's mean latent, as in
    OneshotCLIP. ``"reference"``: :func:`load_reference_latent` of ``run_dir`` ``[1, n_latent, D]``.

    Raises:
        ValueError: an unknown ``mix_with``; ``"reference"`` without ``run_dir``; the reference file's problems.
    """
    if mix_with not in MIX_WITH:
        raise ValueError(f"mix_with must be one of {', '.join(MIX_WITH)}; got {mix_with!r}")
    device = next(generator.parameters()).device
    if mix_with == "mean":
        with torch.no_grad():
            return generator.default_mean_latent().reshape(1, -1).to(device)
    if run_dir is None:
        raise ValueError("mix_with 'reference' needs the run directory that holds reference/latent.safetensors")
    return load_reference_latent(run_dir, n_latent=generator.n_latent,
                                 style_dim=generator.arch.style_dim).to(device)
