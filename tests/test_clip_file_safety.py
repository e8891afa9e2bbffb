"""CLIP files cannot run code: TorchScript needs an explicit opt-in, malicious pickles are refused on every path
that accepts a file, and every load failure is one ClipLoadError line naming the file or the name."""

from __future__ import annotations

import copy
import json
import os
import pickle

import pytest
import torch

from zsgm import clip_hub, clip_loading
from zsgm.clip import TINY_RANDOM_CONFIG, ClipLoadError, ClipModelSpec, load_clip_model, tiny_random_clip

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class RunsShell:
    """Unpickling this calls ``os.system`` (touches ``marker``): the classic malicious pickle."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture()
def registered(monkeypatch):
    """The tiny config registered as open_clip name ``zsgm-test-tiny`` (restored after the test)."""
    import open_clip.factory

    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "zsgm-test-tiny", copy.deepcopy(TINY_RANDOM_CONFIG))
    return "zsgm-test-tiny"


@pytest.fixture()
def no_network(monkeypatch, tmp_path):
    """Empty caches, HF_HUB_OFFLINE unset, and every way to the network fails the test."""
    import open_clip.factory
    import open_clip.pretrained

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HOME", str(tmp_path))

    def forbidden(*args, **kwargs):
        raise AssertionError(f"network download attempted: {args} {kwargs}")

    for module, attr in ((open_clip.factory, "download_pretrained"), (open_clip.pretrained, "download_pretrained")):
        monkeypatch.setattr(module, attr, forbidden)  # tag downloads
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # safety net: refused locally
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # read at import
    return tmp_path


def hub_probe(monkeypatch, *, reachable: bool) -> list:
    """Replace huggingface_hub's one probe request; returns the list of probed URLs."""
    import huggingface_hub

    calls = []

    def probe(url, timeout=None, **kwargs):
        calls.append((url, timeout))
        if not reachable:
            raise ConnectionError("[Errno -2] Name or service not known")
        return object()

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", probe)
    return calls


def tiny_state() -> dict:
    return {k: v.contiguous() for k, v in tiny_random_clip().model.state_dict().items()}


def hf_cache_repo(root, repo: str, files: dict) -> None:
    """Write ``files`` (name -> bytes or state dict) into the Hugging Face cache layout for ``repo``."""
    from safetensors.torch import save_file

    folder = root / "hub" / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(COMMIT)
    snap = folder / "snapshots" / COMMIT
    snap.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, dict):
            save_file(content, str(snap / name))
        else:
            (snap / name).write_bytes(content)


def load_error(spec: ClipModelSpec) -> str:
    with pytest.raises(ClipLoadError) as err:
        load_clip_model(spec)
    msg = str(err.value)
    assert "\n" not in msg, msg  # one line
    return msg


# ----------------------------------------------------------------------------------------- TorchScript


class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)

    def forward(self, x):
        return self.lin(x)


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")
def test_torchscript_is_refused_before_anything_reads_it_unless_trusted(tmp_path, monkeypatch, registered):
    archive = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(Small()), str(archive))

    def jit_load_must_not_run(*args, **kwargs):
        raise AssertionError("torch.jit.load was called on an untrusted file")

    monkeypatch.setattr(torch.jit, "load", jit_load_must_not_run)
    msg = load_error(ClipModelSpec(name=registered, pretrained=str(archive)))
    assert msg.startswith(f"CLIP 'zsgm-test-tiny': '{archive}' is a TorchScript archive, and loading one runs "
                          f"code stored in the file; refused.")
    assert "trust_torchscript = true" in msg and "clip.models[i].trust_torchscript" in msg
    # trusted: the archive goes through the TorchScript path (this one is no CLIP, so it does not fit)
    monkeypatch.undo()
    monkeypatch.setitem(__import__("open_clip").factory._MODEL_CONFIGS, registered, copy.deepcopy(TINY_RANDOM_CONFIG))
    read = []
    real_load = torch.jit.load
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: read.append(a) or real_load(*a, **k))
    with pytest.warns(UserWarning, match="TorchScript archive"):
        msg = load_error(ClipModelSpec(name=registered, pretrained=str(archive), trust_torchscript=True))
    assert read and f"the TorchScript archive '{archive}' does not fit this model:" in msg
    assert "missing key(s)" in msg and "unexpected key(s) (e.g. lin.weight, lin.bias)" in msg


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")
def test_a_cached_torchscript_tag_file_is_refused_too(no_network, monkeypatch, registered):
    """OpenAI's clip package caches TorchScript files in ~/.cache/clip; a tag served from there needs the opt-in."""
    import open_clip.pretrained

    tag = {"url": "https://example.invalid/clip/ViT-tiny.pt"}
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, registered, {"openai": tag})
    (no_network / ".cache" / "clip").mkdir(parents=True)
    torch.jit.save(torch.jit.script(Small()), str(no_network / ".cache" / "clip" / "ViT-tiny.pt"))
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("torch.jit.load on an untrusted file"))
    msg = load_error(ClipModelSpec(name=registered, pretrained="openai"))
    assert "ViT-tiny.pt' is a TorchScript archive" in msg and "refused" in msg


