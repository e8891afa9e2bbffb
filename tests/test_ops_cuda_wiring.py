"""The CUDA path without a GPU: Function wiring driven by a torch emulation of the kernels, and the .cu
sources compiled by nvcc when it is installed. (Kernel numerics on a GPU: tests/test_ops_cuda_gpu.py.)"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from zsgm.ops import bias_act, upfirdn2d
from zsgm.ops.autograd import TorchEmulatedKernel, bias_act_function, upfirdn2d_function
from zsgm.ops.cuda_backend import kernel_text

KERNEL = TorchEmulatedKernel()
ASYM = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]], dtype=torch.float64)


def away_from_kinks(x, clamp):
    x = x + 0.3 * torch.sign(x)  # away from 0
    return torch.where((x.abs() - clamp).abs() < 0.2, x * 0.5, x)  # away from +-clamp


@pytest.mark.parametrize("act", ["linear", "relu", "lrelu"])
@pytest.mark.parametrize("clamp", [None, 1.5])
def test_bias_act_function_first_and_second_order(act, clamp):
    g = torch.Generator().manual_seed(0)
    x = away_from_kinks(torch.randn(2, 3, 5, 4, dtype=torch.float64, generator=g), clamp or 99.0)
    x.requires_grad_(True)
    b = (torch.randn(3, dtype=torch.float64, generator=g) * 0.01).requires_grad_(True)
    fn = lambda a, c: bias_act_function(KERNEL, a, c, act=act, clamp=clamp)  # noqa: E731
    assert torch.allclose(fn(x, b), bias_act(x, b, act=act, clamp=clamp, impl="ref"))
    assert gradcheck(fn, (x, b))
    assert gradgradcheck(fn, (x, b))


def test_bias_act_function_other_dim_and_saturation_mask():
    x = torch.tensor([[-3.0, 0.5], [2.0, -0.5]], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([1.0, -1.0], dtype=torch.float64, requires_grad=True)
    y = bias_act_function(KERNEL, x, b, dim=0, act="lrelu", clamp=1.0)
    y.sum().backward()
    # row 0: x + 1 = (-2, 1.5) -> lrelu*sqrt2 = (-0.566, 2.12 -> clamped); row 1: x - 1 = (1, -1.5)
    assert torch.allclose(x.grad, torch.tensor([[0.2 * 2 ** 0.5, 0.0], [0.0, 0.2 * 2 ** 0.5]], dtype=torch.float64))
    assert torch.allclose(b.grad, x.grad.sum(1))


@pytest.mark.parametrize("up,down,pad,flip", [(2, 1, (2, 1, 2, 1), False), (1, 2, (1, 1, 0, 2), True),
                                              (1, 1, (-1, 2, 1, 0), False), ((2, 1), (1, 2), (0, 1, 2, 0), True)])
def test_upfirdn2d_function_matches_reference_to_second_order(up, down, pad, flip):
    x = torch.randn(2, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    fn = lambda a: upfirdn2d_function(KERNEL, a, ASYM, up=up, down=down, padding=pad, flip_filter=flip)  # noqa
    assert torch.allclose(fn(x), upfirdn2d(x, ASYM, up=up, down=down, padding=pad, flip_filter=flip, impl="ref"))
    assert gradcheck(fn, (x,))
    assert gradgradcheck(fn, (x,))


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
