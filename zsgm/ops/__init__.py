"""The generator's custom ops behind one dispatch point (``impl = "auto" | "cuda" | "ref"``).

Pure-torch references (differentiable to any order) run everywhere; a CUDA backend plugs in through
:func:`register_cuda_impl` and is loaded lazily on first use with CUDA tensors (see :mod:`zsgm.ops.dispatch`).
"""

from zsgm.ops.bias_act import ACTIVATIONS, bias_act, bias_act_function, bias_act_ref
from zsgm.ops.dispatch import OpFallbackWarning, OpUnavailableError, register_cuda_impl, select_impl
from zsgm.ops.modconv import modulated_conv2d
from zsgm.ops.upfirdn2d import (
    downsample2d,
    filter2d,
    setup_filter,
    upfirdn2d,
    upfirdn2d_adjoint_params,
    upfirdn2d_function,
    upfirdn2d_ref,
    upsample2d,
)

from zsgm.ops import cuda_backend as _cuda_backend

_cuda_backend.register()  # records loaders only: CuPy is imported and kernels compiled on first CUDA use

__all__ = [
    "ACTIVATIONS", "OpFallbackWarning", "OpUnavailableError", "bias_act", "bias_act_function", "bias_act_ref",
    "downsample2d", "filter2d", "modulated_conv2d", "register_cuda_impl", "select_impl", "setup_filter",
    "upfirdn2d", "upfirdn2d_adjoint_params", "upfirdn2d_function", "upfirdn2d_ref", "upsample2d",
]