# ----------------------------------------------------------------------------------------- malicious pickles


def malicious_files(tmp_path):
    """The same os.system payload as a torch.save zip and as a raw pickle."""
    marker = tmp_path / "pwned"
    zipped, raw = tmp_path / "evil.pt", tmp_path / "evil.pkl"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": RunsShell(marker)}, zipped)
    raw.write_bytes(pickle.dumps({"w": RunsShell(marker)}))
    return marker, (zipped, raw)


def assert_refused_without_running(msg: str, marker) -> None:
    assert not marker.exists(), "the pickle's code ran"
    assert "weights_only` set to `False`" not in msg and "weights_only=False" not in msg  # no advice to go unsafe


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")
def test_malicious_pickles_are_refused_on_every_file_path(tmp_path, monkeypatch, registered):
    marker, files = malicious_files(tmp_path)
    for path in files:
        msg = load_error(ClipModelSpec(name=registered, pretrained=str(path)))  # open_clip name + file
        assert_refused_without_running(msg, marker)
        if path.suffix == ".pt":  # torch.save's zip: the unpickler names the forbidden global
            assert msg.startswith(f"CLIP 'zsgm-test-tiny': weights file '{path}' holds Python objects that "
                                  f"torch.load(weights_only=True) refuses to build (")
            assert "GLOBAL posix.system" in msg
        else:  # a raw protocol-4 pickle: refused at its first opcode
            assert msg.startswith(f"CLIP 'zsgm-test-tiny': weights file '{path}' is not a PyTorch weights file that "
                                  f"torch.load(weights_only=True) can read (Unsupported operand")
        for spec in (ClipModelSpec(name="local", pretrained=str(path)),  # zsgm CLIP files are safetensors only
                     ClipModelSpec(name="shapes", pretrained=str(path))):
            msg = load_error(spec)
            assert_refused_without_running(msg, marker)
            assert f"CLIP weights file '{path}' is not a zsgm CLIP file" in msg
    # an open_clip folder (local-dir:) whose weights file is the payload
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_RANDOM_CONFIG}))
    (folder / "open_clip_pytorch_model.bin").write_bytes(files[1].read_bytes())
    msg = load_error(ClipModelSpec(name=f"local-dir:{folder}"))
    assert_refused_without_running(msg, marker)
    assert "torch.load(weights_only=True)" in msg and "Unsupported operand" in msg
    torch.jit.save(torch.jit.script(Small()), str(folder / "open_clip_pytorch_model.bin"))  # TorchScript in it
    msg = load_error(ClipModelSpec(name=f"local-dir:{folder}"))
    assert_refused_without_running(msg, marker)
    assert "Cannot use ``weights_only=True`` with TorchScript archives" in msg


def test_malicious_pickles_in_the_caches_are_refused(no_network, tmp_path, monkeypatch, registered):
    import open_clip.pretrained

    marker, files = malicious_files(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, registered, {"t": {"hf_hub": "zsgm-test/evil/"}})
    hf_cache_repo(no_network, "zsgm-test/evil", {"open_clip_pytorch_model.bin": files[0].read_bytes()})
    msg = load_error(ClipModelSpec(name=registered, pretrained="t"))  # a pretrained tag served from the cache
    assert_refused_without_running(msg, marker)
    assert "holds Python objects that torch.load(weights_only=True) refuses" in msg
    hf_cache_repo(no_network, "zsgm-test/evil-repo", {
        "open_clip_config.json": json.dumps({"model_cfg": TINY_RANDOM_CONFIG}).encode(),
        "open_clip_pytorch_model.bin": files[1].read_bytes()})
    msg = load_error(ClipModelSpec(name="hf-hub:zsgm-test/evil-repo"))  # an hf-hub: repo from the cache
    assert_refused_without_running(msg, marker)
    assert "torch.load(weights_only=True)" in msg


# ----------------------------------------------------------------------------------------- unreachable Hub


