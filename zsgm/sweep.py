"""``zsgm sweep``: many adaptations from one file, each its own run directory, resumable as a whole.

A sweep file (TOML) names a shared base and the runs::

    preset = "nada-shapes"          # optional: a named recipe (see `zsgm plugins`)
    recipe = "base.toml"            # optional: a recipe file, relative to the sweep file
    [base]                          # optional: recipe fields every run gets
    optim = { steps = 100 }

    [[runs]]
    name = "sketch"                 # the run directory's name under --out (default: NN-<target>)
    target = "a sketch"
    [[runs]]
    name = "pastel"
    source = "photo"
    target = "pastel drawing"
    optim = { lr = 0.001 }          # any recipe field; a run may also give its own `recipe` or `preset`

Each run's recipe is the preset, then the recipe file, then ``[base]``, then the run's own fields (later ones
win). Runs go one after another in this process (``--jobs 1``), or over K worker processes (``--jobs K``), each
job a ``zsgm adapt`` process with its output in ``<out>/logs/<name>.log``; ``--devices 0,1`` gives worker slot
``s`` the GPU ``devices[s % len(devices)]`` through ``CUDA_VISIBLE_DEVICES``.

A failing run (a bad recipe, a missing file, a non-finite loss, a crash) is reported and the others go on.
Running the same sweep again resumes it: a run that has finished is skipped, a run with a checkpoint is resumed
(``zsgm adapt --resume``; its recipe must still match), any other is started. The end prints a table of every
run and writes ``<out>/summary.json``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import attrs

from zsgm.cli_errors import CommandLineError, describe_error, user_error_classes

SWEEP_KEYS = {"preset", "recipe", "base", "runs"}
RUN_KEYS = {"name", "preset", "recipe"}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@attrs.define
class SweepRun:
    """One run of a sweep.

    Attributes:
        name: its directory's name under the sweep's ``--out``.
        data: its recipe, as a dict (not yet checked), or None when it could not be put together.
        problem: why it could not be put together (a file that does not read, an unknown preset).
    """

    name: str
    data: dict | None = None
    problem: str | None = None


@attrs.define
class Outcome:
    """What became of one run.

    Attributes:
        status: ``"done"`` (ran to its end now), ``"finished before"`` (skipped), ``"failed"``.
        resumed: it continued a checkpoint.
        steps_done / steps_total: steps done in all, and the recipe's.
        total: the last logged total loss (None if none).
        seconds: wall time of this attempt.
        error: the one-line reason of a failure.
        out_dir: the run directory.
    """

    name: str
    status: str
    out_dir: str
    resumed: bool = False
    steps_done: int = 0
    steps_total: int = 0
    total: float | None = None
    seconds: float = 0.0
    error: str | None = None


# ------------------------------------------------------------------------------------------------ reading


def read_sweep(path: str | Path, registry=None) -> list[SweepRun]:
    """The runs of a sweep file, each with its merged recipe dict (or why it has none).

    Raises:
        CommandLineError: the file is unreadable, has unknown keys, no runs, or run names that are not unique
            or not usable as directory names (one line naming the file and the entry).
    """
    from zsgm.recipe import merge_dicts

    path = Path(path)
    try:
        sweep = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CommandLineError(f"{path}: not a readable sweep file ({exc})") from None
    unknown = sorted(set(sweep) - SWEEP_KEYS)
    if unknown:
        raise CommandLineError(f"{path}: unknown key(s) {', '.join(unknown)} (a sweep file has "
                               f"{', '.join(sorted(SWEEP_KEYS))})")
    runs = sweep.get("runs")
    if not isinstance(runs, list) or not runs or not all(isinstance(r, dict) for r in runs):
        raise CommandLineError(f"{path}: no runs; add one [[runs]] table per run (e.g. target = \"a sketch\")")
    base = sweep.get("base", {})
    if not isinstance(base, dict):
        raise CommandLineError(f"{path}: base must be a table of recipe fields")
    for key in ("preset", "recipe"):
        if key in sweep and not isinstance(sweep[key], str):
            raise CommandLineError(f"{path}: {key} = {sweep[key]!r} must be a {_WHAT[key]}")
    out: list[SweepRun] = []
    for i, entry in enumerate(runs):
        name = entry.get("name", default_name(i, entry))
        if not isinstance(name, str) or not NAME.match(name):
            raise CommandLineError(f"{path}: runs[{i}].name = {name!r} is not usable as a directory name (letters, "
                                   f"digits, '.', '_', '-')")
        if any(r.name == name for r in out):
            raise CommandLineError(f"{path}: runs[{i}].name = {name!r} is used twice; give each run its own name")
        fields = {k: v for k, v in entry.items() if k not in RUN_KEYS}
        problem = _entry_problem(i, entry, merge_dicts(base, fields))
        if problem is not None:
            out.append(SweepRun(name, problem=f"{path}: {problem}"))
            continue
        try:
            data = base_recipe(entry.get("preset", sweep.get("preset")), entry.get("recipe", sweep.get("recipe")),
                               folder=path.parent, generator=(merge_dicts(base, fields).get("generator") or {})
                               .get("checkpoint"), registry=registry)
            out.append(SweepRun(name, merge_dicts(merge_dicts(data, base), fields)))
        except Exception as exc:  # noqa: BLE001 - a run that cannot be put together fails alone
            if not isinstance(exc, user_error_classes()):
                raise
            out.append(SweepRun(name, problem=describe_error(exc)))
    return out


_WHAT = {"preset": "preset name (zsgm plugins lists them)", "recipe": "recipe file name"}


def _entry_problem(index: int, entry: dict, fields: dict) -> str | None:
    """Why ``runs[index]`` cannot be put together (a preset or recipe that is not a name, a section that is not a
    table), or None; the run then fails alone."""
    for key in ("preset", "recipe"):
        if key in entry and not isinstance(entry[key], str):
            return f"runs[{index}].{key} = {entry[key]!r} must be a {_WHAT[key]}"
    for key in ("generator", "clip", "optim", "run"):
        if key in fields and not isinstance(fields[key], dict):
            return (f"runs[{index}].{key} = {fields[key]!r} must be a table of fields (e.g. {key} = {{ ... }}), "
                    f"as in a recipe")
    return None


def default_name(index: int, entry: dict) -> str:
    """``NN-<target>`` with the target's letters and digits (``02-a-sketch``); ``NN`` alone without a target."""
    target = entry.get("target")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", target).strip("-").lower()[:40] if isinstance(target, str) else ""
    return f"{index:02d}-{slug}" if slug else f"{index:02d}"


