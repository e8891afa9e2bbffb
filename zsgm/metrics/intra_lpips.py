"""Intra-cluster LPIPS (diversity), both protocols of docs/EVALUATION.md, with the ``lpips`` package.

Protocol B (default; SVL, AIR's ``IntraLPIPS_kmedoids.py``): the first ``n`` (1000) samples, the full pairwise LPIPS
matrix, k-medoids (k = 10; scikit-learn-extra's defaults: alternate, heuristic init) on it, each sample's LPIPS to its
medoid (medoids included, at 0, as AIR counts them); "All" = mean ± std over samples (the reported value
``intra-lpips``, what AIR returns), "Avg." = mean ± std over the clusters' means (``intra-lpips_avg``).

Protocol A (Ojha et al., AIR's ``IntraLPIPS.py``): with ``options["intra-lpips"]["centres"]`` = a folder of centre
images (Ojha: the 10 training images), every sample joins its LPIPS-nearest centre; in each cluster the members are
shuffled (seeded), at most 50 kept, and the LPIPS over all their pairs averaged; the value is the mean over the
clusters with at least 2 members (AIR drops the others as NaN), ± the std across those clusters.

LPIPS: ``lpips.LPIPS(net="vgg", version="0.1")`` built by :func:`zsgm.perceptual.load_lpips` from a local torchvision
backbone file (``--weights lpips=PATH``) or torchvision's hub cache; never downloaded here. Images are quantised to
uint8 (as the PNGs the scripts read) and resized to 256x256 (bilinear, antialiased; the scripts use PIL's
``Resize([256, 256])``). The pairwise matrix is computed from each image's lpips features, once per image block,
with the package's own pieces (``scaling_layer``, ``net``, ``normalize_tensor``, ``lins``, ``spatial_average``), in the
order its forward uses them; the test checks it equals ``lpips.LPIPS.forward`` pair by pair.

Options (``ctx.options["intra-lpips"]``): ``protocol`` ("B", or "A" when ``centres`` is given), ``centres``,
``n`` (1000), ``k`` (10), ``method`` ("alternate" | "pam"), ``init`` ("heuristic" | "build" | "k-medoids++" |
"random"), ``max_per_cluster`` (50), ``size`` (256; None keeps the samples' size), ``block`` (32 images per
feature block). Seeds: ``ctx.seed`` for the protocol-A shuffle and the seeded k-medoids inits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from zsgm.metrics.api import EvalContext, MetricError, MetricResult
from zsgm.metrics.common import (base_record, batches, check_images, from_uint8, int_option,
                                 library_version, to_uint8, weight_file, weight_record)
from zsgm.metrics.kmedoids import INITS, METHODS, kmedoids

NAME = "intra-lpips"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


# ------------------------------------------------------------------------------------------------ LPIPS


def load_metric_lpips(ctx: EvalContext, metric: str = NAME):
    """``(LpipsDistance, record fields)`` for ``ctx.weights["lpips-net"]`` ("vgg" default, "standin" for tests),
    from ``ctx.weights["lpips"]`` or torchvision's hub cache; MetricError when the backbone file is missing."""
    from zsgm.perceptual import (LPIPS_NETS, STANDIN, LpipsWeightsError, backbone_file_name, backbone_url,
                                 hub_checkpoints_dir, load_lpips)

    net = ctx.weights.get("lpips-net", "vgg")
    if net == STANDIN:
        return load_lpips(STANDIN, device=ctx.device), {
            "lpips": "standin (random AlexNet features under lpips' linear layers; NOT LPIPS: not comparable)",
            "weights": {}}
    if net not in LPIPS_NETS:
        raise MetricError(f"{metric}: weights lpips-net={net!r} must be one of {', '.join(LPIPS_NETS)}, standin")
    path = weight_file(ctx, "lpips", metric=metric, file_name=backbone_file_name(net), cache_dir=hub_checkpoints_dir(),
                       cache_owner="torchvision's download folder: torch hub checkpoints, where lpips gets it",
                       url=backbone_url(net))
    try:
        dist = load_lpips(net, backbone=path, device=ctx.device)
    except LpipsWeightsError as exc:
        raise MetricError(f"{metric}: {exc}") from None
    import lpips

    linear = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    return dist, {"lpips": f"{library_version('lpips')} net={net} version=0.1",
                  "weights": {"lpips": weight_record(path), "lpips_linear": weight_record(linear)}}


