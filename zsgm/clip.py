"""CLIP for zsgm: frozen open_clip models with differentiable preprocessing, cached text features, learned prompts.

A :class:`ClipModel` wraps one frozen open_clip model:

- ``encode_image(x)``: generator output ``[N, 3, H, W]`` in [-1, 1] -> unit embeddings ``[N, D]``,
  differentiable w.r.t. ``x``, with one of three preprocessing pipelines (METHODS.md section 1; they live in
  :mod:`zsgm.clip_preprocess`):
  ``"nada"`` ((x+1)/2, bicubic resize of the short side to the model's input size, centre crop, mean/std),
  ``"oneshot"`` (bicubic straight to the input size, no crop) and ``"deltaedit"`` (nearest upsampling x7, then
  average pooling down to the input size; computed as two small matrix products, without the x7 image).
- ``encode_text(texts)``: unit text features ``[T, D]``, no grad, one text-tower pass for all uncached strings,
  cached per string on the instance.
- ``token_embeddings`` / ``encode_token_embeddings``: run the text tower on embeddings whose context slots hold
  learned vectors (IPL, AIR); see :mod:`zsgm.clip_prompts` for the CoOp-style prompt pieces.

Ensembles of prompt templates (:func:`text_direction`, :func:`class_embedding`) encode all templates of a class
in one pass and reuse the cache afterwards.

Loading never happens at import; see :mod:`zsgm.clip_loading` for the sources (open_clip names with tags, local
files, ``hf-hub:``, OpenAI TorchScript files, ``HF_HUB_OFFLINE``) and the small built-in models ``"tiny-random"``
and ``"shapes"``. Models are loaded in fp32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from zsgm.clip_loading import (
    OPENAI_MEAN,
    OPENAI_STD,
    TINY_RANDOM_CONFIG,
    TINY_RANDOM_SEED,
    ClipLoadError,
    LoadedClip,
    load_open_clip,
    load_tiny_random,
    parse_tiny_seed,
    read_clip_file,
    read_clip_file_metadata,
    shapes_clip_path,
    write_clip_file,
)
from zsgm.clip_preprocess import PREPROCESS_MODES, preprocess_images
from zsgm.clip_prompts import ContextPrompt, build_context_prompt
from zsgm.clip_templates import IMAGENET_TEMPLATES, format_templates
from zsgm.tensor_checks import nonfinite_names

__all__ = [
    "PREPROCESS_MODES", "ClipLoadError", "ClipModelSpec", "ClipModel", "ClipEnsemble", "ContextPrompt",
    "IMAGENET_TEMPLATES", "TINY_RANDOM_CONFIG", "build_context_prompt", "class_embedding", "format_templates",
    "load_clip_model", "logit_scale", "preprocess_images", "save_clip_model", "template_features",
    "text_direction", "tiny_random_clip",
]

@attrs.define(kw_only=True)
class ClipModelSpec:
    """Which CLIP to load and how to feed it.

    Attributes:
        name: an open_clip model name ("ViT-B-32-quickgelu"), "hf-hub:org/repo", "local-dir:/folder",
            "tiny-random", "shapes", "local" (a zsgm CLIP file), or the name stored in a zsgm CLIP file.
        pretrained: an open_clip tag ("openai"), a local weights file, "hf-hub:org/repo", None (random init for
            open_clip names; the shipped file for "shapes"), or "seed:<int>" for "tiny-random".
        weight: the model's weight in the ensemble loss.
        preprocess: "nada" | "oneshot" | "deltaedit".
        trust_torchscript: the user trusts ``pretrained`` enough to run a TorchScript archive's code.
    """

    name: str
    pretrained: Optional[str] = None
    weight: float = 1.0
    preprocess: str = "nada"
    trust_torchscript: bool = False


# ----------------------------------------------------------------------------------------- the model


class ClipModel(nn.Module):
    """A frozen open_clip model with zsgm's encoders (see the module docstring).

    Args:
        model: an open_clip ``CLIP`` / ``CustomTextCLIP``; it is put in eval mode and frozen.
        tokenizer: callable ``list[str] -> LongTensor [T, L]``.
        name: display name.
        mean / std: input normalisation of the model.
        preprocess: "nada" | "oneshot" | "deltaedit".
        config: the open_clip config dict (lets :func:`save_clip_model` write the model out).
        tokenizer_name: "simple" or the open_clip name whose tokenizer this is (stored by ``save_clip_model``).
        antialias: antialiased bicubic resizing in "nada"/"oneshot".

    Attributes:
        image_size, embed_dim, text_width, context_length: the model's sizes.
    """

    def __init__(self, model: nn.Module, tokenizer, *, name: str, mean: Sequence[float] = OPENAI_MEAN,
                 std: Sequence[float] = OPENAI_STD, preprocess: str = "nada", config: Optional[dict] = None,
                 tokenizer_name: str = "simple", antialias: bool = False):
        super().__init__()
        if preprocess not in PREPROCESS_MODES:
            raise ValueError(f"preprocess must be one of {', '.join(PREPROCESS_MODES)}; got {preprocess!r}")
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.preprocess = preprocess
        self.config = config
        self.tokenizer_name = tokenizer_name
        self.antialias = antialias
        self.templates: Optional[tuple[str, ...]] = None  # prompt templates the model was trained on, if known
        size = getattr(model.visual, "image_size", 224)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.register_buffer("mean", torch.tensor([float(v) for v in mean]).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([float(v) for v in std]).reshape(1, 3, 1, 1), persistent=False)
        self._text_cache: dict[str, torch.Tensor] = {}  # string -> unnormalised float32 feature [D]
        tower = self._text_tower(required=False)
        self.text_width = int(tower.token_embedding.weight.shape[1]) if tower is not None else 0
        self.context_length = int(getattr(tower, "context_length", 0) or 0) if tower is not None else 0
        self.embed_dim = self._find_embed_dim()

    @classmethod
    def from_loaded(cls, loaded: LoadedClip, *, preprocess: str = "nada") -> "ClipModel":
        """Wrap what a :mod:`zsgm.clip_loading` loader returned."""
        model = cls(loaded.model, loaded.tokenizer, name=loaded.name, mean=loaded.mean, std=loaded.std,
                    preprocess=preprocess, config=loaded.config, tokenizer_name=loaded.tokenizer_name)
        model.templates = loaded.templates
        return model

    def _text_tower(self, *, required: bool = True) -> Optional[nn.Module]:
        """The module owning ``token_embedding`` (the CLIP itself, or ``model.text`` for CustomTextCLIP)."""
        for tower in (self.model, getattr(self.model, "text", None)):
            if tower is not None and isinstance(getattr(tower, "token_embedding", None), nn.Embedding):
                return tower
        if required:
            raise NotImplementedError(f"{self.name}: learned prompts need an open_clip text transformer with a "
                                      f"token embedding (Hugging Face text towers are not supported)")
        return None

    def _find_embed_dim(self) -> int:
        for owner in (self.model, getattr(self.model, "text", None)):
            proj = getattr(owner, "text_projection", None)
            if isinstance(proj, torch.Tensor):
                return int(proj.shape[1])
            if isinstance(proj, nn.Linear):
                return int(proj.out_features)
        return int(getattr(self.model.visual, "output_dim", 0) or 0)

    def train(self, mode: bool = True) -> "ClipModel":
        """The wrapped CLIP always stays in eval mode (it is frozen)."""
        super().train(mode)
        self.model.eval()
        return self

    @property
    def device(self) -> torch.device:
        return self.mean.device

    # ------------------------------------------------------------------------------------- images

    def prepare_images(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` in [-1, 1] -> model input ``[N, 3, S, S]`` (differentiable; see preprocess_images)."""
        return preprocess_images(x, mode=self.preprocess, size=self.image_size, mean=self.mean, std=self.std,
                                 antialias=self.antialias)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """Unit image embeddings ``[N, D]`` (float32) of generator output ``x`` ``[N, 3, H, W]`` in [-1, 1]."""
        pixels = self.prepare_images(x)
        dtype = next(self.model.visual.parameters()).dtype
        return F.normalize(self.model.encode_image(pixels.to(dtype)).float(), dim=-1)

    # ------------------------------------------------------------------------------------- text

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """``[T, L]`` token ids on the model's device."""
        return self.tokenizer(list(texts)).to(self.device)

    @torch.no_grad()
    def encode_text(self, texts: Iterable[str], *, normalize: bool = True) -> torch.Tensor:
        """Text features ``[T, D]`` (float32, no grad), unit length unless ``normalize=False``.

        Strings not seen before are encoded together in one text-tower pass; every string is cached on the
        instance, so repeated calls (template ensembles, per-step prompts) cost nothing.
        """
        if isinstance(texts, str):
            raise TypeError(f"encode_text expects a list of strings, got the string {texts!r}")
        texts = list(texts)
        if any(not isinstance(t, str) for t in texts):
            raise TypeError(f"encode_text expects a list of strings, got {texts!r}")
        todo = list(dict.fromkeys(t for t in texts if t not in self._text_cache))
        if todo:
            features = self.model.encode_text(self.tokenize(todo)).float()  # [U, D]
            for text, feature in zip(todo, features):
                self._text_cache[text] = feature
        if not texts:
            return torch.zeros(0, self.embed_dim, device=self.device)
        out = torch.stack([self._text_cache[t].to(self.device) for t in texts])  # [T, D]
        return F.normalize(out, dim=-1) if normalize else out

    def clear_text_cache(self) -> None:
        """Forget cached text features (only needed if the weights were changed in place)."""
        self._text_cache.clear()

    def token_embeddings(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens [T, L] long, embeds [T, L, W])``: the text tower's input (embeds detached)."""
        tokens = self.tokenize(texts)
        with torch.no_grad():
            embeds = self._text_tower().token_embedding(tokens)
        return tokens, embeds

    def encode_token_embeddings(self, embeds: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Unnormalised text features ``[T, D]`` of token embeddings, differentiable w.r.t. ``embeds``.

        Runs the model's own text path (positional embedding, transformer, ln_final, pooling at [EOT],
        projection) with ``embeds`` in place of the token-embedding lookup, so ``embeds`` equal to
        ``token_embeddings(texts)[1]`` give exactly ``encode_text(texts, normalize=False)``.

        Args:
            embeds: ``[T, L, W]``.
            tokens: ``[T, L]`` token ids; they locate [EOT] (and padding, for towers that mask it).
        """
        tower = self._text_tower()
        t, length = tokens.shape
        if embeds.shape[:2] != (t, length) or embeds.shape[-1] != self.text_width or embeds.dim() != 3:
            raise ValueError(f"embeds: expected [{t}, {length}, {self.text_width}] to match tokens "
                             f"{list(tokens.shape)}; got {list(embeds.shape)}")

        def replace(module, inputs, output):  # the lookup's output is swapped for the given embeddings
            return embeds.to(device=output.device, dtype=output.dtype)

        handle = tower.token_embedding.register_forward_hook(replace)
        try:
            return self.model.encode_text(tokens.to(self.device))
        finally:
            handle.remove()


# ----------------------------------------------------------------------------------------- ensembles


class ClipEnsemble:
    """CLIP models with loss weights; iterating yields ``(model, weight)`` pairs.

    Args:
        models: the models.
        weights: one float per model.
    """

    def __init__(self, models: Sequence[ClipModel], weights: Sequence[float]):
        if len(models) != len(weights):
            raise ValueError(f"ClipEnsemble: expected one weight per model, got {len(models)} models and "
                             f"{len(weights)} weights")
        self.models, self.weights = list(models), [float(w) for w in weights]

    @classmethod
    def from_specs(cls, specs: Sequence[ClipModelSpec], *, device="cpu") -> "ClipEnsemble":
        """Load every spec; the weights are the specs' ``weight``."""
        return cls([load_clip_model(s, device=device) for s in specs], [s.weight for s in specs])

    def __iter__(self) -> Iterator[tuple[ClipModel, float]]:
        return iter(zip(self.models, self.weights))

    def __len__(self) -> int:
        return len(self.models)

    def __getitem__(self, i: int) -> ClipModel:
        return self.models[i]


