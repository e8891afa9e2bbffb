"""FID and KID (zsgm.metrics.fid / frechet): hand-computed values, torch-fidelity's own results on the same
features and images (a seeded stand-in extractor registered with torch-fidelity), offline errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import linalg

from zsgm.metrics.api import EvalContext, MetricError
from zsgm.metrics.fid import INCEPTION_FILE, compute_fid, compute_kid, needs_real_dir
from zsgm.metrics.frechet import frechet_distance, kernel_inception_distance, kid_subset_size

STANDIN = "zsgm-test-standin-fid"


def _standin_class():
    """A torch-fidelity feature extractor: a seeded 3->8 conv + ReLU + global mean, on uint8 input."""
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    class Standin(FeatureExtractorBase):
        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)
            gen = torch.Generator().manual_seed(0)
            self.conv = torch.nn.Conv2d(3, 8, 3)
            with torch.no_grad():
                self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen) * 0.3)
                self.conv.bias.copy_(torch.randn(8, generator=gen) * 0.1)

        @staticmethod
        def get_provided_features_list():
            return ("8",)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return "8"

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 3, 8, 8, dtype=torch.uint8)

        def forward(self, x):
            assert x.dtype == torch.uint8
            y = torch.relu(self.conv(x.float() / 127.5 - 1)).mean(dim=(2, 3))  # [B, 8]
            return (y,)

    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if STANDIN not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(STANDIN, Standin)
    return FEATURE_EXTRACTORS_REGISTRY[STANDIN]


def _hand_fid(f1: np.ndarray, f2: np.ndarray) -> float:
    """TTUR/pytorch-fid's formula: |mu1-mu2|^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)), written out with scipy."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _hand_kid(f1: torch.Tensor, f2: torch.Tensor) -> float:
    """Unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3 over all rows (Binkowski et al.), plain torch, float64."""
    x, y = f1.double(), f2.double()
    d, m = x.shape[1], x.shape[0]
    kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
    off = ~torch.eye(m, dtype=torch.bool)
    return float(kxx[off].sum() / (m * (m - 1)) + kyy[off].sum() / (m * (m - 1)) - 2 * kxy.sum() / (m * m))


def test_frechet_distance_matches_hand_formula_and_library():
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    gen = torch.Generator().manual_seed(1)
    f1 = torch.randn(40, 6, generator=gen)
    f2 = torch.randn(30, 6, generator=gen) * 1.5 + 0.7
    ours = frechet_distance(f1, f2)
    assert ours == pytest.approx(_hand_fid(f1.double().numpy(), f2.double().numpy()), rel=1e-4)
    lib = fid_statistics_to_metric(fid_features_to_statistics(f1), fid_features_to_statistics(f2), False)
    assert ours == pytest.approx(lib["frechet_inception_distance"], rel=1e-9)
    assert frechet_distance(f1, f1) == pytest.approx(0.0, abs=1e-3)


def test_kid_matches_hand_mmd_and_library():
    from torch_fidelity.metric_kid import kid_features_to_metric

    gen = torch.Generator().manual_seed(2)
    f1, f2 = torch.randn(20, 5, generator=gen), torch.randn(20, 5, generator=gen) + 0.5
    mean, std = kernel_inception_distance(f1, f2, subsets=1, subset_size=20)  # one subset = all rows (permuted)
    assert mean == pytest.approx(_hand_kid(f1, f2), rel=1e-5)
    assert std == 0.0
    mean, std = kernel_inception_distance(f1, f2, subsets=7, subset_size=12, seed=3)
    lib = kid_features_to_metric(f1, f2, kid_subsets=7, kid_subset_size=12, rng_seed=3, verbose=False)
    assert (mean, std) == pytest.approx((lib["kernel_inception_distance_mean"],
                                         lib["kernel_inception_distance_std"]))


def _write_pngs(folder, images_uint8):
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images_uint8):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")


class _U8(torch.utils.data.Dataset):
    def __init__(self, x):
        self.x = x

    def __len__(self):
        return self.x.shape[0]

    def __getitem__(self, i):
        return self.x[i]


