"""CLIP scores (zsgm.metrics.clip_score) with the tiny random CLIP as judge: hand-computed from the open_clip
model itself, torchmetrics' CLIPScore convention written out, the judge-is-guide record, refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from zsgm.clip import tiny_random_clip
from zsgm.metrics.api import EvalContext, MetricError
from zsgm.metrics.clip_score import (compute_clip_image, compute_clip_text, needs_judge_and_images,
                                     needs_judge_and_text)


@pytest.fixture(scope="module")
def judge():
    return tiny_random_clip()


def _quantised(x):
    return ((x.clamp(-1, 1) + 1) / 2 * 255 + 0.5).to(torch.uint8).float() / 255 * 2 - 1


def _open_clip_image(judge, x):
    """The open_clip model's own encode_image on the judge's preprocessing, unit-normalised."""
    with torch.no_grad():
        return F.normalize(judge.model.encode_image(judge.prepare_images(x)).float(), dim=-1)


def test_clip_text_hand_computed(judge):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 32, 32, generator=g) * 2 - 1
    ctx = EvalContext(generated=x, clip_judge=judge, target_text="a red square", seed=2)
    res = compute_clip_text(ctx)
    with torch.no_grad():
        txt = F.normalize(judge.model.encode_text(judge.tokenizer(["a red square"])).float(), dim=-1)[0]
    cos = _open_clip_image(judge, _quantised(x)) @ txt
    assert res.values["clip-text"] == pytest.approx(float(cos.mean()), abs=1e-6)
    assert res.values["clip-text_std"] == pytest.approx(float(cos.std()), abs=1e-6)
    assert res.values["clip-text_score"] == pytest.approx(float(np.mean(np.maximum(100 * cos.numpy(), 0))),
                                                          abs=1e-4)
    rec = res.record
    assert rec["judge_is_guide"] is False and "warning" not in rec and rec["text"] == "a red square"
    assert rec["n_generated"] == 5 and rec["seed"] == 2 and rec["library"].startswith("open_clip_torch")


def test_clip_image_hand_computed_and_guide_warning(judge, tmp_path):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 32, 32, generator=g) * 2 - 1
    paths = []
    for i, side in enumerate((32, 48)):
        arr = (np.random.RandomState(i).rand(side, side, 3) * 255).astype(np.uint8)
        Image.fromarray(arr).save(tmp_path / f"t{i}.png")
        paths.append(tmp_path / f"t{i}.png")
    ctx = EvalContext(generated=x, clip_judge=judge, target_images=paths, clip_judge_is_guide=True)
    res = compute_clip_image(ctx)
    targets = []
    for p in paths:
        arr = np.asarray(Image.open(p).convert("RGB"), dtype=np.float32)
        targets.append(_open_clip_image(judge, torch.from_numpy(arr).permute(2, 0, 1)[None] / 127.5 - 1))
    cos = _open_clip_image(judge, _quantised(x)) @ torch.cat(targets).T  # [4, 2]
    assert res.values["clip-image"] == pytest.approx(float(cos.mean()), abs=1e-6)
    assert res.values["clip-image_std"] == pytest.approx(float(cos.mean(1).std()), abs=1e-6)
    assert res.record["judge_is_guide"] is True and "inflated" in res.record["warning"]
    assert res.record["reference"]["n"] == 2 and len(res.record["reference"]["images"][0]["sha256"]) == 64


def test_refusals(judge, tmp_path):
    x = torch.zeros(2, 3, 32, 32)
    assert "--clip" in needs_judge_and_text(EvalContext(generated=x, target_text="a dog"))
    assert "target text" in needs_judge_and_text(EvalContext(generated=x, clip_judge=judge))
    assert needs_judge_and_text(EvalContext(generated=x, clip_judge=judge, target_text="a dog")) is None
    assert "target images" in needs_judge_and_images(EvalContext(generated=x, clip_judge=judge))
    with pytest.raises(MetricError, match="--clip"):
        compute_clip_text(EvalContext(generated=x, target_text="a dog"))
    with pytest.raises(MetricError, match="no such file|missing|not found|does not exist"):
        compute_clip_image(EvalContext(generated=x, clip_judge=judge, target_images=[tmp_path / "nope.png"]))
