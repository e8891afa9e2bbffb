"""zsgm.perceptual: LPIPS from the `lpips` package without downloads; the stand-in; backbone files and errors."""

from __future__ import annotations
import urllib.error
import warnings

import pytest
import torch

lpips = pytest.importorskip("lpips")

from zsgm.perceptual import (  # noqa: E402
    LpipsDistance,
    LpipsWeightsError,
    backbone_file_name,
    load_lpips,
)

SQUEEZE_FILE = "squeezenet1_1-b8a52dc0.pth"


def _images(n=2, side=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, side, side, generator=gen) * 2 - 1  # [N, 3, S, S] in [-1, 1]


def _reference_lpips(net: str) -> torch.nn.Module:
    """lpips' own model (its own construction and shipped linear layers), random trunk to be overwritten."""
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lpips.LPIPS(pretrained=True, net=net, pnet_rand=True, verbose=False).eval()


def _load_torchvision_features(ref: torch.nn.Module, state: dict) -> None:
    """Put torchvision's features.<i>.* into lpips' sliceK.<i>.* (lpips keeps torchvision's indices)."""
    for slice_ in ref.net.children():
        for index, layer in slice_.named_children():
            prefix = f"features.{index}."
            layer.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})


@pytest.fixture(scope="module")
def squeeze_state():
    """A torchvision squeezenet1_1 state dict with seeded random weights (5 MB, no download)."""
    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        return torchvision.models.squeezenet1_1(weights=None).state_dict()


@pytest.fixture
def squeeze_file(tmp_path, squeeze_state):
    path = tmp_path / "my_squeeze.pth"
    torch.save(squeeze_state, path)
    return path


@pytest.fixture(scope="module")
def standin():
    return load_lpips("standin")


def test_standin_is_deterministic_and_leaves_the_global_rng_alone():
    before = torch.get_rng_state()
    a, b = load_lpips("standin"), load_lpips("standin")
    assert torch.equal(torch.get_rng_state(), before)
    bufs_a, bufs_b = dict(a.model.named_buffers()), dict(b.model.named_buffers())
    assert bufs_a.keys() == bufs_b.keys() and len(bufs_a) > 10
    assert all(torch.equal(bufs_a[k], bufs_b[k]) for k in bufs_a)
    x, y = _images(seed=1), _images(seed=2)
    assert torch.equal(a(x, y), b(x, y))


def test_standin_distance_zero_for_identical_positive_otherwise(standin):
    x, y = _images(3, seed=1), _images(3, seed=2)
    same = standin(x, x)
    assert same.shape == (3,) and torch.equal(same, torch.zeros(3))
    diff = standin(x, y)
    assert diff.shape == (3,) and bool((diff > 0).all())
    # a small change is nearer than an unrelated image
    near = standin(x, (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(5))).clamp(-1, 1))
    assert bool((near < diff).all())


def test_frozen_not_saved_differentiable_and_always_eval(standin):
    assert list(standin.parameters()) == [] and len(standin.state_dict()) == 0
    holder = torch.nn.Module()
    holder.dist = standin
    holder.train()
    assert not standin.model.training and all(not m.training for m in standin.model.modules())
    x = _images(seed=3).requires_grad_(True)
    standin(x, _images(seed=4)).sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all()) and float(x.grad.abs().sum()) > 0
    holder.eval()


def test_standin_equals_lpips_own_forward_on_the_same_weights(standin):
    ref = _reference_lpips("alex")
    trunk = {k[len("net."):]: v for k, v in standin.model.named_buffers() if k.startswith("net.")}
    ref.net.load_state_dict(trunk, strict=True)
    for side in (32, 64):  # 32 px: AlexNet's own size limit is 31, so no resize happens
        x, y = _images(2, side, seed=6), _images(2, side, seed=7)
        with torch.no_grad():
            expected = ref(x, y).reshape(2)
        assert torch.allclose(standin(x, y), expected, rtol=1e-5, atol=1e-7)


def test_small_images_are_upsampled_to_the_net_minimum(standin):
    x, y = _images(2, 8, seed=8), _images(2, 8, seed=9)
    got = standin(x, y)
    up = [torch.nn.functional.interpolate(t, size=(31, 31), mode="bilinear", align_corners=False) for t in (x, y)]
    assert torch.allclose(got, standin(*up), rtol=1e-6, atol=1e-8)
    assert bool((got > 0).all())
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        standin(x, y[:, :, :4])


def test_local_backbone_file_is_loaded_and_used(squeeze_file, squeeze_state):
    dist = load_lpips("squeeze", backbone=squeeze_file)
    buffers = dict(dist.model.named_buffers())
    assert torch.equal(buffers["net.slice1.0.weight"], squeeze_state["features.0.weight"])
    ref = _reference_lpips("squeeze")
    _load_torchvision_features(ref, squeeze_state)
    for side in (32, 8):  # 8 px is below squeeze's 17: both see the same upsampled images
        x, y = _images(2, side, seed=10), _images(2, side, seed=11)
        if side < 17:
            x, y = (torch.nn.functional.interpolate(t, size=(17, 17), mode="bilinear", align_corners=False)
                    for t in (x, y))
        with torch.no_grad():
            expected = ref(x, y).reshape(2)
        assert torch.allclose(dist(x, y), expected, rtol=1e-5, atol=1e-7)


def test_hub_cache_is_honoured_without_download(tmp_path, monkeypatch, squeeze_state):
    (tmp_path / "checkpoints").mkdir()
    torch.save(squeeze_state, tmp_path / "checkpoints" / SQUEEZE_FILE)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def no_download(*a, **k):
        raise AssertionError("must not download when the hub cache holds the file")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    dist = load_lpips("squeeze")
    assert torch.equal(dict(dist.model.named_buffers())["net.slice7.12.expand3x3.weight"],
                       squeeze_state["features.12.expand3x3.weight"])


def test_offline_without_file_names_the_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    calls = []

    def offline(url, **kwargs):
        calls.append((url, kwargs.get("model_dir")))
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(LpipsWeightsError) as info:
        load_lpips("squeeze")
    message = str(info.value)
    folder = str(tmp_path / "hub" / "checkpoints")
    assert isinstance(info.value, ValueError) and "\n" not in message
    assert SQUEEZE_FILE in message and folder in message and "backbone" in message and "no network" in message
    assert calls == [(f"https://download.pytorch.org/models/{SQUEEZE_FILE}", folder)]
    assert backbone_file_name("vgg") == "vgg16-397923af.pth" and backbone_file_name("alex").startswith("alexnet")


def test_bad_backbone_files_are_refused_in_one_line(tmp_path, squeeze_file):
    with pytest.raises(LpipsWeightsError, match="no such file"):
        load_lpips("squeeze", backbone=tmp_path / "absent.pth")
    with pytest.raises(LpipsWeightsError, match="not torchvision's alexnet weights"):
        load_lpips("alex", backbone=squeeze_file)  # squeeze weights for the alex trunk: keys differ
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(LpipsWeightsError, match="cannot read it"):
        load_lpips("squeeze", backbone=text)
    with pytest.raises(ValueError, match="one of alex, vgg, squeeze, standin"):
        load_lpips("resnet")
    with pytest.raises(ValueError, match="standin"):
        load_lpips("standin", backbone=squeeze_file)


def test_is_a_module_that_moves_with_its_owner(standin):
    assert isinstance(standin, LpipsDistance) and standin.net == "standin"
    moved = standin.to(torch.float64)
    x, y = _images(seed=12).double(), _images(seed=13).double()
    assert moved(x, y).dtype == torch.float64
    standin.to(torch.float32)