def test_fid_and_kid_equal_torch_fidelity_calculate_metrics(tmp_path):
    import torch_fidelity

    cls = _standin_class()
    gen = torch.Generator().manual_seed(3)
    fake = torch.rand(12, 3, 16, 16, generator=gen) * 2 - 1
    real_u8 = (torch.rand(10, 3, 16, 16, generator=gen) * 255).to(torch.uint8)
    _write_pngs(tmp_path / "real", real_u8)
    ctx = EvalContext(generated=fake, real_dir=tmp_path / "real", seed=5, truncation=0.7,
                      options={"fid": {"feature_extractor": cls(STANDIN, ["8"]), "feature_layer": "8"},
                               "kid": {"kid_subsets": 4, "kid_subset_size": 6}})
    fid = compute_fid(ctx)
    kid = compute_kid(ctx)
    fake_u8 = ((fake.clamp(-1, 1) + 1) / 2 * 255 + 0.5).to(torch.uint8)  # what a PNG of the samples holds
    lib = torch_fidelity.calculate_metrics(
        input1=_U8(fake_u8), input2=str(tmp_path / "real"), fid=True, kid=True, cuda=False,
        feature_extractor=STANDIN, kid_subsets=4, kid_subset_size=6, cache=False, verbose=False,
        save_cpu_ram=True)
    assert fid.values["fid"] == pytest.approx(lib["frechet_inception_distance"], rel=1e-5)
    assert kid.values["kid"] == pytest.approx(lib["kernel_inception_distance_mean"], rel=1e-5, abs=1e-9)
    assert kid.values["kid_std"] == pytest.approx(lib["kernel_inception_distance_std"], rel=1e-5, abs=1e-9)
    rec = fid.record
    assert rec["n_generated"] == 12 and rec["reference"]["n"] == 10 and rec["truncation"] == 0.7
    assert rec["seed"] == 5 and rec["library"].startswith("torch-fidelity ") and "NOT Inception" in \
        rec["feature_extractor"]
    assert kid.record["kid_subset_size"] == 6 and "kid_subset_size_note" not in kid.record


def test_kid_subset_size_lowered_to_small_sets_with_a_note(tmp_path):
    cls = _standin_class()
    _write_pngs(tmp_path / "real", (torch.rand(5, 3, 8, 8) * 255).to(torch.uint8))
    ctx = EvalContext(generated=torch.rand(9, 3, 8, 8) * 2 - 1, real_dir=tmp_path / "real",
                      options={"kid": {"feature_extractor": cls(STANDIN, ["8"]), "feature_layer": "8",
                                       "kid_subsets": 3}})
    result = compute_kid(ctx)
    assert result.record["kid_subset_size"] == 5
    assert "lowered from 1000 to 5" in result.record["kid_subset_size_note"]
    assert kid_subset_size(3000, 2000) == 1000
    with pytest.raises(MetricError, match="at least 2 images"):
        kid_subset_size(1, 50)
    with pytest.raises(MetricError, match="subset size 8"):
        kernel_inception_distance(torch.randn(5, 3), torch.randn(9, 3), subset_size=8)


def test_missing_real_dir_is_refused_in_one_line(tmp_path):
    ctx = EvalContext(generated=torch.zeros(4, 3, 8, 8))
    assert "--real DIR" in needs_real_dir(ctx)
    with pytest.raises(MetricError, match="--real DIR"):
        compute_fid(ctx)
    ctx = EvalContext(generated=torch.zeros(4, 3, 8, 8), real_dir=tmp_path / "nope")
    assert needs_real_dir(ctx) is None
    with pytest.raises(MetricError, match="no such folder"):
        compute_fid(ctx)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MetricError, match="no png,jpg,jpeg images directly in"):
        compute_kid(EvalContext(generated=torch.zeros(4, 3, 8, 8), real_dir=tmp_path / "empty"))