def _fit_min_side(dist, x: torch.Tensor) -> torch.Tensor:
    """Upsample as :class:`zsgm.perceptual.LpipsDistance` does for images below the net's smallest side."""
    side = min(x.shape[-2:])
    if side >= dist.min_side:
        return x
    scale = dist.min_side / side
    size = (int(np.ceil(x.shape[-2] * scale)), int(np.ceil(x.shape[-1] * scale)))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@torch.no_grad()
def lpips_features(dist, x: torch.Tensor) -> list[torch.Tensor]:
    """Unit-normalised lpips features of ``x`` ``[B, 3, H, W]`` in [-1, 1], one ``[B, C_l, H_l, W_l]`` per layer."""
    import lpips

    model = dist.model
    if getattr(model, "version", "0.1") != "0.1" or not model.lpips or model.spatial:
        raise MetricError("intra-lpips needs an lpips v0.1 model with linear layers and spatial=False")
    outs = model.net.forward(model.scaling_layer(_fit_min_side(dist, x)))
    return [lpips.normalize_tensor(o) for o in outs]


@torch.no_grad()
def lpips_between(dist, fa: list[torch.Tensor], fb: list[torch.Tensor]) -> torch.Tensor:
    """``[A, B]`` LPIPS between every image of feature block ``fa`` and every image of ``fb``."""
    from lpips.lpips import spatial_average

    model = dist.model
    a = fa[0].shape[0]
    rows = []
    for i in range(a):
        total = 0
        for layer, (x, y) in enumerate(zip(fa, fb)):
            total = total + spatial_average(model.lins[layer]((x[i:i + 1] - y) ** 2), keepdim=True)
        rows.append(total.reshape(-1))  # [B]
    return torch.stack(rows)


