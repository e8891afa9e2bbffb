"""SIFID (zsgm.metrics.sifid): SinGAN's formula written out with scipy on a stand-in block 0; the Inception block 0
taken from torch-fidelity's own extractor (random weights saved to a file) agrees with its "64" feature; errors."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import linalg

from zsgm.metrics.api import EvalContext, MetricError
from zsgm.metrics.fid import load_inception
from zsgm.metrics.sifid import InceptionBlock0, compute_sifid, needs_target_images, spatial_statistics


def _standin_block0():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.ReLU(), torch.nn.MaxPool2d(3, 2))
    return net.eval()


def _singan_sifid(fa: np.ndarray, fb: np.ndarray) -> float:
    """SinGAN sifid_score: rows = spatial positions; |mu1-mu2|^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2))."""
    mu1, mu2 = fa.mean(0), fb.mean(0)
    s1, s2 = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2) - 2 * np.trace(covmean))


def _save(path, arr):
    Image.fromarray(arr).save(path)
    return path


def test_sifid_hand_computed_on_a_standin(tmp_path):
    block0 = _standin_block0()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 40, 40, generator=g) * 2 - 1
    refs = [_save(tmp_path / f"r{i}.png", (np.random.RandomState(i).rand(40 + 8 * i, 40, 3) * 255).astype(np.uint8))
            for i in range(2)]
    ctx = EvalContext(generated=x, target_images=refs, seed=4, options={"sifid": {"block0": block0}})
    res = compute_sifid(ctx)

    def feats(u8, norm):  # [1, 3, H, W] uint8 -> [h*w, C]
        with torch.no_grad():
            f = block0(norm(u8.float()))
        return f.flatten(2)[0].T.double().numpy()

    def hand(norm):
        return np.array([[_singan_sifid(feats(x_u8[i:i + 1], norm), feats(r, norm)) for r in ref_u8]
                         for i in range(3)])

    x_u8 = ((x.clamp(-1, 1) + 1) / 2 * 255 + 0.5).to(torch.uint8)
    ref_u8 = [torch.from_numpy(np.asarray(Image.open(p).convert("RGB")).copy()).permute(2, 0, 1)[None] for p in refs]
    m = hand(lambda v: v / 127.5 - 1)  # SinGAN / AIR: pytorch-fid's input normalisation (the default)
    assert res.record["normalize"] == "pytorch-fid" and res.record["normalize_formula"].startswith("x/127.5 - 1")
    other = compute_sifid(EvalContext(generated=x, target_images=refs,
                                      options={"sifid": {"block0": block0, "normalize": "torch-fidelity"}}))
    assert other.values["sifid"] == pytest.approx(hand(lambda v: (v - 128) / 128).mean(0).mean(), rel=1e-3)
    assert other.record["normalize"] == "torch-fidelity" and other.values["sifid"] != res.values["sifid"]
    assert res.values["sifid"] == pytest.approx(m.mean(0).mean(), rel=1e-3)
    assert res.record["per_target"] == pytest.approx(list(m.mean(0)), rel=1e-3)
    assert res.values["sifid_std"] == pytest.approx(float(np.std(m.mean(1), ddof=1)), rel=1e-3)
    assert res.record["reference"]["n"] == 2 and res.record["n_generated"] == 3 and "NOT Inception" in \
        res.record["feature_extractor"]


@pytest.fixture(scope="module")
def random_inception_file(tmp_path_factory):
    """torch-fidelity's InceptionV3 with seeded random weights, saved as a state dict (no download)."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    with torch.random.fork_rng(devices=[]), \
            mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: {}), \
            mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None):
        torch.manual_seed(0)
        model = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["64"])
    for m in model.modules():  # non-trivial batch-norm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save(model.state_dict(), path)
    return path


def test_inception_block0_matches_torch_fidelity_64_feature(random_inception_file):
    model = load_inception(random_inception_file, ("64",))
    g = torch.Generator().manual_seed(2)
    u8 = (torch.rand(2, 3, 24, 24, generator=g) * 255).to(torch.uint8)
    with torch.no_grad():
        lib64 = model(u8)[0]  # torch-fidelity: resize to 299, (x-128)/128, block 0, spatial mean
    stats = spatial_statistics(InceptionBlock0(model), u8, resize=299, normalize="torch-fidelity")
    ours = torch.tensor(np.stack([s["mu"] for s in stats]))
    assert torch.allclose(ours, lib64, rtol=1e-4, atol=1e-5)


def test_sifid_with_inception_weights_records_checksum(tmp_path, random_inception_file):
    ref = _save(tmp_path / "r.png", (np.random.RandomState(0).rand(32, 32, 3) * 255).astype(np.uint8))
    ctx = EvalContext(generated=torch.rand(2, 3, 32, 32) * 2 - 1, target_images=[ref],
                      weights={"inception": str(random_inception_file)})
    res = compute_sifid(ctx)
    assert np.isfinite(res.values["sifid"]) and len(res.record["weights"]["inception"]["sha256"]) == 64
    assert res.record["resize"].endswith("no resize (SinGAN/AIR)")


def test_refusals(tmp_path, monkeypatch):
    x = torch.zeros(2, 3, 32, 32)
    assert "target images" in needs_target_images(EvalContext(generated=x))
    with pytest.raises(MetricError, match="needs target images"):
        compute_sifid(EvalContext(generated=x))
    with pytest.raises(MetricError, match="no such file"):
        compute_sifid(EvalContext(generated=x, target_images=[tmp_path / "nope.png"]))
    ref = _save(tmp_path / "r.png", np.zeros((32, 32, 3), np.uint8))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(MetricError, match="weights-inception-2015-12-05-6726825d.pth not found"):
        compute_sifid(EvalContext(generated=x, target_images=[ref]))
    with pytest.raises(MetricError, match="feature positions"):
        compute_sifid(EvalContext(generated=torch.zeros(1, 3, 8, 8), target_images=[ref],
                                  options={"sifid": {"block0": _standin_block0()}}))
