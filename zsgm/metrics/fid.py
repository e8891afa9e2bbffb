"""FID and KID against a folder of real images, with torch-fidelity 0.4.0 (docs/EVALUATION.md says why).

Pipeline (what ``torch_fidelity.calculate_metrics(input1=<generated>, input2=<real dir>, fid=True, kid=True)`` does,
run step by step so the features are computed once for both metrics and no cache or download is touched):

1. generated samples ``[N, 3, S, S]`` in [-1, 1] -> uint8 exactly as a lossless PNG of them holds (:func:`to_uint8`);
2. the real folder is listed by torch-fidelity's own ``glob_samples_paths`` (png/jpg/jpeg, sorted; recursive only
   with the option ``real_deep``) and read by its ``ImagesPathDataset`` (PIL -> RGB -> uint8);
3. torch-fidelity's ``FeatureExtractorInceptionV3`` (the TF-ported FID Inception; it resizes every image to 299 with
   its TF1-compatible bilinear resize itself) gives the 2048-d pool features;
4. FID = ``fid_statistics_to_metric``; KID = ``kid_features_to_metric`` (:mod:`zsgm.metrics.frechet`).

Weights: ``ctx.weights["inception"]`` or torch-fidelity's own cache location,
``torch.hub.get_dir()/checkpoints/weights-inception-2015-12-05-6726825d.pth`` (where its
``load_state_dict_from_url`` puts the file). Missing: one MetricError line; nothing is downloaded.

Options (``ctx.options["fid"]`` / ``["kid"]``; feature options are shared, the metric's own first):
``batch_size`` (64), ``real_deep`` (False), ``real_resize`` (0: none; else torch-fidelity's
``samples_resize_and_crop``: Resize + CenterCrop to that side), ``kid_subsets`` (100), ``kid_subset_size`` (1000,
lowered to the smaller set with a note), ``kid_seed`` (2020, torch-fidelity's ``rng_seed``),
``feature_extractor`` (a ``torch_fidelity.feature_extractor_base.FeatureExtractorBase`` instance used instead of
Inception: tests and experiments; its numbers are not FID) with ``feature_layer`` ("2048").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import torch

from zsgm.metrics.api import EvalContext, MetricError, MetricResult
from zsgm.metrics.common import (base_record, batches, check_images, int_option,
                                 library_version, to_uint8, weight_file, weight_record)
from zsgm.metrics.frechet import (KID_SEED, KID_SUBSET_SIZE, KID_SUBSETS, frechet_distance,
                                  kernel_inception_distance, kid_subset_size)

#: torch-fidelity's Inception weights file (the name its downloader saves under) and where it comes from.
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")
#: torch-fidelity's registered name for that extractor.
INCEPTION_NAME = "inception-v3-compat"
FEATURE_LAYER = "2048"
IMAGE_EXTS = "png,jpg,jpeg"
LOSSY_EXTS = "jpg,jpeg"

_EXTRACTORS: dict[tuple, torch.nn.Module] = {}
#: The last features, with strong references to the tensor and extractor they came from: identity (``is``) is
#: compared, never ``id()``/``data_ptr()``, which a freed object's successor can reuse.
_GEN_CACHE: dict[str, Any] = {}
_REAL_CACHE: dict[str, Any] = {}


def needs_real_dir(ctx: EvalContext) -> Optional[str]:
    """``applies`` of FID/KID: a folder of real target images is needed."""
    if ctx.real_dir is None:
        return "needs a folder of real target-domain images (zsgm eval --real DIR)"
    return None


def inception_weights(ctx: EvalContext, metric: str) -> Path:
    """The local Inception file (``--weights inception=PATH`` or torch-fidelity's hub cache); MetricError if none."""
    from zsgm.perceptual import hub_checkpoints_dir

    return weight_file(ctx, "inception", metric=metric, file_name=INCEPTION_FILE, cache_dir=hub_checkpoints_dir(),
                       cache_owner="torch-fidelity's download folder: torch hub checkpoints", url=INCEPTION_URL)


def load_inception(path: Path, features: Iterable[str] = (FEATURE_LAYER,), *, device="cpu") -> torch.nn.Module:
    """torch-fidelity's ``FeatureExtractorInceptionV3`` with the weights in ``path`` (never downloaded).

    The file is first read with ``weights_only=True`` (a plain state dict of tensors, or it is refused) because the
    library itself then reads it with ``weights_only=False``.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = Path(path)
    key = (str(path.resolve()), tuple(features), str(device))
    if key in _EXTRACTORS:
        return _EXTRACTORS[key]
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        raise MetricError(f"Inception weights {path}: not readable as a plain state dict ({type(exc).__name__}); "
                          f"give torch-fidelity's {INCEPTION_FILE}") from None
    if not isinstance(state, dict) or "Mixed_7c.branch_pool.conv.weight" not in state:
        raise MetricError(f"Inception weights {path}: not torch-fidelity's InceptionV3 state dict; "
                          f"give {INCEPTION_FILE}")
    del state
    try:
        model = FeatureExtractorInceptionV3(INCEPTION_NAME, list(features), feature_extractor_weights_path=str(path))
    except RuntimeError as exc:
        raise MetricError(f"Inception weights {path}: do not fit torch-fidelity's InceptionV3 "
                          f"({str(exc).splitlines()[0][:120]}); give {INCEPTION_FILE}") from None
    model = model.to(device).eval()
    _EXTRACTORS.clear()  # one Inception held at a time
    _EXTRACTORS[key] = model
    return model


@torch.no_grad()
def extract_features(extractor: torch.nn.Module, images: Iterable[torch.Tensor], *, layer: str = FEATURE_LAYER,
                     device="cpu") -> torch.Tensor:
    """``[N, D]`` features of ``layer`` for uint8 batches ``[B, 3, H, W]`` (a torch-fidelity feature extractor)."""
    out = []
    for batch in images:
        feats = extractor.convert_features_tuple_to_dict(extractor(batch.to(device)))
        out.append(feats[layer].detach().float().cpu())
    if not out:
        raise MetricError("no images to extract features from")
    return torch.cat(out)


def list_real_images(real_dir: Path, *, deep: bool = False, metric: str = "fid") -> list[str]:
    """The image files torch-fidelity would read from ``real_dir`` (sorted), or MetricError."""
    from torch_fidelity.utils import glob_samples_paths

    real_dir = Path(real_dir)
    if not real_dir.is_dir():
        what = "is a file, not a folder" if real_dir.exists() else "no such folder"
        raise MetricError(f"{metric}: real image folder {real_dir}: {what}")
    files = glob_samples_paths(str(real_dir), deep, IMAGE_EXTS, LOSSY_EXTS, verbose=False)
    if not files:
        where = "under" if deep else "directly in"
        raise MetricError(f"{metric}: no {IMAGE_EXTS} images {where} {real_dir}"
                          + ("" if deep else " (subfolders are read only with the option real_deep)"))
    return files


def _real_batches(files: list[str], batch_size: int, resize: int) -> Iterator[torch.Tensor]:
    """uint8 batches of the real images read as torch-fidelity reads them; same-size runs are batched together."""
    import torchvision
    from torch_fidelity.datasets import ImagesPathDataset, TransformPILtoRGBTensor

    transforms = []
    if resize > 0:
        transforms += [torchvision.transforms.Resize(resize), torchvision.transforms.CenterCrop(resize)]
    dataset = ImagesPathDataset(files, torchvision.transforms.Compose([*transforms, TransformPILtoRGBTensor()]))
    pending: list[torch.Tensor] = []
    for i in range(len(dataset)):
        try:
            img = dataset[i]  # [3, H, W] uint8
        except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for a bad file
            raise MetricError(f"real image {files[i]}: unreadable ({type(exc).__name__})") from None
        if pending and (img.shape != pending[0].shape or len(pending) == batch_size):
            yield torch.stack(pending)
            pending = []
        pending.append(img)
    if pending:
        yield torch.stack(pending)


def _opt(ctx: EvalContext, metric: str, key: str, default: Any) -> Any:
    other = "kid" if metric == "fid" else "fid"
    return ctx.option(metric, key, ctx.option(other, key, default))


def _int_opt(ctx: EvalContext, metric: str, key: str, default: int, *, minimum: Optional[int] = 1) -> int:
    """:func:`_opt` as a checked int, the error naming the metric whose option holds the bad value."""
    holder = metric if key in ctx.options.get(metric, {}) else ("kid" if metric == "fid" else "fid")
    return int_option(ctx, holder, key, default, minimum=minimum)


def _extractor(ctx: EvalContext, metric: str) -> tuple[torch.nn.Module, str, dict[str, Any]]:
    """(extractor, feature layer, record fields) for ``metric``: a plugged-in stand-in or the Inception."""
    custom = _opt(ctx, metric, "feature_extractor", None)
    if custom is not None:
        from torch_fidelity.feature_extractor_base import FeatureExtractorBase

        if not isinstance(custom, FeatureExtractorBase):
            raise MetricError(f"{metric}: option feature_extractor must be a torch-fidelity FeatureExtractorBase; "
                              f"got {type(custom).__name__}")
        layer = str(_opt(ctx, metric, "feature_layer", FEATURE_LAYER))
        return custom.to(ctx.device).eval(), layer, {
            "feature_extractor": f"custom {custom.get_name()!r} layer {layer} (NOT Inception: not comparable "
                                 f"with any published FID/KID)", "weights": {}}
    path = inception_weights(ctx, metric)
    model = load_inception(path, (FEATURE_LAYER,), device=ctx.device)
    return model, FEATURE_LAYER, {
        "feature_extractor": f"torch-fidelity {INCEPTION_NAME} (TF-ported InceptionV3, pool3 2048-d)",
        "weights": {"inception": weight_record(path)}}


def _folder_key(files: list[str]) -> tuple:
    return tuple((f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files)


def fid_kid_features(ctx: EvalContext, metric: str) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """``(generated [N, D], real [M, D], record fields)``; the last features are kept, so FID and KID (and a
    metric-vs-step run over one real folder) extract them once."""
    gen = check_images(ctx.generated, f"{metric}: generated samples", min_count=2)
    if ctx.real_dir is None:
        raise MetricError(f"{metric}: needs a folder of real target-domain images (zsgm eval --real DIR)")
    deep = bool(_opt(ctx, metric, "real_deep", False))
    resize = _int_opt(ctx, metric, "real_resize", 0, minimum=0)
    batch_size = _int_opt(ctx, metric, "batch_size", 64)
    files = list_real_images(Path(ctx.real_dir), deep=deep, metric=metric)
    extractor, layer, fields = _extractor(ctx, metric)
    ext_key = (layer, str(ctx.device))

    real_key = (ext_key, _folder_key(files), resize)
    if not (_REAL_CACHE.get("key") == real_key and _REAL_CACHE.get("ext") is extractor):
        real = extract_features(extractor, _real_batches(files, batch_size, resize), layer=layer, device=ctx.device)
        _REAL_CACHE.clear()
        _REAL_CACHE.update(key=real_key, ext=extractor, feats=real)
    real = _REAL_CACHE["feats"]

    cached = _GEN_CACHE
    if not (cached.get("key") == ext_key and cached.get("gen") is gen and cached.get("gen_version") == gen._version
            and cached.get("ext") is extractor):
        feats = extract_features(extractor, (to_uint8(b) for b in batches(gen, batch_size)), layer=layer,
                                 device=ctx.device)
        _GEN_CACHE.clear()
        _GEN_CACHE.update(key=ext_key, gen=gen, gen_version=gen._version, ext=extractor, feats=feats)
    fake = _GEN_CACHE["feats"]

    lossy = sorted({Path(f).suffix.lower() for f in files} & {".jpg", ".jpeg"})
    fields.update({
        "reference": {"dir": str(Path(ctx.real_dir)), "n": len(files), "recursive": deep,
                      "lossy_files": bool(lossy)},
        "resize": ("generated: quantised to uint8 as a PNG holds them; "
                   + (f"real: Resize({resize}) + CenterCrop({resize}) (torch-fidelity samples_resize_and_crop); "
                      if resize else "real: as stored; ")
                   + "both: resized to 299 by the extractor itself (torch-fidelity's TF1-compatible bilinear)"),
    })
    return fake, real, fields


def compute_fid(ctx: EvalContext) -> MetricResult:
    """FID of ``ctx.generated`` against ``ctx.real_dir`` (see the module docstring)."""
    fake, real, fields = fid_kid_features(ctx, "fid")
    value = frechet_distance(fake, real, what="fid")
    record = base_record(ctx, metric="fid", protocol="FID (Heusel et al.): Frechet distance of Inception pool3 "
                         "features, generated vs the real folder", library=library_version("torch-fidelity"),
                         n_generated=fake.shape[0])
    record.update(fields)
    record["note"] = ("FID depends on the number of generated images and on the reference set: compare only FIDs "
                      "with the same n_generated, reference folder and library")
    return MetricResult(values={"fid": value}, record=record)


def compute_kid(ctx: EvalContext) -> MetricResult:
    """KID (mean and std over subsets) of ``ctx.generated`` against ``ctx.real_dir``."""
    wanted = int_option(ctx, "kid", "kid_subset_size", KID_SUBSET_SIZE, minimum=2)
    subsets = int_option(ctx, "kid", "kid_subsets", KID_SUBSETS)
    seed = int_option(ctx, "kid", "kid_seed", KID_SEED, minimum=None)
    fake, real, fields = fid_kid_features(ctx, "kid")
    size = kid_subset_size(fake.shape[0], real.shape[0], wanted)
    mean, std = kernel_inception_distance(fake, real, subsets=subsets, subset_size=size, seed=seed)
    record = base_record(ctx, metric="kid", protocol="KID (Binkowski et al.): unbiased MMD^2, cubic polynomial "
                         "kernel, mean/std over random subsets", library=library_version("torch-fidelity"),
                         n_generated=fake.shape[0])
    record.update(fields)
    record.update({"kid_subsets": subsets, "kid_subset_size": size, "kid_seed": seed})
    if size < wanted:
        record["kid_subset_size_note"] = (f"subset size lowered from {wanted} to {size}: the smaller set has only "
                                          f"{size} images")
    return MetricResult(values={"kid": mean, "kid_std": std}, record=record)