def template_features(model: ClipModel, text: str, *, templates: Iterable[str] = IMAGENET_TEMPLATES) -> torch.Tensor:
    """Unit features ``[K, D]`` of ``text`` in each of the ``K`` templates (one pass, cached)."""
    return model.encode_text(format_templates(text, templates))


def text_direction(model: ClipModel, source: str, target: str, *, aggregate: str = "nada",
                   templates: Iterable[str] = IMAGENET_TEMPLATES) -> torch.Tensor:
    """Unit text direction ``[D]`` from ``source`` to ``target`` over a template ensemble (METHODS.md 1).

    Args:
        aggregate: ``"nada"``: normalize(mean_k(e_t,k - e_s,k)); ``"air"``: normalize(mean_k normalize(e_t,k -
            e_s,k)), where e_*,k are unit features of template k.
        templates: strings with one ``{}`` each.
    """
    if aggregate not in ("nada", "air"):
        raise ValueError(f"aggregate must be 'nada' or 'air'; got {aggregate!r}")
    templates = list(templates)
    k = len(templates)
    both = model.encode_text(format_templates(source, templates) + format_templates(target, templates))  # [2K, D]
    diff = both[k:] - both[:k]  # [K, D]
    if aggregate == "air":
        diff = F.normalize(diff, dim=-1)
    return F.normalize(diff.mean(0), dim=-1)


