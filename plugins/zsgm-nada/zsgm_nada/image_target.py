"""NADA's image-target variant: a few style images replace the target text.

``dT = normalize(mean_j E_I(I_j) - mean_n E_I(G_s(w_n)))`` per CLIP model, with the source mean taken over
``n_source`` generated images, computed once at setup and kept in the technique's state (resume reuses it).

Style images reach CLIP as in NADA's ``compute_img2img_direction``: CLIP's standard PIL preprocessing, i.e. a
bicubic resize of the short side to the model's input size and a centre crop (the aspect ratio is kept, never
squashed to a square), then the model's normalisation.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F

from zsgm import validators as v
from zsgm.hookspecs import hookimpl
from zsgm.io_utils import load_image
from zsgm.step import random_noise, sample_ws
from zsgm.technique import Technique


@attrs.define(kw_only=True)
class ImageTargetConfig:
    """Options of the image-target direction.

    Attributes:
        images: style image files; default: the recipe's ``target_images``.
        n_source: generated source images averaged for the source side.
    """

    images: list[str] = attrs.field(factory=list)
    n_source: int = attrs.field(default=16, validator=v.positive)


def style_pixels(path: str, size: int) -> torch.Tensor:
    """A style image as CLIP's PIL preprocessing sees it: ``[1, 3, size, size]`` in [-1, 1], short side resized
    to ``size`` (bicubic) and centre-cropped. ``encode_image`` then only normalises it (it is already square at
    the model's size, so no preprocessing mode resizes it again)."""
    return load_image(path, size=size, fit="crop")


def check_image_target(config: ImageTargetConfig, recipe) -> list[str]:
    """Recipe-time problems: no style images at all, or files of its own ``images`` that are not usable images
    (``target_images`` files are checked for existence by the recipe loader and read at setup)."""
    if not config.images and not recipe.target_images:
        return ["images: 'image-target' needs style images: set its 'images' or the recipe's target_images "
                "(--target-image)"]
    problems = []
    for j, name in enumerate(config.images):
        try:
            load_image(name)
        except ValueError as exc:
            problems.append(f"images[{j}]: {exc}")
    return problems


class ImageTarget(Technique):
    """Direction provider: the image-embedding direction from generated source images to style images."""

    def __init__(self, config: ImageTargetConfig):
        super().__init__(config)
        self.directions_cache: torch.Tensor | None = None  # [M, D] once computed; saved as extra state

    def get_extra_state(self):
        return {"directions": self.directions_cache}

    def set_extra_state(self, state):
        self.directions_cache = state["directions"]

    def _images(self, run) -> list[str]:
        files = self.config.images or run.recipe.target_images
        if not files:
            raise ValueError("technique 'image-target' needs style images: set its 'images' or recipe.target_images")
        return files

    @hookimpl
    def zsgm_setup(self, run):
        if self.directions_cache is not None:
            self.directions_cache = self.directions_cache.to(run.device)
            return  # restored from a checkpoint
        files = self._images(run)
        rng = run.rng(0, "image-target")
        directions = []
        with torch.no_grad():
            ws = sample_ws(run, self.config.n_source, rng)
            src = run.g_source.synthesis(ws, noise=random_noise(run.g_source, ws.shape[0], rng, run.device))
            for model in run.clip_models:
                styles = torch.cat([style_pixels(f, model.image_size) for f in files]).to(run.device)  # [J, 3, S, S]
                e_style = model.encode_image(styles).mean(0)  # [D]
                e_src = model.encode_image(src).mean(0)  # [D]
                directions.append(F.normalize(e_style - e_src, dim=-1))
        dims = {d.shape[0] for d in directions}
        if len(dims) == 1:
            self.directions_cache = torch.stack(directions)
        else:  # models of different widths: keep a flat concat with offsets
            raise ValueError("image-target: CLIP models of different embedding widths are not supported yet")

    @hookimpl
    def zsgm_directions(self, run, step):
        return list(self.directions_cache)
