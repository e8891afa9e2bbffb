"""Atomic file writes and small image helpers (PNG grids, reading reference images)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError


def current_umask() -> int:
    """The process umask (read without changing it where the OS allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic read-and-restore
    os.umask(mask)
    return mask


class WriteError(OSError):
    """A file could not be written; the message names the file the user asked for (not a temp file)."""


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then atomically rename onto ``path`` (same directory, fsynced).

    The file gets the mode a plain ``open()`` would give it (0666 less the umask), not ``mkstemp``'s 0600,
    so a shared run directory stays readable as the umask says. A failure (unwritable folder, disk full)
    raises :class:`WriteError` naming ``path``; any existing ``path`` is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise WriteError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from None
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise WriteError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from None
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    atomic_write(path, write)


def atomic_torch_save(obj, path: str | Path) -> None:
    """``torch.save`` atomically."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``[N, 3, H, W]`` in [-1, 1] -> ``[N, H, W, 3]`` uint8."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def image_grid(rows: list[torch.Tensor], *, pad: int = 2, min_cell: int = 96) -> Image.Image:
    """Stack image rows (each ``[N, 3, H, W]`` in [-1, 1], same N) into one PIL grid.

    Small images are upscaled (nearest) to at least ``min_cell`` pixels so a person can see them.
    """
    arrays = [to_uint8(r) for r in rows]
    n, h, w, _ = arrays[0].shape
    scale = max(1, -(-min_cell // h))
    h, w = h * scale, w * scale
    grid = np.full((len(rows) * (h + pad) + pad, n * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for r, arr in enumerate(arrays):
        for c in range(arr.shape[0]):
            cell = arr[c].repeat(scale, axis=0).repeat(scale, axis=1)
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            grid[y:y + h, x:x + w] = cell
    return Image.fromarray(grid)


def save_png(image: Image.Image, path: str | Path) -> None:
    """Save a PIL image as PNG atomically."""
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def load_image(path: str | Path, *, size: int | None = None) -> torch.Tensor:
    """Read an RGB image file as ``[1, 3, H, W]`` in [-1, 1]; optionally resize (bicubic) to size x size.

    Raises:
        ValueError: naming the file when it is missing or not a readable image.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image {str(path)!r}: no such file")
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if size is not None:
                img = img.resize((size, size), Image.BICUBIC)
            arr = np.asarray(img, dtype=np.float32)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"image {str(path)!r}: not a readable image ({exc})") from None
    if arr.ndim != 3 or min(arr.shape[:2]) < 2:
        raise ValueError(f"image {str(path)!r}: unusable size {arr.shape[:2]}")
    return torch.from_numpy(arr).permute(2, 0, 1)[None] / 127.5 - 1.0


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one JSON line (flushed)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()


def truncate_jsonl(path: str | Path, *, keep: Callable[[dict], bool]) -> None:
    """Rewrite a JSONL log keeping only the records ``keep`` accepts (used on resume)."""
    path = Path(path)
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
        if keep(record):
            kept.append(json.dumps(record))
    atomic_write_text(path, "".join(k + "\n" for k in kept))
