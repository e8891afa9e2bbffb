"""Evaluate the shapes CLIP: zero-shot accuracy, robustness to cheap corruptions, and how cheaply it is fooled.

    python -m zsgm.toy.eval_clip zsgm/toy/assets/shapes_clip.safetensors [--n 100] [--attack]

Everything is measured on fresh renders (a seed the training pool never used), loading
the file with :func:`zsgm.clip_loading.read_clip_file` and the bare open_clip model (not :mod:`zsgm.clip`'s
preprocessing):

- zero-shot style / colour / kind accuracy, clean and corrupted (Gaussian noise, blur, strong background
  tints, strong colour casts, another style's background behind a photo);
- directional alignment, the quantity the adaptation loss optimises: ``cos(E_I(x_t) - E_I(x_s), dT)``
  with ``dT`` the ImageNet-template text direction "photo" -> target, for the *true* edit (the same shape
  rendered in the target style) and for the best *cheap* edits an optimiser finds when it may only cast a
  colour (a shared 3x3 colour matrix and offset), tint the background (a shared smooth field) or add a
  shared high-frequency pattern (L-inf 0.1). A CLIP that guides well has a high true-edit cosine and low
  cheap-edit cosines.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from zsgm.toy.render import COLOURS, KINDS, STYLES, render_batch, sample_params, style_background

SIMPLE_TEMPLATES = ("a {}",)


class ShapesClip:
    """An open_clip ``CLIP`` loaded from a zsgm CLIP file with its tokenizer and normalisation."""

    def __init__(self, model, tokenizer, mean, std, config: dict):
        self.model, self.tokenizer, self.config = model.eval(), tokenizer, config
        self.mean = torch.tensor(mean).reshape(1, 3, 1, 1)
        self.std = torch.tensor(std).reshape(1, 3, 1, 1)

    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [-1, 1] (at the model's size) -> unit [N, D] (differentiable)."""
        return F.normalize(self.model.encode_image(((x + 1) / 2 - self.mean) / self.std), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Unit text features [T, D]."""
        return F.normalize(self.model.encode_text(self.tokenizer(list(texts))), dim=-1)

    def class_embeddings(self, names, templates=SIMPLE_TEMPLATES) -> torch.Tensor:
        """[C, D] renormalised mean of the template features of each name."""
        templates = list(templates)
        feats = self.encode_texts([t.format(n) for n in names for t in templates]).reshape(len(names), len(templates), -1)
        return F.normalize(feats.mean(1), dim=-1)

    def text_direction(self, source: str, target: str, templates) -> torch.Tensor:
        """Unit [D] normalize(mean_k(e(t_k(target)) - e(t_k(source)))) (StyleGAN-NADA's aggregate)."""
        templates = list(templates)
        e_s = self.encode_texts([t.format(source) for t in templates])
        e_t = self.encode_texts([t.format(target) for t in templates])
        return F.normalize((e_t - e_s).mean(0), dim=-1)


def load_shapes_clip(path: str | Path) -> ShapesClip:
    """Load a zsgm CLIP ``.safetensors`` (:func:`zsgm.clip_loading.read_clip_file`) for these measurements."""
    from zsgm.clip_loading import read_clip_file

    loaded = read_clip_file(path)
    return ShapesClip(loaded.model, loaded.tokenizer, loaded.mean, loaded.std, loaded.config)


def paired_renders(n: int, *, seed: int, size: int = 32) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list]:
    """The same ``n`` random shapes in every style.

    Returns:
        images {style: [n, 3, S, S] in [-1, 1]}, coverage {style: [n, 1, S, S]} (sketch: the stroke), params.
    """
    from zsgm.toy.clip_data import coverage

    base = sample_params(n, rng=np.random.default_rng(seed), styles=("photo",))
    images, alpha = {}, {}
    for s in STYLES:
        ps = [p.with_style(s) for p in base]
        images[s] = render_batch(ps, size=size)
        alpha[s] = torch.from_numpy(np.stack([coverage(p, size=size) for p in ps])).float()[:, None]
    return images, alpha, base


def _unit_dirs(n: int, g: torch.Generator) -> torch.Tensor:
    return F.normalize(torch.randn(n, 3, generator=g), dim=1)[:, :, None, None]  # [n, 3, 1, 1]


def corruptions(x: torch.Tensor, alpha: torch.Tensor, *, seed: int) -> dict[str, torch.Tensor]:
    """Named corrupted copies of x [N, 3, H, W] (coverage alpha [N, 1, H, W]); amplitudes in [-1, 1] units.

    ``noise``: Gaussian sigma 0.1. ``blur``: 3x3 binomial. ``bg_tint``: background + 0.4 x a random unit
    colour direction. ``cast``: whole image + 0.25 x a random unit colour direction. ``bg_field``: a
    smooth random background field of amplitude 0.3. ``pattern``: a random +-0.1 checkerboard / grating.
    """
    g = torch.Generator().manual_seed(seed)
    n, _, h, w = x.shape
    k = torch.tensor([1.0, 2.0, 1.0])
    k = (k[:, None] * k[None] / 16).expand(3, 1, 3, 3)
    field = F.interpolate(torch.rand(n, 3, 3, 3, generator=g) * 2 - 1, size=(h, w), mode="bicubic", align_corners=False)
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    checker = ((xx + yy) % 2 * 2 - 1)[None, None]
    return {
        "clean": x,
        "noise": (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1),
        "blur": F.conv2d(F.pad(x, [1] * 4, mode="replicate"), k, groups=3),
        "bg_tint": (x + (1 - alpha) * 0.4 * _unit_dirs(n, g)).clamp(-1, 1),
        "cast": (x + 0.25 * _unit_dirs(n, g)).clamp(-1, 1),
        "bg_field": (x + (1 - alpha) * 0.3 * field).clamp(-1, 1),
        "pattern": (x + 0.1 * checker * torch.sign(torch.randn(n, 3, 1, 1, generator=g))).clamp(-1, 1),
    }


@torch.no_grad()
def accuracy(clip: ShapesClip, images: torch.Tensor, labels: list[int], classes: torch.Tensor) -> float:
    """Top-1 accuracy of images [N, 3, H, W] against class embeddings [C, D]."""
    pred = (clip.encode_images(images) @ classes.t()).argmax(1)
    return float((pred == torch.tensor(labels)).float().mean())


def _bg_swap(x: torch.Tensor, alpha: torch.Tensor, style: str) -> torch.Tensor:
    """Photos with another style's canonical background colour behind the shape."""
    size = x.shape[-1]
    d = (torch.from_numpy(style_background(style, size=size) - style_background("photo", size=size))
         .float().permute(2, 0, 1)[None] * 2)  # [1, 3, H, W] in [-1, 1] units
    return (x + (1 - alpha) * d).clamp(-1, 1)


def attack(clip: ShapesClip, x: torch.Tensor, alpha: torch.Tensor, direction: torch.Tensor, family: str, *,
           steps: int = 40, lr: float = 0.1) -> tuple[float, torch.Tensor]:
    """Best cheap edit of photos x [N, 3, H, W] along the text direction [D] (see the module docstring).

    Args:
        family: "colour" (shared x + M x + b, |M|, |b| <= 0.25), "background" (shared smooth field on the
            background, |.| <= 0.5) or "pattern" (shared pattern, |.| <= 0.1).

    Returns:
        (mean directional cosine reached, the edited images).
    """
    n, _, h, w = x.shape
    with torch.no_grad():
        e0 = clip.encode_images(x)
    if family == "colour":
        p = torch.zeros(12, requires_grad=True)

        def edit(p):
            q = 0.25 * torch.tanh(p)
            m, b = q[:9].reshape(3, 3), q[9:].reshape(1, 3, 1, 1)
            return x + torch.einsum("ij,njhw->nihw", m, x) + b
    elif family == "background":
        p = torch.zeros(1, 3, 4, 4, requires_grad=True)

        def edit(p):
            return x + (1 - alpha) * 0.5 * torch.tanh(F.interpolate(p, size=(h, w), mode="bicubic", align_corners=False))
    elif family == "pattern":
        p = torch.zeros(1, 3, h, w, requires_grad=True)

        def edit(p):
            return x + 0.1 * torch.tanh(p)
    else:
        raise ValueError(f"attack: expected family 'colour', 'background' or 'pattern', found {family!r}")
    opt = torch.optim.Adam([p], lr=lr)
    for _ in range(steps):
        cos = F.cosine_similarity(clip.encode_images(edit(p)) - e0, direction[None], dim=1).mean()
        opt.zero_grad()
        (-cos).backward()
        opt.step()
    with torch.no_grad():
        xe = edit(p)
        cos = F.cosine_similarity(clip.encode_images(xe) - e0, direction[None], dim=1).mean()
    return float(cos), xe.detach()


def evaluate(clip: ShapesClip, *, n: int = 100, seed: int = 10_000, attacks: bool = True, n_attack: int = 32,
             attack_steps: int = 40) -> dict:
    """All metrics (module docstring) on ``n`` fresh shapes per style; ``attacks`` adds the cheap-edit search."""
    from zsgm.clip_templates import IMAGENET_TEMPLATES
    from zsgm.toy.judges import classify_style

    torch.manual_seed(seed)
    images, alpha, base = paired_renders(n, seed=seed)
    style_cls = {"simple": clip.class_embeddings(STYLES), "imagenet": clip.class_embeddings(STYLES, IMAGENET_TEMPLATES)}
    colour_cls = clip.class_embeddings(COLOURS, ("a {} shape",))
    kind_cls = clip.class_embeddings(KINDS, ("a {}",))
    colours = [COLOURS.index(p.colour) for p in base]
    kinds = [KINDS.index(p.kind) for p in base]
    out: dict = {"n_per_style": n, "seed": seed}
    per_style = {s: corruptions(images[s], alpha[s], seed=seed + i) for i, s in enumerate(STYLES)}
    for cond in per_style["photo"]:
        for tname, cls in style_cls.items():
            accs = {s: accuracy(clip, per_style[s][cond], [i] * n, cls) for i, s in enumerate(STYLES)}
            out[f"style_{tname}_{cond}"] = float(np.mean(list(accs.values())))
            out[f"style_{tname}_{cond}_per_style"] = accs
        out[f"colour_{cond}"] = float(np.mean([accuracy(clip, per_style[s][cond], colours, colour_cls)
                                               for s in STYLES if s != "sketch"]))
        out[f"kind_{cond}"] = float(np.mean([accuracy(clip, per_style[s][cond], kinds, kind_cls) for s in STYLES]))
    for s in ("sketch", "pastel"):
        out[f"photo_on_{s}_background_still_photo"] = accuracy(
            clip, _bg_swap(images["photo"], alpha["photo"], s), [0] * n, style_cls["simple"])

    directions = {t: clip.text_direction("photo", t, IMAGENET_TEMPLATES) for t in STYLES if t != "photo"}
    with torch.no_grad():
        e_photo = clip.encode_images(images["photo"])
        for t, d in directions.items():
            delta = clip.encode_images(images[t]) - e_photo
            out[f"direction_true_{t}"] = float(F.cosine_similarity(delta, d[None], dim=1).mean())
            for cond in ("bg_tint", "cast", "pattern"):
                delta = clip.encode_images(per_style["photo"][cond]) - e_photo
                out[f"direction_random_{cond}_{t}"] = float(F.cosine_similarity(delta, d[None], dim=1).mean())
    if attacks:
        x, a = images["photo"][:n_attack], alpha["photo"][:n_attack]
        for t, d in directions.items():
            for family in ("colour", "background", "pattern"):
                cos, xe = attack(clip, x, a, d, family, steps=attack_steps)
                out[f"attack_{family}_{t}_cos"] = cos
                out[f"attack_{family}_{t}_zero_shot_target_rate"] = accuracy(
                    clip, xe, [STYLES.index(t)] * len(xe), style_cls["simple"])
                out[f"attack_{family}_{t}_judge_photo_rate"] = float(np.mean([s == "photo" for s in classify_style(xe)]))
    return out


def summary(m: dict) -> dict:
    """The headline numbers of :func:`evaluate`'s output."""
    keys = [k for k in m if not k.endswith("_per_style") and not isinstance(m[k], dict)]
    return {k: (round(m[k], 4) if isinstance(m[k], float) else m[k]) for k in keys}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", nargs="?", default=str(Path(__file__).parent / "assets" / "shapes_clip.safetensors"))
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seed", type=int, default=10_000)
    parser.add_argument("--no-attack", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    metrics = evaluate(load_shapes_clip(args.path), n=args.n, seed=args.seed, attacks=not args.no_attack)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
