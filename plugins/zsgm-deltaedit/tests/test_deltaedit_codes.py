"""The training-code cache: chunking, manifest, resume, per-chunk seeding, the reader, real-image latent files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import zsgm_deltaedit.codes as codes_mod
from zsgm.generator.stylespace import synthesis_from_styles, ws_to_styles
from zsgm_deltaedit.codes import CodeReader, add_latent_file, build_codes, read_manifest, shared_weight_modconv


def _build(folder, g, clip, samples=10, chunk=4, **kw):
    return build_codes(folder, g, clip, samples=samples, chunk_size=chunk, seed=3, identity={"g": "tiny"},
                       batch=3, progress=False, **kw)


def test_chunks_manifest_and_contents(tmp_path, tiny_generator, tiny_clip):
    g = tiny_generator
    manifest = _build(tmp_path, g, tiny_clip)
    assert [e["rows"] for e in manifest["chunks"]] == [4, 4, 2]
    assert [e["file"] for e in manifest["chunks"]] == [f"chunk-00000{k}.safetensors" for k in range(3)]
    assert manifest["layout"] == {"n_latent": g.n_latent, "style_dim": 16, "channels": 40,
                                  "clip_dim": tiny_clip.embed_dim}
    assert read_manifest(tmp_path) == json.loads((tmp_path / "manifest.json").read_text())
    reader = CodeReader(tmp_path)
    assert reader.rows == 10
    rows = reader.take([9, 0, 5, 0], names=("ws", "s", "c"))
    # each row is what the generator and CLIP give for its W+ code (psi 1: the same w in every slot)
    ws = rows["ws"]
    assert torch.equal(ws[:, 0], ws[:, -1])
    with torch.no_grad():
        s = ws_to_styles(g, ws)
        c = tiny_clip.encode_image(synthesis_from_styles(g, s, ws, noise_mode="const"))
    torch.testing.assert_close(rows["s"], s)
    torch.testing.assert_close(rows["c"], c, atol=1e-5, rtol=1e-5)
    assert torch.equal(rows["s"][1], rows["s"][3])
    torch.testing.assert_close(rows["c"].norm(dim=1), torch.ones(4))


def test_resume_skips_complete_chunks_and_a_rewritten_chunk_is_identical(tmp_path, tiny_generator, tiny_clip,
                                                                        monkeypatch):
    _build(tmp_path, tiny_generator, tiny_clip)
    before = (tmp_path / "chunk-000001.safetensors").read_bytes()
    (tmp_path / "chunk-000001.safetensors").unlink()
    # a torn chunk: listed size no longer matches
    (tmp_path / "chunk-000002.safetensors").write_bytes(b"garbage")
    calls = []
    real = codes_mod._chunk_latents
    monkeypatch.setattr(codes_mod, "_chunk_latents", lambda g, **kw: calls.append(kw["index"]) or real(g, **kw))
    _build(tmp_path, tiny_generator, tiny_clip)
    assert calls == [1, 2]  # chunk 0 was complete and skipped
    assert (tmp_path / "chunk-000001.safetensors").read_bytes() == before
    calls.clear()
    _build(tmp_path, tiny_generator, tiny_clip)
    assert calls == []
    # more samples: the partial last chunk is redone at its new size, the rest kept
    manifest = _build(tmp_path, tiny_generator, tiny_clip, samples=13)
    assert calls == [2, 3] and [e["rows"] for e in manifest["chunks"]] == [4, 4, 4, 1]


def test_other_settings_in_the_same_folder_are_refused(tmp_path, tiny_generator, tiny_clip):
    _build(tmp_path, tiny_generator, tiny_clip)
    with pytest.raises(ValueError, match=r"seed: 3 in the cache, 4 now"):
        build_codes(tmp_path, tiny_generator, tiny_clip, samples=10, chunk_size=4, seed=4, identity={"g": "tiny"},
                    progress=False)


def test_reader_moments_and_missing_file(tmp_path, tiny_generator, tiny_clip):
    _build(tmp_path, tiny_generator, tiny_clip)
    reader = CodeReader(tmp_path)
    s = reader.take(np.arange(10), names=("s",))["s"].double()
    mean, std = reader.moments("s")
    torch.testing.assert_close(mean, s.mean(0).float())
    torch.testing.assert_close(std, s.std(0, unbiased=False).float(), atol=1e-5, rtol=1e-4)
    (tmp_path / "chunk-000000.safetensors").unlink()
    with pytest.raises(ValueError, match="chunk-000000.safetensors: missing"):
        CodeReader(tmp_path)


def _ws(g, n):
    return torch.randn(n, g.n_latent, g.arch.style_dim, generator=torch.Generator().manual_seed(1))


def test_real_latent_files_are_appended_once(tmp_path, tiny_generator, tiny_clip):
    g = tiny_generator
    _build(tmp_path / "codes", g, tiny_clip)
    ws = _ws(g, 5)
    np.save(tmp_path / "real.npy", ws.numpy())
    torch.save(ws[:2].clone(), tmp_path / "real.pt")
    add_latent_file(tmp_path / "codes", tmp_path / "real.npy", generator=g, clip_model=tiny_clip, progress=False)
    manifest = add_latent_file(tmp_path / "codes", tmp_path / "real.pt", generator=g, clip_model=tiny_clip,
                               progress=False)
    again = add_latent_file(tmp_path / "codes", tmp_path / "real.npy", generator=g, clip_model=tiny_clip,
                            progress=False)
    assert again == manifest
    assert [e["rows"] for e in manifest["real"]] == [4, 1, 2]  # chunk size 4
    reader = CodeReader(tmp_path / "codes")
    assert reader.rows == 17
    torch.testing.assert_close(reader.take(np.arange(10, 15), names=("ws",))["ws"], ws)
    torch.testing.assert_close(reader.take([15, 16], names=("ws",))["ws"], ws[:2])


@pytest.mark.parametrize("make, message", [
    (lambda p, ws: np.save(p.with_suffix(".npy"), ws[:, :3].numpy()), r"real.npy: W\+ codes must be \[N, 6, 16\]"),
    (lambda p, ws: np.save(p.with_suffix(".npy"), ws.numpy().astype(np.int64)), "real.npy: W\\+ codes must be floating"),
    (lambda p, ws: np.save(p.with_suffix(".npy"), np.array([{"a": 1}], dtype=object)), "real.npy: not a readable .npy"),
    (lambda p, ws: torch.save(ws.index_fill(0, torch.tensor([1]), float("nan")), p.with_suffix(".pt")),
     r"real.pt: 1 of 3 codes hold NaN or infinite values \(first: row 1\)"),
    (lambda p, ws: torch.save({"w": ws}, p.with_suffix(".pt")), "real.pt: expected one tensor"),
    (lambda p, ws: p.with_suffix(".pt").write_bytes(b"not a zip"), "real.pt: not a readable torch tensor file"),
    (lambda p, ws: p.with_suffix(".txt").write_text("1 2 3"), "real.txt: a W\\+ latent file must be .pt"),
    (lambda p, ws: np.save(p.with_suffix(".npy"), ws[:0].numpy()), r"real.npy: holds no codes"),
])
def test_bad_latent_files_are_one_line_naming_the_file(tmp_path, tiny_generator, tiny_clip, make, message):
    _build(tmp_path / "codes", tiny_generator, tiny_clip, samples=2, chunk=2)
    make(tmp_path / "real", _ws(tiny_generator, 3))
    path = next(p for p in tmp_path.iterdir() if p.name.startswith("real"))
    with pytest.raises(ValueError, match=message) as info:
        add_latent_file(tmp_path / "codes", path, generator=tiny_generator, clip_model=tiny_clip, progress=False)
    assert "\n" not in str(info.value)
    assert len(read_manifest(tmp_path / "codes")["real"]) == 0


def test_shared_weight_modconv_gives_the_same_images_and_restores_the_setting(tiny_generator):
    g = tiny_generator
    ws = _ws(g, 4)
    with torch.no_grad():
        want = g.synthesis(ws, noise_mode="const")
        with shared_weight_modconv(g):
            assert not any(m.fused for m in g.modules() if hasattr(m, "fused"))
            got = g.synthesis(ws, noise_mode="const")
    assert all(m.fused for m in g.modules() if hasattr(m, "fused"))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
