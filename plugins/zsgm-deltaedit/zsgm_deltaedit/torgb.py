"""The ToRGB colour step (ours, off as released): moving the W codes that the ToRGB layers read along the text.

DeltaEdit edits the S codes of the convolutions only; the ToRGB layers keep reading the source's W+ slots, so each
resolution's ToRGB still paints the source's colours. On the 32-px shapes generator that leaves a rim of the old
colour around every recoloured shape (a yellow shape turned blue is light blue inside a yellow rim), and no
relevance gate over the conv channels removes it (docs/DELTAEDIT_SHAPES.md). The ToRGB layers are 1x1 convs: moving
their styles changes colours, not where the edges are.

The direction comes from the mapper's own training codes, without text at training time and without target
images: over the ``N`` codes the mapper was trained on (generated samples, and real-image codes where the recipe
added them) with W codes ``w_i`` (the mean of the ToRGB slots of each row) and CLIP image embeddings ``c_i``, the
score ``y_i = normalize(c_i) . normalize(dt)`` is how far along the text direction each sample lies, and

    d = normalize(mean_i (w_i - w_mean) (y_i - y_mean))      sigma = std_i ((w_i - w_mean) . d)

(the least-squares direction of ``y`` on ``w`` when ``w``'s covariance is isotropic). An edit at strength ``k``
with ToRGB weight ``beta`` adds ``k * beta * sigma * d`` to every ToRGB slot of W+, so strength 0 still gives the
unedited image exactly. Cost: two passes over the codes' W and CLIP columns (means, then centred moments, in
float64): milliseconds for the shapes preset's 4,096 codes; for the published FFHQ preset's 258,000 codes a pass
reads their 18 W+ slots (several GB), so minutes from disk.
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
    block = (w.detach().cpu().double().numpy(), c.detach().cpu().double().numpy())
    return _direction(lambda: iter([block]), delta_t)


def torgb_direction(reader, generator, delta_t: torch.Tensor, *, rows: int | None = None) -> TorgbDirection:
    """The direction over the first ``rows`` rows (None: all) of a :class:`~zsgm_deltaedit.codes.CodeReader`,
    file by file."""
    slots = torgb_slots(generator)
    limit = reader.rows if rows is None else min(rows, reader.rows)

    def blocks():
        left = limit
        for arrays in reader.per_file(("ws", "c")):
            if left <= 0:
                return
            n = min(left, arrays["c"].shape[0])
            left -= n
            yield (np.asarray(arrays["ws"][:n, slots], dtype=np.float64).mean(1),
                   np.asarray(arrays["c"][:n], dtype=np.float64))

    return _direction(blocks, delta_t)


def _direction(blocks, delta_t: torch.Tensor) -> TorgbDirection:
    """Two passes over ``(w [n, D], c [n, E])`` blocks (``blocks()`` starts a pass): the means, then the centred
    covariance of ``w`` with the scores and of ``w`` with itself."""
    t = F.normalize(delta_t.detach().cpu().double().flatten(), dim=0).numpy()  # [E]

    def scored():
        for w, c in blocks():
            yield w, (c / np.linalg.norm(c, axis=1, keepdims=True).clip(1e-12)) @ t  # [n, D], [n]

    count, w_sum, y_sum = 0, 0.0, 0.0
    for w, y in scored():
        count, w_sum, y_sum = count + len(y), w_sum + w.sum(0), y_sum + y.sum()
    if count < 2:
        raise ValueError(f"the ToRGB direction needs at least 2 codes, found {count}")
    w_mean, y_mean = w_sum / count, y_sum / count
    seen, cov, var_y, cov_ww = 0, 0.0, 0.0, 0.0
    for w, y in scored():
        wc, yc = w - w_mean, y - y_mean
        seen, cov, var_y, cov_ww = seen + len(y), cov + wc.T @ yc, var_y + yc @ yc, cov_ww + wc.T @ wc
    if seen != count:
        raise ValueError(f"the codes changed while the ToRGB direction was measured ({count} rows, then {seen})")
    cov, var_y, cov_ww = cov / count, var_y / count, cov_ww / count  # [D], scalar, [D, D]
    norm, spread = float(np.linalg.norm(cov)), float(np.trace(cov_ww))
    if spread <= 1e-20 * max(float(w_mean @ w_mean), 1.0):
        raise ValueError("the ToRGB direction is undefined: the codes' W do not vary")
    # |cov| <= sqrt(var_y * trace(cov_ww)) (Cauchy-Schwarz): far below it, the scores do not follow W
    if var_y <= 1e-20 or norm <= 1e-9 * np.sqrt(var_y * spread):
        raise ValueError("the ToRGB direction is undefined: the codes' CLIP scores do not vary with W")
    d = cov / norm
    return TorgbDirection(torch.from_numpy(d).float(), float(np.sqrt(max(d @ cov_ww @ d, 0.0))))


def add_torgb_step(generator, ws: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """``ws`` ``[N, n_latent, D]`` with ``step`` ``[D]`` added to each ToRGB slot (a new tensor)."""
    out = ws.clone()
    out[:, torgb_slots(generator)] += step.to(ws)
    return out
