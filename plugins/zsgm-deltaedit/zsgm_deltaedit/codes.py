"""DeltaEdit's training data from the generator itself (METHODS.md 7.2), cached on disk in chunks.

For each sample: ``z ~ N(0, I)`` (psi = 1), ``w = mapping(z)`` repeated over the W+ slots, its StyleSpace code
``s = ws_to_styles(ws)`` and the unit CLIP image embedding ``c`` of the image decoded from ``s`` with the
generator's constant noise (the released generate_codes.py does the same: its decoder reads ``G.noises``).

On disk (a folder)::

    manifest.json                 settings, layout, and every complete file with its row count and size
    chunk-000000.safetensors      "ws" [n, n_latent, D], "s" [n, C], "c" [n, clip_dim], float32
    ...
    real-000000.safetensors       the same for W+ codes of real images added with add_latent_file

Chunk ``k`` draws its latents from a generator seeded by ``(seed, k)`` (``zsgm.run.step_rng``), so a chunk is the
same whenever it is written, and a run stopped half-way resumes with the chunks it has not written. Each file is
written atomically and the manifest is rewritten after each one; on a restart a chunk is skipped when the manifest
lists it with the expected row count and its file has the recorded size. :class:`CodeReader` draws rows of the
whole set through per-file memory maps, so the set never has to fit in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from zsgm.generator.stylespace import style_layout, synthesis_from_styles, ws_to_styles
from zsgm.io_utils import atomic_write_bytes, atomic_write_text
from zsgm.run import step_rng

from zsgm_deltaedit.latent_files import read_latent_file

__all__ = ["CODES_FORMAT", "CodeReader", "add_latent_file", "build_codes", "encode_codes", "read_manifest",
           "shared_weight_modconv"]

CODES_FORMAT = "zsgm-deltaedit-codes"
CODES_VERSION = 1
MANIFEST = "manifest.json"
NAMES = ("ws", "s", "c")
RNG_STREAM = "deltaedit/codes"


@contextlib.contextmanager
def shared_weight_modconv(generator):
    """Run the modulated convolutions with shared weights (modulating the activations) instead of one grouped
    convolution per sample: the same images to float precision, and faster for the large batches of the codes and
    the relevance on a CPU. The generator's setting is restored afterwards."""
    modules = [m for m in generator.modules() if hasattr(m, "fused")]
    before = [m.fused for m in modules]
    generator.set_fused_modconv(False)
    try:
        yield generator
    finally:
        for m, fused in zip(modules, before):
            m.fused = fused


def chunk_name(index: int) -> str:
    return f"chunk-{index:06d}.safetensors"


def real_name(index: int) -> str:
    return f"real-{index:06d}.safetensors"


