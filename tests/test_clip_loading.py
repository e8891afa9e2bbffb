"""zsgm.clip loading: tiny models, zsgm CLIP files, open_clip names with local files, offline errors.

Downloads cannot be tested here (no network); every real-weights path is exercised through local files of a
tiny config registered under an open_clip name for the duration of a test.
"""

from __future__ import annotations

import argparse
import copy
import json
import warnings

import pytest
import torch

from zsgm import clip_loading
from zsgm.clip import (
    TINY_RANDOM_CONFIG,
    ClipEnsemble,
    ClipLoadError,
    ClipModelSpec,
    load_clip_model,
    save_clip_model,
    tiny_random_clip,
)

X = torch.linspace(-1, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32)
TEXTS = ["a photo of a dog.", "a sketch"]


@pytest.fixture(scope="module")
def tiny():
    return load_clip_model(ClipModelSpec(name="tiny-random"))


def same_features(a, b, atol=1e-6) -> bool:
    return torch.allclose(a.encode_image(X), b.encode_image(X), atol=atol) and \
        torch.allclose(a.encode_text(TEXTS), b.encode_text(TEXTS), atol=atol)


@pytest.fixture()
def registered(monkeypatch):
    """Register tiny configs as open_clip names (restored after the test)."""
    import open_clip.factory

    gelu = copy.deepcopy(TINY_RANDOM_CONFIG)
    quick = {**copy.deepcopy(TINY_RANDOM_CONFIG), "quick_gelu": True}
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "zsgm-test-tiny", gelu)
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "zsgm-test-tiny-quickgelu", quick)
    return {"gelu": gelu, "quick": quick}


def test_tiny_random_is_deterministic_per_seed(tiny):
    again = tiny_random_clip()
    assert same_features(tiny, again, atol=0)
    other = load_clip_model(ClipModelSpec(name="tiny-random", pretrained="seed:7"))
    assert not torch.allclose(other.encode_text(TEXTS), tiny.encode_text(TEXTS), atol=1e-3)
    with pytest.raises(ClipLoadError, match="pretrained must be empty or 'seed:<int>', got 'openai'"):
        load_clip_model(ClipModelSpec(name="tiny-random", pretrained="openai"))


def test_zsgm_clip_file_round_trip(tmp_path, tiny):
    path = tmp_path / "clip.safetensors"
    save_clip_model(tiny, path, name="mine")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["format"] == "zsgm-clip" and json.loads(meta["config"]) == TINY_RANDOM_CONFIG
    assert json.loads(meta["mean"]) == pytest.approx(tiny.mean.flatten().tolist())
    by_local = load_clip_model(ClipModelSpec(name="local", pretrained=str(path), preprocess="oneshot"))
    by_name = load_clip_model(ClipModelSpec(name="mine", pretrained=str(path)))
    assert by_local.name == by_name.name == "mine" and by_local.preprocess == "oneshot"
    assert same_features(by_name, tiny, atol=0)
    assert not list(tmp_path.glob("*.tmp"))  # written atomically, no leftovers
    with pytest.raises(ClipLoadError, match="holds model 'mine', but the spec names 'ViT-B-32'"):
        load_clip_model(ClipModelSpec(name="ViT-B-32", pretrained=str(path)))


def test_missing_local_files_name_the_path_and_the_fix(tmp_path):
    missing = str(tmp_path / "nope.safetensors")
    with pytest.raises(ClipLoadError, match="does not exist; pass pretrained = the path of a zsgm CLIP"):
        load_clip_model(ClipModelSpec(name="local", pretrained=missing))
    with pytest.raises(ClipLoadError, match=r"CLIP 'ViT-B-32': weights file .*nope.bin' does not exist.*openai"):
        load_clip_model(ClipModelSpec(name="ViT-B-32", pretrained=str(tmp_path / "nope.bin")))
    with pytest.raises(ClipLoadError, match="'not-a-tag' is neither a pretrained tag of ViT-B-32"):
        load_clip_model(ClipModelSpec(name="ViT-B-32", pretrained="not-a-tag"))