def base_recipe(preset: str | None, recipe: str | None, *, folder: Path, generator, registry) -> dict:
    """The preset's recipe dict with the recipe file's fields over it (a relative file is read from ``folder``)."""
    from zsgm.cli_adapt import build_preset
    from zsgm.plugins import get_registry
    from zsgm.recipe import merge_dicts, read_recipe_file

    data: dict = {}
    if preset is not None:
        registry = registry or get_registry()
        data = build_preset(registry.presets.get(preset), generator, registry)
    if recipe is not None:
        file = Path(recipe) if Path(recipe).is_absolute() else folder / recipe
        data = merge_dicts(data, read_recipe_file(str(file)))
    return data


# ------------------------------------------------------------------------------------------------ running


def run_state(run_dir: Path, recipe) -> str:
    """``"finished"`` (its generator is written and the recipe asks for no more steps), ``"resume"`` (it has a
    checkpoint) or ``"new"``.

    Raises:
        ResumeMismatchError: the run directory holds a run of another recipe.
    """
    from zsgm.run_dir import RunPaths, check_resume_recipe

    paths = RunPaths(run_dir)
    if not (paths.checkpoint.exists() or paths.generator.exists()):
        return "new"  # (a folder holding only previous.pt is refused by adapt, in one line naming it)
    saved_steps = tomllib.loads(paths.recipe.read_text(encoding="utf-8")).get("optim", {}).get("steps", 0) \
        if paths.recipe.exists() else 0
    check_resume_recipe(paths, recipe, steps_done=min(saved_steps, recipe.optim.steps))
    if paths.generator.exists() and saved_steps >= recipe.optim.steps:
        return "finished"  # (also when its checkpoints were deleted to save space)
    return "resume" if paths.checkpoint.exists() else "new"


def _finished_outcome(name: str, run_dir: Path, recipe, *, status: str, seconds: float, resumed: bool) -> Outcome:
    from zsgm.run_dir import RunPaths, last_logged

    paths = RunPaths(run_dir)
    steps = _steps_logged(paths.losses)
    return Outcome(name=name, status=status, out_dir=str(run_dir), resumed=resumed, steps_done=steps,
                   steps_total=recipe.optim.steps, total=last_logged(paths.losses).get("total"), seconds=seconds)


def _steps_logged(losses: Path) -> int:
    try:
        lines = losses.read_text(encoding="utf-8").splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"]) + 1
        except (ValueError, KeyError, TypeError):
            continue
    return 0


@attrs.define
class _Job:
    name: str
    run_dir: Path
    recipe: Any
    resume: bool