@torch.no_grad()
def encode_codes(generator, clip_model, ws: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"ws", "s", "c"}`` on the CPU for W+ codes ``ws`` ``[n, n_latent, D]``: S codes and unit CLIP image
    embeddings of the images decoded from them with constant noise."""
    device = next(generator.parameters()).device
    ws = ws.to(device=device, dtype=torch.float32)
    s = ws_to_styles(generator, ws)  # [n, C]
    images = synthesis_from_styles(generator, s, ws, noise_mode="const")  # [n, 3, H, W]
    c = clip_model.encode_image(images)  # [n, clip_dim], unit
    return {"ws": ws.cpu().contiguous(), "s": s.float().cpu().contiguous(), "c": c.float().cpu().contiguous()}


def _encode_in_batches(generator, clip_model, ws: torch.Tensor, batch: int, bar) -> dict[str, torch.Tensor]:
    parts = []
    with shared_weight_modconv(generator):
        for start in range(0, ws.shape[0], batch):
            parts.append(encode_codes(generator, clip_model, ws[start:start + batch]))
            bar.update(min(batch, ws.shape[0] - start))
    return {k: torch.cat([p[k] for p in parts]) for k in NAMES}


def _chunk_latents(generator, *, seed: int, index: int, rows: int) -> torch.Tensor:
    """W+ codes ``[rows, n_latent, D]`` of chunk ``index``: z from ``step_rng(seed, index)``, psi = 1."""
    z = torch.randn((rows, generator.arch.style_dim), generator=step_rng(seed, index, RNG_STREAM))
    device = next(generator.parameters()).device
    with torch.no_grad():
        w = generator.mapping(z.to(device))  # [rows, D]
    return w[:, None, :].repeat(1, generator.n_latent, 1)


def _write_file(path: Path, tensors: dict[str, torch.Tensor]) -> int:
    from safetensors.torch import save

    data = save({k: tensors[k].contiguous() for k in NAMES}, metadata={"format": CODES_FORMAT})
    atomic_write_bytes(path, data)
    return len(data)


def _layout(generator, clip_model) -> dict:
    return {"n_latent": int(generator.n_latent), "style_dim": int(generator.arch.style_dim),
            "channels": int(style_layout(generator)[-1].stop), "clip_dim": int(clip_model.embed_dim)}


def read_manifest(folder: str | Path) -> dict:
    """The manifest of a codes folder.

    Raises:
        ValueError: missing, unreadable or not a DeltaEdit codes manifest (one line naming the file).
    """
    path = Path(folder) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file; {folder} is not a DeltaEdit codes folder (build it with "
                         f"zsgm_deltaedit.codes.build_codes)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable codes manifest ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != CODES_FORMAT:
        raise ValueError(f"{path}: not a DeltaEdit codes manifest (format {data.get('format') if isinstance(data, dict) else None!r})")
    return data


def _write_manifest(folder: Path, manifest: dict) -> None:
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def _complete(folder: Path, entry: dict | None, rows: int) -> bool:
    """A manifest entry is complete when its row count is ``rows`` and its file has the recorded size."""
    if not entry or entry.get("rows") != rows:
        return False
    path = folder / entry["file"]
    return path.is_file() and path.stat().st_size == entry.get("bytes")


def _check_settings(folder: Path, old: dict, new: dict, what: str) -> None:
    diffs = [f"{k}: {old.get(k)!r} in the cache, {new.get(k)!r} now" for k in sorted(set(old) | set(new))
             if k != "samples" and old.get(k) != new.get(k)]
    if diffs:
        raise ValueError(f"codes folder {folder}: the {what} differ from its manifest ({'; '.join(diffs)}); use "
                         f"another folder")


def build_codes(folder: str | Path, generator, clip_model, *, samples: int, chunk_size: int = 1024, seed: int = 0,
                identity: dict | None = None, batch: int = 256, progress: bool = True) -> dict:
    """Write (or complete) the generator's training codes in ``folder``; returns the manifest.

    Args:
        folder: the codes folder (created).
        generator: the generator (eval mode, on its device).
        clip_model: a :class:`zsgm.clip.ClipModel` (its preprocessing decides the embeddings).
        samples: number of generated samples N.
        chunk_size: rows per chunk file.
        seed: chunk ``k`` draws its latents from ``(seed, k)``.
        identity: what else decides the contents (generator fingerprint, CLIP), checked against the manifest.
        batch: generator / CLIP batch size (memory only).
        progress: show a progress bar.

    Raises:
        ValueError: a bad count, or ``folder`` holds codes made with other settings (naming them).
    """
    for name, value in (("samples", samples), ("chunk_size", chunk_size), ("batch", batch)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"build_codes: {name} must be a positive integer, got {value!r}")
    folder = Path(folder)
    settings = {"samples": samples, "chunk_size": chunk_size, "seed": seed, "truncation": 1.0,
                "noise_mode": "const", "identity": identity or {}}
    layout = _layout(generator, clip_model)
    manifest = {"format": CODES_FORMAT, "version": CODES_VERSION, "settings": settings, "layout": layout,
                "chunks": [], "real": []}
    if (folder / MANIFEST).exists():
        old = read_manifest(folder)
        _check_settings(folder, old.get("settings", {}), settings, "settings")
        _check_settings(folder, old.get("layout", {}), layout, "generator / CLIP sizes")
        manifest["chunks"], manifest["real"] = list(old.get("chunks", [])), list(old.get("real", []))
    n_chunks = -(-samples // chunk_size)
    rows_of = [min(chunk_size, samples - k * chunk_size) for k in range(n_chunks)]
    old_entries = {e["file"]: e for e in manifest["chunks"]}
    entries = [old_entries.get(chunk_name(k)) for k in range(n_chunks)]
    done = [_complete(folder, e, rows) for e, rows in zip(entries, rows_of)]
    manifest["chunks"] = [e for e, ok in zip(entries, done) if ok]
    _write_manifest(folder, manifest)
    bar = tqdm(total=samples, initial=sum(r for r, ok in zip(rows_of, done) if ok), desc="deltaedit codes",
               unit="sample", disable=not progress, dynamic_ncols=True)
    for k, rows in enumerate(rows_of):
        if done[k]:
            continue
        tensors = _encode_in_batches(generator, clip_model, _chunk_latents(generator, seed=seed, index=k, rows=rows),
                                     batch, bar)
        size = _write_file(folder / chunk_name(k), tensors)
        manifest["chunks"].append({"file": chunk_name(k), "rows": rows, "bytes": size})
        manifest["chunks"].sort(key=lambda e: e["file"])
        _write_manifest(folder, manifest)
    bar.close()
    return manifest


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def add_latent_file(folder: str | Path, path: str | Path, *, generator, clip_model, batch: int = 256,
                    progress: bool = True) -> dict:
    """Add the W+ codes of real images (e4e / ReStyle inversions) to a codes folder; returns the manifest.

    The file (``.pt`` tensor or ``.npy`` array ``[N, n_latent, D]``, read without executing anything) gets its S
    codes and CLIP embeddings like the generated samples (embedding the image the generator decodes from the code)
    and is written as ``real-*.safetensors`` files. A file already added (same bytes) is skipped.

    Raises:
        ValueError: one line naming the file (see :func:`zsgm_deltaedit.latent_files.read_latent_file`), or the
            folder is not a codes folder of this generator's sizes.
    """
    folder, path = Path(folder), Path(path)
    manifest = read_manifest(folder)
    _check_settings(folder, manifest.get("layout", {}), _layout(generator, clip_model), "generator / CLIP sizes")
    ws = read_latent_file(path, n_latent=generator.n_latent, style_dim=generator.arch.style_dim)
    digest = _file_sha256(path)
    if any(e.get("source_sha256") == digest for e in manifest.get("real", [])):
        return manifest
    chunk = int(manifest["settings"]["chunk_size"])
    bar = tqdm(total=ws.shape[0], desc=f"deltaedit codes ({path.name})", unit="code", disable=not progress,
               dynamic_ncols=True)
    # entries of a file are only listed once all of them are written: an interrupted add is redone from scratch
    first = len({e["file"] for e in manifest.get("real", [])})
    new = []
    for start in range(0, ws.shape[0], chunk):
        tensors = _encode_in_batches(generator, clip_model, ws[start:start + chunk], batch, bar)
        name = real_name(first + len(new))
        size = _write_file(folder / name, tensors)
        new.append({"file": name, "rows": int(tensors["s"].shape[0]), "bytes": size, "source": str(path),
                    "source_sha256": digest})
    bar.close()
    manifest["real"] = list(manifest.get("real", [])) + new
    _write_manifest(folder, manifest)
    return manifest


# ---------------------------------------------------------------------------------------------- reading


def _safetensors_arrays(path: Path) -> dict[str, np.memmap]:
    """Read-only memory maps of the float32 tensors of a safetensors file (header: 8-byte length, JSON)."""
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise ValueError(f"{path}: tensor {name!r} is {info['dtype']}, expected F32")
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if end - begin != 4 * int(np.prod(shape)):
            raise ValueError(f"{path}: tensor {name!r} has {end - begin} bytes for shape {list(shape)}")
        out[name] = np.memmap(path, dtype=np.float32, mode="r", offset=8 + n + begin, shape=shape)
    return out


class CodeReader:
    """Rows of a codes folder (generated chunks, then real-image files), read through per-file memory maps.

    Args:
        folder: a folder written by :func:`build_codes` (and :func:`add_latent_file`).

    Attributes:
        rows: number of rows in all.
        manifest: the folder's manifest.

    Raises:
        ValueError: a listed file is missing or has another size than the manifest says (one line naming it).
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        self.files = [e for e in self.manifest.get("chunks", [])] + [e for e in self.manifest.get("real", [])]
        if not self.files:
            raise ValueError(f"codes folder {self.folder}: holds no complete chunk yet")
        for e in self.files:
            p = self.folder / e["file"]
            if not p.is_file() or p.stat().st_size != e["bytes"]:
                raise ValueError(f"{p}: missing or not the size its manifest records ({e['bytes']} bytes); rebuild "
                                 f"the codes (build_codes resumes)")
        counts = [int(e["rows"]) for e in self.files]
        self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.rows = int(self.starts[-1])
        self._maps: dict[int, dict[str, np.memmap]] = {}

    def _arrays(self, i: int) -> dict[str, np.memmap]:
        if i not in self._maps:
            self._maps[i] = _safetensors_arrays(self.folder / self.files[i]["file"])
        return self._maps[i]

    def take(self, index: torch.Tensor | Sequence[int], names: Iterable[str] = ("s", "c")) -> dict[str, torch.Tensor]:
        """Rows ``index`` (any order, repeats allowed) of each tensor in ``names``: ``{name: [len(index), ...]}``."""
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.rows):
            raise IndexError(f"codes folder {self.folder}: row index out of range [0, {self.rows})")
        which = np.searchsorted(self.starts, idx, side="right") - 1
        out: dict[str, np.ndarray] = {}
        for i in np.unique(which):
            sel = np.nonzero(which == i)[0]
            arrays = self._arrays(int(i))
            local = idx[sel] - self.starts[i]
            for name in names:
                part = arrays[name][local]
                if name not in out:
                    out[name] = np.empty((idx.size, *part.shape[1:]), dtype=np.float32)
                out[name][sel] = part
        return {k: torch.from_numpy(v) for k, v in out.items()}

    def head(self, n: int, names: Iterable[str] = ("ws", "s", "c")) -> dict[str, torch.Tensor]:
        """The first ``n`` rows (generated samples first)."""
        return self.take(np.arange(min(n, self.rows)), names)

    def per_file(self, names: Iterable[str]) -> Iterator[dict[str, np.ndarray]]:
        """The tensors ``names`` of one file at a time (memory-mapped; a pass over all rows in file order)."""
        for i in range(len(self.files)):
            arrays = self._arrays(i)
            yield {name: arrays[name] for name in names}

    def moments(self, name: str = "s") -> tuple[torch.Tensor, torch.Tensor]:
        """Per-column mean and standard deviation (population, as numpy's default) of a 2-D tensor over all rows,
        accumulated file by file in float64."""
        total, sq, count = None, None, 0
        for arrays in self.per_file([name]):
            a = np.asarray(arrays[name], dtype=np.float64)
            total = a.sum(0) if total is None else total + a.sum(0)
            sq = (a * a).sum(0) if sq is None else sq + (a * a).sum(0)
            count += a.shape[0]
        mean = total / count
        var = np.maximum(sq / count - mean * mean, 0.0)
        return torch.from_numpy(mean).float(), torch.from_numpy(np.sqrt(var)).float()