def test_missing_shapes_weights_say_where_they_belong(tmp_path, monkeypatch):
    monkeypatch.setattr(clip_loading, "shapes_clip_path", lambda: tmp_path / "shapes_clip.safetensors")
    import zsgm.clip as zclip

    monkeypatch.setattr(zclip, "shapes_clip_path", clip_loading.shapes_clip_path)
    with pytest.raises(ClipLoadError, match="shapes-world CLIP weights are missing.*zsgm/toy/assets"):
        load_clip_model(ClipModelSpec(name="shapes"))
    # the shapes trainer's minimal metadata (no tokenizer / version keys) and fp16 tensors load too
    from safetensors.torch import save_file

    source = tiny_random_clip()
    tensors = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in source.model.state_dict().items()}
    meta = {"format": "zsgm-clip", "config": json.dumps(TINY_RANDOM_CONFIG), "name": "shapes",
            "mean": json.dumps([0.5] * 3), "std": json.dumps([0.5] * 3)}
    save_file(tensors, str(tmp_path / "shapes_clip.safetensors"), metadata=meta)
    shapes = load_clip_model(ClipModelSpec(name="shapes"))
    assert shapes.name == "shapes" and shapes.mean.flatten().tolist() == [0.5] * 3
    assert torch.allclose(shapes.encode_text(TEXTS), source.encode_text(TEXTS), atol=1e-2)


def test_unknown_model_lists_close_open_clip_names():
    with pytest.raises(ClipLoadError) as err:
        load_clip_model(ClipModelSpec(name="ViT-B-33"))
    msg = str(err.value)
    assert msg.startswith("unknown CLIP model 'ViT-B-33'; did you mean ") and "ViT-B-32" in msg
    assert "open_clip.list_models()" in msg
    with pytest.raises(ClipLoadError, match="did you mean tiny-random"):
        load_clip_model(ClipModelSpec(name="tiny_random"))


def test_offline_tag_without_cached_weights_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ClipLoadError) as err:
            load_clip_model(ClipModelSpec(name="ViT-B-32", pretrained="openai"))
    msg = str(err.value)
    assert "HF_HUB_OFFLINE is set and the weights are not in the local cache" in msg
    assert "timm/vit_base_patch32_clip_224.openai" in msg and "pretrained='/path/to/weights" in msg
    with pytest.raises(ClipLoadError, match="cannot load CLIP 'hf-hub:zsgm-test/nothing-here'.*local-dir:"):
        load_clip_model(ClipModelSpec(name="hf-hub:zsgm-test/nothing-here"))
    with pytest.raises(ClipLoadError, match="cannot load CLIP 'hf-hub:zsgm-test/nothing-here'"):  # CLI split form
        load_clip_model(ClipModelSpec(name="hf-hub", pretrained="zsgm-test/nothing-here"))


def test_offline_tag_loads_from_the_caches(tmp_path, monkeypatch, registered):
    """A tag of a registered name, served from the HF cache layout, then from open_clip's URL cache."""
    import open_clip.pretrained
    from safetensors.torch import save_file

    tag = {"url": "https://example.invalid/zsgm/tiny-weights.safetensors", "hf_hub": "zsgm-test/tiny-weights/",
           "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "quick_gelu": True}
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, "zsgm-test-tiny", {"testtag": tag})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HOME", str(tmp_path))
    spec = ClipModelSpec(name="zsgm-test-tiny", pretrained="testtag")
    with pytest.warns(UserWarning, match="Use the QuickGELU variant 'zsgm-test-tiny-quickgelu'"):
        with pytest.raises(ClipLoadError, match="not in the local cache"):
            load_clip_model(spec)
    source = clip_loading.build_clip_from_config(registered["gelu"])
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--zsgm-test--tiny-weights"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file(state, str(repo / "snapshots" / commit / "open_clip_model.safetensors"))
    with pytest.warns(UserWarning, match="QuickGELU"):
        from_hub = load_clip_model(spec)
    assert from_hub.mean.flatten().tolist() == [0.5] * 3 and from_hub.std.flatten().tolist() == [0.25] * 3
    from_hub_ref = load_clip_model(ClipModelSpec(name="zsgm-test-tiny"))
    from_hub_ref.model.load_state_dict(source.state_dict())
    assert torch.allclose(from_hub.encode_text(TEXTS), from_hub_ref.encode_text(TEXTS), atol=0)
    import shutil

    shutil.rmtree(repo)
    (tmp_path / ".cache" / "clip").mkdir(parents=True)
    save_file(state, str(tmp_path / ".cache" / "clip" / "tiny-weights.safetensors"))
    with pytest.warns(UserWarning, match="QuickGELU"):
        from_url = load_clip_model(spec)
    assert torch.allclose(from_url.encode_text(TEXTS), from_hub.encode_text(TEXTS), atol=0)


