"""How the two parts of SVL's moment loss pull on the generator: gradient norms per term, step by step.

    OMP_NUM_THREADS=1 python -m zsgm_svl.balance --task photo:sketch --steps 10 \
        --candidate lambda_cov=1000 --candidate lambda_cov=1

Each ``--candidate`` is a set of ``moment`` options (``key=value`` joined by commas; values parsed as TOML, e.g.
``lambda_cov=1,squared=true``) applied to the ``svl`` preset on the shipped shapes generator and CLIP. For each,
the run trains ``--steps`` steps with the real loss (every technique of the preset) and, before each update,
records the value and the gradient norm (w.r.t. every trainable synthesis parameter) of the moment loss's
``mean`` term ``1 - cos(mu_I, mu_T)`` and of its ``cov`` term ``lambda_cov * ||Sigma_I - Sigma_T||``, each
multiplied by the technique's recipe weight. Stage 1 and the EWC Fisher run at their preset sizes unless shrunk
with ``--stage1-iterations`` / ``--fisher-samples``.

Used to choose the preset's moment convention (issue 14; ``plugins/zsgm-svl/README.md``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import tomllib
from pathlib import Path

import torch

from zsgm.loop import compute_losses, make_optimizer, set_default_trainable
from zsgm.run import build_run
from zsgm.step import StepBatch
from zsgm_svl.moment import Moment


def term_gradient_norms(run, step: int) -> dict[str, tuple[float, float]]:
    """``{term: (value, ||d weight*term / d theta||)}`` for the moment technique's terms on ``run.batch``.

    ``theta`` is every synthesis parameter that currently requires grad; the graph is kept, so the caller can
    still back-propagate the step's total loss.
    """
    moment = next(t for t in run.techniques if isinstance(t, Moment))
    params = [p for p in run.synthesis_parameters() if p.requires_grad]
    out = {}
    for term in moment.zsgm_loss(run=run, step=step):
        weighted = moment.use.weight * term.value
        grads = torch.autograd.grad(weighted, params, retain_graph=True, allow_unused=True)
        norm = torch.sqrt(sum(g.pow(2).sum() for g in grads if g is not None))
        out[term.name] = (float(term.value.detach()), float(norm))
    return out


def trace_moment_terms(recipe, *, steps: int, out_dir: str | Path) -> list[dict]:
    """Train ``steps`` steps of ``recipe`` as :func:`zsgm.loop.adapt` does (no checkpoints, grids or EMA) and
    return, per step, the moment terms' values and gradient norms measured before that step's update."""
    run = build_run(recipe, out_dir=out_dir)
    run.pm.hook.zsgm_setup(run=run)
    optimizer = make_optimizer(run)
    records = []
    for step in range(steps):
        run.step = step
        set_default_trainable(run)
        run.pm.hook.zsgm_before_step(run=run, step=step)
        run.batch = StepBatch(run, step)
        measured = term_gradient_norms(run, step)
        total, logged = compute_losses(run, step)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        run.pm.hook.zsgm_after_backward(run=run, step=step)
        optimizer.step()
        run.pm.hook.zsgm_after_step(run=run, step=step, log=logged)
        run.batch = None
        records.append({"step": step, **{f"{k}/value": v for k, (v, _) in measured.items()},
                        **{f"{k}/grad": g for k, (_, g) in measured.items()}})
    run.pm.hook.zsgm_teardown(run=run, error=None)
    run.release()  # the recipe's run.tf32 flags back as they were
    return records


def parse_candidate(text: str) -> dict:
    """``"lambda_cov=1,squared=true"`` -> ``{"lambda_cov": 1, "squared": True}`` (values as TOML)."""
    options = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--candidate {text!r}: expected key=value[,key=value...]")
        options[key.strip()] = tomllib.loads(f"v = {value.strip()}")["v"]
    return options


def main(argv: list[str] | None = None) -> None:
    from zsgm.plugins import get_registry
    from zsgm.recipe import recipe_from_dict
    from zsgm.toy.benchmark import shapes_recipe_data, task_texts

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="photo:sketch", help="SOURCE:TARGET (default photo:sketch)")
    parser.add_argument("--steps", type=int, default=10, help="training steps traced (default 10)")
    parser.add_argument("--candidate", action="append", default=None,
                        help="moment options, key=value[,key=value] (repeatable; default: the preset as it is)")
    parser.add_argument("--noise", choices=("fresh", "shared"), default="fresh", help="optim.noise (default fresh)")
    parser.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    parser.add_argument("--stage1-iterations", type=int, help="override semantic-variations iterations")
    parser.add_argument("--fisher-samples", type=int, help="override ewc samples")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    registry = get_registry()
    source, target = task_texts(args.task)
    shrink: dict = {}
    if args.stage1_iterations is not None:
        shrink["semantic-variations"] = {"iterations": args.stage1_iterations}
    if args.fisher_samples is not None:
        shrink["ewc"] = {"samples": args.fisher_samples}
    for candidate in args.candidate or [""]:
        options = {**shrink, "moment": {**shrink.get("moment", {}), **parse_candidate(candidate)}}
        data = shapes_recipe_data("svl", source, target, registry, seed=args.seed, technique_options=options,
                                  overrides={"optim": {"noise": args.noise}})
        recipe = recipe_from_dict(data, registry=registry, source=f"svl on {args.task}")
        with tempfile.TemporaryDirectory() as tmp:
            records = trace_moment_terms(recipe, steps=args.steps, out_dir=tmp)
        print(json.dumps({"candidate": candidate or "(preset)", "task": args.task, "records": records}))


if __name__ == "__main__":
    main()
