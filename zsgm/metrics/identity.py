"""Identity similarity (faces): ArcFace IR-SE50 cosine between a source sample and its adapted counterpart.

Network: the 50-layer "improved residual" ResNet with squeeze-excitation of ArcFace (Deng et al. 2019), as released
in ``model_ir_se50.pth`` (TreB1eN's InsightFace_Pytorch training; the file pSp, e4e, StyleGAN-NADA's mapper and IPL
use). Written here from that description, laid out so the file's keys load strictly:

- ``input_layer``: conv 3x3 3->64 (no bias), BN, PReLU;
- ``body``: 24 units in four stages (64, 3 units), (128, 4), (256, 14), (512, 3), the first unit of each stage with
  stride 2; a unit is ``res_layer`` = BN, conv 3x3, PReLU, conv 3x3 (the stride), BN, squeeze-excitation
  (global mean, 1x1 conv to C/16, ReLU, 1x1 conv back, sigmoid, rescale) plus ``shortcut_layer`` = identity
  subsampling (a 1x1 max-pool with the stride) when the width is kept, else conv 1x1 with the stride + BN;
- ``output_layer``: BN, dropout, flatten, linear 512*7*7 -> 512, BN1d; the embedding is L2-normalised.

Input: 112x112 in [-1, 1]. Preprocessing (the ``IDLoss`` of NADA's mapper / pSp): images not 256x256 are average-pooled
to 256x256, cropped to rows 35:223 and columns 32:220, and average-pooled to 112x112. Samples are quantised to uint8
first (what a PNG of them holds).

Weights: ``ctx.weights["arcface"]`` only (no library cache exists for this file); read with ``weights_only=True``.
Meaningful only for face generators.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from zsgm.metrics.api import EvalContext, MetricError, MetricResult
from zsgm.metrics.common import (base_record, batches, check_images, from_uint8, int_option, to_uint8, weight_file,
                                 weight_record)

ARCFACE_FILE = "model_ir_se50.pth"
#: (input width, output width, units) per stage of IR-SE50.
STAGES = ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3))
CROP_ROWS, CROP_COLS = (35, 223), (32, 220)


class SqueezeExcite(nn.Module):
    """Channel gating: ``x * sigmoid(fc2(relu(fc1(mean_hw(x)))))``, 1x1 convs without bias, reduction 16."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class IRSEUnit(nn.Module):
    """One improved-residual unit with squeeze-excitation: ``res_layer(x) + shortcut_layer(x)``."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        if cin == cout:
            self.shortcut_layer = nn.MaxPool2d(1, stride)  # identity, subsampled by the stride
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.PReLU(cout),
            nn.Conv2d(cout, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), SqueezeExcite(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IRSE50(nn.Module):
    """ArcFace IR-SE50: ``[N, 3, 112, 112]`` in [-1, 1] -> unit embeddings ``[N, 512]``."""

    def __init__(self, drop_ratio: float = 0.6):
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units = []
        for cin, cout, n in STAGES:
            units.append(IRSEUnit(cin, cout, 2))
            units += [IRSEUnit(cout, cout, 1) for _ in range(n - 1)]
        self.body = nn.Sequential(*units)
        self.output_layer = nn.Sequential(nn.BatchNorm2d(512), nn.Dropout(drop_ratio), nn.Flatten(),
                                          nn.Linear(512 * 7 * 7, 512), nn.BatchNorm1d(512))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (112, 112):
            raise ValueError(f"IR-SE50 takes 112x112 faces; got {tuple(x.shape[-2:])} (use face_crop first)")
        return F.normalize(self.output_layer(self.body(self.input_layer(x))), dim=1)


def face_crop(x: torch.Tensor) -> torch.Tensor:
    """``[N, 3, H, W]`` -> ``[N, 3, 112, 112]``: pool to 256 (unless 256), crop [35:223, 32:220], pool to 112."""
    if tuple(x.shape[-2:]) != (256, 256):
        x = F.adaptive_avg_pool2d(x, (256, 256))
    x = x[:, :, CROP_ROWS[0]:CROP_ROWS[1], CROP_COLS[0]:CROP_COLS[1]]
    return F.adaptive_avg_pool2d(x, (112, 112))


def load_arcface(path: str | Path, *, device="cpu") -> IRSE50:
    """IR-SE50 with the weights in ``path`` (a plain state dict, read with ``weights_only=True``), eval, frozen."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        raise MetricError(f"identity: ArcFace weights {path}: not readable as a plain state dict "
                          f"({type(exc).__name__}); give {ARCFACE_FILE}") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise MetricError(f"identity: ArcFace weights {path}: not a state dict; give {ARCFACE_FILE}")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}  # saved from DataParallel
    with torch.device("meta"):
        model = IRSE50()  # the layout only: the file's tensors are assigned below
    ours = model.state_dict()
    # files from before PyTorch 0.4.1 lack BatchNorm's num_batches_tracked (unused in eval): 0, as torch fills in
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    for k in ours:
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = torch.tensor(0, dtype=torch.long)
    if "output_layer.4.running_mean" in state and "output_layer.4.weight" not in state:
        # a Backbone built with affine=False (InsightFace's IR_SE_50 helper): the same as weight 1, bias 0
        state["output_layer.4.weight"], state["output_layer.4.bias"] = torch.ones(512), torch.zeros(512)
    missing = [k for k in ours if k not in state]
    unexpected = [k for k in state if k not in ours]
    wrong = [k for k in ours if k in state and tuple(state[k].shape) != tuple(ours[k].shape)]
    if missing or unexpected or wrong:
        parts = [f"{name} {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}"
                 for name, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise MetricError(f"identity: ArcFace weights {path}: not IR-SE50 ({'; '.join(parts)}); give {ARCFACE_FILE}")
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False).to(device)


