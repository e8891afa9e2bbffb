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
    """Safe replacement of ``torch.storage._load_from_bytes`` (the stock helper uses ``weights_only=False``)."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _numpy_scalar(dtype, data=None):
    """Replacement of numpy's ``multiarray.scalar``: decode raw bytes only, never object scalars."""
    import numpy

    if not isinstance(dtype, numpy.dtype) or dtype.hasobject or not isinstance(data, (bytes, type(None))):
        raise pickle.UnpicklingError(f"numpy scalar of dtype {dtype!r} with {type(data).__name__} data is not "
                                     f"allowed (only plain numeric scalars)")
    return numpy.frombuffer(data, dtype=dtype)[0] if data is not None else dtype.type()


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The allow-list of OPS.md 3.2; everything else is refused by :meth:`SafeUnpickler.find_class`."""
    import numpy

    return {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
        ("dnnlib.util", "EasyDict"): EasyDict,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("numpy.core.multiarray", "scalar"): _numpy_scalar,  # NumPy 1 spelling
        ("numpy._core.multiarray", "scalar"): _numpy_scalar,  # NumPy 2 spelling
        ("numpy", "dtype"): numpy.dtype,
    }


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
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    with fh:
        try:
            return SafeUnpickler(fh, source=str(path)).load()
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of a user file becomes one clear error
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise CheckpointError(f"{path}: not a readable NVIDIA network pickle ({type(exc).__name__}: {first}); "
                                  f"the file may be truncated or damaged") from None


def flatten_stub(stub: PersistentStub, prefix: str = "", *, _seen: set[int] | None = None) -> dict[str, torch.Tensor]:
    """Walk ``_parameters``, persistent ``_buffers`` and ``_modules``: the equivalent of ``state_dict()``.

    Args:
        stub: a network record from :class:`SafeUnpickler`.
        prefix: name prefix of this module (``"synthesis.b8."``).

    Returns:
        ``{name: tensor}`` with NVIDIA names.

    Raises:
        CheckpointError: a record whose state is not a module ``__dict__`` (message names the module).
    """
    seen = set() if _seen is None else _seen
    if id(stub) in seen:
        raise CheckpointError(f"module {prefix.rstrip('.')!r} appears inside itself")
    seen.add(id(stub))
    state = stub.state
    where = prefix.rstrip(".") or "<top>"
    if not isinstance(state, dict):
        raise CheckpointError(f"module {where!r} ({stub.class_name}) has no module state")
    out: dict[str, torch.Tensor] = {}
    non_persistent = set(state.get("_non_persistent_buffers_set") or ())
    for kind in ("_parameters", "_buffers"):
        for name, tensor in (state.get(kind) or {}).items():
            if tensor is None or (kind == "_buffers" and name in non_persistent):
                continue
            if not isinstance(tensor, torch.Tensor):
                raise CheckpointError(f"{prefix + name!r} is a {type(tensor).__name__}, expected a tensor")
            out[prefix + name] = tensor.detach()
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, PersistentStub):
            out.update(flatten_stub(child, prefix + name + ".", _seen=seen))
        elif child is not None:
            raise CheckpointError(f"module {prefix + name!r} is a {type(child).__name__}, expected an NVIDIA "
                                  f"network record")
    return out


def read_nvidia_pickle(path: str) -> tuple[dict[str, torch.Tensor], dict, dict | None]:
    """Read an NVIDIA network pickle without executing anything.

    Returns:
        ``(G_ema state dict with NVIDIA names, G_ema init kwargs, D state dict or None)``.

    Raises:
        CheckpointError: naming ``path`` and what was expected and found.
    """
    data = load_pickle_safely(path)
    if not isinstance(data, dict) or "G_ema" not in data:
        keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path}: expected an NVIDIA network pickle with key 'G_ema', found {keys}")
    g = data["G_ema"]
    if not isinstance(g, PersistentStub):
        raise CheckpointError(f"{path}: 'G_ema' is a {type(g).__name__}, not an NVIDIA network record (TF-era "
                              f"pickles are not supported; convert them to a rosinality .pt first)")
    kwargs = g.state.get("_init_kwargs") if isinstance(g.state, dict) else None
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{path}: 'G_ema' has no init kwargs table (found {type(kwargs).__name__}); the "
                              f"architecture cannot be read")
    try:
        d = data.get("D")
        d_state = flatten_stub(d) if isinstance(d, PersistentStub) else None
        return flatten_stub(g), dict(kwargs), d_state
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except RecursionError:
        raise CheckpointError(f"{path}: the network records nest too deeply to be a generator") from None