def prepare(x: torch.Tensor, size: Optional[int], *, chunk: int = 64) -> torch.Tensor:
    """Quantise to uint8 (as a PNG) and resize to ``size`` x ``size`` (bilinear, antialiased); [-1, 1].
    ``chunk`` images at a time, so 1024-px samples never exist twice in full."""
    out = []
    for b in batches(x, chunk):
        b = from_uint8(to_uint8(b))
        if size is not None and tuple(b.shape[-2:]) != (size, size):
            b = F.interpolate(b, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(b)
    return torch.cat(out)


@torch.no_grad()
def cross_lpips(dist, x: torch.Tensor, y: torch.Tensor, *, block: int = 32, device="cpu") -> torch.Tensor:
    """``[N, M]`` LPIPS between every image of ``x`` and every image of ``y`` (prepared, [-1, 1])."""
    out = torch.zeros(x.shape[0], y.shape[0], dtype=torch.float64)
    for j in range(0, y.shape[0], block):
        fb = lpips_features(dist, y[j:j + block].to(device))
        for i in range(0, x.shape[0], block):
            fa = lpips_features(dist, x[i:i + block].to(device))
            out[i:i + block, j:j + block] = lpips_between(dist, fa, fb).double().cpu()
    return out


@torch.no_grad()
def pairwise_lpips(dist, x: torch.Tensor, *, block: int = 32, device="cpu") -> torch.Tensor:
    """``[N, N]`` symmetric LPIPS matrix of ``x`` (prepared, [-1, 1]); zero diagonal. Each block pair once."""
    n = x.shape[0]
    out = torch.zeros(n, n, dtype=torch.float64)
    for i in range(0, n, block):
        fa = lpips_features(dist, x[i:i + block].to(device))
        for j in range(i, n, block):
            fb = fa if j == i else lpips_features(dist, x[j:j + block].to(device))
            d = lpips_between(dist, fa, fb).double().cpu()
            out[i:i + block, j:j + block] = d
            out[j:j + block, i:i + block] = d.T
    out.fill_diagonal_(0.0)
    return out


# ------------------------------------------------------------------------------------------------ protocols


def protocol_b(d: torch.Tensor, *, k: int = 10, method: str = "alternate", init: str = "heuristic",
               seed: int = 0) -> dict[str, Any]:
    """SVL/AIR k-medoids intra-LPIPS from a pairwise matrix ``d`` ``[N, N]``.

    Returns ``{"all", "all_std", "avg", "avg_std", "cluster_sizes", "medoids"}``; std is numpy's (ddof 0), empty
    clusters are left out of "avg".
    """
    medoids, labels = kmedoids(d, k, method=method, init=init, seed=seed)
    to_medoid = d.double()[torch.arange(d.shape[0]), medoids[labels]]  # [N]
    per_cluster = [to_medoid[labels == c].numpy() for c in range(k)]
    means = np.array([c.mean() for c in per_cluster if c.size])
    return {"all": float(to_medoid.mean()), "all_std": float(to_medoid.numpy().std()),
            "avg": float(means.mean()), "avg_std": float(means.std()),
            "cluster_sizes": [int(c.size) for c in per_cluster], "medoids": [int(m) for m in medoids]}


def protocol_a(dist, x: torch.Tensor, centres: torch.Tensor, *, max_per_cluster: int = 50, seed: int = 0,
               block: int = 32, device="cpu") -> dict[str, Any]:
    """Ojha et al.'s intra-LPIPS: assign ``x`` to the nearest of ``centres`` (both prepared), then the mean pairwise
    LPIPS of at most ``max_per_cluster`` shuffled members per cluster, averaged over clusters with >= 2 members, ± their sample std (ddof 1, as ``torch.std``)."""
    assign = torch.argmin(cross_lpips(dist, x, centres, block=block, device=device), dim=1)  # [N]
    gen = torch.Generator().manual_seed(seed)
    means, sizes, used = [], [], []
    for c in range(centres.shape[0]):
        members = torch.nonzero(assign == c).flatten()
        members = members[torch.randperm(members.numel(), generator=gen)][:max_per_cluster]
        sizes.append(int((assign == c).sum()))
        used.append(int(members.numel()))
        if members.numel() < 2:
            continue
        d = pairwise_lpips(dist, x[members], block=block, device=device)
        iu = torch.triu_indices(members.numel(), members.numel(), offset=1)
        means.append(float(d[iu[0], iu[1]].mean()))
    if not means:
        raise MetricError("intra-lpips protocol A: no cluster has 2 or more samples; generate more images")
    means_np = np.array(means)
    # Ojha / AIR report torch.std of the cluster means: the sample std (ddof 1); 0.0 for a single cluster.
    std = float(means_np.std(ddof=1)) if means_np.size > 1 else 0.0
    return {"mean": float(means_np.mean()), "std": std, "cluster_sizes": sizes,
            "members_used": used, "clusters_scored": len(means)}


# ------------------------------------------------------------------------------------------------ metric


def _centre_images(folder: Path) -> tuple[torch.Tensor, list[Path]]:
    from zsgm.io_utils import load_image

    folder = Path(folder)
    if not folder.is_dir():
        raise MetricError(f"{NAME}: centres folder {folder}: {'not a folder' if folder.exists() else 'no such folder'}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise MetricError(f"{NAME}: no png/jpg images in the centres folder {folder}")
    try:
        images = [load_image(p) for p in files]
    except ValueError as exc:
        raise MetricError(f"{NAME}: {exc}") from None
    return images, files


def compute_intra_lpips(ctx: EvalContext) -> MetricResult:
    """Intra-cluster LPIPS of ``ctx.generated`` (protocol B, or A with centre images); see the module docstring."""
    opt = ctx.options.get(NAME, {})
    centres_dir = opt.get("centres")
    protocol = str(opt.get("protocol", "A" if centres_dir else "B")).upper()
    if protocol not in ("A", "B"):
        raise MetricError(f"{NAME}: option protocol must be 'A' (given centres) or 'B' (k-medoids); got {protocol!r}")
    if protocol == "A" and not centres_dir:
        raise MetricError(f"{NAME}: protocol A needs options intra-lpips.centres = a folder of centre images")
    n_max, k = int_option(ctx, NAME, "n", 1000, minimum=2), int_option(ctx, NAME, "k", 10)
    method, init = str(opt.get("method", "alternate")), str(opt.get("init", "heuristic"))
    if method not in METHODS or init not in INITS:
        raise MetricError(f"{NAME}: method must be one of {', '.join(METHODS)} and init one of {', '.join(INITS)}; "
                          f"got {method!r}, {init!r}")
    size = None if opt.get("size", 256) is None else int_option(ctx, NAME, "size", 256)
    block = int_option(ctx, NAME, "block", 32)
    gen = check_images(ctx.generated, f"{NAME}: generated samples", min_count=2)[:n_max]
    if protocol == "B" and gen.shape[0] < k:
        raise MetricError(f"{NAME}: k-medoids with k={k} needs at least {k} samples; got {gen.shape[0]} "
                          f"(generate more, or set options intra-lpips.k)")
    dist, fields = load_metric_lpips(ctx)
    x = prepare(gen, size)
    resize = ("quantised to uint8, then " + (f"bilinear antialiased resize to {size}x{size}" if size
                                             else "no resize"))
    record = base_record(ctx, metric=NAME, protocol="", library=library_version("lpips"), n_generated=gen.shape[0])
    record.update(fields)
    record["resize"] = resize
    if protocol == "B":
        d = pairwise_lpips(dist, x, block=block, device=ctx.device)
        out = protocol_b(d, k=k, method=method, init=init, seed=ctx.seed)
        record.update({
            "protocol": (f"B (SVL / AIR IntraLPIPS_kmedoids): k-medoids k={k} ({method}, init {init}) on the full "
                         f"pairwise LPIPS of the first {gen.shape[0]} samples; 'All' = mean over samples of the "
                         f"LPIPS to their medoid (reported), 'Avg.' = mean of the cluster means"),
            "k": k, "method": method, "init": init, "cluster_sizes": out["cluster_sizes"],
            "kmedoids_seed": ctx.seed if init in ("k-medoids++", "random") else "unused (deterministic init)"})
        values = {NAME: out["all"], f"{NAME}_std": out["all_std"], f"{NAME}_avg": out["avg"],
                  f"{NAME}_avg_std": out["avg_std"]}
    else:
        images, files = _centre_images(Path(centres_dir))
        if size is None and any(tuple(c.shape[-2:]) != tuple(x.shape[-2:]) for c in images):
            raise MetricError(f"{NAME}: centre images differ in size from the samples; set options intra-lpips.size")
        centres = torch.cat([prepare(c, size) for c in images])
        max_per = int_option(ctx, NAME, "max_per_cluster", 50, minimum=2)
        out = protocol_a(dist, x, centres, max_per_cluster=max_per, seed=ctx.seed, block=block, device=ctx.device)
        record.update({
            "protocol": (f"A (Ojha et al. / AIR IntraLPIPS): nearest of {len(files)} given centres, at most "
                         f"{max_per} shuffled members per cluster, mean LPIPS over their pairs, averaged over "
                         f"the {out['clusters_scored']} clusters with >= 2 members"),
            "centres": {"dir": str(centres_dir), "n": len(files),
                        "files_sha256": {p.name: weight_record(p)["sha256"] for p in files}},
            "cluster_sizes": out["cluster_sizes"], "members_used": out["members_used"],
            "shuffle_seed": ctx.seed})
        values = {NAME: out["mean"], f"{NAME}_std": out["std"]}
    return MetricResult(values=values, record=record)
