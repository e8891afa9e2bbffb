"""Synthetic NVIDIA stylegan2-ada-pytorch pickles for tests (shared by the generator and discriminator tests).

Stand-in modules registered as ``torch_utils.persistence`` and ``dnnlib.util`` in ``sys.modules`` (through
pytest's ``monkeypatch``, so for one test only) reproduce what NVIDIA's persistence wrapper writes: every module is
pickled as ``_reconstruct_persistent_obj(meta)`` with its embedded source, its class name and an ``nn.Module``
``__dict__``-shaped state around real tensors, so torch's own tensor/storage reduction paths run.
"""

from __future__ import annotations

import collections
import sys
import types
from typing import Callable

import numpy as np
import torch

#: What NVIDIA registers as buffers (the rest of a module's tensors are parameters).
NVIDIA_BUFFERS = ("resample_filter", "noise_const", "w_avg")


def install_nvidia_modules(monkeypatch, *, reconstruct: Callable[[dict], object], module_src: str):
    """Register the stand-in modules and return a namespace with ``EasyDict`` and ``tree``.

    Args:
        reconstruct: what ``_reconstruct_persistent_obj(meta)`` does if anything ever calls it (the loader must
            not: it reads the pickle without executing it).
        module_src: the source embedded in every pickled module (what NVIDIA's loader would exec).

    ``tree(flat, class_name, kwargs)`` nests a flat NVIDIA state dict into persistent module records.
    """
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):
        return reconstruct(meta)

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")

    class EasyDict(dict):
        pass

    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    util.EasyDict = EasyDict
    for name, mod in (("torch_utils", types.ModuleType("torch_utils")), ("torch_utils.persistence", persistence),
                      ("dnnlib", types.ModuleType("dnnlib")), ("dnnlib.util", util)):
        monkeypatch.setitem(sys.modules, name, mod)

    class Persistent:
        """Pickles the way NVIDIA's persistent classes do: ``_reconstruct_persistent_obj(meta)``."""

        def __init__(self, class_name, state):
            self.class_name, self.state = class_name, state

        def __reduce__(self):
            return (persistence._reconstruct_persistent_obj,
                    ({"type": "class", "version": 6, "module_src": module_src, "class_name": self.class_name,
                      "state": self.state},))

    def node(flat, prefix, names, cls):
        children, params, bufs = collections.OrderedDict(), collections.OrderedDict(), collections.OrderedDict()
        for name in names:
            head, _, tail = name[len(prefix):].partition(".")
            if tail:
                children.setdefault(head, []).append(name)
            elif head in NVIDIA_BUFFERS:
                bufs[head] = flat[name]
            else:
                params[head] = torch.nn.Parameter(flat[name].detach(), requires_grad=False)  # no copy: stride-0 views stay small
        return Persistent(cls, {
            "training": False, "_parameters": params, "_buffers": bufs, "_non_persistent_buffers_set": set(),
            "_modules": collections.OrderedDict((h, node(flat, prefix + h + ".", ns, "Layer"))
                                                for h, ns in children.items()),
            "_forward_hooks": collections.OrderedDict(), "_init_args": (), "_init_kwargs": EasyDict(),
            "weight_gain": np.float32(0.25), "act_gain": np.float64(np.sqrt(2)),  # numpy scalars, as NVIDIA has
        })

    def tree(flat, class_name, kwargs):
        top = node(flat, "", list(flat), class_name)
        top.state["_init_kwargs"] = kwargs
        return top

    return types.SimpleNamespace(EasyDict=EasyDict, tree=tree)
