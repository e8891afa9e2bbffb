"""The evaluation samples: drawn once, batched and seeded, for every metric of a ``zsgm eval`` call.

Protocol (docs EVAL.md 2.1): the latents go through the *source* mapping network (the evaluated generator's own
when no source is known), truncation ``psi`` pulls them towards the source's ``latent_avg`` (else a mean of 4096
mapped latents drawn with seed ``seed + 1``), and the source and evaluated generators synthesise the *same* ``ws``
with the *same* noise maps, so paired metrics compare each sample with its own source image.

The random stream: one ``torch.Generator`` seeded with ``seed`` (CPU) draws, per chunk of :data:`STREAM_CHUNK`
samples, the latents ``z [m, D]`` and then (``noise_mode="random"``) the per-layer noise maps ``[m, 1, r, r]``.
The chunk is fixed, so the latents and noise do not depend on ``batch`` (how many samples are synthesised at
once) nor on the device, and the images only to float precision (threaded convolutions may round differently with
the batch size); ``zsgm.toy.evaluate.paired_samples`` draws the very same images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional, Sequence

import attrs
import torch

STREAM_CHUNK = 64  # samples per draw from the seeded stream (fixed: it defines the images)
NOISE_MODES = ("random", "const", "none")
DEFAULT_SEED = 12345  # zsgm.toy.evaluate.EVAL_SEED
DEFAULT_N = 256


def _check_noise_mode(_instance, _attribute, value):
    if value not in NOISE_MODES:
        raise ValueError(f"noise mode must be one of {', '.join(NOISE_MODES)}, found {value!r}")


def _check_positive(_instance, attribute, value):
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be an integer >= 1, found {value!r}")


def _check_truncation(_instance, _attribute, value):
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"truncation must be in [0, 1], found {value!r}")


@attrs.frozen(kw_only=True)
class SampleSettings:
    """How the evaluation samples are drawn (all of it is recorded with the results).

    Attributes:
        n: number of samples.
        seed: seed of the random stream (latents and random noise).
        truncation: psi in [0, 1]; 1 = none.
        noise_mode: "random" (drawn from the stream), "const" (the source generator's stored noise maps) or
            "none".
        batch: samples synthesised at once (memory; the images depend on it only to float precision).
    """

    n: int = attrs.field(default=DEFAULT_N, validator=_check_positive)
    seed: int = DEFAULT_SEED
    truncation: float = attrs.field(default=1.0, validator=_check_truncation)
    noise_mode: str = attrs.field(default="random", validator=_check_noise_mode)
    batch: int = attrs.field(default=STREAM_CHUNK, validator=_check_positive)

    def record(self, *, mapping: str) -> dict:
        """The reporting record of the samples (``mapping``: "source" or "own")."""
        return {"n": self.n, "seed": self.seed, "truncation": self.truncation, "noise_mode": self.noise_mode,
                "batch": self.batch, "mapping": mapping,
                "stream": f"torch.Generator().manual_seed(seed): per chunk of {STREAM_CHUNK}, z ~ N(0, 1) [m, D] "
                          f"then the noise maps"}


def truncation_mean(mapper, settings: SampleSettings) -> Optional[torch.Tensor]:
    """The latent truncation pulls towards (``[D]``), or None when ``truncation == 1``."""
    if settings.truncation >= 1:
        return None
    if mapper.latent_avg is not None:
        return mapper.latent_avg
    return mapper.mean_latent(4096, generator=torch.Generator().manual_seed(settings.seed + 1))


def _codes(mapper, settings: SampleSettings, device: torch.device) -> Iterator[tuple[torch.Tensor, list]]:
    """``(ws [m, n_latent, D], noise maps)`` per stream chunk, on ``device``."""
    rng = torch.Generator().manual_seed(settings.seed)
    mean = truncation_mean(mapper, settings)
    for start in range(0, settings.n, STREAM_CHUNK):
        m = min(STREAM_CHUNK, settings.n - start)
        z = torch.randn((m, mapper.arch.style_dim), generator=rng)
        ws = mapper.mapping(z.to(device))[:, None].repeat(1, mapper.n_latent, 1)
        ws = mapper.truncate(ws, settings.truncation, mean)
        noise = mapper.make_noise(m, mode=settings.noise_mode, rng=rng)  # random: CPU stream, moved to device
        yield ws, [None if t is None else t.to(device) for t in noise]


def _rebatch(codes, batch: int) -> Iterator[tuple[torch.Tensor, list]]:
    """Regroup stream chunks into batches of ``batch`` samples (the last may be smaller)."""
    pending_ws: list[torch.Tensor] = []
    pending_noise: list[list] = []
    count = 0

    def take(k):
        ws = torch.cat(pending_ws)
        noise = [None if maps[0] is None else torch.cat(maps) for maps in zip(*pending_noise)]
        head = (ws[:k], [None if t is None else t[:k] for t in noise])
        rest_ws = ws[k:]
        pending_ws.clear()
        pending_noise.clear()
        if len(rest_ws):
            pending_ws.append(rest_ws)
            pending_noise.append([None if t is None else t[k:] for t in noise])
        return head

    for ws, noise in codes:
        pending_ws.append(ws)
        pending_noise.append(noise)
        count += len(ws)
        while count >= batch:
            yield take(batch)
            count -= batch
    if count:
        yield take(count)


@torch.no_grad()
def draw_samples(generators: Sequence[torch.nn.Module], *, mapper: torch.nn.Module, settings: SampleSettings,
                 device: torch.device | str = "cpu", progress: bool = False, desc: str = "samples") \
        -> list[torch.Tensor]:
    """Synthesise the same codes with each generator.

    Args:
        generators: generators of one architecture (the source first, then the evaluated one, say); each is
            used as it is (eval mode expected) and must already be on ``device``.
        mapper: the generator whose mapping network and mean latent make the codes (the source when known).
        settings: what to draw.
        device: where synthesis runs.
        progress: show a progress bar.

    Returns:
        one ``[n, 3, S, S]`` CPU float32 tensor per generator, in order.

    Raises:
        ValueError: generators of different architectures.
    """
    from tqdm import tqdm

    device = torch.device(device)
    for g in generators:
        if g.arch != mapper.arch:
            raise ValueError(f"the generators differ in architecture ({mapper.arch.size} px, style_dim "
                             f"{mapper.arch.style_dim} vs {g.arch.size} px, style_dim {g.arch.style_dim}): "
                             f"cannot draw paired samples")
    out: list[list[torch.Tensor]] = [[] for _ in generators]
    with tqdm(total=settings.n, desc=desc, unit="img", disable=not progress, dynamic_ncols=True, leave=False) as bar:
        for ws, noise in _rebatch(_codes(mapper, settings, device), settings.batch):
            for g, images in zip(generators, out):
                images.append(g.synthesis(ws, noise=noise).float().cpu())
            bar.update(len(ws))
    return [torch.cat(images) for images in out]


@attrs.define(kw_only=True)
class EvalSamples:
    """The drawn samples and how: ``generated`` ``[N, 3, S, S]``, ``source`` (same codes) or None."""

    generated: torch.Tensor
    source: Optional[torch.Tensor]
    settings: SampleSettings
    mapping: str  # "source" or "own"

    def record(self) -> dict:
        return self.settings.record(mapping=self.mapping)


def sample_pair(generator, source=None, *, settings: SampleSettings, device="cpu", progress: bool = False) \
        -> EvalSamples:
    """The evaluated generator's samples and, when ``source`` is given, the source's for the same codes
    (the codes come from the source's mapping network; without a source, from the generator's own)."""
    if source is None:
        (generated,) = draw_samples([generator], mapper=generator, settings=settings, device=device,
                                    progress=progress)
        return EvalSamples(generated=generated, source=None, settings=settings, mapping="own")
    src, generated = draw_samples([source, generator], mapper=source, settings=settings, device=device,
                                  progress=progress)
    return EvalSamples(generated=generated, source=src, settings=settings, mapping="source")


def save_samples(samples: EvalSamples, folder: str | Path) -> Path:
    """Write the samples losslessly at full resolution (EVAL.md 2.1): ``FOLDER/generated/NNNNNN.png`` and, when
    paired, ``FOLDER/source/NNNNNN.png`` (the same index is the same latent and noise); returns ``folder``."""
    from PIL import Image

    from zsgm.io_utils import save_png, to_uint8

    folder = Path(folder)
    for name, images in (("generated", samples.generated), ("source", samples.source)):
        if images is None:
            continue
        (folder / name).mkdir(parents=True, exist_ok=True)
        for start in range(0, len(images), 256):  # uint8 conversion in slices: bounded memory at 1024 px
            for i, array in enumerate(to_uint8(images[start:start + 256]), start=start):
                save_png(Image.fromarray(array), folder / name / f"{i:06d}.png")
    return folder


__all__ = ["DEFAULT_N", "DEFAULT_SEED", "EvalSamples", "NOISE_MODES", "STREAM_CHUNK", "SampleSettings",
           "draw_samples", "sample_pair", "save_samples", "truncation_mean"]