def class_embedding(model: ClipModel, text: str, *, renormalize: bool,
                    templates: Iterable[str] = IMAGENET_TEMPLATES) -> torch.Tensor:
    """Mean of the unit template features of ``text``, ``[D]`` (IPL keeps it as is, DeltaEdit renormalises)."""
    mean = template_features(model, text, templates=templates).mean(0)
    return F.normalize(mean, dim=-1) if renormalize else mean


def logit_scale(model: ClipModel) -> float:
    """``exp(logit_scale)`` of the model (about 100 for trained CLIPs)."""
    return float(model.model.logit_scale.detach().float().exp().reshape(-1)[0])


# ----------------------------------------------------------------------------------------- loading / saving


def tiny_random_clip(*, seed: int = TINY_RANDOM_SEED, preprocess: str = "nada") -> ClipModel:
    """The tiny random CLIP of :data:`TINY_RANDOM_CONFIG` (32 px; same weights for the same seed)."""
    return ClipModel.from_loaded(load_tiny_random(seed=seed), preprocess=preprocess)


def load_clip_model(spec: ClipModelSpec, *, device="cpu") -> ClipModel:
    """Load the CLIP described by ``spec`` (frozen, eval, fp32, on ``device``). Nothing is loaded at import.

    Dispatch: "tiny-random" -> random tiny model; "shapes" -> the shipped shapes-world file (or
    ``spec.pretrained``); "local", or any name with ``pretrained`` = a zsgm CLIP file -> that file; anything
    else -> open_clip (name + tag / local file / hf-hub).

    Raises:
        ClipLoadError: naming the model, the weights and what to do.
        ValueError: unknown preprocess mode.
    """
    if spec.preprocess not in PREPROCESS_MODES:
        raise ValueError(f"ClipModelSpec.preprocess must be one of {', '.join(PREPROCESS_MODES)}; "
                         f"got {spec.preprocess!r}")
    if spec.name == "tiny-random":
        loaded = load_tiny_random(seed=parse_tiny_seed(spec.pretrained))
    elif spec.name == "shapes":
        path = Path(spec.pretrained).expanduser() if spec.pretrained else shapes_clip_path()
        if not path.exists():  # a folder, an empty or unreadable file: read_clip_file says which
            raise ClipLoadError(
                f"CLIP 'shapes': the shapes-world CLIP weights are missing (expected {str(path)!r}). They ship "
                f"with zsgm as zsgm/toy/assets/shapes_clip.safetensors; reinstall zsgm, or pass pretrained = the "
                f"path of a shapes CLIP file; use 'tiny-random' for smoke tests that need no trained CLIP")
        loaded = read_clip_file(path)
    elif spec.name == "local":
        if not spec.pretrained:
            raise ClipLoadError("CLIP 'local' needs pretrained = the path of a zsgm CLIP .safetensors file "
                                "(written by zsgm.clip.save_clip_model)")
        loaded = read_clip_file(Path(spec.pretrained).expanduser())
    elif spec.pretrained and read_clip_file_metadata(Path(spec.pretrained).expanduser()) is not None:
        loaded = read_clip_file(Path(spec.pretrained).expanduser(), expected_name=spec.name)
    else:
        loaded = load_open_clip(spec.name, spec.pretrained, trust_torchscript=spec.trust_torchscript)
    refuse_non_finite_weights(loaded.model, spec)
    return ClipModel.from_loaded(loaded, preprocess=spec.preprocess).to(device).eval()


