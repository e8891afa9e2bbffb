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