def prepare_jobs(runs: list[SweepRun], out: Path, registry=None) -> tuple[list[_Job], list[Outcome]]:
    """Check each run's recipe and decide what to do with it: the jobs to run, and the outcomes already known
    (failed before starting, or finished before)."""
    from zsgm.recipe import recipe_from_dict

    jobs, known = [], []
    for run in runs:
        run_dir = out / run.name
        if run.problem is not None:
            known.append(Outcome(name=run.name, status="failed", out_dir=str(run_dir), error=run.problem))
            continue
        try:
            recipe = recipe_from_dict(run.data, registry=registry, source=f"runs {run.name!r}")
            state = run_state(run_dir, recipe)
        except Exception as exc:  # noqa: BLE001
            if not isinstance(exc, user_error_classes()):
                raise
            known.append(Outcome(name=run.name, status="failed", out_dir=str(run_dir), error=describe_error(exc)))
            continue
        if state == "finished":
            known.append(_finished_outcome(run.name, run_dir, recipe, status="finished before", seconds=0.0,
                                           resumed=False))
        else:
            jobs.append(_Job(run.name, run_dir, recipe, resume=state == "resume"))
    return jobs, known


def run_here(job: _Job, registry=None) -> Outcome:
    """One job in this process; a failure is caught and described."""
    from zsgm.loop import adapt

    started = time.time()
    try:
        adapt(job.recipe, out_dir=job.run_dir, resume=job.resume, registry=registry)
    except Exception as exc:  # noqa: BLE001 - one run's failure, whatever it is, must not stop the sweep
        error = describe_error(exc) if isinstance(exc, user_error_classes()) else f"{type(exc).__name__}: {exc}"
        return Outcome(name=job.name, status="failed", out_dir=str(job.run_dir), resumed=job.resume,
                       steps_done=_steps_logged(job.run_dir / "losses.jsonl"), steps_total=job.recipe.optim.steps,
                       seconds=time.time() - started, error=" ".join(error.split()))
    return _finished_outcome(job.name, job.run_dir, job.recipe, status="done", seconds=time.time() - started,
                             resumed=job.resume)


def job_command(job: _Job, recipe_file: Path) -> list[str]:
    """The ``zsgm adapt`` command line of a job run in its own process."""
    command = [sys.executable, "-m", "zsgm", "adapt", str(recipe_file), "--out", str(job.run_dir), "--no-progress"]
    return command + (["--resume"] if job.resume else [])


def run_in_processes(jobs: list[_Job], out: Path, *, workers: int, devices: list[str] | None = None,
                     report=print) -> list[Outcome]:
    """Run ``jobs`` over ``workers`` ``zsgm adapt`` processes (slot ``s`` sees GPU ``devices[s % len]``)."""
    from zsgm.io_utils import atomic_write_text
    from zsgm.recipe import dumps_recipe

    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    waiting = list(jobs)
    running: dict[int, tuple[_Job, subprocess.Popen, float, Any]] = {}  # slot -> job
    done: list[Outcome] = []
    while waiting or running:
        for slot in range(workers):
            if slot in running or not waiting:
                continue
            job = waiting.pop(0)
            recipe_file = logs / f"{job.name}.recipe.toml"
            atomic_write_text(recipe_file, dumps_recipe(job.recipe))
            env = dict(os.environ)
            if devices:
                env["CUDA_VISIBLE_DEVICES"] = devices[slot % len(devices)]
            log = open(logs / f"{job.name}.log", "w", encoding="utf-8")  # noqa: SIM115 - closed when it ends
            proc = subprocess.Popen(job_command(job, recipe_file), stdout=log, stderr=subprocess.STDOUT, env=env)
            running[slot] = (job, proc, time.time(), log)
            report(f"zsgm sweep: {job.name}: {'resumed' if job.resume else 'started'}"
                   + (f" on GPU {env['CUDA_VISIBLE_DEVICES']}" if devices else ""))
        time.sleep(0.2)
        for slot, (job, proc, started, log) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[slot]
            seconds = time.time() - started
            if proc.returncode == 0:
                outcome = _finished_outcome(job.name, job.run_dir, job.recipe, status="done", seconds=seconds,
                                            resumed=job.resume)
            else:
                outcome = Outcome(name=job.name, status="failed", out_dir=str(job.run_dir), resumed=job.resume,
                                  steps_done=_steps_logged(job.run_dir / "losses.jsonl"),
                                  steps_total=job.recipe.optim.steps, seconds=seconds,
                                  error=_last_error(logs / f"{job.name}.log", proc.returncode))
            report(f"zsgm sweep: {job.name}: {outcome.status}")
            done.append(outcome)
    return done


