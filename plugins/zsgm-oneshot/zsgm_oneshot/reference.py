"""``reference-search``: stage 1 of One-shot CLIP (METHODS.md 6.1), the source latent closest to the reference.

From the mean latent w̄ (``mean_samples`` mapped z), one ``w`` broadcast to every W+ slot is optimised with Adam
(``lr`` 0.01, betas (0.9, 0.999)) for ``iterations`` steps on::

    L = lambda_clip * mean_v [1 - cos(E_I(aug_v(G_s(w))), E_I(I_ref))]
      + lambda_l2   * mean((w - w̄)^2)
      + lambda_rec  * [LPIPS(G_s(w), I_ref) + MSE(G_s(w), I_ref)]

``G_s`` draws fresh noise every iteration (the released generator's ``randomize_noise``); every draw (z for w̄, noise,
augmentations) comes from the run's seeded streams. With several CLIP models the CLIP term is their weighted sum.

The result ``w_ref`` ``[1, n_latent, D]`` is a buffer of the technique (a resumed run skips the search), written to
``<run>/reference/latent.safetensors`` (tensor ``"w_ref"``) with ``reference.png`` (the reference as the run sees it)
and ``reconstruction.png`` (``G_s(w_ref)``), and cached across runs (:mod:`zsgm_oneshot.reference_cache`).
Other techniques reach it through :func:`reference_latent` and render ``G_t(w_ref)`` once per step through
:meth:`ReferenceSearch.render_target`.
"""

from __future__ import annotations

import hashlib
import sys
import warnings
from pathlib import Path

import attrs
import torch
from PIL import Image
from tqdm.auto import tqdm

from zsgm import validators as v
from zsgm.hookspecs import hookimpl
from zsgm.io_utils import save_png, to_uint8
from zsgm.run import RunError
from zsgm.step import random_noise
from zsgm.technique import Technique

from zsgm_oneshot.augment import AUGMENT_MODES, augment_views, released_resize
from zsgm_oneshot.common import (
    SEARCH,
    load_reference,
    load_run_lpips,
    reference_file,
    reference_image_problems,
    resolve_lpips_net,
    technique_by_use,
)
from zsgm_oneshot.reference_cache import (
    CACHE_SUBDIR,
    cache_key,
    cache_root,
    read_latent,
    weights_fingerprint,
    write_latent,
)

#: Bumped whenever the search's semantics change, so older cache entries are not reused.
SEARCH_VERSION = 1


@attrs.define(kw_only=True)
class ReferenceSearchConfig:
    """Options of the reference search (defaults: the released argparse values).

    Attributes:
        iterations: Adam steps (``init_iter``); 0 keeps w̄.
        lr / beta1 / beta2: Adam of the latent (``f_lr``).
        lambda_clip / lambda_l2 / lambda_rec: weights of the three terms.
        views: augmented copies in the CLIP term.
        augment: "independent" (each view its own draw, augmented in [0, 1]) or "released" (one draw for all
            views, on [-1, 1] data that ColorJitter clamps): :mod:`zsgm_oneshot.augment`.
        mean_samples: z samples averaged for w̄.
        lpips: LPIPS network ("alex", "vgg", "squeeze", "standin") or "auto" (the generator's own choice, else
            "alex", the released code's).
        lpips_backbone: a local torchvision weights file for the LPIPS backbone (else the torch hub cache).
        cache: reuse / store the result in the cross-run cache.
        init: where the search starts: "mean" (w̄, as released) or "best-of" (ours: the lowest-loss latent among
            ``candidates`` mapped samples, scored by the same loss without augmentation). On a generator whose
            average image is empty (the shapes world) the search from w̄ ends on an empty image; from the best
            of 256 it starts on a shape, though the published objective may still leave it (plugin README).
        candidates: samples scored for ``init = "best-of"``.
    """

    iterations: int = attrs.field(default=1001, validator=v.non_negative)
    lr: float = attrs.field(default=0.01, validator=v.positive)
    beta1: float = attrs.field(default=0.9, validator=v.in_half_open_range(0.0, 1.0))
    beta2: float = attrs.field(default=0.999, validator=v.in_half_open_range(0.0, 1.0))
    lambda_clip: float = attrs.field(default=1.0, validator=v.non_negative)
    lambda_l2: float = attrs.field(default=0.01, validator=v.non_negative)
    lambda_rec: float = attrs.field(default=1.0, validator=v.non_negative)
    views: int = attrs.field(default=8, validator=v.positive)
    augment: str = attrs.field(default="independent", validator=v.one_of(AUGMENT_MODES))
    mean_samples: int = attrs.field(default=10000, validator=v.positive)
    lpips: str = attrs.field(default="auto", validator=v.one_of(["auto", "alex", "vgg", "squeeze", "standin"]))
    lpips_backbone: str | None = attrs.field(default=None, validator=v.optional_non_empty)
    cache: bool = True
    init: str = attrs.field(default="mean", validator=v.one_of(["mean", "best-of"]))
    candidates: int = attrs.field(default=256, validator=v.positive)


