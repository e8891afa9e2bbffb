"""Atomic file writes, reading zsgm-written TOML files, and small image helpers (PNG grids, reading reference
images)."""

from __future__ import annotations

import io
import json
import os
import tempfile
import tomllib
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError


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


def nearest_existing(path: Path) -> Path | None:
    """``path`` itself or its nearest parent that exists; None when none does."""
    return next((p for p in [path, *path.parents] if p.exists()), None)


def file_in_the_way(path: Path) -> Path | None:
    """The file that stops ``path`` from being (or being made as) a directory: ``path`` itself or its nearest
    existing parent when that is not a directory; None when nothing blocks."""
    existing = nearest_existing(path)
    return existing if existing is not None and not existing.is_dir() else None


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
        blocker = file_in_the_way(path.parent)
        reason = f"{blocker} is a file, not a directory" if blocker is not None else (exc.strerror or str(exc))
        raise WriteError(exc.errno, f"cannot write {path}: {reason}") from None
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


def atomic_write_bytes(path: str | Path, data: bytes | memoryview) -> None:
    """Write bytes atomically with a plain file write, so a full disk is an ``OSError`` with its real errno
    (ENOSPC, EDQUOT, EIO) and hence a :class:`WriteError` naming ``path``."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    atomic_write(path, write)


def atomic_torch_save(obj, path: str | Path) -> None:
    """``torch.save`` atomically, serialised in memory first: torch's own file writer reports a short write on
    a full disk as an opaque ``RuntimeError`` ("unexpected pos ..."); a plain write raises :class:`WriteError`."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def read_toml_file(path: Path, *, error: Callable[[Exception], Exception]) -> dict:
    """The TOML table in ``path`` (UTF-8), for files zsgm wrote itself (a run's ``recipe.toml``).

    Raises:
        Exception: ``error(exc)`` when the file cannot be read, is not UTF-8 or is not valid TOML; ``exc`` is
            the OSError (``FileNotFoundError`` when missing), UnicodeDecodeError or TOMLDecodeError. User-written
            recipes go through :func:`zsgm.recipe_io.read_recipe_file`, whose messages say more.
    """
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise error(exc) from None


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


#: Largest image (width x height) :func:`load_image` decodes: 8192 x 8192. Beyond it a file is refused from its
#: header alone, before any pixel is decoded (a small file can declare a huge image: a decompression bomb).
MAX_IMAGE_PIXELS = 8192 * 8192

#: Smallest side :func:`load_image` accepts, measured on the file itself (before any resize).
MIN_IMAGE_SIDE = 2


def _image_error(path: Path, what: str) -> ValueError:
    return ValueError(f"image {str(path)!r}: {what}")


def _check_image_file(path: Path) -> None:
    """Refuse, naming ``path``, what is not a regular readable file (missing, a directory, unreadable)."""
    if path.is_dir():
        raise _image_error(path, "is a directory, not an image file")
    if not path.exists():
        raise _image_error(path, "no such file")
    if not path.is_file():
        raise _image_error(path, "is not a regular file")
    if not os.access(path, os.R_OK):
        raise _image_error(path, "permission denied")


