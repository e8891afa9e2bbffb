"""The CUDA kernel sources without a GPU: self-contained for NVRTC, and compiled by nvcc when it is installed.
(Autograd wiring of the kernels, driven by torch emulations: test_ops_bias_act.py and test_ops_upfirdn2d.py;
kernel numerics on a GPU: test_ops_cuda_gpu.py.)"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from zsgm.ops.cuda_backend import kernel_text


def test_kernel_sources_are_self_contained_for_nvrtc():
    for name in ("bias_act.cu", "upfirdn2d.cu"):
        text = kernel_text(name)
        assert "#include" not in text and 'extern "C" __global__' in text


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
@pytest.mark.parametrize("name", ["bias_act.cu", "upfirdn2d.cu"])
def test_kernel_sources_compile_with_nvcc(tmp_path, name):
    src = tmp_path / name
    src.write_text(kernel_text(name))
    result = subprocess.run(["nvcc", "-std=c++17", "-arch=sm_90", "-c", str(src), "-o", str(tmp_path / "k.o")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
