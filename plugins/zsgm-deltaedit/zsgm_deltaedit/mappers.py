"""A trained mapper for a generator: found in the cache, or built on first use (codes, training, relevance).

A mapper folder (``<cache>/deltaedit/<generator fingerprint>/mapper-<preset>-<key>/``, or any folder given to
``zsgm edit --mapper``) holds::

    mapper.json              format, the mapper recipe, the mapper's structure, the generator fingerprint, the codes
    fit/                     the zsgm.fit run that trained it (fit.toml, losses.jsonl, checkpoints/, module.safetensors)
    relevance.safetensors    the channel relevance for gating (relevance.py)

:func:`ensure_mapper` does whatever is missing, each part resumable: the codes (skipping complete chunks), the
training (resuming its last checkpoint), the relevance; ``mapper.json`` is written last.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Callable, Optional

import attrs
import torch

from zsgm.generator.stylespace import style_layout
from zsgm.io_utils import atomic_write_text

from zsgm_deltaedit.codes import MANIFEST, CodeReader, add_latent_file, build_codes
from zsgm_deltaedit.mapper import DeltaMapper
from zsgm_deltaedit.recipe import MapperRecipe, mapper_recipe_from_dict, mapper_recipe_to_dict
from zsgm_deltaedit.relevance import RELEVANCE_FILE, channel_relevance, read_relevance, write_relevance
from zsgm_deltaedit.store import generator_dir, settings_key, weights_fingerprint
from zsgm_deltaedit.train import MapperTask

__all__ = ["MAPPER_FILE", "TrainedMapper", "codes_folder", "ensure_mapper", "load_clip", "load_mapper",
           "mapper_folder"]

MAPPER_FILE = "mapper.json"
MAPPER_FORMAT = "zsgm-deltaedit-mapper"
FIT_DIR = "fit"
TRAIN_THREADS = 1


@attrs.define
class TrainedMapper:
    """A mapper ready to edit with.

    Attributes:
        folder: its folder.
        recipe: the recipe it was trained with.
        mapper: the :class:`DeltaMapper` (eval mode, on the device).
        relevance: ``[C, clip_dim]`` on the CPU.
        clip_model: the CLIP it is conditioned on.
        generator_fingerprint: the generator it was trained for.
        codes: the folder of the codes it was trained on (None: not recorded).
        codes_rows: how many of the folder's rows it was trained on (None: all).
    """

    folder: Path
    recipe: MapperRecipe
    mapper: DeltaMapper
    relevance: torch.Tensor
    clip_model: object
    generator_fingerprint: str
    codes: Optional[Path] = None
    codes_rows: Optional[int] = None
    _torgb: dict = attrs.field(factory=dict, init=False, repr=False, eq=False)

    def torgb_direction(self, generator, delta_t: torch.Tensor):
        """The ToRGB colour step's direction for ``delta_t`` (:mod:`zsgm_deltaedit.torgb`), from the mapper's codes;
        computed once per text direction.

        Raises:
            ValueError: the codes folder is missing (one line naming it).
        """
        from zsgm_deltaedit.torgb import torgb_direction

        key = delta_t.detach().float().cpu().numpy().tobytes()
        if key not in self._torgb:
            if self.codes is None or not (Path(self.codes) / MANIFEST).is_file():
                raise ValueError(f"{self.folder}: the ToRGB step needs the codes the mapper was trained on "
                                 f"({self.codes or 'not recorded'}: missing); give --torgb 0 (recipe edit.torgb = 0)")
            self._torgb[key] = torgb_direction(CodeReader(self.codes), generator, delta_t, rows=self.codes_rows)
        return self._torgb[key]


def _clip_record(recipe: MapperRecipe) -> dict:
    c = recipe.clip
    return {"name": c.name, "pretrained": c.pretrained, "preprocess": c.preprocess}


def codes_folder(fingerprint: str, recipe: MapperRecipe, *, root: Path | None = None) -> Path:
    """Where the generator's codes for ``recipe`` live (keyed by the codes settings and the CLIP)."""
    key = settings_key({"seed": recipe.codes.seed, "chunk_size": recipe.codes.chunk_size,
                        "clip": _clip_record(recipe)})
    return generator_dir(fingerprint, root=root) / f"codes-{key}"


def mapper_folder(fingerprint: str, recipe: MapperRecipe, *, root: Path | None = None) -> Path:
    """Where the generator's mapper for ``recipe`` lives (keyed by the codes, training and CLIP settings)."""
    data = mapper_recipe_to_dict(recipe)
    key = settings_key({k: data[k] for k in ("codes", "train", "clip")})
    return generator_dir(fingerprint, root=root) / f"mapper-{recipe.preset}-{key}"


