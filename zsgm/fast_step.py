"""The fast-step options of a run (``run.tf32``, ``run.autocast``, ``run.channels_last``, ``run.compile``).

Each option is one function over plain modules, and :func:`apply_fast_step` applies the recipe's choice to a
:class:`zsgm.run.Run` (its generators and CLIP models) once, after the run has built (and copied) them:

- :func:`set_tf32`: TF32 for float32 matmuls and cuDNN convolutions, both exactly as asked (``run.tf32 =
  false`` turns cuDNN's default TF32 convolutions off too, so a recipe's numbers do not depend on defaults).
- :func:`wrap_method` with ``autocast=True``: the generators' ``synthesis`` and/or the CLIP models'
  ``encode_image`` run under bfloat16 autocast on their device; their outputs come back as float32, so
  losses are computed in float32. The CuPy kernels take float16/32/64 only, so a generator under autocast
  uses the reference ops (``set_impl("ref")``; Inductor or cuBLAS do the work there).
- ``channels_last=True``: the module's 4-D parameters/buffers and the method's 4-D tensor inputs in
  channels-last memory format (cuDNN's preferred layout for bf16/fp16 convolutions).
- ``compile=True``: ``torch.compile`` of the method, with a clear fallback: if compiling (which happens at
  the first call) raises, one :class:`FastStepWarning` names the method and the error and the method runs
  eagerly from then on. A compiled generator uses the reference ops (CuPy calls are graph breaks; Inductor
  fuses the reference's bias + activation + gain + clamp).

Wrapped methods are instance attributes (:class:`MethodWrapper`) that survive ``copy.deepcopy`` of their
module: the copy gets its own wrapper of the same options over the copied module.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, Iterable

import attrs
import torch

AUTOCAST_PARTS = ("generator", "clip")
AUTOCAST_DTYPE = torch.bfloat16


class FastStepWarning(UserWarning):
    """A fast-step option could not be applied as asked (e.g. ``torch.compile`` failed: the method runs eagerly)."""


@attrs.frozen(kw_only=True)
class FastStepOptions:
    """The recipe's fast-step choice (``RunConfig.tf32/autocast/channels_last/compile``)."""

    tf32: bool = False
    autocast: tuple[str, ...] = ()
    channels_last: bool = False
    compile: bool = False

    def __attrs_post_init__(self):
        bad = [p for p in self.autocast if p not in AUTOCAST_PARTS]
        if bad:
            raise ValueError(f"run.autocast: unknown part(s) {bad}; expected any of {list(AUTOCAST_PARTS)}")

    @classmethod
    def from_run_config(cls, run_cfg: Any) -> "FastStepOptions":
        """From a :class:`zsgm.recipe_model.RunConfig` (or anything with the four attributes)."""
        return cls(tf32=bool(run_cfg.tf32), autocast=tuple(run_cfg.autocast),
                   channels_last=bool(run_cfg.channels_last), compile=bool(run_cfg.compile))

    @property
    def any(self) -> bool:
        return self.tf32 or bool(self.autocast) or self.channels_last or self.compile


def saved_tf32() -> Callable[[], None]:
    """A function that puts torch's process-wide TF32 flags (float32 matmuls, cuDNN convolutions) back as they
    are now."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32

    def restore() -> None:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old

    return restore


def set_tf32(enabled: bool) -> Callable[[], None]:
    """Allow (or forbid) TF32 in float32 matmuls and cuDNN convolutions; returns a function that restores the
    previous flags (:func:`saved_tf32`). Process-wide (torch's flags are global)."""
    restore = saved_tf32()
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)
    return restore


def autocast_context(device: torch.device | str, enabled: bool = True, dtype: torch.dtype = AUTOCAST_DTYPE):
    """``torch.autocast`` for ``device``'s type (cuda or cpu) in ``dtype``, or a null context when disabled."""
    device = torch.device(device)
    if not enabled:
        return contextlib.nullcontext()
    if device.type not in ("cuda", "cpu"):
        raise ValueError(f"autocast: device type {device.type!r} is not supported (cuda or cpu)")
    return torch.autocast(device_type=device.type, dtype=dtype)


def _params_to_channels_last(module: torch.nn.Module) -> None:
    """The module's 4-D parameters and buffers in channels-last memory format, in place (``module.to(memory_format=)``
    would also hand the generator's 1-D ``latent_avg`` to the converter, which refuses it)."""
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            if t.ndim == 4:
                t.data = t.data.contiguous(memory_format=torch.channels_last)


def _to_channels_last(value):
    if isinstance(value, torch.Tensor) and value.ndim == 4:
        return value.contiguous(memory_format=torch.channels_last)
    if isinstance(value, (list, tuple)):
        return type(value)(_to_channels_last(v) for v in value)
    return value


def _float32(value):
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float32:
        return value.float()
    if isinstance(value, (list, tuple)):
        return type(value)(_float32(v) for v in value)
    return value


