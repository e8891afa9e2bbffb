"""The ToRGB colour step (ours, off as released): moving the W codes that the ToRGB layers read along the text.

DeltaEdit edits the S codes of the convolutions only; the ToRGB layers keep reading the source's W+ slots, so each
resolution's ToRGB still paints the source's colours. On the 32-px shapes generator that leaves a rim of the old
colour around every recoloured shape (a yellow shape turned blue is light blue inside a yellow rim), and no
relevance gate over the conv channels removes it (docs/DELTAEDIT_SHAPES.md). The ToRGB layers are 1x1 convs: moving
their styles changes colours, not where the edges are.

The direction comes from the mapper's own training codes, without text at training time and without target
images: over the ``N`` generated samples with W codes ``w_i`` (the mean of the ToRGB slots of each row) and CLIP
image embeddings ``c_i``, the score ``y_i = normalize(c_i) . normalize(dt)`` is how far along the text direction
each sample lies, and

    d = normalize(mean_i (w_i - w_mean) (y_i - y_mean))      sigma = std_i ((w_i - w_mean) . d)

(the least-squares direction of ``y`` on ``w`` when ``w``'s covariance is isotropic). An edit at strength ``k``
with ToRGB weight ``beta`` adds ``k * beta * sigma * d`` to every ToRGB slot of W+, so strength 0 still gives the
unedited image exactly. Cost: two passes over the codes (a product of ``N x D`` floats), a fraction of a second for
4,096 codes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from zsgm.generator.stylespace import torgb_slots

__all__ = ["TorgbDirection", "add_torgb_step", "text_w_direction", "torgb_direction"]


class TorgbDirection:
    """A unit W direction ``d`` ``[D]`` and the spread ``sigma`` of the codes along it."""

    def __init__(self, direction: torch.Tensor, sigma: float):
        self.direction = direction
        self.sigma = float(sigma)

    def step(self, weight: float) -> torch.Tensor:
        """``weight * sigma * d`` ``[D]``: the W move of strength 1."""
        return weight * self.sigma * self.direction


def text_w_direction(w: torch.Tensor, c: torch.Tensor, delta_t: torch.Tensor) -> TorgbDirection:
    """The direction for codes in memory: ``w`` ``[N, D]``, CLIP image embeddings ``c`` ``[N, E]``, ``dt`` ``[E]``."""
    return _direction([(w.detach().cpu().double().numpy(), c.detach().cpu().double().numpy())], delta_t)


def torgb_direction(reader, generator, delta_t: torch.Tensor) -> TorgbDirection:
    """The direction over every row of a :class:`~zsgm_deltaedit.codes.CodeReader` (file by file, float64)."""
    slots = torgb_slots(generator)

    def rows():
        for arrays in reader.per_file(("ws", "c")):
            yield np.asarray(arrays["ws"], dtype=np.float64)[:, slots].mean(1), np.asarray(arrays["c"], np.float64)

    return _direction(rows, delta_t)


def _direction(rows, delta_t: torch.Tensor) -> TorgbDirection:
    """Two passes over ``(w [n, D], c [n, E])`` blocks (``rows``: a list, or a function returning an iterator)."""
    again = rows if callable(rows) else (lambda: iter(rows))
    t = F.normalize(delta_t.detach().cpu().double().flatten(), dim=0).numpy()  # [E]
    count, w_sum, y_sum, yy_sum, wy_sum = 0, 0.0, 0.0, 0.0, 0.0
    for w, c in again():
        y = (c / np.linalg.norm(c, axis=1, keepdims=True).clip(1e-12)) @ t  # [n]
        count += len(y)
        w_sum, wy_sum = w_sum + w.sum(0), wy_sum + (w * y[:, None]).sum(0)
        y_sum, yy_sum = y_sum + y.sum(), yy_sum + (y * y).sum()
    if count < 2:
        raise ValueError(f"the ToRGB direction needs at least 2 codes, found {count}")
    w_mean, y_mean = w_sum / count, y_sum / count
    cov = wy_sum / count - w_mean * y_mean  # [D]: mean (w - w_mean)(y - y_mean)
    norm = float(np.linalg.norm(cov))
    if yy_sum / count - y_mean * y_mean <= 1e-12 * max(y_mean * y_mean, 1e-12) or norm == 0.0:
        raise ValueError("the ToRGB direction is undefined: the codes' CLIP scores do not vary with W")
    d = cov / norm
    sq = sum(float((((w - w_mean) @ d) ** 2).sum()) for w, _ in again())
    return TorgbDirection(torch.from_numpy(d).float(), (sq / count) ** 0.5)


def add_torgb_step(generator, ws: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """``ws`` ``[N, n_latent, D]`` with ``step`` ``[D]`` added to each ToRGB slot (a new tensor)."""
    out = ws.clone()
    out[:, torgb_slots(generator)] += step.to(ws)
    return out
