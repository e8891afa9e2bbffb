"""Helpers shared by the library metrics: weight files (offline, checksummed), image conversions, the record.

Offline rule: a metric never downloads. Each weight file is either given (``ctx.weights[key]``, ``zsgm eval
--weights KEY=PATH``) or read from the cache folder the library itself reads (named in the error); a missing file is
one :class:`~zsgm.metrics.api.MetricError` line naming the file and where to put it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path
from typing import Any, Iterable, Optional

import torch

from zsgm.metrics.api import EvalContext, MetricError

_SHA_CACHE: dict[tuple, str] = {}


def sha256_file(path: str | Path) -> str:
    """sha256 hex of a file (cached per path, size and modification time: a weight file is hashed once)."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def library_version(dist: str) -> str:
    """``"<dist> <version>"`` of an installed distribution (``"torch-fidelity 0.4.0"``)."""
    try:
        return f"{dist} {importlib.metadata.version(dist)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{dist} (not installed)"


def weight_file(ctx: EvalContext, key: str, *, metric: str, file_name: str, cache_dir: Optional[Path],
                cache_owner: str = "", url: str = "") -> Path:
    """The local weight file for ``key``: ``ctx.weights[key]``, else ``cache_dir/file_name``; never a download.

    ``cache_owner`` says whose cache folder ``cache_dir`` is, in words, for the error message.

    Raises:
        MetricError: one line naming the file, the ``--weights`` key and the folder to put it in.
    """
    given = ctx.weights.get(key)
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            what = "is a directory" if path.is_dir() else "no such file"
            raise MetricError(f"{metric}: weights {key}={path}: {what} (give the file {file_name})")
        return path
    if cache_dir is not None:
        cached = Path(cache_dir) / file_name
        if cached.is_file():
            return cached
        where = f"or put it in {cache_dir}" + (f" ({cache_owner})" if cache_owner else "")
    else:
        where = "(no cache folder is read: the path must be given)"
    source = f"; it is {url}" if url else ""
    raise MetricError(f"{metric}: weight file {file_name} not found: give --weights {key}=PATH {where}{source}")


def weight_record(path: Path) -> dict[str, str]:
    """``{"path": ..., "sha256": ...}`` for the reporting record."""
    return {"path": str(path), "sha256": sha256_file(path)}


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """``[N, 3, H, W]`` in [-1, 1] -> uint8 as a PNG of it holds (torchvision ``save_image``: clamp, x255, +0.5,
    truncate), so in-memory metrics see what file-based scripts read back from lossless PNGs."""
    x = (x.detach().float().clamp(-1, 1) + 1) / 2
    return (x * 255 + 0.5).clamp(0, 255).to(torch.uint8)


def from_uint8(x: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, 3, H, W]`` -> float in [-1, 1] (``ToTensor`` then ``Normalize(0.5, 0.5)``)."""
    return x.float() / 255 * 2 - 1


def check_images(x: Any, what: str, *, min_count: int = 1) -> torch.Tensor:
    """``x`` as a ``[N, 3, H, W]`` float tensor with at least ``min_count`` images, else MetricError."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise MetricError(f"{what}: need images [N, 3, H, W]; got {shape}")
    if x.shape[0] < min_count:
        raise MetricError(f"{what}: need at least {min_count} images; got {x.shape[0]}")
    return x


def int_option(ctx: EvalContext, metric: str, key: str, default: Any, *, minimum: Optional[int] = 1) -> Any:
    """``ctx.options[metric][key]`` (or ``default``) as an int of at least ``minimum`` (None: any int); a ``None``
    default given back as is (an option that may be unset).

    Raises:
        MetricError: one line naming ``metric.key`` and the bad value.
    """
    value = ctx.option(metric, key, default)
    if value is None and default is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int):
        raise MetricError(f"option {metric}.{key} must be an integer; got {value!r}")
    if minimum is not None and value < minimum:
        raise MetricError(f"option {metric}.{key} must be at least {minimum}; got {value}")
    return value


def batches(x: torch.Tensor, size: int) -> Iterable[torch.Tensor]:
    """Consecutive slices of ``x`` along dim 0, ``size`` at a time."""
    for i in range(0, x.shape[0], size):
        yield x[i:i + size]


def base_record(ctx: EvalContext, *, metric: str, protocol: str, library: str, n_generated: int) -> dict[str, Any]:
    """The fields every library metric's reporting record has (docs/EVALUATION.md, "Reporting record")."""
    return {"metric": metric, "protocol": protocol, "library": library, "n_generated": int(n_generated),
            "seed": ctx.seed, "truncation": ctx.truncation, "noise_mode": ctx.noise_mode}