def _rgb_array(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> ``[H, W, 3]`` uint8 RGB.

    8-bit modes (L, LA, P, RGBA, CMYK, YCbCr, 1, ...) use PIL's own conversion, as CLIP's preprocessing does
    (alpha is dropped, not composited). High-bit-depth modes are scaled, not clipped as PIL's ``convert`` would:
    ``I;16*`` by 65535; ``I`` by 65535 when a value exceeds 255, else as 8-bit; ``F`` as [0, 1] when every value
    is within it, else as 8-bit or 16-bit by its maximum. LAB and HSV are refused: PIL's ``convert`` copies their
    channels as if they were RGB, which would silently give wrong colours.
    """
    if img.mode in _UNCONVERTED_MODES:
        raise ValueError(f"colour mode {img.mode} is not supported (PIL cannot convert it to RGB); save it as RGB")
    if img.mode == "P":
        img = img.convert("RGBA")  # palettes with transparency convert cleanly only through RGBA
    if img.mode.startswith("I") or img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)  # [H, W]
        if not np.isfinite(arr).all():
            raise ValueError("holds non-finite pixel values")
        top = float(arr.max(initial=0.0))
        if img.mode.startswith("I;16") or (img.mode == "I" and top > 255):
            scale = 65535.0
        elif img.mode == "F" and top <= 1.0:
            scale = 1.0
        else:
            scale = 255.0 if top <= 255 else 65535.0
        gray = np.clip(np.round(arr / scale * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


_UNCONVERTED_MODES = ("LAB", "HSV")

#: EXIF orientation tag; values 2-8 mean the stored pixels are mirrored or rotated relative to the view.
_EXIF_ORIENTATION = 0x0112


def _upright(img: Image.Image) -> Image.Image:
    """``img`` as a viewer shows it: its EXIF orientation applied (camera photos store pixels sideways).
    Unreadable EXIF is ignored: the pixels are used as stored."""
    try:
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - malformed metadata must not make a readable image unreadable
        return img
    return ImageOps.exif_transpose(img) if orientation in range(2, 9) else img


def _short_side_crop(img: Image.Image, size: int) -> Image.Image:
    """CLIP's PIL preprocessing: bicubic resize of the short side to ``size`` (torchvision ``Resize(int)``
    rounding: long side ``int(size * long / short)``), then a ``size`` x ``size`` centre crop (torchvision
    ``CenterCrop``: offsets ``int(round((side - size) / 2))``)."""
    w, h = img.size
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.BICUBIC)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def load_image(path: str | Path, *, size: int | None = None, fit: str = "crop") -> torch.Tensor:
    """Read an image file of any PIL mode as RGB ``[1, 3, H, W]`` in [-1, 1]; optionally resize to size x size.

    Args:
        path: the image file.
        size: output side; None keeps the file's size.
        fit: with ``size``: "crop" resizes the short side to ``size`` (bicubic) and centre-crops, as CLIP's
            standard PIL preprocessing does (the aspect ratio is kept); "squash" resizes straight to
            ``size`` x ``size`` (the aspect ratio is not kept).

    The file is checked before any pixel is decoded: its own size must be at least ``MIN_IMAGE_SIDE`` on each
    side and at most ``MAX_IMAGE_PIXELS`` in all (refused from the header, so a decompression bomb costs
    nothing). Modes are handled as :func:`_rgb_array` says; an EXIF orientation is applied (the image is read
    upright, as a viewer shows it); a multi-frame file (GIF, TIFF) gives its first frame.

    Raises:
        ValueError: one line naming the file: missing, a directory, unreadable, not an image, truncated or
            corrupt, too small, too large, or with non-finite pixels.
    """
    if fit not in ("crop", "squash"):
        raise ValueError(f"load_image fit must be 'crop' or 'squash'; got {fit!r}")
    path = Path(path)
    _check_image_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size  # from the header: nothing decoded yet
                if w * h > MAX_IMAGE_PIXELS:
                    raise _image_error(path, f"{w}x{h} pixels is larger than the {MAX_IMAGE_PIXELS}-pixel limit "
                                             f"(8192x8192); scale it down first")
                if min(w, h) < MIN_IMAGE_SIDE:
                    raise _image_error(path, f"{w}x{h} pixels is too small (each side must be at least "
                                             f"{MIN_IMAGE_SIDE})")
                rgb = Image.fromarray(_rgb_array(_upright(img)))  # [H, W, 3] uint8
    except Image.DecompressionBombError:  # PIL's own limit, met before ours could look at the header
        raise _image_error(path, f"declares more than the {MAX_IMAGE_PIXELS}-pixel limit (8192x8192); "
                                 f"scale it down first") from None
    except UnidentifiedImageError:
        raise _image_error(path, "not an image file (or a format PIL cannot read)") from None
    except (OSError, SyntaxError, EOFError) as exc:  # truncated or corrupt pixel data
        raise _image_error(path, f"unreadable image data ({exc})") from None
    except ValueError as exc:
        if str(exc).startswith("image "):
            raise
        raise _image_error(path, str(exc)) from None
    if size is not None:
        rgb = _short_side_crop(rgb, size) if fit == "crop" else rgb.resize((size, size), Image.BICUBIC)
    arr = np.asarray(rgb, dtype=np.float32)  # [H, W, 3]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None] / 127.5 - 1.0


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one JSON line (flushed); a failed write is a :class:`WriteError` naming ``path``."""
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
    except WriteError:
        raise
    except OSError as exc:
        raise WriteError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from None


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