def refuse_non_finite_weights(model: nn.Module, spec: ClipModelSpec) -> None:
    """One line when loaded weights hold NaN or inf (a corrupt file would otherwise poison every loss silently)."""
    bad = nonfinite_names(model.state_dict())
    if bad:
        raise ClipLoadError(f"CLIP {spec.name!r} (pretrained={spec.pretrained!r}): the weights hold NaN or "
                            f"infinite values (first in {bad[0]}); the file is corrupt, use another copy")


def save_clip_model(model: ClipModel, path: str | Path, *, name: Optional[str] = None,
                    config: Optional[dict] = None) -> None:
    """Write ``model`` as a zsgm CLIP file (``.safetensors``, atomic), loadable with
    ``ClipModelSpec(name="local" or <name>, pretrained=path)``.

    Args:
        model: a :class:`ClipModel`.
        path: destination file.
        name: stored model name (defaults to ``model.name``).
        config: the open_clip config dict (defaults to ``model.config``).

    Raises:
        ValueError: no config is known for the model.
    """
    config = config if config is not None else model.config
    if config is None:
        raise ValueError(f"save_clip_model: no open_clip config is known for CLIP {model.name!r}; pass config=")
    write_clip_file(model.model, path, config=config, name=name or model.name,
                    mean=model.mean.flatten().tolist(), std=model.std.flatten().tolist(),
                    tokenizer_name=model.tokenizer_name, templates=model.templates)
