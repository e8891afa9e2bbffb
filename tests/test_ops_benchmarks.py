"""The GPU benchmarks' --smoke mode runs on CPU (tiny shapes, kernels emulated through the real host code), so
the scripts prepared for the device are checked before any device time is spent."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_ops_smoke(tmp_path, capsys):
    out = tmp_path / "ops.json"
    assert load("bench_ops").main(["--smoke", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    ops = {r["op"].split(" r=")[0] for r in data["rows"]}
    assert ops == {"bias_act lrelu", "blur-after-upconv", "blur-after-upconv-2pass", "upsample-skip"}
    assert {r["pass_"] for r in data["rows"]} == {"fwd", "bwd"}
    assert all(r["ref_ms"] > 0 and r["kernel_ms"] > 0 and "hbm_share" in r for r in data["rows"])
    assert "summary (r >= 8): min ref/kernel" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_nada_step_smoke_all_modes(tmp_path):
    out = tmp_path / "nada.json"
    assert load("bench_nada_step").main(["--smoke", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["mode"] for r in rows][:2] == ["ref", "kernels"] and all("ms" in r for r in rows)
    assert abs(rows[0]["loss"] - rows[1]["loss"]) < 1e-4  # emulated kernels give the reference's step


@pytest.mark.slow  # ~12 s on a shared 2-core machine (tiny CLIPs built, two modes, emulated kernels)
def test_bench_nada_step_smoke_two_modes(tmp_path, capsys):
    out = tmp_path / "nada.json"
    assert load("bench_nada_step").main(["--smoke", "--modes", "ref", "kernels+tf32+bf16clip+freeze",
                                         "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["mode"] for r in rows] == ["ref", "kernels+tf32+bf16clip+freeze"] and all(r["ms"] > 0 for r in rows)
    with pytest.raises(ValueError, match="unknown mode 'fast'"):
        load("bench_nada_step").main(["--smoke", "--modes", "fast"])