def _last_error(log: Path, code: int) -> str:
    """The ``zsgm: error:`` line of a failed job's log, else its last line, with the exit status."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
    except OSError:
        lines = []
    errors = [line for line in lines if line.startswith("zsgm: error:")]
    text = errors[-1][len("zsgm: error:"):].strip() if errors else (lines[-1] if lines else "")
    return f"{text} (exit status {code}; see {log})" if text else f"exit status {code} (see {log})"


def run_sweep(path: str | Path, out: str | Path, *, jobs: int = 1, devices: list[str] | None = None,
              registry=None, report=print) -> list[Outcome]:
    """Run (or resume) every run of the sweep file ``path`` under ``out``; write ``out/summary.json``.

    Args:
        jobs: 1 runs them one after another in this process; K > 1 runs K ``zsgm adapt`` processes at a time.
        devices: GPU indices for the worker processes (``CUDA_VISIBLE_DEVICES`` per slot); None leaves it.
        report: where progress lines go.

    Returns:
        One :class:`Outcome` per run, in the file's order.
    """
    out = Path(out)
    runs = read_sweep(path, registry=registry)
    out.mkdir(parents=True, exist_ok=True)
    todo, known = prepare_jobs(runs, out, registry=registry)
    for outcome in known:
        report(f"zsgm sweep: {outcome.name}: {outcome.status}" + (f" ({outcome.error})" if outcome.error else ""))
    if jobs > 1 or devices:
        outcomes = known + run_in_processes(todo, out, workers=jobs, devices=devices, report=report)
    else:
        outcomes = list(known)
        for job in todo:
            report(f"zsgm sweep: {job.name}: {'resumed' if job.resume else 'started'}")
            outcomes.append(run_here(job, registry=registry))
            report(f"zsgm sweep: {job.name}: {outcomes[-1].status}")
    order = {run.name: i for i, run in enumerate(runs)}
    outcomes.sort(key=lambda o: order[o.name])
    write_summary(out / "summary.json", outcomes)
    return outcomes


def write_summary(path: Path, outcomes: list[Outcome]) -> None:
    from zsgm.io_utils import atomic_write_text

    record = {"runs": [attrs.asdict(o) for o in outcomes],
              "failed": sum(o.status == "failed" for o in outcomes),
              "ok": sum(o.status != "failed" for o in outcomes)}
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def summary_table(outcomes: list[Outcome]) -> str:
    """A plain-text table: run, status, steps, last total loss, time, error."""
    rows = [("run", "status", "steps", "loss", "time", "error")]
    for o in outcomes:
        status = o.status + (" (resumed)" if o.resumed and o.status != "finished before" else "")
        rows.append((o.name, status, f"{o.steps_done}/{o.steps_total}",
                     "-" if o.total is None else f"{o.total:.4f}", f"{o.seconds:.0f} s", o.error or ""))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join(("  ".join(r[i].ljust(widths[i]) for i in range(5)) + "  " + r[5]).rstrip() for r in rows)


# ------------------------------------------------------------------------------------------------ command


def add_sweep_parser(sub):
    """The ``sweep`` subcommand's parser (its handler is set by :func:`zsgm.cli.make_parser`)."""
    from zsgm.cli_options import int_at_least

    p = sub.add_parser("sweep", help="run many adaptations from one sweep file",
                       description="Run the [[runs]] of a sweep file, each in its own run directory under --out; a "
                                   "failing run does not stop the others; running it again resumes the sweep.")
    p.add_argument("sweep", help="TOML sweep file: preset/recipe/[base] shared, one [[runs]] table per run (required)")
    p.add_argument("--out", required=True, help="folder of the run directories, logs/ and summary.json (required)")
    p.add_argument("--jobs", type=int_at_least(1), default=1,
                   help="runs at a time; 1 runs them one after another in this process, K > 1 in K zsgm adapt "
                        "processes (default: 1)")
    p.add_argument("--devices", type=_devices, default=None, metavar="I[,J...]",
                   help="GPUs for the worker processes, one per slot in turn via CUDA_VISIBLE_DEVICES, e.g. 0,1,2,3 "
                        "(default: none; CUDA_VISIBLE_DEVICES is left as it is)")
    return p


def _devices(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",")]
    if not items or any(not t.isdigit() for t in items):
        raise ValueError(f"--devices: expected GPU indices like 0,1; got {text!r}")
    return items


def cmd_sweep(args) -> int:
    """Run the sweep, print the summary table; exit status 1 when a run failed."""
    outcomes = run_sweep(args.sweep, args.out, jobs=args.jobs, devices=args.devices)
    print(summary_table(outcomes))
    failed = sum(o.status == "failed" for o in outcomes)
    print(f"{len(outcomes) - failed} of {len(outcomes)} runs ok; summary in {Path(args.out) / 'summary.json'}")
    return 1 if failed else 0