def load_clip(recipe: MapperRecipe, *, device, registry=None):
    """The recipe's CLIP (a registered name or open_clip / local file), frozen, in eval mode."""
    from zsgm.plugins import get_registry
    from zsgm.recipe_model import ClipModelConfig
    from zsgm.run import load_clip_asset

    spec = ClipModelConfig(name=recipe.clip.name, pretrained=recipe.clip.pretrained)
    return load_clip_asset(spec, registry or get_registry(), torch.device(device),
                           preprocess=recipe.clip.preprocess).eval()


def _relevance_settings(recipe: MapperRecipe, codes_id: dict) -> dict:
    r = recipe.relevance
    return {"images": r.images, "alpha": r.alpha, "clip": _clip_record(recipe), "codes": codes_id}


def _relevance(folder: Path, generator, clip_model, reader: CodeReader, recipe: MapperRecipe, codes_id: dict, *,
               progress: bool, log: Callable[[str], None]) -> torch.Tensor:
    settings = _relevance_settings(recipe, codes_id)
    found = read_relevance(folder / RELEVANCE_FILE, settings=settings)
    if found is not None:
        return found
    m = recipe.relevance.images
    if reader.rows < m:
        raise ValueError(f"relevance.images = {m} but the codes hold only {reader.rows} samples")
    n_ch = style_layout(generator)[-1].stop
    log(f"deltaedit: channel relevance over {m} images, {n_ch} channels: {2 * n_ch * m:,} generator forwards and "
        f"CLIP encodes")
    mean, std = reader.moments("s")
    head = reader.head(m, names=("ws", "s"))
    rel = channel_relevance(generator, clip_model, head["ws"], head["s"], mean, std, alpha=recipe.relevance.alpha,
                            batch=recipe.relevance.batch, progress=progress)
    write_relevance(folder / RELEVANCE_FILE, rel, mean, std, settings)
    return rel


