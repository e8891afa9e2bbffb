"""Read NVIDIA stylegan2-ada-pytorch / stylegan3 ``.pkl`` files without executing anything.

Those pickles rebuild their networks by ``exec``-ing module source stored inside the file
(``torch_utils.persistence``). Our unpickler maps that reconstruction function to a stub that only
records the class name and state, allows a short list of tensor/numpy rebuild helpers, and refuses every
other global with an error naming it (OPS.md 3.2).
"""

from __future__ import annotations

import collections
import io
import pickle
from typing import Any

import torch

from zsgm.generator.errors import CheckpointError


class PersistentStub:
    """What a persistent NVIDIA object becomes: its class name and pickled ``__dict__`` (``state``)."""

    def __init__(self, meta: dict):
        self.class_name = meta.get("class_name", "?")
        self.state = meta.get("state") or {}
        self.module_src_ignored = True  # the embedded source is never executed


def _reconstruct_persistent_obj(meta):
    return PersistentStub(meta)


class EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict``."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setstate__(self, state):  # EasyDict pickles as a dict subclass; be tolerant
        if isinstance(state, dict):
            self.update(state)


def _load_storage_from_bytes(data: bytes):
    """Safe replacement of ``torch.storage._load_from_bytes`` (which would use weights_only=False)."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    allowed = {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
        ("dnnlib.util", "EasyDict"): EasyDict,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch", "FloatStorage"): torch.FloatStorage,
        ("torch", "HalfStorage"): torch.HalfStorage,
        ("torch", "DoubleStorage"): torch.DoubleStorage,
        ("torch", "LongStorage"): torch.LongStorage,
        ("torch", "IntStorage"): torch.IntStorage,
        ("torch", "BoolStorage"): torch.BoolStorage,
    }
    import numpy

    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "scalar")] = _numpy_scalar
        allowed[(mod, "_reconstruct")] = _numpy_reconstruct
    allowed[("numpy", "dtype")] = numpy.dtype
    allowed[("numpy", "ndarray")] = numpy.ndarray
    return allowed


def _numpy_scalar(dtype, data=None):
    import numpy

    return numpy.frombuffer(data, dtype=dtype)[0] if data is not None else dtype.type()


def _numpy_reconstruct(cls, shape, dtype):
    import numpy

    if cls is not numpy.ndarray:
        raise pickle.UnpicklingError("numpy reconstruction of a class other than ndarray")
    return numpy.ndarray.__new__(cls, shape, dtype)


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only allow-listed globals and never runs embedded code."""

    def __init__(self, file, *, source: str):
        super().__init__(file)
        self.source = source
        self.allowed = _allowed_globals()

    def find_class(self, module: str, name: str):
        key = (module, name)
        if key in self.allowed:
            return self.allowed[key]
        raise CheckpointError(f"{self.source}: refusing to load global {module}.{name} from the pickle "
                              f"(only tensors and NVIDIA network records are allowed; nothing was executed)")

    def persistent_load(self, pid):  # torch's zip-in-pickle storages never appear in plain pickles
        raise CheckpointError(f"{self.source}: unexpected persistent id in pickle: {pid!r}")


def load_pickle_safely(path: str) -> Any:
    """Unpickle ``path`` with :class:`SafeUnpickler`."""
    with open(path, "rb") as fh:
        try:
            return SafeUnpickler(fh, source=str(path)).load()
        except CheckpointError:
            raise
        except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError, IndexError) as exc:
            raise CheckpointError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc}); "
                                  f"the file may be truncated") from None


def flatten_stub(stub: PersistentStub, prefix: str = "") -> dict[str, torch.Tensor]:
    """Walk ``_parameters``, ``_buffers`` (persistent ones) and ``_modules``: the equivalent of ``state_dict()``."""
    state = stub.state
    out: dict[str, torch.Tensor] = {}
    non_persistent = set(state.get("_non_persistent_buffers_set") or ())
    for name, tensor in (state.get("_parameters") or {}).items():
        if tensor is not None:
            out[prefix + name] = tensor.detach() if isinstance(tensor, torch.Tensor) else torch.as_tensor(tensor)
    for name, tensor in (state.get("_buffers") or {}).items():
        if tensor is not None and name not in non_persistent:
            out[prefix + name] = tensor.detach()
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, PersistentStub):
            out.update(flatten_stub(child, prefix + name + "."))
        elif child is not None:
            raise CheckpointError(f"module {prefix + name!r} is not an NVIDIA network record")
    return out


def read_nvidia_pickle(path: str) -> tuple[dict[str, torch.Tensor], dict, dict | None]:
    """Returns ``(G_ema state dict with NVIDIA names, init kwargs, D state dict or None)``."""
    data = load_pickle_safely(path)
    if not isinstance(data, dict) or "G_ema" not in data:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path}: expected an NVIDIA network pickle with key 'G_ema', found {keys}")
    g = data["G_ema"]
    if not isinstance(g, PersistentStub):
        raise CheckpointError(f"{path}: 'G_ema' is not an NVIDIA network record (TF-era pickles are not "
                              f"supported yet; convert them with a rosinality/NVIDIA converter first)")
    kwargs = dict(g.state.get("_init_kwargs") or {})
    d = data.get("D")
    d_state = flatten_stub(d) if isinstance(d, PersistentStub) else None
    return flatten_stub(g), kwargs, d_state
