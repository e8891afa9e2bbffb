"""The generator's custom ops behind one dispatch point (``impl = "auto" | "cuda" | "ref"``)."""

from zsgm.ops.bias_act import ACTIVATIONS, bias_act, bias_act_ref
from zsgm.ops.dispatch import OpUnavailableError, register_cuda_impl, select_impl
from zsgm.ops.modconv import modulated_conv2d
from zsgm.ops.upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upfirdn2d_ref, upsample2d

from zsgm.ops import cuda_backend as _cuda_backend

_cuda_backend.register()  # records loaders only: CuPy is imported and kernels compiled on first CUDA use

__all__ = [
    "ACTIVATIONS", "OpUnavailableError", "bias_act", "bias_act_ref", "downsample2d", "filter2d",
    "modulated_conv2d", "register_cuda_impl", "select_impl", "setup_filter", "upfirdn2d", "upfirdn2d_ref",
    "upsample2d",
]