def test_unreachable_hub_fails_at_once_without_retries(no_network, monkeypatch):
    """A real name and tag, no HF_HUB_OFFLINE, no cache, no network: one probe, then the clear error."""
    calls = hub_probe(monkeypatch, reachable=False)
    msg = load_error(ClipModelSpec(name="ViT-B-32-quickgelu", pretrained="openai"))
    assert len(calls) == 1 and calls[0][1] == clip_loading.HUB_PROBE_TIMEOUT_S
    assert "timm/vit_base_patch32_clip_224.openai" in calls[0][0]
    assert msg.startswith("cannot load CLIP 'ViT-B-32-quickgelu' with pretrained='openai': the weights are not in "
                          "the local cache and the Hugging Face Hub cannot be reached (ConnectionError: [Errno -2]")
    assert "pretrained='/path/to/weights" in msg
    msg = load_error(ClipModelSpec(name="hf-hub:zsgm-test/nothing-here"))
    assert len(calls) == 2 and "zsgm-test/nothing-here" in calls[1][0]
    assert "the Hugging Face Hub cannot be reached" in msg and "local-dir:" in msg


def test_cached_weights_load_without_any_network(no_network, monkeypatch, registered):
    import open_clip.pretrained

    calls = hub_probe(monkeypatch, reachable=False)
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, registered, {"t": {"hf_hub": "zsgm-test/tiny/"}})
    hf_cache_repo(no_network, "zsgm-test/tiny", {"open_clip_model.safetensors": tiny_state()})
    texts = ["a dog"]
    reference = tiny_random_clip().encode_text(texts)
    by_tag = load_clip_model(ClipModelSpec(name=registered, pretrained="t"))
    assert calls == [] and torch.allclose(by_tag.encode_text(texts), reference)  # the cache, no probe at all
    hf_cache_repo(no_network, "zsgm-test/tiny-repo", {
        "open_clip_config.json": json.dumps({"model_cfg": TINY_RANDOM_CONFIG}).encode(),
        "open_clip_model.safetensors": tiny_state()})
    by_repo = load_clip_model(ClipModelSpec(name="hf-hub:zsgm-test/tiny-repo"))  # probe fails: cache only
    assert len(calls) == 1 and torch.allclose(by_repo.encode_text(texts), reference)


def test_reachable_hub_downloads_as_before(no_network, monkeypatch, registered):
    import open_clip.factory
    import open_clip.pretrained
    from safetensors.torch import save_file

    calls = hub_probe(monkeypatch, reachable=True)
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, registered, {"t": {"hf_hub": "zsgm-test/tiny/"}})
    downloaded = no_network / "downloaded.safetensors"
    save_file(tiny_state(), str(downloaded))
    monkeypatch.setattr(open_clip.factory, "download_pretrained", lambda *a, **k: str(downloaded))
    model = load_clip_model(ClipModelSpec(name=registered, pretrained="t"))
    assert len(calls) == 1 and torch.allclose(model.encode_text(["x"]), tiny_random_clip().encode_text(["x"]))


