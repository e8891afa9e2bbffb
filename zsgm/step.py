"""One step's batch: latents, noise and everything derived from them, computed lazily and once.

A technique that reads ``batch.src_images`` causes the frozen source forward; nobody asking means it is
skipped. CLIP embeddings are memoised per model for the step, so two techniques reading the same
embedding cost one encode.

In a data-parallel run (:mod:`zsgm.distributed`) every rank draws the step's whole batch (latents, mapping,
noise) from the run's seeded streams and keeps its own rows, so the global batch is the same whatever the
number of processes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # pragma: no cover
    from zsgm.run import Run


def random_noise(generator, n: int, rng: torch.Generator, device, *, rows: slice = slice(None)) \
        -> list[torch.Tensor]:
    """Per-layer noise maps ``[n, 1, r, r]`` drawn from ``rng`` (on CPU, then moved: device independent);
    ``rows`` keeps only those rows of each map (a rank's share of a global batch), taken before the move."""
    maps = []
    for buf in generator.noises.buffers():  # rosinality layout: noises.noise_{i} [1, 1, r, r]
        maps.append(torch.randn((n, 1, *buf.shape[2:]), generator=rng)[rows].to(device))
    return maps


def sample_ws(run: "Run", n: int, rng: torch.Generator, *, mixing: float = 0.0) -> torch.Tensor:
    """Map fresh z through the frozen source mapping; optional style mixing. Returns ``[n, n_latent, D]``."""
    g = run.g_source
    z = torch.randn((n, g.arch.style_dim), generator=rng).to(run.device)  # [n, D]
    with torch.no_grad():
        w = g.mapping(z)  # [n, D]
        ws = w[:, None, :].repeat(1, g.n_latent, 1)  # [n, L, D]
        if mixing > 0:
            use_mix = torch.rand((n,), generator=rng) < mixing  # [n]
            cross = torch.randint(1, g.n_latent, (n,), generator=rng)  # [n]
            z2 = torch.randn((n, g.arch.style_dim), generator=rng).to(run.device)
            w2 = g.mapping(z2)
            slots = torch.arange(g.n_latent)[None, :]  # [1, L]
            take2 = (use_mix[:, None] & (slots >= cross[:, None])).to(run.device)  # [n, L]
            ws = torch.where(take2[..., None], w2[:, None, :], ws)
    return ws


class StepBatch:
    """Lazily computed inputs of one optimisation step.

    Attributes:
        step: the step index.
        global_size: ``optim.batch_size``, the batch of the step over all ranks.
        ws: ``[N, n_latent, D]`` W+ codes from the frozen source mapping (psi = 1); ``N`` is this rank's share
            of the global batch (all of it in a single-process run).
        noise: the step's shared per-layer noise maps with ``optim.noise = "shared"`` (drawn right after ``ws``
            from the same stream), None with ``"fresh"``; read noise through :meth:`noise_for`, which honours
            the recipe's noise mode.
    """

    def __init__(self, run: "Run", step: int):
        self.run = run
        self.step = step
        rng = run.rng(step, "batch")
        self.global_size = run.recipe.optim.batch_size
        self._rows = run.dist.rows(self.global_size)
        self.ws = run.dist.shard(sample_ws(run, self.global_size, rng, mixing=run.recipe.optim.mixing))
        self.noise: list[torch.Tensor] | None = None
        if run.recipe.optim.noise == "shared":  # "fresh" draws per role in noise_for, so this draw would go unused
            self.noise = random_noise(run.g_source, self.global_size, rng, run.device, rows=self._rows)
        self._src_images: torch.Tensor | None = None
        self._tgt_images: torch.Tensor | None = None
        self._src_embeds: dict[int, torch.Tensor] = {}
        self._tgt_embeds: dict[int, torch.Tensor] = {}
        self._directions: list[torch.Tensor] | None = None
        self._fresh_noise: dict[str, list[torch.Tensor]] = {}

    def noise_for(self, role: str) -> list[torch.Tensor]:
        """Per-layer noise maps ``[N, 1, r, r]`` for one generator forward of this step.

        ``role`` names the forward (``"source"``, ``"target"``, ``"anchor"``, ...). With ``optim.noise =
        "shared"`` every role gets :attr:`noise`; with ``"fresh"`` each role gets its own draw, seeded from
        (seed, step, role) so a resumed run redraws the same maps, and memoised for the step.
        """
        if self.run.recipe.optim.noise == "shared":
            return self.noise
        if role not in self._fresh_noise:
            rng = self.run.rng(self.step, f"noise/{role}")
            self._fresh_noise[role] = random_noise(self.run.g_source, self.global_size, rng, self.run.device,
                                                   rows=self._rows)
        return self._fresh_noise[role]

    @property
    def src_images(self) -> torch.Tensor:
        """``[N, 3, S, S]`` frozen source generator output (no grad)."""
        if self._src_images is None:
            with torch.no_grad():
                self._src_images = self.run.g_source.synthesis(self.ws, noise=self.noise_for("source"))
        return self._src_images

    @property
    def tgt_images(self) -> torch.Tensor:
        """``[N, 3, S, S]`` trainable target generator output (with grad)."""
        if self._tgt_images is None:
            self._tgt_images = self.run.g_target.synthesis(self.ws, noise=self.noise_for("target"))
        return self._tgt_images

    def src_embeds(self, model_index: int) -> torch.Tensor:
        """``[N, D_m]`` unit CLIP embeddings of the source images for CLIP model ``model_index``."""
        if model_index not in self._src_embeds:
            with torch.no_grad():
                self._src_embeds[model_index] = self.run.clip_models[model_index].encode_image(self.src_images)
        return self._src_embeds[model_index]

    def tgt_embeds(self, model_index: int) -> torch.Tensor:
        """``[N, D_m]`` unit CLIP embeddings of the target images (differentiable)."""
        if model_index not in self._tgt_embeds:
            self._tgt_embeds[model_index] = self.run.clip_models[model_index].encode_image(self.tgt_images)
        return self._tgt_embeds[model_index]

    def directions(self) -> list[torch.Tensor]:
        """Text-side directions per CLIP model: ``[D]`` or ``[N, D]`` unit vectors.

        The first technique implementing ``zsgm_directions`` answers; otherwise the global
        template-ensemble direction from the recipe's source to target text.
        """
        if self._directions is None:
            provided = self.run.pm.hook.zsgm_directions(run=self.run, step=self.step)
            self._directions = provided if provided is not None else self.run.global_directions()
        return self._directions
