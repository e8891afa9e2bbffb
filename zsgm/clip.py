"""CLIP for zsgm: open_clip models with differentiable preprocessing, cached text features, learned prompts.

A :class:`ClipModel` wraps one frozen open_clip ``CLIP``:

- ``encode_image(x)``: generator output ``[N, 3, H, W]`` in [-1, 1] -> unit embeddings ``[N, D]``,
  differentiable w.r.t. ``x``; three preprocessing variants (METHODS.md section 1): ``"nada"``,
  ``"oneshot"`` and ``"deltaedit"``.
- ``encode_text(texts)``: unit features, cached per string on the instance.
- ``token_embeddings`` / ``encode_token_embeddings``: run the text tower on embeddings whose context slots
  are learned vectors (IPL, AIR).

Loading (never at import): an open_clip name plus a pretrained tag (downloaded by open_clip on first use,
into its caches; set ``HF_HUB_OFFLINE=1`` before starting Python to forbid downloads), a local weights file
(``pretrained="/path/to/file"``), or a zsgm CLIP file (``.safetensors`` with the open_clip config in its
metadata). For OpenAI weights prefer the ``*-quickgelu`` names. OpenAI's original TorchScript ``.pt`` files
do not load under ``weights_only=True``; use the HF/open_clip state-dict files instead. Small built-in models:
``"tiny-random"`` (random weights, for tests) and ``"shapes"`` (the shapes world's CLIP, shipped weights).
"""

from __future__ import annotations

import difflib
import json
import math
from pathlib import Path
from typing import Iterable, Optional

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from zsgm.clip_templates import IMAGENET_TEMPLATES
from zsgm.io_utils import atomic_write

PREPROCESS_MODES = ("nada", "oneshot", "deltaedit")
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
FILE_FORMAT = "zsgm-clip"

TINY_RANDOM_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TINY_RANDOM_SEED = 4321


class ClipLoadError(RuntimeError):
    """A CLIP model cannot be loaded; the message names the model, the weights and what to do."""


@attrs.define(kw_only=True)
class ClipModelSpec:
    """Which CLIP to load and how to feed it.

    Attributes:
        name: open_clip model name ("ViT-B-32"), "tiny-random", "shapes", or "local" for a zsgm CLIP file.
        pretrained: open_clip tag ("openai"), local file path, "hf-hub:..." or None.
        weight: the model's weight in the ensemble.
        preprocess: "nada" | "oneshot" | "deltaedit".
    """

    name: str
    pretrained: Optional[str] = None
    weight: float = 1.0
    preprocess: str = "nada"