def check_reference_search(config: ReferenceSearchConfig, recipe) -> list[str]:
    """Recipe-time problems: no reference, several, or one that is not a usable image."""
    return reference_image_problems(recipe, config)


def reference_latent(run) -> torch.Tensor:
    """``w_ref`` ``[1, n_latent, D]`` of the run's ``reference-search`` (after its setup)."""
    technique = technique_by_use(run, SEARCH)
    if technique is None or not bool(technique.found):
        raise RunError("no reference latent: add a [[techniques]] entry with use = 'reference-search'")
    return technique.w_ref


def _save_image(x: torch.Tensor, path: Path) -> None:
    """``[1, 3, H, W]`` in [-1, 1] as a PNG of that exact size."""
    save_png(Image.fromarray(to_uint8(x)[0]), path)


class ReferenceSearch(Technique):
    """Finds ``w_ref`` at setup; produces no loss term.

    Attributes:
        w_ref: ``[1, n_latent, D]`` buffer (registered in ``zsgm_attach``), valid once ``found`` is 1.
        found: ``[]`` uint8 buffer, 1 once ``w_ref`` holds the result (restored on resume).
        image_sha256: ``[32]`` uint8 buffer, the sha256 of the reference file ``w_ref`` was found for: a resume
            whose reference file has changed since is refused (the run would train against another image).
        origin: where this process got ``w_ref`` from: "search", "cache" or "checkpoint" (None before setup).
        history: per-iteration ``{"clip", "l2", "rec", "total"}`` of a search run in this process.
    """

    def __init__(self, config: ReferenceSearchConfig):
        super().__init__(config)
        self.origin: str | None = None
        self.history: list[dict[str, float]] = []
        self._render: tuple[int, torch.Tensor] | None = None

    # ------------------------------------------------------------------ hooks

    @hookimpl
    def zsgm_attach(self, run):
        g = run.g_source
        self.register_buffer("w_ref", torch.zeros(1, g.n_latent, g.arch.style_dim, device=run.device))
        self.register_buffer("found", torch.zeros((), dtype=torch.uint8, device=run.device))
        self.register_buffer("image_sha256", torch.zeros(32, dtype=torch.uint8, device=run.device))

    @hookimpl
    def zsgm_setup(self, run):
        path = Path(reference_file(run.recipe))
        digest = torch.tensor(list(hashlib.sha256(path.read_bytes()).digest()), dtype=torch.uint8)
        if bool(self.found):
            if not torch.equal(self.image_sha256.cpu(), digest):
                raise RunError(f"{self.use.name}: the reference image {path} has changed since this run started "
                               f"(its sha256 differs from the one the run's reference latent was found for); put the "
                               f"original back to resume, or start a new run for the new image")
            self.origin = "checkpoint"
        else:
            self._find(run)
            with torch.no_grad():
                self.image_sha256.copy_(digest)
        self._write_run_files(run)

    @hookimpl
    def zsgm_after_step(self, run, step):
        self._render = None  # drop this step's graph

    # ------------------------------------------------------------------ for other techniques

    def render_target(self, run, step: int) -> torch.Tensor:
        """``G_t(w_ref)`` ``[1, 3, S, S]`` with gradients, computed once per step (the released reference step
        feeds the same image to the discriminator and to LPIPS/MSE). Noise: the step's ``"reference"`` role."""
        if self._render is None or self._render[0] != step:
            noise = [n[:1] for n in run.batch.noise_for("reference")]
            self._render = (step, run.g_target.synthesis(self.w_ref, noise=noise))
        return self._render[1]

    # ------------------------------------------------------------------ the search

    def settings(self, run) -> dict:
        """Everything besides the image and the generator weights that determines the result (the cache key),
        the CLIP models' weights included: a CLIP file replaced under the same name gets a new search."""
        c = self.config
        options = {f.name: getattr(c, f.name) for f in attrs.fields(type(c)) if f.name not in ("cache",)}
        if c.init == "mean":  # the released start: keys of caches written before these options existed stay valid
            options.pop("init")
            options.pop("candidates")
        options["lpips"] = resolve_lpips_net(run, c.lpips)
        return {
            "version": SEARCH_VERSION,
            "options": options,
            "seed": run.recipe.run.seed,
            "stream": self.use.name,
            "clip": [[m.name, m.pretrained, m.weight, weights_fingerprint(model)]
                     for m, model in zip(run.recipe.clip.models, run.clip_models)],
            "preprocess": run.recipe.clip.preprocess,
        }

    def cache_file(self, run) -> Path:
        image_bytes = Path(reference_file(run.recipe)).read_bytes()
        key = cache_key(image_bytes, weights_fingerprint(run.g_source), self.settings(run))
        return cache_root() / CACHE_SUBDIR / f"{key}.safetensors"

    def _find(self, run) -> None:
        cache_file = self.cache_file(run) if self.config.cache else None
        if cache_file is not None:
            cached = read_latent(cache_file, tuple(self.w_ref.shape))
            if cached is not None:
                with torch.no_grad():
                    self.w_ref.copy_(cached.to(self.w_ref))
                    self.found.fill_(1)
                self.origin = "cache"
                print(f"{self.use.name}: reusing the reference latent cached in {cache_file} "
                      f"(skipping the {self.config.iterations}-step search)", file=sys.stderr)
                return
        w = self.search(run)  # [1, D]
        with torch.no_grad():
            self.w_ref.copy_(w[:, None, :].expand_as(self.w_ref))
            self.found.fill_(1)
        self.origin = "search"
        if cache_file is not None:
            try:
                write_latent(cache_file, self.w_ref, {"reference": str(reference_file(run.recipe))})
            except OSError as exc:  # the cache is optional: an unwritable cache folder must not lose the search
                warnings.warn(f"{self.use.name}: could not store the reference latent in the cache ({exc}); the run "
                              f"keeps it (checkpoint and {Path(run.out_dir) / 'reference'}), set ZSGM_CACHE to a "
                              f"writable folder to reuse it across runs", stacklevel=2)

    def search(self, run) -> torch.Tensor:
        """Run the optimisation; returns ``w`` ``[1, D]`` (detached)."""
        c, g, name = self.config, run.g_source, self.use.name
        reference = load_reference(run)  # [1, 3, S, S]
        w_mean = g.mean_latent(c.mean_samples, generator=run.rng(0, f"{name}/mean"))  # [1, D]
        models = [(m, weight) for m, weight in zip(run.clip_models, run.clip_weights) if weight]
        with torch.no_grad():
            e_ref = [m.encode_image(reference)[0] for m, _ in models]  # [D_m] each
        lpips = load_run_lpips(run, c.lpips, c.lpips_backbone) if c.lambda_rec else None
        start = w_mean
        if c.init == "best-of":
            start = self.best_candidate(run, reference, models, e_ref, lpips, w_mean)
        w = start.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([w], lr=c.lr, betas=(c.beta1, c.beta2))
        self.history = []
        bar = tqdm(range(c.iterations), desc=name, unit="it", disable=not run.recipe.run.progress,
                   dynamic_ncols=True)
        for it in bar:
            noise = random_noise(g, 1, run.rng(it, f"{name}/noise"), run.device)
            image = g.synthesis(w[:, None, :].repeat(1, g.n_latent, 1), noise=noise)  # [1, 3, S, S]
            zero = image.new_zeros(())
            clip_term = zero
            if c.lambda_clip:
                views = augment_views(image, views=c.views, rng=run.rng(it, f"{name}/aug"), mode=c.augment)
                for (model, weight), e in zip(models, e_ref):
                    x = released_resize(views, model.image_size) if c.augment == "released" else views
                    clip_term = clip_term + weight * (1.0 - model.encode_image(x) @ e).mean()
            l2_term = ((w - w_mean) ** 2).mean()
            rec_term = zero
            if lpips is not None:
                rec_term = lpips(image, reference).mean() + ((image - reference) ** 2).mean()
            loss = c.lambda_clip * clip_term + c.lambda_l2 * l2_term + c.lambda_rec * rec_term
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            record = {k: float(t.detach()) for k, t in (("clip", clip_term), ("l2", l2_term), ("rec", rec_term),
                                                      ("total", loss))}
            self.history.append(record)
            bar.set_postfix(loss=f"{record['total']:.4f}")
        bar.close()
        return w.detach()

    @torch.no_grad()
    def best_candidate(self, run, reference, models, e_ref, lpips, w_mean, *, batch: int = 64) -> torch.Tensor:
        """``init = "best-of"``: among ``candidates`` mapped samples (one w in every slot, fresh noise), the one
        with the lowest search loss on the plain image (no augmentation); returns ``w`` ``[1, D]``."""
        c, g, name = self.config, run.g_source, self.use.name
        z = torch.randn((c.candidates, g.arch.style_dim), generator=run.rng(0, f"{name}/candidates"))
        best_loss, best_w = None, None
        for k, chunk in enumerate(z.split(batch)):
            w = g.mapping(chunk.to(run.device))  # [B, D]
            noise = random_noise(g, len(w), run.rng(k, f"{name}/candidate-noise"), run.device)
            image = g.synthesis(w[:, None, :].repeat(1, g.n_latent, 1), noise=noise)  # [B, 3, S, S]
            loss = c.lambda_l2 * ((w - w_mean) ** 2).mean(1)
            for (model, weight), e in zip(models, e_ref):
                loss = loss + c.lambda_clip * weight * (1.0 - model.encode_image(image) @ e)
            if lpips is not None:
                ref = reference.expand_as(image)
                loss = loss + c.lambda_rec * (lpips(image, ref).reshape(len(image), -1).mean(1)
                                              + ((image - ref) ** 2).flatten(1).mean(1))
            i = int(loss.argmin())
            if best_loss is None or float(loss[i]) < best_loss:
                best_loss, best_w = float(loss[i]), w[i:i + 1].clone()
        return best_w

    def _write_run_files(self, run) -> None:
        """``<run>/reference/``: latent.safetensors, reference.png, reconstruction.png (each atomically)."""
        folder = Path(run.out_dir) / "reference"
        write_latent(folder / "latent.safetensors", self.w_ref,
                     {"reference": str(reference_file(run.recipe)), "origin": str(self.origin)})
        _save_image(load_reference(run), folder / "reference.png")
        with torch.no_grad():
            noise = random_noise(run.g_source, 1, run.rng(0, f"{self.use.name}/render"), run.device)
            _save_image(run.g_source.synthesis(self.w_ref, noise=noise), folder / "reconstruction.png")
