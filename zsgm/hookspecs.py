"""Every hook a zsgm plugin can implement.

There are two kinds of hooks.

*Registration hooks* are implemented by plugin **modules** loaded from the ``zsgm`` entry-point group.
They are historic: a plugin registered late is replayed every registration call made so far.

*Run hooks* are implemented by **technique instances** (``torch.nn.Module`` subclasses built from a
recipe). Each run owns a private plugin manager holding only its own technique instances, so two runs
in one process never share state. The loop calls them in this order::

    zsgm_attach(run)                                  once, when the run is built (before a checkpoint is restored)
    zsgm_setup(run)                                   once, before step 0 (also on resume)
    zsgm_trainable(run)                               once, after setup: extra parameter groups
    zsgm_optimizers(run)                              once, after setup: the technique's own optimisers
    for step in range(start, steps):
        zsgm_before_step(run, step)                   choose trainable layers, refresh state
        zsgm_directions(run, step)                    text-side directions (first result wins)
        zsgm_loss(run, step)                          named, unweighted terms
        zsgm_skip_update(run, step)                   any True: no update this step (losses still logged)
        backward()
        zsgm_after_backward(run, step)
        optimizer step, EMA
        zsgm_after_step(run, step, log)               anchors, extra logging (log: the step's logged values)
    zsgm_teardown(run, error)                         always, with the exception or None
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "zsgm"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# --------------------------------------------------------------------------------------------------
# Registration hooks (plugin modules)
# --------------------------------------------------------------------------------------------------


@hookspec(historic=True)
def zsgm_register_techniques(register):
    """Register techniques.

    Args:
        register: ``register(TechniqueSpec(...))``. A :class:`zsgm.registry.TechniqueSpec` names the
            technique (the ``use = "..."`` of a recipe), its attrs config class and the class (or
            factory) building the ``torch.nn.Module`` instance that implements the run hooks.
    """


@hookspec(historic=True)
def zsgm_register_presets(register):
    """Register named recipes that reproduce a paper setup.

    Args:
        register: ``register(PresetSpec(name, description, build))`` where ``build(**overrides)``
            returns a recipe dict (the same structure as a TOML recipe).
    """


@hookspec(historic=True)
def zsgm_register_generators(register):
    """Register named generators usable as ``[generator] checkpoint = "<name>"``.

    Args:
        register: ``register(GeneratorSpec(name, description, load))`` where ``load(device)`` returns
            ``(Generator, info_dict)``.
    """


@hookspec(historic=True)
def zsgm_register_clip_models(register):
    """Register named CLIP models usable as ``[[clip.models]] name = "<name>"``.

    Args:
        register: ``register(ClipSpec(name, description, load))`` where ``load(spec, device)`` returns
            a :class:`zsgm.clip.ClipModel`.
    """


@hookspec(historic=True)
def zsgm_register_metrics(register):
    """Register evaluation metrics.

    Args:
        register: ``register(MetricSpec(name, description, compute))``.
    """


@hookspec(historic=True)
def zsgm_register_commands(register):
    """Register ``zsgm`` subcommands.

    Args:
        register: ``register(CommandSpec(name, add_arguments, run, help))`` (:class:`zsgm.commands.CommandSpec`).
    """


# --------------------------------------------------------------------------------------------------
# Run hooks (technique instances of one run)
# --------------------------------------------------------------------------------------------------


@hookspec
def zsgm_attach(run):
    """Build submodules that need the run's models (a discriminator loaded from the source checkpoint, a head
    sized from it) and put them on ``run.device``.

    Called once at the end of building the run, after every technique is registered and *before* a resume's
    checkpoint is restored: what is attached here is part of the technique's ``state_dict``, so a resumed run
    gets the trained values back (strictly: every key must match). No randomness may be drawn from torch's
    global generator here; use a seeded ``torch.Generator`` (e.g. ``run.rng(0, "<entry name>/init")``).
    """


@hookspec
def zsgm_setup(run):
    """Prepare before step 0: prompt pre-training, Fisher estimates, reference search.

    Called again when a run is resumed, *after* the technique's ``state_dict`` has been restored, so a
    technique can skip work whose result it already holds. Runs with gradients enabled.
    """


@hookspec
def zsgm_trainable(run):
    """Return extra parameter groups for the optimiser, as a list of dicts (``{"params": [...], "lr": ...}``).

    Called once after ``zsgm_setup``. The target generator's synthesis parameters are always included by
    the core.
    """


@hookspec
def zsgm_optimizers(run):
    """Return the technique's own optimisers as ``{key: torch.optim.Optimizer}`` (e.g. a discriminator's).

    Called once after ``zsgm_setup`` and ``zsgm_trainable``. The core keeps them as
    ``run.technique_optimizers["<entry name>/<key>"]``, saves their state in every run checkpoint and restores
    it on resume; the technique steps them itself on its own schedule (inside ``zsgm_before_step`` or
    ``zsgm_after_step``), drawing its randomness from ``run.rng(step, ...)`` so that a resumed run is
    bit-identical. Their parameters must not be synthesis parameters (those belong to the core's optimiser).
    """


@hookspec
def zsgm_before_step(run, step):
    """Called at the start of each step, before any forward pass (e.g. adaptive layer freezing)."""


@hookspec(firstresult=True)
def zsgm_directions(run, step):
    """Return the text-side directions for this step's batch, or None to let another provider answer.

    Returns:
        A list with one tensor per CLIP model of the ensemble, each ``[D]`` (shared direction) or
        ``[N, D]`` (one per sample), unit length. Only one technique of a recipe may provide directions;
        a second provider is reported when the recipe is built. When nobody provides them the core uses
        the global template-ensemble direction between the recipe's source and target texts.
    """


@hookspec
def zsgm_loss(run, step):
    """Return this technique's loss terms for the step: a list of :class:`zsgm.registry.Term`.

    Terms are *unweighted*; the recipe owns the technique's ``weight`` and ``every`` interval (a
    technique whose interval does not include ``step`` is not called).
    """


@hookspec
def zsgm_skip_update(run, step):
    """Return True to make this step compute and log its losses but update nothing: no backward, no
    ``zsgm_after_backward``, no optimiser step, no EMA (``zsgm_after_step`` still runs). One True is enough.

    For a released training loop that does not update at some step (AIR's has no update at step 0).
    """


@hookspec
def zsgm_after_backward(run, step):
    """Called after ``backward()`` and before the optimiser step (gradient surgery, clipping)."""


@hookspec
def zsgm_after_step(run, step, log):
    """Called after the optimiser and EMA updates (anchor refresh, extra logging).

    Args:
        log: the step's logged values, ``{"<technique>/<term>": float, ..., "total": float}`` (what
            ``losses.jsonl`` gets), on the steps whose values the loop has fetched from the device (every
            ``run.log_every`` steps, at every checkpoint and at the last step); None on the other steps, so a logger never forces a
            host synchronisation. An implementation may leave ``log`` out of its signature.
    """


@hookspec
def zsgm_teardown(run, error):
    """Called once when the run ends, normally (``error`` is None) or with the exception."""