class ClipModel(nn.Module):
    """A frozen open_clip model with zsgm's encoders (see the module docstring)."""

    def __init__(self, model: nn.Module, tokenizer, *, name: str, mean=OPENAI_MEAN, std=OPENAI_STD,
                 preprocess: str = "nada"):
        super().__init__()
        if preprocess not in PREPROCESS_MODES:
            raise ValueError(f"preprocess must be one of {', '.join(PREPROCESS_MODES)}; got {preprocess!r}")
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.preprocess = preprocess
        size = model.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.register_buffer("mean", torch.tensor(mean).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).reshape(1, 3, 1, 1), persistent=False)
        self._text_cache: dict[str, torch.Tensor] = {}
        self.text_forward_count = 0  # number of text-tower forwards (cache statistics)

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[1]) if isinstance(self.model.text_projection, torch.Tensor) \
            else int(self.model.text_projection.out_features)

    @property
    def text_width(self) -> int:
        return int(self.model.token_embedding.weight.shape[1])

    @property
    def context_length(self) -> int:
        return int(self.model.positional_embedding.shape[0])

    # ------------------------------------------------------------------------------------- images

    def prepare_images(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` in [-1, 1] -> normalised ``[N, 3, S, S]`` model input (differentiable)."""
        s = self.image_size
        x = (x.float() + 1) / 2  # [0, 1]
        if self.preprocess == "deltaedit":
            x = F.interpolate(x, scale_factor=7, mode="nearest")
            x = F.adaptive_avg_pool2d(x, (s, s))
        elif self.preprocess == "oneshot":
            if x.shape[-2:] != (s, s):
                x = F.interpolate(x, size=(s, s), mode="bicubic", align_corners=False)
        else:  # nada: resize the short side to s, centre crop
            h, w = x.shape[-2:]
            if (h, w) != (s, s):
                scale = s / min(h, w)
                nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
                x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False)
                top, left = (nh - s) // 2, (nw - s) // 2
                x = x[:, :, top:top + s, left:left + s]
        return (x - self.mean) / self.std

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """Unit image embeddings ``[N, D]`` of generator output ``x`` ``[N, 3, H, W]`` in [-1, 1]."""
        return F.normalize(self.model.encode_image(self.prepare_images(x)), dim=-1)

    # ------------------------------------------------------------------------------------- text

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """``[T, L]`` token ids on the model's device."""
        return self.tokenizer(list(texts)).to(self.model.positional_embedding.device)

    @torch.no_grad()
    def encode_text(self, texts: Iterable[str]) -> torch.Tensor:
        """Unit text features ``[T, D]``; each string is encoded once and cached."""
        texts = list(texts)
        todo = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if todo:
            self.text_forward_count += 1
            features = F.normalize(self.model.encode_text(self.tokenize(todo)).float(), dim=-1)
            for t, f in zip(todo, features):
                self._text_cache[t] = f
        return torch.stack([self._text_cache[t] for t in texts])

    def token_embeddings(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens [T, L], embeddings [T, L, W])``: the text tower's input."""
        tokens = self.tokenize(texts)
        return tokens, self.model.token_embedding(tokens).detach()

    def encode_token_embeddings(self, embeds: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Unnormalised features ``[T, D]`` of token embeddings ``[T, L, W]`` (differentiable w.r.t. ``embeds``).

        ``tokens`` ``[T, L]`` locates the end-of-text position (the largest id in each row).
        """
        m = self.model
        if not hasattr(m, "token_embedding") or not hasattr(m, "transformer"):
            raise NotImplementedError(f"{self.name}: learned prompts need an open_clip CLIP with its own text "
                                      f"transformer (custom HF text towers are not supported)")
        cast = m.transformer.get_cast_dtype()
        x = embeds.to(cast) + m.positional_embedding.to(cast)
        x = m.transformer(x, attn_mask=m.attn_mask)
        x = m.ln_final(x)  # [T, L, W]
        x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]  # [T, W]
        if isinstance(m.text_projection, nn.Linear):
            return m.text_projection(x)
        return x @ m.text_projection


def build_context_prompt(model: ClipModel, class_names: list[str], *, n_ctx: int = 4,
                         ctx_init: str = "a photo of a") -> dict[str, torch.Tensor]:
    """CoOp-style prompt pieces: ``[SOS] ctx_1..ctx_n <class>. [EOT] pad``.

    Returns:
        dict with ``tokens`` [T, L], ``prefix`` [T, 1, W] (SOS), ``suffix`` [T, L - 1 - n_ctx, W]
        (class words, full stop, EOT, padding) and ``init`` [n_ctx, W] (the embeddings of ``ctx_init``'s
        words, for callers that want to start from them). Features: ``encode_token_embeddings(
        torch.cat([prefix, ctx, suffix], 1), tokens)`` with ``ctx`` [T, n_ctx, W].
    """
    n_words = len(ctx_init.split())
    if n_words != n_ctx:
        raise ValueError(f"ctx_init {ctx_init!r} has {n_words} words but n_ctx = {n_ctx}")
    texts = [f"{ctx_init} {c}." for c in class_names]
    tokens, embeds = model.token_embeddings(texts)
    return {"tokens": tokens, "prefix": embeds[:, :1], "suffix": embeds[:, 1 + n_ctx:],
            "init": embeds[0, 1:1 + n_ctx].clone()}


# ----------------------------------------------------------------------------------------- ensembles


def format_templates(text: str, templates: Iterable[str] = IMAGENET_TEMPLATES) -> list[str]:
    """Fill each ``{}`` template with ``text``."""
    return [t.format(text) for t in templates]


def text_direction(model: ClipModel, source: str, target: str, *, aggregate: str = "nada",
                   templates: Iterable[str] = IMAGENET_TEMPLATES) -> torch.Tensor:
    """Unit text direction ``[D]`` from ``source`` to ``target`` over a template ensemble.

    ``"nada"``: normalize(mean_k(e_t,k - e_s,k)); ``"air"``: normalize(mean_k normalize(e_t,k - e_s,k)).
    """
    templates = list(templates)
    e_s = model.encode_text(format_templates(source, templates))  # [K, D]
    e_t = model.encode_text(format_templates(target, templates))
    diff = e_t - e_s
    if aggregate == "nada":
        return F.normalize(diff.mean(0), dim=-1)
    if aggregate == "air":
        return F.normalize(F.normalize(diff, dim=-1).mean(0), dim=-1)
    raise ValueError(f"aggregate must be 'nada' or 'air'; got {aggregate!r}")


def class_embedding(model: ClipModel, text: str, *, renormalize: bool,
                    templates: Iterable[str] = IMAGENET_TEMPLATES) -> torch.Tensor:
    """Mean of unit template features ``[D]`` (IPL keeps it as is, DeltaEdit renormalises)."""
    mean = model.encode_text(format_templates(text, templates)).mean(0)
    return F.normalize(mean, dim=-1) if renormalize else mean


# ----------------------------------------------------------------------------------------- loading


def _tokenizer_for(context_length: int):
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)


def build_clip_from_config(config: dict) -> nn.Module:
    """An open_clip ``CLIP`` from a config dict (embed_dim, vision_cfg, text_cfg, quick_gelu)."""
    from open_clip.model import CLIP

    cfg = dict(config)
    return CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"], text_cfg=cfg["text_cfg"],
                quick_gelu=cfg.get("quick_gelu", False))


def tiny_random_clip(preprocess: str = "nada") -> ClipModel:
    """A 32-px tiny CLIP with random weights (deterministic): for tests and smoke runs only."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_RANDOM_SEED)
        model = build_clip_from_config(TINY_RANDOM_CONFIG)
    return ClipModel(model, _tokenizer_for(TINY_RANDOM_CONFIG["text_cfg"]["context_length"]), name="tiny-random",
                     preprocess=preprocess)


def save_clip_model(model: ClipModel | nn.Module, path: str | Path, *, config: dict, name: str = "local",
                    mean=OPENAI_MEAN, std=OPENAI_STD) -> None:
    """Write a zsgm CLIP file: safetensors weights + the open_clip config in the metadata (atomic)."""
    from safetensors.torch import save_file

    inner = model.model if isinstance(model, ClipModel) else model
    tensors = {k: v.detach().cpu().contiguous() for k, v in inner.state_dict().items()}
    meta = {"format": FILE_FORMAT, "config": json.dumps(config), "name": name, "mean": json.dumps(list(mean)),
            "std": json.dumps(list(std))}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_zsgm_clip_file(path: str | Path, *, preprocess: str = "nada") -> ClipModel:
    """Load a file written by :func:`save_clip_model`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not path.is_file():
        raise ClipLoadError(f"CLIP weights {str(path)!r}: no such file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ClipLoadError(f"CLIP weights {str(path)!r}: not a readable safetensors file ({exc})") from None
    if meta.get("format") != FILE_FORMAT:
        raise ClipLoadError(f"CLIP weights {str(path)!r}: not a zsgm CLIP file (metadata format "
                            f"{meta.get('format')!r})")
    config = json.loads(meta["config"])
    model = build_clip_from_config(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ClipLoadError(f"CLIP weights {str(path)!r} do not fit their config: {exc}") from None
    return ClipModel(model, _tokenizer_for(config["text_cfg"].get("context_length", 77)),
                     name=meta.get("name", path.stem), mean=json.loads(meta.get("mean", "null")) or OPENAI_MEAN,
                     std=json.loads(meta.get("std", "null")) or OPENAI_STD, preprocess=preprocess)


def shapes_clip_path() -> Path:
    return Path(__file__).parent / "toy" / "assets" / "shapes_clip.safetensors"


def _load_open_clip(spec: ClipModelSpec) -> ClipModel:
    import open_clip

    names = open_clip.list_models()
    if spec.name not in names:
        close = difflib.get_close_matches(spec.name, names, n=3)
        raise ClipLoadError(f"unknown CLIP model {spec.name!r}" + (f"; did you mean {', '.join(close)}?" if close
                            else "") + " (open_clip names, or 'tiny-random', 'shapes', 'local')")
    pretrained = spec.pretrained
    if pretrained and not pretrained.startswith("hf-hub:") and ("/" in pretrained or Path(pretrained).suffix):
        if not Path(pretrained).is_file():
            raise ClipLoadError(f"CLIP {spec.name}: weights file {pretrained!r} does not exist")
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(spec.name, pretrained=pretrained)
    except Exception as exc:  # noqa: BLE001 - network, checksum, format: all become one clear message
        raise ClipLoadError(
            f"cannot load CLIP {spec.name!r} with pretrained={pretrained!r}: {type(exc).__name__}: {exc}. "
            f"Without network access, download the weights elsewhere and pass the local file as "
            f"pretrained (e.g. --clip {spec.name}:/path/to/weights.bin)") from None
    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    mean, std = cfg.get("mean", OPENAI_MEAN), cfg.get("std", OPENAI_STD)
    return ClipModel(model, open_clip.get_tokenizer(spec.name), name=spec.name, mean=mean, std=std,
                     preprocess=spec.preprocess)


def load_clip_model(spec: ClipModelSpec, *, device="cpu") -> ClipModel:
    """Load the CLIP described by ``spec`` (frozen, eval, on ``device``).

    Raises:
        ClipLoadError: naming the model, the weights and what to do.
    """
    if spec.name == "tiny-random":
        model = tiny_random_clip(spec.preprocess)
    elif spec.name == "shapes":
        path = Path(spec.pretrained) if spec.pretrained else shapes_clip_path()
        if not path.is_file():
            raise ClipLoadError(f"the shapes CLIP weights are missing ({path}); train them with "
                                f"`python -m zsgm.toy.train_clip --out {path}`")
        model = load_zsgm_clip_file(path, preprocess=spec.preprocess)
    elif spec.name == "local" or (spec.pretrained and spec.pretrained.endswith(".safetensors")
                                  and _is_zsgm_clip(spec.pretrained)):
        if not spec.pretrained:
            raise ClipLoadError("CLIP 'local' needs pretrained = path to a zsgm CLIP .safetensors file")
        model = load_zsgm_clip_file(spec.pretrained, preprocess=spec.preprocess)
    else:
        model = _load_open_clip(spec)
    return model.to(device).eval()


def _is_zsgm_clip(path: str) -> bool:
    try:
        from safetensors.torch import safe_open

        with safe_open(path, framework="pt") as fh:
            return (fh.metadata() or {}).get("format") == FILE_FORMAT
    except Exception:  # noqa: BLE001 - not ours
        return False


class ClipEnsemble:
    """CLIP models with weights; iterate to get ``(model, weight)`` pairs."""

    def __init__(self, models: list[ClipModel], weights: list[float]):
        if len(models) != len(weights):
            raise ValueError("ClipEnsemble: one weight per model")
        self.models, self.weights = list(models), [float(w) for w in weights]

    def __iter__(self):
        return iter(zip(self.models, self.weights))

    def __len__(self) -> int:
        return len(self.models)

    def __getitem__(self, i: int) -> ClipModel:
        return self.models[i]


def logit_scale(model: ClipModel) -> float:
    """exp(logit_scale) of the model (about 100 for trained CLIPs)."""
    return float(math.exp(float(model.model.logit_scale)))