def test_open_clip_name_with_local_state_dict_files(tmp_path, registered):
    source = clip_loading.build_clip_from_config(registered["gelu"])
    state = source.state_dict()
    reference = load_clip_model(ClipModelSpec(name="zsgm-test-tiny"))  # random init, replaced below
    reference.model.load_state_dict(state)
    pt, st = tmp_path / "weights.pt", tmp_path / "open_clip_model.safetensors"
    torch.save({"state_dict": state}, pt)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(st))
    for path in (pt, st):
        loaded = load_clip_model(ClipModelSpec(name="zsgm-test-tiny", pretrained=str(path)))
        assert loaded.name == "zsgm-test-tiny" and loaded.context_length == 32
        assert same_features(loaded, reference, atol=0)
    # a pickle that weights_only=True refuses: a clear error, never a silent unsafe load
    torch.save({"state_dict": state, "args": argparse.Namespace(lr=1)}, tmp_path / "unsafe.pt")
    with pytest.raises(ClipLoadError, match="torch.load\\(weights_only=True\\)"):
        load_clip_model(ClipModelSpec(name="zsgm-test-tiny", pretrained=str(tmp_path / "unsafe.pt")))
    # local-dir: folder with open_clip_config.json + weights
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": registered["gelu"]}))
    folder = load_clip_model(ClipModelSpec(name=f"local-dir:{tmp_path}"))
    assert same_features(folder, reference, atol=0)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::FutureWarning")
def test_openai_torchscript_archive_loads_only_when_trusted(tmp_path, registered):
    source = clip_loading.build_clip_from_config(registered["quick"]).eval()
    archive = tmp_path / "ViT-tiny.pt"
    traced = torch.jit.trace(source, (X[:1], torch.zeros(1, 32, dtype=torch.long)), check_trace=False, strict=False)
    traced.save(str(archive))
    reference = load_clip_model(ClipModelSpec(name="zsgm-test-tiny-quickgelu"))
    reference.model.load_state_dict(source.state_dict())
    with pytest.raises(ClipLoadError, match="is a TorchScript archive, and loading one runs code"):
        load_clip_model(ClipModelSpec(name="zsgm-test-tiny-quickgelu", pretrained=str(archive)))  # not trusted
    loaded = load_clip_model(ClipModelSpec(name="zsgm-test-tiny-quickgelu", pretrained=str(archive),
                                           trust_torchscript=True))
    assert same_features(loaded, reference, atol=1e-6)
    with pytest.warns(UserWarning, match="TorchScript archive .* building the model with QuickGELU"):
        gelu_named = load_clip_model(ClipModelSpec(name="zsgm-test-tiny", pretrained=str(archive),
                                                   trust_torchscript=True))
    assert same_features(gelu_named, reference, atol=1e-6)  # QuickGELU was forced


def test_ensemble_pairs_models_with_weights(tiny):
    ens = ClipEnsemble.from_specs([ClipModelSpec(name="tiny-random", weight=0.5),
                                   ClipModelSpec(name="tiny-random", pretrained="seed:1", weight=2.0)])
    assert len(ens) == 2 and [w for _, w in ens] == [0.5, 2.0] and ens[0].name == "tiny-random"
    with pytest.raises(ValueError, match="one weight per model, got 1 models and 2 weights"):
        ClipEnsemble([tiny], [1.0, 2.0])


def test_model_templates_survive_a_file_round_trip_and_feed_recipes(tmp_path):
    from zsgm.clip import ClipModelSpec, load_clip_model, save_clip_model
    from zsgm.recipe import ClipConfig

    tiny = load_clip_model(ClipModelSpec(name="tiny-random"))
    tiny.templates = ("a {}", "a {} shape")
    path = tmp_path / "with-templates.safetensors"
    save_clip_model(tiny, path)
    again = load_clip_model(ClipModelSpec(name="local", pretrained=str(path)))
    assert again.templates == ("a {}", "a {} shape")
    assert ClipConfig().template_list(again) == ["a {}", "a {} shape"]  # the model's own phrasings
    assert ClipConfig(templates=["{}"]).template_list(again) == ["{}"]  # the recipe wins
    assert len(ClipConfig().template_list(load_clip_model(ClipModelSpec(name="tiny-random")))) == 79
