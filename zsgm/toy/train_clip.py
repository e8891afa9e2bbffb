"""Train the shapes world's tiny CLIP: reproducible from a seed, CPU only, about ten minutes per round.

    python -m zsgm.toy.train_clip --out clip_r1.safetensors --seed 0 --steps 700

The shipped file is not one such run but a lineage of rounds (from scratch, then fine-tuned on mined fakes
and on NADA trajectories from ``zsgm.toy.mine_fakes``); every round's command and time are listed under
``lineage`` in ``zsgm/toy/assets/shapes_clip.json`` (about 2.4 h in all on 2 cores).

The CLIP *guides* generator adaptation (a directional loss), so it must not be fooled cheaply: a
generator that only tints the background, casts a colour over the image, shifts brightness or adds a
fixed high-frequency pattern must not move the image embedding towards "sketch". Training therefore
(see :mod:`zsgm.toy.clip_data` for the data side):

- renders every style with label-preserving corruptions (background tints and smooth background
  fields, global colour casts, brightness / contrast, blur, quantisation, Gaussian noise, gratings,
  small shifts / scales / horizontal flips) applied to *every* style with its caption unchanged, so
  none of them predicts a style or a colour (the shape's hue is never rotated: it is semantic);
- adds *universal adversarial perturbations* (a bank of image-sized patterns, each updated by one
  sign-gradient ascent step on the training loss whenever it is used, within an L-inf budget): the
  fixed patterns a generator can add cheaply are exactly what random augmentation cannot cover;
- draws captions from many phrasings (the renderer's captions, style-only, colour-only, kind-only and
  the 79 ImageNet templates filled with a style or colour word, which is what ``text_direction``
  averages), with *soft* contrastive targets: image i matches caption j whenever every attribute that
  caption j mentions agrees with image i (many images in a batch share a caption).

A second round (``--init`` the first round's weights, ``--fakes`` the images
:mod:`zsgm.toy.mine_fakes` mined with it) fine-tunes with a fraction of every batch replaced by those
fakes, captioned as "a glitched picture" and the like: hard negatives of the form a guided generator
actually produces, which no hand-written augmentation foresaw. Two more terms train the quantity the
adaptation loss reads, the *direction* between two images:

- ``--directional-weight``: for pairs of renders of the same shape in two styles (or as a photo in two
  colours), ``1 - cos(E_I(x_t) - E_I(x_s), dT(s -> t))`` with ``dT`` the template-ensembled text direction
  (8 random ImageNet templates per step), so that a true edit is the best-aligned edit there is;
- ``--fake-direction-weight``: for each mined fake and its source image, ``relu(cos(E_I(fake) - E_I(src),
  dT(task)) - margin)``: what fooled the previous round must no longer point along its task's direction.

Four more terms shape the direction field around the true edits (rounds 7 and later, none shipped yet;
``docs/SHAPES.md`` has what each did to the guided generator):

- ``--adversarial-weight``: per-image projected-gradient perturbations within L-inf ``--adv-eps`` must not
  point along any style or colour direction (:func:`adversarial_direction_loss`);
- ``--blend-min``: the direction term also holds on blends between a source and its true edit
  (:func:`true_edit_direction_loss`);
- ``--geometry-weight``: the true edit must beat the same edit with the shape resized or moved, by a margin
  that grows with the silhouette change (:func:`geometry_ranking_loss`);
- ``--gradient-weight``: the input gradient of the direction must point at the true edit
  (:func:`gradient_alignment_loss`).

The schedule (warm-up, cosine) runs over ``--steps``; ``--minutes`` is only a wall-clock cap (when it
stops training early the record says ``"completed": false`` and the run is no longer reproducible).
Given the seed, the step count, the thread count and the torch version, the weights are bit-identical.
The weights are stored as float16 (they load into the float32 model) to keep the file small.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from zsgm.toy.render import COLOURS, STYLES

CONFIG: dict = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 32, "layers": 4, "width": 128, "patch_size": 4, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 4},
}
MEAN = (0.5, 0.5, 0.5)  # model input = image in [-1, 1]
STD = (0.5, 0.5, 0.5)
FILE_FORMAT = "zsgm-clip"
DEFAULT_OUT = Path(__file__).parent / "assets" / "shapes_clip.safetensors"
NUM_THREADS = 2


def save_weights(model: torch.nn.Module, path: str | Path, *, config: dict = CONFIG, name: str = "shapes",
                 dtype: torch.dtype = torch.float16) -> None:
    """Write the zsgm CLIP file (:func:`zsgm.clip_loading.write_clip_file`) with floating tensors stored as
    ``dtype`` (they load into the float32 model)."""
    import copy

    from zsgm.clip_loading import write_clip_file

    stored = copy.deepcopy(model).to(dtype)
    write_clip_file(stored, path, config=config, name=name, mean=MEAN, std=STD)


def soft_contrastive_loss(e_img: torch.Tensor, e_txt: torch.Tensor, pos: torch.Tensor,
                          scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with several positives per row.

    Args:
        e_img: [B, D] unit image embeddings. e_txt: [B, D] unit text embeddings.
        pos: bool [B, B], ``pos[i, j]`` when caption j describes image i (the diagonal is True).
        scale: the logit scale (a scalar tensor).

    Returns:
        scalar: mean of the image->text and text->image cross-entropies against the uniform
        distribution over the positives.
    """
    logits = scale * e_img @ e_txt.t()  # [B, B]
    t = pos.float()
    i2t = -(t / t.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
    t2i = -(t.t() / t.t().sum(1, keepdim=True) * logits.t().log_softmax(1)).sum(1).mean()
    return 0.5 * (i2t + t2i)


class UniversalPerturbations:
    """A bank of ``k`` image-sized perturbations ``[k, 3, H, W]`` within ``|delta| <= eps`` ([-1, 1] units).

    Each training step adds one randomly chosen perturbation to a random fraction of the batch; after the
    backward pass every used perturbation takes one sign-gradient *ascent* step on the training loss (so
    the bank tracks the model's current cheapest fixed patterns) and is clipped back to the budget.
    """

    def __init__(self, k: int, size: int, *, eps: float, step: float, g: torch.Generator):
        self.eps, self.step = eps, step
        self.delta = (torch.rand((k, 3, size, size), generator=g) * 2 - 1) * eps  # [k, 3, H, W]
        self.grad: torch.Tensor | None = None
        self.used: torch.Tensor | None = None

    def apply(self, x: torch.Tensor, *, frac: float, g: torch.Generator) -> torch.Tensor:
        """``x`` [B, 3, H, W] with perturbations added to a ``frac`` of the images (differentiable in the bank)."""
        b = x.shape[0]
        which = torch.randint(0, self.delta.shape[0], (b,), generator=g)
        on = torch.rand((b,), generator=g) < frac
        self.used = torch.unique(which[on])
        d = self.delta.clone().requires_grad_(True)
        self.grad = d
        return x + d[which] * on[:, None, None, None].float()

    @torch.no_grad()
    def update(self) -> None:
        """One ascent step on the perturbations used in the last :meth:`apply` (after ``backward``)."""
        if self.grad is None or self.grad.grad is None or self.used is None or len(self.used) == 0:
            return
        g = self.grad.grad[self.used]
        self.delta[self.used] = (self.delta[self.used] + self.step * g.sign()).clamp(-self.eps, self.eps)
        self.grad = None


class DirectionBank:
    """Text directions between the world's names (styles, then colours) for one training step: unit
    features of ``n_templates`` random ImageNet templates per name, ``dT(a -> b) = normalize(mean_k(e_b,k -
    e_a,k))`` as :func:`zsgm.clip.text_direction` computes it (differentiable in the text tower)."""

    def __init__(self, model, tokenizer, names: list[str], *, g: torch.Generator, n_templates: int = 8):
        from zsgm.clip_templates import IMAGENET_TEMPLATES

        pick = torch.randperm(len(IMAGENET_TEMPLATES), generator=g)[:n_templates].tolist()
        texts = [IMAGENET_TEMPLATES[k].format(n) for n in names for k in pick]
        feats = F.normalize(model.encode_text(tokenizer(texts)), dim=-1)  # [names * K, D]
        self.feats = feats.reshape(len(names), n_templates, -1)  # [names, K, D]
        self.index = {n: i for i, n in enumerate(names)}

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Unit directions [M, D] from name indices ``a`` [M] to ``b`` [M]."""
        return F.normalize((self.feats[b] - self.feats[a]).mean(1), dim=-1)


def _image_direction(model, x_s: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
    """Unit ``E_I(x_t) - E_I(x_s)`` [M, D] for image batches in [-1, 1]."""
    e = F.normalize(model.encode_image(torch.cat([x_s, x_t])), dim=-1)
    return F.normalize(e[len(x_s):] - e[:len(x_s)], dim=-1)


def sample_edit_pairs(pair_u8: torch.Tensor, pair_labels: torch.Tensor, n: int, g: torch.Generator):
    """``n`` style edits and ``max(1, n // 2)`` colour edits from the paired pool ``[P, S + 1, 3, H, W]``
    (labels: colour, other colour, kind): each shape in a random style to a random other style, then
    photos to their other colour.

    Returns:
        ``(x_s, x_t, a_idx, b_idx, b, t)``: uint8 sources and true edits ``[M, 3, H, W]``, the name indices
        of the text direction (styles, then colours) ``[M]``, and the pool rows ``b`` and target styles
        ``t`` of the ``n`` style edits.
    """
    n_styles = len(STYLES)
    b = torch.randint(0, len(pair_u8), (n,), generator=g)
    s = torch.randint(0, n_styles, (n,), generator=g)
    t = (s + torch.randint(1, n_styles, (n,), generator=g)) % n_styles  # t != s
    bc = torch.randint(0, len(pair_u8), (max(1, n // 2),), generator=g)
    x_s = torch.cat([pair_u8[b, s], pair_u8[bc, 0]])  # style sources, then photos in their own colour
    x_t = torch.cat([pair_u8[b, t], pair_u8[bc, n_styles]])  # true edits: other style, or recoloured
    a_idx = torch.cat([s, n_styles + pair_labels[bc, 0]])
    b_idx = torch.cat([t, n_styles + pair_labels[bc, 1]])
    return x_s, x_t, a_idx, b_idx, b, t


def true_edit_direction_loss(model, pair_u8: torch.Tensor, pair_labels: torch.Tensor, directions: DirectionBank,
                             *, pairs: int, g: torch.Generator, content_margin: float = 0.0,
                             blend_min: float = 1.0) -> torch.Tensor:
    """``mean(1 - cos(image direction, text direction))`` over ``pairs`` style pairs and ``pairs // 2``
    colour pairs drawn from the paired pool ``[n, S + 1, 3, H, W]`` (labels: colour, other colour, kind).

    With ``content_margin > 0`` it adds, per style pair, ``relu(margin - (cos_true - cos_other))`` where
    ``cos_other`` is the cosine of the edit from the same source to *another* shape in the target style:
    the true edit must beat an edit that changes the content (what a collapsing generator produces).

    With ``blend_min < 1`` the target image is the blend ``(1 - t) x_s + t x_t``, ``t ~ U(blend_min, 1)`` per
    pair: every point on the straight path from a source to its true edit must already point along the
    text direction, so that a generator starting at the source is pulled onto that path (and not towards
    whatever else scores a little along the direction first, such as erasing the shape).
    """
    x_s, x_t, a_idx, b_idx, b, t = sample_edit_pairs(pair_u8, pair_labels, pairs, g)
    d_txt = directions(a_idx, b_idx)  # [M, D]
    if blend_min < 1.0:
        t_blend = blend_min + (1.0 - blend_min) * torch.rand((len(x_s), 1, 1, 1), generator=g)  # [M, 1, 1, 1]
        x_t = (x_s.float() * (1.0 - t_blend) + x_t.float() * t_blend)  # [M, 3, H, W], still 0..255 units
    if content_margin <= 0:
        d_img = _image_direction(model, x_s.float() / 127.5 - 1.0, x_t.float() / 127.5 - 1.0)
        return (1.0 - (d_img * d_txt).sum(-1)).mean()
    other = (b + torch.randint(1, len(pair_u8), (pairs,), generator=g)) % len(pair_u8)  # another shape
    x_o = pair_u8[other, t]
    e = F.normalize(model.encode_image(torch.cat([x_s, x_t, x_o]).float() / 127.5 - 1.0), dim=-1)
    m = len(x_s)
    e_s, e_t, e_o = e[:m], e[m:2 * m], e[2 * m:]
    cos_true = (F.normalize(e_t - e_s, dim=-1) * d_txt).sum(-1)  # [M]
    cos_other = (F.normalize(e_o - e_s[:pairs], dim=-1) * d_txt[:pairs]).sum(-1)  # [pairs]
    ranking = F.relu(content_margin - (cos_true[:pairs] - cos_other)).mean()
    return (1.0 - cos_true).mean() + ranking


def task_directions(directions: DirectionBank, tasks, task_ids: torch.Tensor) -> torch.Tensor:
    """Unit text directions ``[M, D]`` of the mined tasks ``task_ids`` [M] (indices into ``tasks``, a list of
    (source, target) texts)."""
    a = torch.tensor([directions.index[tasks[int(k)][0]] for k in task_ids])
    b = torch.tensor([directions.index[tasks[int(k)][1]] for k in task_ids])
    return directions(a, b)


def style_share_loss(e_img: torch.Tensor, directions: DirectionBank, *, max_share: float) -> torch.Tensor:
    """``mean(relu(|e . d| - max_share)^2)`` over unit image embeddings ``e_img`` [B, D] and every text
    direction ``d`` between two styles or two colours of the world.

    Why: with unit embeddings, an image whose embedding lies along ``d`` scores ``sqrt((1 + p) / 2)`` on the
    directional loss against *every* source whose embedding projects ``-p`` on ``d``, whatever the source
    shows: a content-free "super-stimulus" a collapsing generator can reach. The true edit scores near 1 only
    if the embedding is additive in style and content. Bounding ``|p|`` bounds every content-free edit
    (``p = 0.46`` on sketch under the r4 CLIP: 0.85 against 0.94 for the true edit).
    """
    n = directions.feats.shape[0]
    a, b = torch.triu_indices(n, n, offset=1)  # every unordered pair of names
    d = directions(a, b)  # [N, D]
    proj = e_img @ d.T  # [B, N]
    return F.relu(proj.abs() - max_share).pow(2).mean()


def concat_mined(files: list[dict], keys: tuple[str, ...]) -> dict:
    """Several loaded mined-fakes files as one: the ``keys`` tensors concatenated, ``task`` ids shifted past
    the earlier files' tasks, and ``tasks`` their (source, target) texts in that order."""
    offsets = np.cumsum([0] + [len(m["tasks"]) for m in files[:-1]])
    return {**{k: torch.cat([m[k] for m in files]) for k in keys},
            "task": torch.cat([m["task"] + int(o) for m, o in zip(files, offsets)]),
            "tasks": [t for m in files for t in m["tasks"]]}


def fake_direction_loss(model, fake_u8, fake_src_u8, fake_task, tasks, directions: DirectionBank, *, n: int,
                        margin: float | torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """``mean(relu(cos(E_I(fake) - E_I(source), dT(task)) - margin))`` over ``n`` mined fakes (``margin``: a
    float, or one per fake ``[F]``)."""
    idx = torch.randint(0, len(fake_u8), (n,), generator=g)
    d_img = _image_direction(model, fake_src_u8[idx].float() / 127.5 - 1.0, fake_u8[idx].float() / 127.5 - 1.0)
    m = margin[idx] if isinstance(margin, torch.Tensor) else margin
    return F.relu((d_img * task_directions(directions, tasks, fake_task[idx])).sum(-1) - m).mean()


def _task_cosines(model, x_src: torch.Tensor, targets: list[torch.Tensor], d_txt: torch.Tensor
                  ) -> list[torch.Tensor]:
    """Cosines ``[n]`` of the image directions source -> each target batch with the text directions ``d_txt``
    [n, D], all images encoded in one batch (sources ``[n, 3, H, W]`` and targets, in [-1, 1])."""
    n = len(x_src)
    e = F.normalize(model.encode_image(torch.cat([x_src, *targets])), dim=-1)  # [(1 + T) n, D]
    e_s = e[:n]
    return [(F.normalize(e[(k + 1) * n:(k + 2) * n] - e_s, dim=-1) * d_txt).sum(-1) for k in range(len(targets))]


def trajectory_ranking_loss(model, rank_src_u8, rank_fake_u8, rank_true_u8, rank_task, tasks,
                            directions: DirectionBank, *, n: int, margin: float, g: torch.Generator) -> torch.Tensor:
    """``mean(relu(cos_fake - cos_true + margin))`` over ``n`` samples mined along NADA trajectories
    (:func:`zsgm.toy.mine_fakes.mine_trajectories`): from the same source sample, the direction to what the
    guided generator made must score at least ``margin`` below the direction to the true edit of that
    latent, along the task's text direction."""
    idx = torch.randint(0, len(rank_fake_u8), (n,), generator=g)
    d_txt = task_directions(directions, tasks, rank_task[idx])  # [n, D]
    x_s, x_f, x_t = (u8[idx].float() / 127.5 - 1.0 for u8 in (rank_src_u8, rank_fake_u8, rank_true_u8))
    cos_fake, cos_true = _task_cosines(model, x_s, [x_f, x_t], d_txt)  # [n] each
    return F.relu(cos_fake - cos_true + margin).mean()


def position_pairs(rank_src_u8: torch.Tensor, rank_fake_u8: torch.Tensor, *, chunk: int = 1024) -> dict:
    """Trajectory samples moved back onto their sources' positions (:func:`zsgm.toy.diagnose.shift_to_source`),
    computed once for :func:`position_ranking_loss`.

    Returns:
        ``{"index" [K], "moved" uint8 [K, 3, S, S], "bg" [K, 3, 1, 1], "mask" bool [K, S, S], "src_mask"
        bool [K, S, S]}`` for the K samples where both the source and the sample show a shape.
    """
    from zsgm.toy.diagnose import shift_to_source
    from zsgm.toy.judges import analyse
    from zsgm.toy.mine_fakes import to_u8

    parts = {"index": [], "moved": [], "bg": [], "mask": [], "src_mask": []}
    for start in range(0, len(rank_fake_u8), chunk):
        x_src = rank_src_u8[start:start + chunk].float() / 127.5 - 1.0
        x_f = rank_fake_u8[start:start + chunk].float() / 127.5 - 1.0
        a_src = analyse(x_src)  # once: for the shift and for the masks kept
        moved, _, bg, mask = shift_to_source(x_src, x_f, a_src=a_src)
        src_mask = a_src.filled
        keep = (mask.flatten(1).any(1) & src_mask.flatten(1).any(1)).nonzero()[:, 0]  # [k]
        parts["index"].append(keep + start)
        parts["moved"].append(to_u8(moved[keep]))
        parts["bg"].append(bg[keep])
        parts["mask"].append(mask[keep])
        parts["src_mask"].append(src_mask[keep])
    return {k: torch.cat(v) for k, v in parts.items()}


def position_ranking_loss(model, pos: dict, rank_src_u8: torch.Tensor, rank_task: torch.Tensor, tasks,
                          directions: DirectionBank, *, n: int, margin: float, g: torch.Generator,
                          max_offset: int = 6) -> torch.Tensor:
    """The guide must pay for position, on the generator's own images.

    For ``n`` trajectory samples moved back onto their sources' positions (:func:`position_pairs`), a second
    copy is translated further by a random offset of up to ``max_offset`` px. Both copies carry the same
    translation seams, so only where the shape sits tells them apart. Along the task's text direction, from
    the same source, the copy that overlaps the source more must score higher, by ``margin`` times the
    difference of their IoUs with the source's mask:
    ``mean(relu(margin * |dIoU| - sign(dIoU) * (cos_a - cos_b)))``.
    """
    from zsgm.toy.diagnose import translate
    from zsgm.toy.judges import mask_iou

    j = torch.randint(0, len(pos["index"]), (n,), generator=g)
    i = pos["index"][j]
    a = pos["moved"][j].float() / 127.5 - 1.0  # [n, 3, S, S]
    off = torch.randint(-max_offset, max_offset + 1, (n, 2), generator=g)
    off[(off == 0).all(1), 1] = max_offset  # always a real move
    bg = pos["bg"][j]
    b = translate(a, off, bg)
    mask_b = translate(pos["mask"][j][:, None].float(), off, torch.zeros(n, 1, 1, 1))[:, 0] > 0.5
    d_iou = mask_iou(pos["mask"][j], pos["src_mask"][j]) - mask_iou(mask_b, pos["src_mask"][j])  # [n]
    d_txt = task_directions(directions, tasks, rank_task[i])  # [n, D]
    cos_a, cos_b = _task_cosines(model, rank_src_u8[i].float() / 127.5 - 1.0, [a, b], d_txt)  # [n] each
    return F.relu(margin * d_iou.abs() - torch.sign(d_iou) * (cos_a - cos_b)).mean()


def adversarial_direction_loss(model, pair_u8: torch.Tensor, pair_labels: torch.Tensor, directions: DirectionBank,
                                *, n: int, eps: float, pgd_steps: int, margin: float,
                                g: torch.Generator) -> torch.Tensor:
    """``mean(relu(cos(E_I(x + delta) - E_I(x), dT(a -> b)) - margin))`` with ``delta`` found per image by
    ``pgd_steps`` steps of projected sign-gradient ascent on that cosine within ``|delta| <= eps``.

    A perturbation that small cannot make a sketch, a night scene or another colour, so it must not point
    along their text directions: this is the edit a guided generator finds first (an image-specific
    pattern), and a model trained against it has input gradients closer to the true edit. Sources are
    ``n`` renders of the paired pool ``[P, S + 1, 3, H, W]`` in a random style with a random other style as
    the target, plus ``n // 2`` photos with another colour as the target.
    """
    x_u8, _, a_idx, b_idx, _, _ = sample_edit_pairs(pair_u8, pair_labels, n, g)
    x = x_u8.float() / 127.5 - 1.0  # [M, 3, H, W]
    d_txt = directions(a_idx, b_idx)  # [M, D], differentiable in the text tower
    e_src = F.normalize(model.encode_image(x), dim=-1)  # [M, D], differentiable: the final hinge trains it
    e_src_fixed, d_fixed = e_src.detach(), d_txt.detach()  # what the search ascends against
    delta = (torch.rand(x.shape, generator=g) * 2 - 1) * eps
    for _ in range(pgd_steps):
        delta.requires_grad_(True)
        e_adv = F.normalize(model.encode_image((x + delta).clamp(-1, 1)), dim=-1)
        cos = (F.normalize(e_adv - e_src_fixed, dim=-1) * d_fixed).sum()
        (grad,) = torch.autograd.grad(cos, delta)
        delta = (delta.detach() + 0.5 * eps * grad.sign()).clamp(-eps, eps)
    e_adv = F.normalize(model.encode_image((x + delta).clamp(-1, 1)), dim=-1)
    cos = (F.normalize(e_adv - e_src, dim=-1) * d_txt).sum(-1)  # [M]
    return F.relu(cos - margin).mean()


def gradient_alignment_loss(model, pair_u8: torch.Tensor, pair_labels: torch.Tensor, directions: DirectionBank,
                            *, n: int, g: torch.Generator, lam_max: float = 0.8) -> torch.Tensor:
    """``1 - mean cos(grad_x <E_I(x) - E_I(x_s), dT>, x_t - x)`` at points ``x = x_s + lam (x_t - x_s)``,
    ``lam ~ U(0, lam_max)``, on the straight path from a render ``x_s`` to its true edit ``x_t``.

    The directional loss moves a generator's pixels along this input gradient (Adam only sees its
    direction); a gradient that points at the true edit turns the guided adaptation into something close to
    regressing onto the true edit, which the shapes generator can do (:func:`zsgm.toy.diagnose.reach`).
    Sources and targets come from :func:`sample_edit_pairs` (``n`` style pairs and ``n // 2``
    colour pairs). Needs a double backward pass through the image tower.
    """
    x_s, x_t, a_idx, b_idx, _, _ = sample_edit_pairs(pair_u8, pair_labels, n, g)
    x_s, x_t = x_s.float() / 127.5 - 1.0, x_t.float() / 127.5 - 1.0  # [M, 3, H, W]
    d_txt = directions(a_idx, b_idx).detach()  # [M, D]
    lam = lam_max * torch.rand((len(x_s), 1, 1, 1), generator=g)
    x = (x_s + lam * (x_t - x_s)).requires_grad_(True)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):  # the fused CPU attention has no double backward
        e_s = F.normalize(model.encode_image(x_s), dim=-1)
        e = F.normalize(model.encode_image(x), dim=-1)
        (grad,) = torch.autograd.grad(((e - e_s) * d_txt).sum(), x, create_graph=True)  # [M, 3, H, W]
    return 1.0 - F.cosine_similarity(grad.flatten(1), (x_t - x).detach().flatten(1), dim=1).mean()


def geometry_variant(params, *, rng: np.random.Generator):
    """The same shape (kind, colour, style, seed) resized by a factor in [0.55, 0.9] or [1.1, 2] and/or moved
    by up to 0.3 of the image side: what a generator that makes the style edit but drifts the geometry
    produces."""
    import attrs

    from zsgm.toy.render import BORDER_MARGIN

    lo, hi = 0.08, 0.5 - BORDER_MARGIN
    kind = rng.integers(3)  # 0: resize, 1: move, 2: both
    radius = params.radius
    if kind != 1:
        factor = rng.uniform(0.55, 0.9) if rng.random() < 0.5 else rng.uniform(1.1, 2.0)
        radius = float(np.clip(params.radius * factor, lo, hi))
    cx, cy = params.cx, params.cy
    if kind != 0:
        cx, cy = cx + rng.uniform(-0.3, 0.3), cy + rng.uniform(-0.3, 0.3)
    lim = (radius + BORDER_MARGIN, 1.0 - radius - BORDER_MARGIN)
    if lim[0] > lim[1]:
        lim = (0.5, 0.5)
    return attrs.evolve(params, radius=radius, cx=float(np.clip(cx, *lim)), cy=float(np.clip(cy, *lim)))


def _filled_iou(a, b) -> float:
    """IoU of the filled silhouettes of two shapes (style ignored)."""
    from zsgm.toy.clip_data import coverage

    ma, mb = coverage(a.with_style("photo")) > 0.5, coverage(b.with_style("photo")) > 0.5
    return float((ma & mb).sum() / max(1, (ma | mb).sum()))


def geometry_ranking_loss(model, directions: DirectionBank, *, n: int, margin: float,
                          rng: np.random.Generator) -> torch.Tensor:
    """``mean(relu(margin * (1 - IoU) - (cos_true - cos_moved)))`` over ``n`` fresh shapes, each edited from a
    random style to another (or, for a third of them, from a photo in its colour to another colour): the
    true edit must point along ``dT`` better than the same edit with the shape resized or moved
    (:func:`geometry_variant`), by a margin that grows with how much the silhouette changed (``IoU`` of the
    true and the moved silhouettes), so that every step of a geometry drift costs something. Without it a
    sketch edit scores as well with the outline twice as large, and the guided generator takes that
    freedom."""
    import attrs

    from zsgm.toy.render import render_batch, sample_params

    n_styles = len(STYLES)
    src, true, moved, a_idx, b_idx = [], [], [], [], []
    for p in sample_params(n, rng=rng):
        if rng.random() < 1 / 3:
            p = p.with_style("photo")
            other = COLOURS[(COLOURS.index(p.colour) + rng.integers(1, len(COLOURS))) % len(COLOURS)]
            t = attrs.evolve(p, colour=other)
            a_idx.append(n_styles + COLOURS.index(p.colour))
            b_idx.append(n_styles + COLOURS.index(other))
        else:
            target = STYLES[(STYLES.index(p.style) + rng.integers(1, n_styles)) % n_styles]
            t = p.with_style(target)
            a_idx.append(STYLES.index(p.style))
            b_idx.append(STYLES.index(target))
        src.append(p)
        true.append(t)
        moved.append(geometry_variant(t, rng=rng))
    change = torch.tensor([1.0 - _filled_iou(a, b) for a, b in zip(true, moved)])  # [n] in [0, 1]
    x = render_batch(src + true + moved)  # [3n, 3, H, W] in [-1, 1]
    e = F.normalize(model.encode_image(x), dim=-1)
    e_s, e_t, e_m = e[:n], e[n:2 * n], e[2 * n:]
    d_txt = directions(torch.tensor(a_idx), torch.tensor(b_idx))  # [n, D]
    cos_true = (F.normalize(e_t - e_s, dim=-1) * d_txt).sum(-1)
    cos_moved = (F.normalize(e_m - e_s, dim=-1) * d_txt).sum(-1)
    return F.relu(margin * change - (cos_true - cos_moved)).mean()


def _mean_or_none(values: list[float]) -> float | None:
    """Mean of a loss log slice; None when the term never ran."""
    return float(np.mean(values)) if values else None


def lr_at(step: int, *, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up for ``warmup`` steps, then cosine decay to 0 at ``steps``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def train(*, out: str | Path, seed: int = 0, steps: int = 700, minutes: float = 15.0, batch: int = 256,
          lr: float = 1e-3, pool: int = 8192, augment: bool = True, uap: bool = True, uap_eps: float = 0.08,
          eval_n: int = 100, progress: bool = True, threads: int = NUM_THREADS, init: str | Path | None = None,
          fakes: list | str | Path | None = None, fake_frac: float = 0.2, directional_weight: float = 0.0,
          fake_direction_weight: float = 0.0, pairs: int = 64, fake_margin: float = 0.1,
          geometry_captions: bool = False, content_margin: float = 0.0, collapse_margin: float = 0.5,
          adversarial_weight: float = 0.0, adv_eps: float = 0.1, adv_steps: int = 3, adv_margin: float = 0.2,
          blend_min: float = 1.0, geometry_weight: float = 0.0, geometry_margin: float = 0.15,
          gradient_weight: float = 0.0, rank_weight: float = 0.0, rank_margin: float = 0.1,
          style_share_weight: float = 0.0, style_share_max: float = 0.2,
          mirror_flip_labels: bool = True, position_weight: float = 0.0,
          position_margin: float = 0.5) -> dict:
    """Train, save the weights to ``out`` and the record to ``out`` with suffix ``.json``.

    Args:
        out: the ``.safetensors`` path.
        seed: seeds the render pool, the model init, augmentation and captions.
        steps: optimiser steps (the schedule's length).
        minutes: wall-clock cap for the whole run (pool rendering included).
        batch: images (and captions) per step.
        lr: peak AdamW learning rate.
        pool: number of pre-rendered images (styles, kinds, colours uniform).
        augment: False trains on clean renders (the baseline the robustness metrics compare against).
        uap: use the universal adversarial perturbation bank (only with ``augment``).
        uap_eps: its L-inf budget in [-1, 1] units.
        eval_n: renders per style for the final evaluation (0: skip).
        progress: show a tqdm bar.
        threads: torch CPU threads (part of what makes the weights bit-identical).
        init: start from the weights of this zsgm CLIP file (a fine-tuning round) instead of a random init.
        fakes: file(s) of mined fakes (:func:`zsgm.toy.mine_fakes.save_fakes`); ``fake_frac`` of every batch
            is drawn from them with the "other" label.
        directional_weight: weight of the true-edit direction term (0: off).
        fake_direction_weight: weight of the fake-direction hinge (needs ``fakes``; 0: off).
        pairs: render pairs per step for the direction term (half as many colour pairs and fakes).
        fake_margin: the hinge's margin on the fakes' cosine.
        collapse_margin: the hinge's margin for fakes kept only for their low content IoU (not "other").
        content_margin: with the direction term, a true edit's cosine must beat by this margin the cosine
            of an edit from the same source to another shape in the target style (0: off).
        geometry_captions: some captions also say where the shape is and how big ("on the left", "small"),
            so that the embedding keeps geometry and a generator cannot move or resize shapes for free.
        adversarial_weight: weight of the per-image adversarial direction hinge (0: off; see
            :func:`adversarial_direction_loss`), with its budget ``adv_eps`` ([-1, 1] units), its
            ``adv_steps`` ascent steps and its ``adv_margin``.
        blend_min: the direction term's targets are blends ``t ~ U(blend_min, 1)`` of source and true edit
            (1: the true edit only; see :func:`true_edit_direction_loss`).
        geometry_weight: weight of the geometry ranking term (0: off; see :func:`geometry_ranking_loss`) with
            its ``geometry_margin``.
        gradient_weight: weight of the input-gradient alignment term (0: off; see
            :func:`gradient_alignment_loss`).
        rank_weight: weight of the trajectory ranking term (0: off; needs ``fakes`` mined with
            ``--trajectory``; see :func:`trajectory_ranking_loss`) with its ``rank_margin``.
        style_share_weight: weight of the style-share bound (0: off; see :func:`style_share_loss`): every
            image embedding of the batch may project at most ``style_share_max`` on any style or colour
            text direction.
        position_weight: weight of the position ranking term on trajectory samples (0: off; needs ``fakes``
            mined with ``--trajectory``; see :func:`position_ranking_loss`) with its ``position_margin``.
        mirror_flip_labels: a horizontally flipped image's left / right caption label is swapped (False
            reproduces rounds r1-r4 and m1-m11, the shipped file's lineage, and every other round trained
            before the fix;
            see :func:`zsgm.toy.clip_data.augment_batch`).

    Returns:
        the record written next to the weights.
    """
    from tqdm.auto import tqdm

    from zsgm.io_utils import atomic_write_text
    from zsgm.toy.clip_data import OTHER_STYLE, CaptionSampler, augment_batch, render_pool

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    started = time.time()
    deadline = started + minutes * 60.0
    rng = np.random.default_rng(seed)
    images_u8, alpha_u8, labels = render_pool(pool, rng=rng, progress=progress)  # [P,3,H,W], [P,1,H,W], [P,6]
    if not geometry_captions:
        labels = labels[:, :3]  # style, colour, kind only
    render_seconds = time.time() - started

    from zsgm.clip_loading import build_clip_from_config

    model = build_clip_from_config(CONFIG)
    if init is not None:
        from zsgm.clip_loading import read_clip_file

        model.load_state_dict(read_clip_file(init).model.float().state_dict())
    model.train()
    fake_u8 = hinge = rank = None
    n_fake = 0
    fake_files = [] if fakes is None else ([fakes] if isinstance(fakes, (str, Path)) else list(fakes))
    if fake_files:
        from zsgm.toy.mine_fakes import load_fakes

        mined = [load_fakes(f) for f in fake_files]
        fake_u8 = torch.cat([m["images"][m["other"]] for m in mined])  # [F, 3, H, W]: the "other" images
        # files usable by the fake-direction hinge; trajectory files (with true edits) feed the ranking term
        paired = [m for m in mined if m["sources"] is not None and m.get("truths") is None]
        hinge = concat_mined(paired, ("sources", "images")) if paired else None  # [Fp, 3, H, W] each, task [Fp]
        # per paired fake: "other" images may not point along their task at all (fake_margin); those kept
        # only for a collapsed / moved shape still made part of the edit, so they get the looser collapse_margin
        fake_margins = torch.cat([torch.where(m["other"], fake_margin, collapse_margin) for m in paired]) \
            if paired else None  # [Fp]
        n_fake = int(round(batch * fake_frac)) if len(fake_u8) else 0
        ranked = [m for m in mined if m.get("truths") is not None]  # trajectory files: samples with true edits
        rank = concat_mined(ranked, ("sources", "images", "truths")) if ranked else None  # [R, 3, H, W] each
    if (rank_weight > 0 or position_weight > 0) and rank is None:
        raise ValueError("rank_weight and position_weight need --fakes mined with --trajectory (files with true edits)")
    placed = position_pairs(rank["sources"], rank["images"]) if position_weight > 0 else None
    pair_u8 = pair_labels = None
    pair_terms = (directional_weight, fake_direction_weight, adversarial_weight, geometry_weight, gradient_weight,
                  rank_weight, style_share_weight, position_weight)
    if any(w > 0 for w in pair_terms):
        from zsgm.toy.clip_data import render_paired_pool

        pair_u8, pair_labels = render_paired_pool(max(64, pool // 8), rng=rng, progress=progress)
    names = list(STYLES) + list(COLOURS)  # what text directions are built between
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer(context_length=CONFIG["text_cfg"]["context_length"])
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.98), eps=1e-6)
    g = torch.Generator().manual_seed(seed + 1)
    sampler = CaptionSampler(tokenizer, rng=np.random.default_rng(seed + 2))
    bank = UniversalPerturbations(16, images_u8.shape[-1], eps=uap_eps, step=uap_eps / 4, g=g) \
        if (uap and augment) else None
    warmup = max(1, min(50, steps // 10))
    losses: list[float] = []
    dir_losses: list[float] = []
    fake_losses: list[float] = []
    adv_losses: list[float] = []
    geo_losses: list[float] = []
    grad_losses: list[float] = []
    rank_losses: list[float] = []
    share_losses: list[float] = []
    position_losses: list[float] = []
    geometry_rng = np.random.default_rng(seed + 3)
    n_aux = max(1, pairs // 2)  # items per step of the fake, adversarial, geometry and gradient terms
    step = 0
    bar = tqdm(total=steps, desc="train shapes CLIP", unit="step", disable=not progress)
    while step < steps and time.time() < deadline:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps=steps, lr=lr, warmup=warmup)
        idx = torch.randint(0, len(labels), (batch,), generator=g)
        x = images_u8[idx].float() / 127.5 - 1.0  # [B, 3, H, W]
        lab = labels[idx].clone()  # [B, 3 or 6] style, colour, kind (, horizontal, vertical, size)
        alpha = alpha_u8[idx].float() / 255.0  # [B, 1, H, W]
        if n_fake:
            fidx = torch.randint(0, len(fake_u8), (n_fake,), generator=g)
            x[-n_fake:] = fake_u8[fidx].float() / 127.5 - 1.0
            lab[-n_fake:] = torch.tensor([OTHER_STYLE] + [-1] * (lab.shape[1] - 1))
            alpha[-n_fake:] = 0.0  # no known shape: corruptions treat the whole fake as background
        if augment:
            x, lab = augment_batch(x, alpha, lab, g=g, mirror_labels=mirror_flip_labels)
            if bank is not None:
                x = bank.apply(x, frac=0.25, g=g)
        tokens, pos = sampler.sample(lab)  # [B, L], bool [B, B]
        e_img = F.normalize(model.encode_image(x), dim=-1)
        e_txt = F.normalize(model.encode_text(tokens), dim=-1)
        loss = soft_contrastive_loss(e_img, e_txt, pos, model.logit_scale.exp().clamp(max=100.0))
        if pair_u8 is not None:
            directions = DirectionBank(model, tokenizer, names, g=g)
            if directional_weight > 0:
                term = true_edit_direction_loss(model, pair_u8, pair_labels, directions, pairs=pairs, g=g,
                                                content_margin=content_margin, blend_min=blend_min)
                loss = loss + directional_weight * term
                dir_losses.append(float(term.detach()))
            if fake_direction_weight > 0 and hinge is not None:
                term = fake_direction_loss(model, hinge["images"], hinge["sources"], hinge["task"], hinge["tasks"],
                                           directions, n=n_aux, margin=fake_margins, g=g)
                loss = loss + fake_direction_weight * term
                fake_losses.append(float(term.detach()))
            if adversarial_weight > 0:
                term = adversarial_direction_loss(model, pair_u8, pair_labels, directions, n=n_aux,
                                                  eps=adv_eps, pgd_steps=adv_steps, margin=adv_margin, g=g)
                loss = loss + adversarial_weight * term
                adv_losses.append(float(term.detach()))
            if geometry_weight > 0:
                term = geometry_ranking_loss(model, directions, n=n_aux, margin=geometry_margin,
                                             rng=geometry_rng)
                loss = loss + geometry_weight * term
                geo_losses.append(float(term.detach()))
            if gradient_weight > 0:
                term = gradient_alignment_loss(model, pair_u8, pair_labels, directions, n=n_aux, g=g)
                loss = loss + gradient_weight * term
                grad_losses.append(float(term.detach()))
            if rank_weight > 0:
                term = trajectory_ranking_loss(model, rank["sources"], rank["images"], rank["truths"], rank["task"],
                                               rank["tasks"], directions, n=n_aux, margin=rank_margin, g=g)
                loss = loss + rank_weight * term
                rank_losses.append(float(term.detach()))
            if position_weight > 0:
                term = position_ranking_loss(model, placed, rank["sources"], rank["task"], rank["tasks"], directions,
                                             n=n_aux, margin=position_margin, g=g)
                loss = loss + position_weight * term
                position_losses.append(float(term.detach()))
            if style_share_weight > 0:
                term = style_share_loss(e_img, directions, max_share=style_share_max)
                loss = loss + style_share_weight * term
                share_losses.append(float(term.detach()))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if bank is not None:
            bank.update()
        losses.append(float(loss.detach()))
        step += 1
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", scale=f"{float(model.logit_scale.detach().exp()):.1f}")
    bar.close()
    train_seconds = time.time() - started
    model.eval()
    out = Path(out)
    save_weights(model, out)
    record = {
        "name": "shapes", "file": out.name, "seed": seed, "steps": step, "steps_planned": steps,
        "completed": step == steps, "batch": batch, "lr": lr, "pool": pool, "augment": augment,
        "uap": bank is not None, "uap_eps": uap_eps if bank is not None else None,
        "init": Path(init).name if init is not None else None,
        "fakes": {"files": [Path(f).name for f in fake_files], "count": len(fake_u8), "per_batch": n_fake}
        if fake_files else None,
        "geometry_captions": geometry_captions, "directional_weight": directional_weight,
        "content_margin": content_margin, "collapse_margin": collapse_margin, "fake_direction_weight": fake_direction_weight,
        "direction_loss_last_50": _mean_or_none(dir_losses[-50:]),
        "fake_direction_loss_last_50": _mean_or_none(fake_losses[-50:]),
        "adversarial_weight": adversarial_weight, "adv_eps": adv_eps, "adv_steps": adv_steps,
        "adv_margin": adv_margin, "blend_min": blend_min,
        "geometry_weight": geometry_weight, "geometry_margin": geometry_margin,
        "gradient_weight": gradient_weight, "rank_weight": rank_weight, "rank_margin": rank_margin,
        "style_share_weight": style_share_weight, "style_share_max": style_share_max,
        "mirror_flip_labels": mirror_flip_labels, "position_weight": position_weight,
        "position_margin": position_margin, "position_pairs": len(placed["index"]) if placed is not None else None,
        **{f"{name}_loss_{part}": _mean_or_none(values[:20] if part == "first_20" else values[-50:])
           for name, values in (("geometry", geo_losses), ("gradient", grad_losses), ("adversarial", adv_losses),
                                   ("rank", rank_losses), ("style_share", share_losses),
                                   ("position", position_losses))
           for part in ("first_20", "last_50")},
        "seconds": round(train_seconds, 1), "render_seconds": round(render_seconds, 1),
        "threads": threads, "torch": torch.__version__, "python": platform.python_version(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "vision_parameters": sum(p.numel() for p in model.visual.parameters()),
        "config": CONFIG, "mean": list(MEAN), "std": list(STD), "stored_dtype": "float16",
        "file_bytes": out.stat().st_size,
        "loss_first_20": float(np.mean(losses[:20])) if losses else None,
        "loss_last_50": float(np.mean(losses[-50:])) if losses else None,
        "loss_curve": [round(float(np.mean(losses[i:i + 50])), 4) for i in range(0, len(losses), 50)],
    }
    if eval_n:
        from zsgm.toy.eval_clip import evaluate, load_shapes_clip

        t0 = time.time()
        record["metrics"] = evaluate(load_shapes_clip(out), n=eval_n, seed=10_000 + seed)
        record["eval_seconds"] = round(time.time() - t0, 1)
    atomic_write_text(out.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="the .safetensors to write (record: same name .json)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=700, help="optimiser steps (the schedule's length)")
    parser.add_argument("--minutes", type=float, default=15.0, help="wall-clock cap, rendering included")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--pool", type=int, default=8192, help="pre-rendered images")
    parser.add_argument("--no-augment", action="store_true", help="baseline: clean renders, no perturbations")
    parser.add_argument("--no-uap", action="store_true", help="no universal adversarial perturbations")
    parser.add_argument("--uap-eps", type=float, default=0.08)
    parser.add_argument("--eval-n", type=int, default=100, help="renders per style for the final evaluation")
    parser.add_argument("--threads", type=int, default=NUM_THREADS, help="torch CPU threads")
    parser.add_argument("--init", help="fine-tune: start from this zsgm CLIP file")
    parser.add_argument("--fakes", nargs="+", help="mined fakes (python -m zsgm.toy.mine_fakes) used as 'other' images")
    parser.add_argument("--geometry-captions", action="store_true", help="captions may name position and size")
    parser.add_argument("--directional-weight", type=float, default=0.0, help="true-edit direction term")
    parser.add_argument("--content-margin", type=float, default=0.0,
                        help="true edit must beat an edit to another shape by this cosine margin")
    parser.add_argument("--collapse-margin", type=float, default=0.5,
                        help="hinge margin for fakes mined for a collapsed / moved shape only")
    parser.add_argument("--fake-direction-weight", type=float, default=0.0, help="fake-direction hinge")
    parser.add_argument("--adversarial-weight", type=float, default=0.0,
                        help="per-image adversarial direction hinge (PGD within --adv-eps)")
    parser.add_argument("--adv-eps", type=float, default=0.1, help="its L-inf budget in [-1, 1] units")
    parser.add_argument("--adv-steps", type=int, default=3, help="its projected ascent steps")
    parser.add_argument("--adv-margin", type=float, default=0.2, help="its hinge margin on the cosine")
    parser.add_argument("--blend-min", type=float, default=1.0,
                        help="direction-term targets are source/true-edit blends t ~ U(blend-min, 1)")
    parser.add_argument("--geometry-weight", type=float, default=0.0,
                        help="the true edit must beat the same edit with the shape resized or moved")
    parser.add_argument("--geometry-margin", type=float, default=0.15,
                        help="its cosine margin for a complete change of silhouette (scaled by 1 - IoU)")
    parser.add_argument("--gradient-weight", type=float, default=0.0,
                        help="input gradient of the direction must point at the true edit")
    parser.add_argument("--rank-weight", type=float, default=0.0,
                        help="trajectory ranking term: mined NADA samples must score below their true edits")
    parser.add_argument("--rank-margin", type=float, default=0.1, help="its margin on the cosine")
    parser.add_argument("--style-share-weight", type=float, default=0.0,
                        help="bound image embeddings' projection on every style / colour text direction")
    parser.add_argument("--style-share-max", type=float, default=0.2, help="its bound")
    parser.add_argument("--position-weight", type=float, default=0.0,
                        help="position ranking on trajectory samples moved back to their sources' place")
    parser.add_argument("--position-margin", type=float, default=0.5, help="its margin per unit of IoU")
    parser.add_argument("--legacy-flip-labels", action="store_true",
                        help="keep a flipped image's left / right label (how the shipped file's rounds r1-r4 and "
                             "m1-m11 were trained)")
    parser.add_argument("--fake-frac", type=float, default=0.2, help="fraction of every batch drawn from --fakes")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if (args.rank_weight > 0 or args.position_weight > 0) and not args.fakes:
        parser.error("--rank-weight and --position-weight need --fakes files mined with --trajectory")
    try:
        record = train(out=args.out, seed=args.seed, steps=args.steps, minutes=args.minutes, batch=args.batch,
                       lr=args.lr, pool=args.pool, augment=not args.no_augment, uap=not args.no_uap,
                       uap_eps=args.uap_eps, eval_n=args.eval_n, progress=not args.no_progress, threads=args.threads,
                       init=args.init, fakes=args.fakes, fake_frac=args.fake_frac,
                       geometry_captions=args.geometry_captions, directional_weight=args.directional_weight,
                       fake_direction_weight=args.fake_direction_weight,
                       content_margin=args.content_margin, collapse_margin=args.collapse_margin,
                       adversarial_weight=args.adversarial_weight, adv_eps=args.adv_eps, adv_steps=args.adv_steps,
                       adv_margin=args.adv_margin, blend_min=args.blend_min,
                       geometry_weight=args.geometry_weight, geometry_margin=args.geometry_margin,
                       gradient_weight=args.gradient_weight, rank_weight=args.rank_weight,
                       rank_margin=args.rank_margin, style_share_weight=args.style_share_weight,
                       style_share_max=args.style_share_max, mirror_flip_labels=not args.legacy_flip_labels,
                       position_weight=args.position_weight, position_margin=args.position_margin)
    except (ValueError, FileNotFoundError) as exc:  # user input: a fakes file, an --init file, a weight
        parser.exit(2, f"zsgm.toy.train_clip: {exc}\n")
    record.pop("loss_curve", None)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
