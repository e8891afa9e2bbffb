"""library_metrics(): the fixed names and families, applies on a bare context, no library loaded at import."""

from __future__ import annotations

import ast
from pathlib import Path

import torch

from zsgm.metrics.api import EvalContext
from zsgm.metrics.library import library_metrics
from zsgm.registry import MetricSpec


def test_names_families_and_applies():
    specs = {s.name: s for s in library_metrics()}
    assert all(isinstance(s, MetricSpec) for s in specs.values())
    assert {n: s.family for n, s in specs.items()} == {
        "fid": "fid", "kid": "fid", "intra-lpips": "lpips", "clip-text": "clip", "clip-image": "clip",
        "sifid": "sifid", "identity": "identity"}
    bare = EvalContext(generated=torch.zeros(4, 3, 32, 32))
    reasons = {n: s.applies(bare) for n, s in specs.items()}
    assert all(isinstance(r, str) and r and "\n" not in r for r in reasons.values()), reasons
    assert "--real DIR" in reasons["fid"] and "k=10" in reasons["intra-lpips"] and "--clip" in reasons["clip-text"]
    enough = EvalContext(generated=torch.zeros(10, 3, 32, 32))
    assert specs["intra-lpips"].applies(enough) is None
    enough.options["intra-lpips"] = {"centres": "somewhere"}
    assert specs["intra-lpips"].applies(EvalContext(generated=torch.zeros(2, 3, 8, 8),
                                                    options=enough.options)) is None


def test_metric_modules_import_no_metric_library_at_module_level():
    """Top-level imports only (checked in the source: a fresh interpreter would spend its time importing torch)."""
    import zsgm.metrics as pkg

    heavy = ("torch_fidelity", "lpips", "open_clip", "scipy", "zsgm.clip", "zsgm.perceptual", "zsgm.io_utils")
    for name in ("library", "fid", "frechet", "intra_lpips", "kmedoids", "clip_score", "sifid", "identity", "common"):
        tree = ast.parse((Path(pkg.__file__).parent / f"{name}.py").read_text())
        for node in tree.body:
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module or ""]
            else:
                continue
            assert not [m for m in mods if m.startswith(heavy)], (name, mods)


def test_every_metric_runs_on_one_context_and_records_the_common_fields(tmp_path):
    """All seven metrics on one EvalContext with stand-in networks: finite values and the record fields every
    number must carry (docs/EVALUATION.md, "Reporting record")."""
    import math

    import numpy as np
    from PIL import Image

    from test_metrics_fid import STANDIN, _standin_class  # tests/test_metrics_fid.py
    from zsgm.clip import tiny_random_clip

    g = torch.Generator().manual_seed(0)
    gen = torch.rand(10, 3, 32, 32, generator=g) * 2 - 1
    src = torch.rand(10, 3, 32, 32, generator=g) * 2 - 1
    (tmp_path / "real").mkdir()
    for i in range(6):
        Image.fromarray((np.random.RandomState(i).rand(32, 32, 3) * 255).astype(np.uint8)).save(
            tmp_path / "real" / f"{i}.png")
    target = tmp_path / "target.png"
    Image.fromarray((np.random.RandomState(9).rand(32, 32, 3) * 255).astype(np.uint8)).save(target)
    torch.manual_seed(0)
    block0 = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.ReLU()).eval()
    face = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 8, stride=8), torch.nn.Flatten()).eval()
    extractor = _standin_class()(STANDIN, ["8"])
    ctx = EvalContext(
        generated=gen, source=src, target_text="a sketch", target_images=[target], real_dir=tmp_path / "real",
        seed=3, truncation=0.7, noise_mode="const", weights={"lpips-net": "standin"},
        clip_judge=tiny_random_clip(),
        options={"fid": {"feature_extractor": extractor, "feature_layer": "8"}, "kid": {"kid_subsets": 5},
                 "intra-lpips": {"k": 3, "size": None}, "sifid": {"block0": block0}, "identity": {"net": face}})
    for spec in library_metrics():
        assert spec.applies(ctx) is None, spec.name
        result = spec.compute(ctx)
        assert spec.name in result.values and all(math.isfinite(v) for v in result.values.values()), spec.name
        rec = result.record
        assert rec["metric"] == spec.name and rec["protocol"] and rec["library"], spec.name
        assert (rec["n_generated"], rec["seed"], rec["truncation"], rec["noise_mode"]) == (10, 3, 0.7, "const")
