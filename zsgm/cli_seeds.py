"""Seeds as NVIDIA's ``gen_images.py`` reads and draws them: ``--seeds 0-35,40`` and one latent per seed.

The latent of seed ``s`` is ``np.random.RandomState(s).randn(1, z_dim)`` (see :func:`seed_latent`), so a seed
gives the same image here as with NVIDIA's script for the same generator.
"""

from __future__ import annotations

import argparse

SEED_LIMIT = 2 ** 32  # numpy's RandomState takes seeds in [0, 2**32)
MAX_SEEDS = 100_000  # one call of `zsgm sample`; a typo such as 0-4000000000 should not start a day's work


def parse_seeds(spec: str) -> list[int]:
    """``"0-3,7"`` -> ``[0, 1, 2, 3, 7]``: NVIDIA ``gen_images.py``'s ``--seeds`` syntax (inclusive ranges).

    Raises:
        argparse.ArgumentTypeError: naming the bad part (empty, not a number, ``"0-"``, ``"5-2"``, a seed
            outside ``[0, 2**32)``, a seed given twice, more than :data:`MAX_SEEDS` seeds).
    """
    if not spec.strip():
        raise argparse.ArgumentTypeError("empty; give seeds such as 0-15 or 0,3,7 or 0-35,40")
    ranges: list[tuple[int, int]] = []
    for part in spec.split(","):
        part = part.strip()
        first, dash, last = part.partition("-")
        if not part or not first.strip().isdigit() or (dash and not last.strip().isdigit()):
            raise argparse.ArgumentTypeError(
                f"{part!r} in {spec!r} is not a seed or a range (give seeds such as 0-15 or 0,3,7 or 0-35,40)")
        lo = int(first)
        hi = int(last) if dash else lo
        if hi < lo:
            raise argparse.ArgumentTypeError(f"{part!r} in {spec!r} is an empty range (write {hi}-{lo})")
        if hi >= SEED_LIMIT:
            raise argparse.ArgumentTypeError(f"{part!r} in {spec!r}: seeds must be below 2**32 = {SEED_LIMIT}")
        ranges.append((lo, hi))
    count = sum(hi - lo + 1 for lo, hi in ranges)
    if count > MAX_SEEDS:
        raise argparse.ArgumentTypeError(f"{spec!r} names {count} seeds; at most {MAX_SEEDS} per call")
    seeds = [s for lo, hi in ranges for s in range(lo, hi + 1)]
    if len(set(seeds)) != len(seeds):
        seen: set[int] = set()
        twice = next(s for s in seeds if s in seen or seen.add(s))
        raise argparse.ArgumentTypeError(f"{spec!r} names seed {twice} twice")
    return seeds



def seed_latent(seed: int, z_dim: int):
    """The latent ``z`` ``[1, z_dim]`` float32 of ``seed``, as NVIDIA's ``gen_images.py`` draws it.

    NVIDIA draws ``np.random.RandomState(seed).randn(1, z_dim)`` (float64) and its mapping network casts it
    to float32 first; the cast is done here, so the same seed gives the same latent.
    """
    import numpy as np
    import torch

    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim)).to(torch.float32)


def seed_code(generator, seed: int, *, truncation: float, mean, noise_mode: str, device, mix_with=None,
              mix_from: int | None = None):
    """``(ws [1, n_latent, D], noise maps)`` that :func:`render_seed` synthesises for ``seed`` (for tools that edit
    the code before rendering it, such as ``zsgm edit``).

    ``w = mean + psi * (w - mean)`` over every layer, computed as NVIDIA's ``w_avg.lerp(w, psi)``: ``psi < 1`` pulls
    towards the mean latent, ``psi > 1`` extrapolates away from it, ``psi = 1`` leaves ``w`` as it is.
    Random noise (``noise_mode="random"``) is drawn from a generator seeded with ``seed``.
    With ``mix_with`` (``[1, D]`` or ``[1, n_latent, D]``), slots ``>= mix_from`` of the truncated code are
    replaced by it (:func:`zsgm.style_mixing.mix_fine_slots`, One-shot CLIP's inference-time mixing).
    """
    import torch

    z = seed_latent(seed, generator.arch.style_dim).to(device)
    w = generator.mapping(z)  # [1, D]
    if truncation != 1:
        w = torch.lerp(mean.reshape(1, -1).to(w), w, truncation)  # NVIDIA's very arithmetic, bit for bit
    ws = w[:, None, :].repeat(1, generator.n_latent, 1)  # [1, n_latent, D]
    if mix_with is not None:
        from zsgm.style_mixing import mix_fine_slots

        ws = mix_fine_slots(ws, with_=mix_with, from_slot=mix_from)
    noise = generator.make_noise(1, mode=noise_mode, rng=torch.Generator().manual_seed(seed))
    return ws, noise


def render_seed(generator, seed: int, *, truncation: float, mean, noise_mode: str, device, mix_with=None,
                mix_from: int | None = None):
    """One image ``[1, 3, H, W]`` (roughly [-1, 1]) for ``seed``: the code of :func:`seed_code`, synthesised."""
    ws, noise = seed_code(generator, seed, truncation=truncation, mean=mean, noise_mode=noise_mode, device=device,
                          mix_with=mix_with, mix_from=mix_from)
    return generator.synthesis(ws, noise=noise)