def needs_source_and_arcface(ctx: EvalContext) -> Optional[str]:
    """``applies`` of identity."""
    if ctx.source is None:
        return "needs the source generator's samples for the same latents (a run, or a known source generator)"
    if not ctx.weights.get("arcface") and ctx.option("identity", "net") is None:
        return f"needs ArcFace IR-SE50 weights (--weights arcface=PATH to {ARCFACE_FILE}); faces only"
    return None


@torch.no_grad()
def identity_similarity(net: nn.Module, source: torch.Tensor, target: torch.Tensor, *, batch_size: int = 32,
                        device="cpu") -> torch.Tensor:
    """``[N]`` cosine of ``net``'s embeddings of the face crops of ``source`` and ``target`` (pairs by index);
    each batch is first rounded to uint8 as a PNG of it holds."""
    out = []
    for s, t in zip(batches(source, batch_size), batches(target, batch_size)):
        s, t = from_uint8(to_uint8(s)), from_uint8(to_uint8(t))
        es = net(face_crop(s.to(device))).float()
        et = net(face_crop(t.to(device))).float()
        out.append(F.cosine_similarity(es, et, dim=1).cpu())
    return torch.cat(out)


def compute_identity(ctx: EvalContext) -> MetricResult:
    """Mean ArcFace cosine between ``ctx.source`` and ``ctx.generated`` (same latents and noise)."""
    gen = check_images(ctx.generated, "identity: generated samples")
    if ctx.source is None:
        raise MetricError("identity: needs the source generator's samples for the same latents")
    src = check_images(ctx.source, "identity: source samples")
    if src.shape != gen.shape:
        raise MetricError(f"identity: source {tuple(src.shape)} and generated {tuple(gen.shape)} samples differ in "
                          f"shape; they must pair by index")
    batch_size = int_option(ctx, "identity", "batch_size", 32)
    custom = ctx.option("identity", "net")
    if custom is not None:
        net, fields = custom.eval(), {"network": "custom (NOT ArcFace: not comparable)", "weights": {}}
    else:
        path = weight_file(ctx, "arcface", metric="identity", file_name=ARCFACE_FILE, cache_dir=None,
                           url="the ArcFace IR-SE50 file released with pSp/e4e")
        net = load_arcface(path, device=ctx.device)
        fields = {"network": "ArcFace IR-SE50 (zsgm.metrics.identity, strict load)",
                  "weights": {"arcface": weight_record(path)}}
    sim = identity_similarity(net, src, gen, batch_size=batch_size, device=ctx.device)
    record = base_record(ctx, metric="identity", protocol="cosine of ArcFace IR-SE50 embeddings, source vs adapted "
                         "sample from the same latent and noise (IDLoss preprocessing of NADA's mapper / pSp)",
                         library="zsgm IR-SE50 (torch " + torch.__version__ + ")", n_generated=gen.shape[0])
    record.update(fields)
    record.update({"resize": "quantised to uint8; average-pool to 256 unless 256, crop rows 35:223 cols 32:220, "
                             "average-pool to 112", "note": "meaningful only for face domains"})
    return MetricResult(values={"identity": float(sim.mean()),
                                "identity_std": float(sim.std()) if sim.numel() > 1 else 0.0}, record=record)