def test_hub_probe_counts_any_http_answer_as_reachable(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError

    not_found = HfHubHTTPError.__new__(HfHubHTTPError)
    Exception.__init__(not_found, "404 Client Error")

    def answer(url, timeout=None, **kwargs):
        raise not_found

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", answer)
    assert clip_loading.hub_unreachable_reason("org/repo", "f.bin") is None

    class ReadTimeout(Exception):  # connected, slow to answer (httpx and requests both name it so)
        pass

    def slow(url, timeout=None, **kwargs):
        raise ReadTimeout("timed out")

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", slow)
    assert clip_loading.hub_unreachable_reason("org/repo", "f.bin") is None
    hub_probe(monkeypatch, reachable=False)
    assert clip_loading.hub_unreachable_reason("org/repo", "f.bin").startswith("ConnectionError: [Errno -2]")
    assert clip_hub.split_hub("timm/vit.openai/") == ("timm/vit.openai", "open_clip_pytorch_model.bin")
    assert clip_hub.split_hub("org/repo/w.safetensors") == ("org/repo", "w.safetensors")


# ----------------------------------------------------------------------------------------- every failure: one line


def zsgm_file(path, *, config=None, state=None, **meta_overrides):
    """A zsgm CLIP file of the tiny model with optional broken parts."""
    from safetensors.torch import save_file

    meta = {"format": "zsgm-clip", "name": "tiny", "config": json.dumps(config or TINY_RANDOM_CONFIG),
            "mean": json.dumps([0.5] * 3), "std": json.dumps([0.5] * 3), **meta_overrides}
    save_file(state if state is not None else tiny_state(), str(path), metadata=meta)
    return path


def test_every_load_failure_is_one_line_naming_the_file(tmp_path, monkeypatch, registered):
    import open_clip.factory

    folder = tmp_path / "a-folder"
    folder.mkdir()
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 4)
    truncated = tmp_path / "cut.safetensors"
    zsgm_file(tmp_path / "whole.safetensors")
    truncated.write_bytes((tmp_path / "whole.safetensors").read_bytes()[:2000])
    not_a_dict = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], not_a_dict)
    wider = {**copy.deepcopy(TINY_RANDOM_CONFIG), "embed_dim": 32}  # a different architecture
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "zsgm-test-wider", wider)
    tiny_pt = tmp_path / "tiny.pt"
    torch.save(tiny_state(), tiny_pt)
    huge = {**copy.deepcopy(TINY_RANDOM_CONFIG), "embed_dim": 10 ** 7}  # would need 10^7 x 64 x 2 floats
    nan_state = tiny_state()
    nan_state["text_projection"] = torch.full_like(nan_state["text_projection"], float("nan"))
    nan_pt = tmp_path / "nan.pt"
    torch.save(nan_state, nan_pt)
    cases = [
        (ClipModelSpec(name=registered, pretrained=str(folder)), f"'{folder}' is a folder, not a file"),
        (ClipModelSpec(name="local", pretrained=str(folder)), f"'{folder}' is a folder, not a file"),
        (ClipModelSpec(name="shapes", pretrained=str(folder)), f"'{folder}' is a folder, not a file"),
        (ClipModelSpec(name=registered, pretrained=str(empty)), f"'{empty}' is empty (0 bytes)"),
        (ClipModelSpec(name="local", pretrained=str(empty)), f"'{empty}' is empty (0 bytes)"),
        (ClipModelSpec(name=registered, pretrained=str(junk)), f"'{junk}' is not a PyTorch weights file"),
        (ClipModelSpec(name=registered, pretrained=str(truncated)), f"'{truncated}' is not a readable .safetensors"),
        (ClipModelSpec(name=registered, pretrained=str(not_a_dict)), f"'{not_a_dict}' does not hold a state dict"),
        (ClipModelSpec(name="zsgm-test-wider", pretrained=str(tiny_pt)),
         f"weights file '{tiny_pt}' does not fit this model: 2 shape mismatch(es) (e.g. text_projection is [64, 64] "
         f"in the file, [64, 32] in the model; visual.proj is [64, 64] in the file, [64, 32] in the model)"),
        (ClipModelSpec(name="local", pretrained=str(zsgm_file(tmp_path / "huge.safetensors", config=huge))),
         "huge.safetensors' does not fit its own config: 2 shape mismatch(es)"),
        (ClipModelSpec(name="local", pretrained=str(zsgm_file(tmp_path / "cfg.safetensors", config=[1]))),
         "cfg.safetensors': broken metadata: config must be a JSON object"),
        (ClipModelSpec(name="local", pretrained=str(zsgm_file(tmp_path / "m.safetensors", mean="[1, 2]"))),
         "m.safetensors': broken metadata: mean must be a list of 3 finite numbers"),
        (ClipModelSpec(name="local", pretrained=str(zsgm_file(tmp_path / "t.safetensors", tokenizer="hf-hub:a/b"))),
         "t.safetensors': broken metadata: tokenizer must be 'simple' or an open_clip model name"),
        (ClipModelSpec(name=registered, pretrained=str(nan_pt)),
         f"pretrained='{nan_pt}'): the weights hold NaN or infinite values (first in text_projection)"),
        (ClipModelSpec(name="local", pretrained=str(zsgm_file(tmp_path / "nan.safetensors", state=nan_state))),
         "nan.safetensors'): the weights hold NaN or infinite values (first in text_projection)"),
        (ClipModelSpec(name="local-dir:" + str(tmp_path / "nowhere")), "nowhere' does not exist"),
        (ClipModelSpec(name="local-dir:" + str(tiny_pt)), "tiny.pt' is a file, not a folder"),
        (ClipModelSpec(name="local-dir:" + str(folder)), "a-folder' has no open_clip_config.json"),
        (ClipModelSpec(name=registered, pretrained=""), "CLIP 'zsgm-test-tiny': pretrained is empty"),
        (ClipModelSpec(name="ViT-B-32-quickgelu-nope"), "unknown CLIP model 'ViT-B-32-quickgelu-nope'; did you mean"),
    ]
    for spec, expected in cases:
        msg = load_error(spec)
        assert expected in msg, (spec, msg)