def test_missing_inception_weights_fail_at_once_naming_file_and_folder(tmp_path, monkeypatch):
    _write_pngs(tmp_path / "real", (torch.rand(3, 3, 8, 8) * 255).to(torch.uint8))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    ctx = EvalContext(generated=torch.zeros(4, 3, 8, 8), real_dir=tmp_path / "real")
    with pytest.raises(MetricError) as err:
        compute_fid(ctx)
    msg = str(err.value)
    assert "\n" not in msg and INCEPTION_FILE in msg and str(tmp_path / "hub" / "checkpoints") in msg
    assert "--weights inception=PATH" in msg
    ctx.weights["inception"] = str(tmp_path / "missing.pth")
    with pytest.raises(MetricError, match="missing.pth: no such file"):
        compute_kid(ctx)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    ctx.weights["inception"] = str(bad)
    with pytest.raises(MetricError, match="not readable as a plain state dict"):
        compute_fid(ctx)


def test_too_few_generated_images_for_a_covariance(tmp_path):
    _write_pngs(tmp_path / "real", (torch.rand(3, 3, 8, 8) * 255).to(torch.uint8))
    with pytest.raises(MetricError, match="at least 2 images"):
        compute_fid(EvalContext(generated=torch.zeros(1, 3, 8, 8), real_dir=tmp_path / "real"))


@pytest.mark.slow  # ~30 s on the shared CPU: torch-fidelity's full Inception at 299 px, twice
def test_fid_through_torch_fidelity_inception_architecture(tmp_path):
    """The real extractor path (local file, weights_only pre-read, torch-fidelity's InceptionV3 with seeded random
    weights) gives the same FID as calculate_metrics with that file."""
    from unittest import mock

    import torch_fidelity
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    with torch.random.fork_rng(devices=[]), \
            mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: {}), \
            mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None):
        torch.manual_seed(0)
        model = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    weights = tmp_path / INCEPTION_FILE
    torch.save(model.state_dict(), weights)
    gen = torch.Generator().manual_seed(9)
    fake = torch.rand(3, 3, 32, 32, generator=gen) * 2 - 1
    _write_pngs(tmp_path / "real", (torch.rand(3, 3, 32, 32, generator=gen) * 255).to(torch.uint8))
    res = compute_fid(EvalContext(generated=fake, real_dir=tmp_path / "real", weights={"inception": str(weights)}))
    fake_u8 = ((fake.clamp(-1, 1) + 1) / 2 * 255 + 0.5).to(torch.uint8)
    lib = torch_fidelity.calculate_metrics(input1=_U8(fake_u8), input2=str(tmp_path / "real"), fid=True, cuda=False,
                                           feature_extractor_weights_path=str(weights), cache=False, verbose=False,
                                           save_cpu_ram=True)
    assert res.values["fid"] == pytest.approx(lib["frechet_inception_distance"], rel=1e-4)
    assert res.record["weights"]["inception"]["sha256"] and "inception-v3-compat" in res.record["feature_extractor"]


def test_feature_cache_never_serves_a_freed_tensors_features(tmp_path):
    """Sample sets of one shape, each freed before the next is made (so a new one may reuse the old one's id and
    memory): every FID is that set's own, equal to a cold-cache computation, never the previous set's."""
    import gc

    import zsgm.metrics.fid as fid_module

    ext = _standin_class()(STANDIN, ["8"])
    _write_pngs(tmp_path / "real", (torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 255)
                .to(torch.uint8))

    def fid_of(seed):
        g = torch.Generator().manual_seed(seed)
        gen = torch.cat([torch.rand(8, 3, 16, 16, generator=g) * 2 - 1 for _ in range(2)])  # [16, 3, 16, 16]
        ctx = EvalContext(generated=gen, real_dir=tmp_path / "real",
                          options={"fid": {"feature_extractor": ext, "feature_layer": "8"}})
        value = compute_fid(ctx).values["fid"]
        del gen, ctx
        gc.collect()
        return value

    warm = [fid_of(s) for s in (1, 2, 3, 4, 1, 2, 3, 4)]
    cold = []
    for s in (1, 2, 3, 4):
        fid_module._GEN_CACHE.clear()
        cold.append(fid_of(s))
    assert len(set(cold)) == 4
    assert warm == pytest.approx(cold + cold, rel=1e-6)
