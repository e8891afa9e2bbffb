"""W+ latent files of real images (e4e / ReStyle inversions): ``.pt`` (one tensor) or ``.npy`` ``[N, n_latent, D]``.

Read safely: ``torch.load(..., weights_only=True)`` and ``numpy.load(..., allow_pickle=False)`` execute nothing.
Every problem is one line naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

LATENT_SUFFIXES = (".pt", ".pth", ".npy")


def _load_array(path: Path):
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ValueError(f"{path}: not a readable .npy array without pickled objects ({exc})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds; all mean "not a tensor file"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: not a readable torch tensor file ({first[:160]})") from None


def read_latent_file(path: str | Path, *, n_latent: int, style_dim: int) -> torch.Tensor:
    """W+ codes ``[N, n_latent, style_dim]`` float32 (CPU) from a ``.pt``/``.pth`` tensor or a ``.npy`` array.

    Raises:
        ValueError: one line naming the file: missing, unknown suffix, unreadable, not one array, wrong shape
            or dtype, no rows, NaN or infinite values.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such latent file" if not path.exists() else f"{path}: not a file")
    if path.suffix.lower() not in LATENT_SUFFIXES:
        raise ValueError(f"{path}: a W+ latent file must be .pt/.pth (one torch tensor) or .npy (a numpy array), "
                         f"found {path.suffix or 'no suffix'!r}")
    data = _load_array(path)
    if isinstance(data, np.ndarray):
        if data.dtype.kind != "f":
            raise ValueError(f"{path}: W+ codes must be floating point, found dtype {data.dtype}")
        data = torch.from_numpy(np.ascontiguousarray(data))
    if not isinstance(data, torch.Tensor):
        raise ValueError(f"{path}: expected one tensor [N, {n_latent}, {style_dim}] of W+ codes, found "
                         f"{type(data).__name__}")
    want = (n_latent, style_dim)
    if data.ndim != 3 or tuple(data.shape[1:]) != want:
        raise ValueError(f"{path}: W+ codes must be [N, {n_latent}, {style_dim}] for this generator, found "
                         f"{list(data.shape)}")
    if not data.is_floating_point():
        raise ValueError(f"{path}: W+ codes must be floating point, found dtype {data.dtype}")
    if data.shape[0] == 0:
        raise ValueError(f"{path}: holds no codes (N = 0)")
    data = data.detach().to(torch.float32)
    bad = ~torch.isfinite(data).flatten(1).all(dim=1)
    if bool(bad.any()):
        raise ValueError(f"{path}: {int(bad.sum())} of {data.shape[0]} codes hold NaN or infinite values (first: "
                         f"row {int(bad.nonzero()[0, 0])})")
    return data.contiguous()