class MethodWrapper:
    """``owner.<name>`` replaced by the same method under autocast / channels-last inputs / torch.compile.

    Calls go to the class's method bound to ``owner`` (so the wrapper adds no reference cycle through a
    bound method of another object); ``copy.deepcopy`` of the owner re-wraps the copy with the same options.
    """

    def __init__(self, owner: torch.nn.Module, name: str, *, device: torch.device | str,
                 autocast: bool = False, channels_last: bool = False, compile: bool = False,
                 compile_kwargs: dict | None = None):
        self.owner, self.name, self.device = owner, name, torch.device(device)
        self.autocast, self.channels_last, self.compile = autocast, channels_last, compile
        self.compile_kwargs = dict(compile_kwargs or {})
        self.eager = getattr(type(owner), name).__get__(owner)
        self.compiled = torch.compile(self._body, **self.compile_kwargs) if compile else None
        self.compile_error: str | None = None
        self._compiled_ok = False

    def options(self) -> dict:
        return dict(device=self.device, autocast=self.autocast, channels_last=self.channels_last,
                    compile=self.compile, compile_kwargs=self.compile_kwargs)

    def _body(self, *args, **kwargs):
        if self.channels_last:
            args = _to_channels_last(args)
            kwargs = {k: _to_channels_last(v) for k, v in kwargs.items()}
        with autocast_context(self.device, self.autocast):
            out = self.eager(*args, **kwargs)
        return _float32(out) if self.autocast else out

    def __call__(self, *args, **kwargs):
        if self.compiled is not None and self.compile_error is None:
            try:
                out = self.compiled(*args, **kwargs)
                self._compiled_ok = True
                return out
            except Exception as exc:  # noqa: BLE001 - any compiler failure: run eagerly instead
                if self._compiled_ok:
                    raise  # it compiled and ran before: this is an error of the call, not of compiling
                self.compile_error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
                warnings.warn(f"zsgm.fast_step: torch.compile of {type(self.owner).__name__}.{self.name} failed "
                              f"({self.compile_error}); running it eagerly (set run.compile = false to skip "
                              f"compiling)", FastStepWarning, stacklevel=2)
        return self._body(*args, **kwargs)

    def __deepcopy__(self, memo):
        copied_owner = memo.get(id(self.owner))
        if copied_owner is None:  # copying the wrapper alone: it keeps pointing at its module
            return self
        return MethodWrapper(copied_owner, self.name, **self.options())


def wrap_method(owner: torch.nn.Module, name: str, *, device: torch.device | str, autocast: bool = False,
                channels_last: bool = False, compile: bool = False, compile_kwargs: dict | None = None) \
        -> MethodWrapper | None:
    """Replace ``owner.<name>`` (a method of its class) with a :class:`MethodWrapper` of these options.

    With ``channels_last`` the module's own 4-D parameters and buffers are converted too. Returns the
    wrapper, or None when every option is off (nothing changes). Wrapping twice is refused.
    """
    if not (autocast or channels_last or compile):
        return None
    if isinstance(owner.__dict__.get(name), MethodWrapper):
        raise ValueError(f"{type(owner).__name__}.{name} is already wrapped by zsgm.fast_step")
    if not callable(getattr(type(owner), name, None)):
        raise ValueError(f"{type(owner).__name__} has no method {name!r} to wrap")
    if channels_last:
        _params_to_channels_last(owner)
    wrapper = MethodWrapper(owner, name, device=device, autocast=autocast, channels_last=channels_last,
                            compile=compile, compile_kwargs=compile_kwargs)
    object.__setattr__(owner, name, wrapper)  # an instance attribute shadows the class's method
    return wrapper


def unwrap_method(owner: torch.nn.Module, name: str) -> None:
    """Undo :func:`wrap_method` (the class's method is seen again)."""
    if isinstance(owner.__dict__.get(name), MethodWrapper):
        del owner.__dict__[name]


def prepare_generator(generator: torch.nn.Module, options: FastStepOptions, device: torch.device | str,
                      method: str = "synthesis") -> MethodWrapper | None:
    """Apply the generator part of ``options`` to one generator's ``synthesis`` (see the module docstring)."""
    autocast = "generator" in options.autocast
    if (autocast or options.compile) and hasattr(generator, "set_impl"):
        generator.set_impl("ref")  # kernels: no bf16, and graph breaks under torch.compile
    return wrap_method(generator, method, device=device, autocast=autocast, channels_last=options.channels_last,
                       compile=options.compile)


def prepare_clip(model: torch.nn.Module, options: FastStepOptions, device: torch.device | str,
                 method: str = "encode_image") -> MethodWrapper | None:
    """Apply the CLIP part of ``options`` to one CLIP model's ``encode_image``."""
    return wrap_method(model, method, device=device, autocast="clip" in options.autocast,
                       channels_last=options.channels_last, compile=options.compile)


def apply_fast_step(run: Any, options: FastStepOptions | None = None) -> FastStepOptions:
    """Apply ``run.recipe.run``'s fast-step options to a built :class:`zsgm.run.Run`.

    Call once, after the run built its generators (``g_source``, ``g_target``, ``g_ema``) and CLIP models.
    ``g_ema`` (the sampling copy, no gradients) gets the generator options too; copies made later
    (``copy.deepcopy``) keep them. Returns the options applied.
    """
    options = options or FastStepOptions.from_run_config(run.recipe.run)
    if options.tf32:  # off: torch's own defaults stay (TF32 cuDNN convolutions, no TF32 matmuls)
        set_tf32(True)
    generators: Iterable = (g for g in (run.g_source, run.g_target, getattr(run, "g_ema", None)) if g is not None)
    for g in generators:
        prepare_generator(g, options, run.device)
    clip_device = getattr(run, "clip_device", run.device)
    for model in run.clip_models:
        prepare_clip(model, options, clip_device)
    return options


__all__ = ["AUTOCAST_DTYPE", "AUTOCAST_PARTS", "FastStepOptions", "FastStepWarning", "MethodWrapper",
           "apply_fast_step", "autocast_context", "prepare_clip", "prepare_generator", "saved_tf32", "set_tf32",
           "unwrap_method", "wrap_method"]
