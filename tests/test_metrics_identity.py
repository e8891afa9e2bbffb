"""Identity similarity (zsgm.metrics.identity): the IR-SE50 layout the released file needs, the IDLoss crop/pool
written out, cosine hand-computed, strict offline loading."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zsgm.metrics.api import EvalContext, MetricError
from zsgm.metrics.identity import (ARCFACE_FILE, IRSE50, compute_identity, face_crop, load_arcface,
                                   needs_source_and_arcface)


def test_irse50_layout_matches_the_released_file_keys():
    with torch.device("meta"):
        model = IRSE50()
    sd = model.state_dict()
    expected = {
        "input_layer.0.weight": (64, 3, 3, 3), "input_layer.2.weight": (64,),
        "body.0.res_layer.0.weight": (64,), "body.0.res_layer.1.weight": (64, 64, 3, 3),
        "body.0.res_layer.5.fc1.weight": (4, 64, 1, 1), "body.0.res_layer.5.fc2.weight": (64, 4, 1, 1),
        "body.3.shortcut_layer.0.weight": (128, 64, 1, 1), "body.3.shortcut_layer.1.running_var": (128,),
        "body.7.res_layer.3.weight": (256, 256, 3, 3), "body.21.shortcut_layer.0.weight": (512, 256, 1, 1),
        "body.23.res_layer.4.weight": (512,), "output_layer.0.weight": (512,),
        "output_layer.3.weight": (512, 25088), "output_layer.3.bias": (512,), "output_layer.4.running_mean": (512,),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any(k.startswith("body.0.shortcut_layer") for k in sd)  # identity shortcut: no weights
    assert len(model.body) == 24 and "body.24.res_layer.0.weight" not in sd


def test_face_crop_is_the_idloss_pool_crop_pool():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 1024, 1024, generator=g)
    pooled = x.reshape(2, 3, 256, 4, 256, 4).mean(dim=(3, 5))  # 1024 -> 256: 4x4 box average
    ref = F.adaptive_avg_pool2d(pooled[:, :, 35:223, 32:220], (112, 112))
    assert torch.allclose(face_crop(x), ref, atol=1e-6)
    y = torch.rand(1, 3, 256, 256, generator=g)
    assert torch.equal(face_crop(y), F.adaptive_avg_pool2d(y[:, :, 35:223, 32:220], (112, 112)))


def _small_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 8, stride=8), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 14 * 14, 16)).eval()


def test_identity_cosine_hand_computed_with_a_standin_net():
    g = torch.Generator().manual_seed(1)
    src, gen = torch.rand(3, 3, 64, 64, generator=g) * 2 - 1, torch.rand(3, 3, 64, 64, generator=g) * 2 - 1
    net = _small_net()
    ctx = EvalContext(generated=gen, source=src, seed=7, options={"identity": {"net": net}})
    res = compute_identity(ctx)
    q = lambda x: ((x.clamp(-1, 1) + 1) / 2 * 255 + 0.5).to(torch.uint8).float() / 255 * 2 - 1  # noqa: E731
    def crop(x):
        return F.adaptive_avg_pool2d(F.adaptive_avg_pool2d(x, (256, 256))[:, :, 35:223, 32:220], (112, 112))

    with torch.no_grad():
        a, b = net(crop(q(src))), net(crop(q(gen)))
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    assert res.values["identity"] == pytest.approx(float(cos.mean()), abs=1e-6)
    assert res.values["identity_std"] == pytest.approx(float(cos.std()), abs=1e-6)
    assert res.record["n_generated"] == 3 and res.record["seed"] == 7


@pytest.mark.slow  # ~10 s on the shared CPU: a 44M-parameter network built, saved, read and run
def test_weights_load_strictly_round_trip(tmp_path):
    torch.manual_seed(0)
    model = IRSE50().eval()
    path = tmp_path / ARCFACE_FILE
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, path)  # DataParallel-style prefix
    loaded = load_arcface(path)
    x = torch.rand(1, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        out = loaded(x)
        assert torch.allclose(out, model(x), atol=1e-5) and out.shape == (1, 512)
    assert out.norm() == pytest.approx(1.0, abs=1e-5)
    src = torch.rand(1, 3, 64, 64) * 2 - 1
    res = compute_identity(EvalContext(generated=src, source=src, weights={"arcface": str(path)}))
    assert res.values["identity"] == pytest.approx(1.0, abs=1e-5)
    assert len(res.record["weights"]["arcface"]["sha256"]) == 64


def test_a_file_without_the_final_affine_loads_as_weight_one_bias_zero(tmp_path):
    with torch.device("meta"):
        sd = IRSE50().state_dict()
    g = torch.Generator().manual_seed(0)
    state = {k: (torch.randn(v.shape, generator=g) if v.is_floating_point() else torch.zeros((), dtype=v.dtype))
             for k, v in sd.items() if k not in ("output_layer.4.weight", "output_layer.4.bias")
             and not k.endswith("num_batches_tracked")}
    path = tmp_path / ARCFACE_FILE
    torch.save(state, path)
    model = load_arcface(path)
    assert torch.equal(model.output_layer[4].weight, torch.ones(512))
    assert torch.equal(model.output_layer[4].bias, torch.zeros(512))
    assert torch.equal(model.input_layer[0].weight, state["input_layer.0.weight"])


def test_weights_that_are_not_irse50_are_refused_in_one_line(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"input_layer.0.weight": torch.zeros(64, 3, 3, 3)}, bad)
    with pytest.raises(MetricError, match="not IR-SE50 \\(missing"):
        load_arcface(bad)
    torch.save({"input_layer.0.weight": [1, 2]}, bad)
    with pytest.raises(MetricError, match="not a state dict"):
        load_arcface(bad)
    bad.write_bytes(b"junk")
    with pytest.raises(MetricError, match="not readable"):
        load_arcface(bad)


def test_refusals(tmp_path):
    x = torch.zeros(2, 3, 64, 64)
    assert "source generator" in needs_source_and_arcface(EvalContext(generated=x))
    assert ARCFACE_FILE in needs_source_and_arcface(EvalContext(generated=x, source=x))
    assert needs_source_and_arcface(EvalContext(generated=x, source=x, weights={"arcface": "w.pth"})) is None
    with pytest.raises(MetricError) as err:
        compute_identity(EvalContext(generated=x, source=x))
    assert ARCFACE_FILE in str(err.value) and "--weights arcface=PATH" in str(err.value)
    with pytest.raises(MetricError, match="no such file"):
        compute_identity(EvalContext(generated=x, source=x, weights={"arcface": str(tmp_path / "none.pth")}))
    with pytest.raises(MetricError, match="differ in shape"):
        compute_identity(EvalContext(generated=x, source=x[:1], options={"identity": {"net": _small_net()}}))