@contextlib.contextmanager
def _cpu_threads(device: torch.device, threads: int | None):
    """Limit torch's intra-op threads on the CPU for the duration (restored after)."""
    if device.type != "cpu" or threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(min(before, threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def ensure_mapper(generator, recipe: MapperRecipe, *, folder: str | Path | None = None, clip_model=None,
                  device="cpu", registry=None, root: Path | None = None, progress: bool = True,
                  log: Callable[[str], None] = print, train_threads: int | None = TRAIN_THREADS) -> TrainedMapper:
    """The generator's mapper for ``recipe``, building what is missing (codes, training, relevance).

    Args:
        generator: the generator (eval, on ``device``).
        recipe: the mapper recipe.
        folder: the mapper folder (default: :func:`mapper_folder` in the cache).
        clip_model: the recipe's CLIP if already loaded.
        device: where to compute.
        root: the cache root (default: :func:`zsgm_deltaedit.store.cache_root`).
        progress: progress bars.
        log: where to say what is done.
        train_threads: torch threads of the training steps on a CPU (None: leave as set). The mapper's layers
            are small matrix products at batch 64, which intra-op threads slow down (on 2 shared cores, 2
            threads ran the shapes mapper 13x slower than 1); the codes and the relevance keep every thread.
    """
    from zsgm.fit import fit

    device = torch.device(device)
    fingerprint = weights_fingerprint(generator)
    folder = Path(folder) if folder is not None else mapper_folder(fingerprint, recipe, root=root)
    clip_model = clip_model if clip_model is not None else load_clip(recipe, device=device, registry=registry)
    if (folder / MAPPER_FILE).is_file():
        record = read_mapper_record(folder)
        codes_id = record.get("codes_id", {})
        if read_relevance(folder / RELEVANCE_FILE, settings=_relevance_settings(recipe, codes_id)) is None:
            _relevance(folder, generator, clip_model, CodeReader(record["codes"]), recipe, codes_id,
                       progress=progress, log=log)  # the relevance settings changed: measure it again
            record["relevance"] = _relevance_settings(recipe, codes_id)
            record["recipe"] = mapper_recipe_to_dict(recipe)
            atomic_write_text(folder / MAPPER_FILE, json.dumps(record, indent=1, sort_keys=True) + "\n")
        # the edit defaults are not part of the folder's key: they come from the recipe asked for now
        return attrs.evolve(load_mapper(folder, generator=generator, clip_model=clip_model, device=device),
                            recipe=recipe)
    started = time.time()
    codes_dir = codes_folder(fingerprint, recipe, root=root)
    identity = {"generator": fingerprint, "clip": _clip_record(recipe)}
    build_codes(codes_dir, generator, clip_model, samples=recipe.codes.samples, chunk_size=recipe.codes.chunk_size,
                seed=recipe.codes.seed, identity=identity, batch=recipe.relevance.batch, progress=progress)
    for path in recipe.codes.latent_files:
        add_latent_file(codes_dir, path, generator=generator, clip_model=clip_model, batch=recipe.relevance.batch,
                        progress=progress)
    reader = CodeReader(codes_dir)
    codes_id = {"folder": codes_dir.name, "rows": reader.rows}
    log(f"deltaedit: {reader.rows:,} codes in {codes_dir} ({time.time() - started:.0f} s so far)")
    widths = [layer.channels for layer in style_layout(generator)]
    task = MapperTask(recipe, codes_dir, widths=widths, clip_dim=clip_model.embed_dim, codes_id=codes_id)
    run_dir = folder / FIT_DIR
    resume = (run_dir / "checkpoints" / "last.pt").is_file()
    with _cpu_threads(device, train_threads):
        result = fit(task, out_dir=run_dir, steps=recipe.train.steps, seed=recipe.train.seed, resume=resume,
                     device=device, checkpoint_every=recipe.train.checkpoint_every, progress=progress)
    log(f"deltaedit: mapper trained, {result.steps_done} steps, last losses "
        f"{ {k: round(x, 4) for k, x in result.last_losses.items()} } ({time.time() - started:.0f} s so far)")
    _relevance(folder, generator, clip_model, reader, recipe, codes_id, progress=progress, log=log)
    record = {"format": MAPPER_FORMAT, "recipe": mapper_recipe_to_dict(recipe), "mapper": task.mapper().config(),
              "generator": fingerprint, "codes": str(codes_dir), "codes_id": codes_id,
              "relevance": _relevance_settings(recipe, codes_id)}
    atomic_write_text(folder / MAPPER_FILE, json.dumps(record, indent=1, sort_keys=True) + "\n")
    log(f"deltaedit: mapper ready in {folder} ({time.time() - started:.0f} s)")
    return load_mapper(folder, generator=generator, clip_model=clip_model, device=device)


def read_mapper_record(folder: str | Path) -> dict:
    """``mapper.json`` of a mapper folder (``folder`` may also be the file itself).

    Raises:
        ValueError: missing or not a mapper record (one line naming the path).
    """
    path = Path(folder)
    path = path / MAPPER_FILE if path.is_dir() else path
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file; a DeltaEdit mapper folder holds {MAPPER_FILE}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable mapper record ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != MAPPER_FORMAT:
        raise ValueError(f"{path}: not a DeltaEdit mapper record")
    return record


def load_mapper(folder: str | Path, *, generator, clip_model=None, device="cpu", registry=None) -> TrainedMapper:
    """A trained mapper folder, checked against ``generator``'s StyleSpace layout.

    Raises:
        ValueError: not a mapper folder, a layout or CLIP width that does not fit, missing weights or relevance.
    """
    from zsgm.fit import read_module_file

    path = Path(folder)
    record = read_mapper_record(path)
    folder = path if path.is_dir() else path.parent
    recipe = mapper_recipe_from_dict(record["recipe"], source=str(folder / MAPPER_FILE))
    mapper = DeltaMapper.from_config(record["mapper"])
    widths = [layer.channels for layer in style_layout(generator)]
    trained = [w for level in mapper.levels for w in level.widths]
    if trained != widths:
        raise ValueError(f"{folder}: the mapper was trained for S layers of widths {trained}, this generator has "
                         f"{widths}")
    state, _ = read_module_file(folder / FIT_DIR / "module.safetensors")
    mapper.load_state_dict(state)
    clip_model = clip_model if clip_model is not None else load_clip(recipe, device=device, registry=registry)
    if clip_model.embed_dim != mapper.clip_dim:
        raise ValueError(f"{folder}: the mapper expects CLIP embeddings of width {mapper.clip_dim}, the CLIP gives "
                         f"{clip_model.embed_dim}")
    relevance = read_relevance(folder / RELEVANCE_FILE)
    if relevance is None:
        raise ValueError(f"{folder / RELEVANCE_FILE}: missing; the mapper folder is incomplete (train it again)")
    codes_id = record.get("codes_id") or {}
    return TrainedMapper(folder=folder, recipe=recipe, mapper=mapper.to(device).eval(), relevance=relevance,
                         clip_model=clip_model, generator_fingerprint=record.get("generator", ""),
                         codes=_codes_path(folder, record), codes_rows=codes_id.get("rows"))


def _codes_path(folder: Path, record: dict) -> Path | None:
    """The mapper's codes folder: as recorded, else (a moved cache) the folder of that name beside the mapper's."""
    recorded = Path(record["codes"]) if record.get("codes") else None
    if recorded is not None and (recorded / MANIFEST).is_file():
        return recorded
    name = (record.get("codes_id") or {}).get("folder")
    if name and (folder.parent / name / MANIFEST).is_file():
        return folder.parent / name
    return recorded
