"""Pictures of a run: its loss terms over the steps, from ``losses.jsonl``.

    zsgm plot runs/sketch                     # writes runs/sketch/losses.png
    zsgm plot runs/sketch --out sketch.png

    from zsgm.plots import plot_losses
    plot_losses("runs/sketch/losses.jsonl", "losses.png")

One panel per logged term (``"<technique>/<term>"``, unweighted as the techniques return them) and one for the
weighted ``total``, each against the step: the raw values as a faint line, a moving average over them as a solid
one. matplotlib is imported inside the functions, with its non-interactive Agg backend (no display needed).
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

TOTAL = "total"
LOSSES_FILE = "losses.jsonl"
PLOT_FILE = "losses.png"
MAX_COLUMNS = 3


class PlotError(ValueError):
    """A losses log that cannot be plotted (missing, empty, unreadable); the message is one line naming the file."""


def read_losses(path: str | Path) -> dict[str, tuple[list[int], list[float]]]:
    """The series of a ``losses.jsonl``: ``{key: (steps, values)}`` in file order, ``total`` last.

    A key missing from some lines (a technique computed ``every`` N steps) has points only where it was logged.

    Raises:
        PlotError: the file is missing, empty, or a line is not a JSON object with an integer ``step`` and
            numeric values (the message names the file and the line).
    """
    path = Path(path)
    if not path.is_file():
        raise PlotError(f"{path}: no such losses log (a run directory holds losses.jsonl once its first step is done)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PlotError(f"{path}: cannot be read: {exc}") from None
    series: dict[str, tuple[list[int], list[float]]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PlotError(f"{path}, line {number}: not JSON ({exc.msg}); is it a zsgm losses.jsonl?") from None
        step = record.get("step") if isinstance(record, dict) else None
        if not isinstance(step, int) or isinstance(step, bool):
            raise PlotError(f"{path}, line {number}: expected a JSON object with an integer \"step\", "
                            f"got {line[:80]!r}")
        for key, value in record.items():
            if key == "step":
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise PlotError(f"{path}, line {number}: {key!r} is {value!r}, not a number")
            steps, values = series.setdefault(key, ([], []))
            steps.append(step)
            values.append(float(value))
    if not series:
        raise PlotError(f"{path}: empty, no logged step to plot")
    if TOTAL in series:
        series[TOTAL] = series.pop(TOTAL)
    return series


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over the last ``window`` finite values (a non-finite value stays a gap: NaN)."""
    out, kept = [], []
    for value in values:
        if not math.isfinite(value):
            out.append(float("nan"))
            continue
        kept.append(value)
        if len(kept) > window:
            kept.pop(0)
        out.append(sum(kept) / len(kept))
    return out


def smoothing_window(n: int) -> int:
    """Points averaged by the smoothed line: about 1/20 of the series, between 1 and 50."""
    return max(1, min(50, n // 20))


def plot_panels(series: dict[str, tuple[list[int], list[float]]], out_png: str | Path, *, title: str = "",
                xlabel: str = "step", smooth: bool = True) -> Path:
    """One panel per series (``{name: (xs, ys)}``), raw values faint and their moving average solid, all on one x
    range; a PNG (for other per-step curves too, e.g. metrics at checkpoints).

    Returns:
        ``out_png`` as a Path (its folder is created).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from zsgm.io_utils import atomic_write_bytes

    names = list(series)
    if not names:
        raise PlotError(f"{out_png}: nothing to plot (no series given)")
    columns = min(MAX_COLUMNS, len(names))
    rows = math.ceil(len(names) / columns)
    fig = Figure(figsize=(4.2 * columns, 2.8 * rows))  # no pyplot: the caller's backend and figures are untouched
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax, name in zip(axes.flat, names):
        xs, ys = series[name]
        if smooth and len(ys) > 2:
            window = smoothing_window(len(ys))
            ax.plot(xs, ys, color="tab:blue", alpha=0.25, linewidth=0.8)  # raw, faint
            ax.plot(xs, moving_average(ys, window), color="tab:blue", linewidth=1.6)
            ax.set_title(f"{name} (trailing mean of {window})" if window > 1 else name, fontsize=10)
        else:
            ax.plot(xs, ys, color="tab:blue", linewidth=1.6, marker="o")
            ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(True, alpha=0.3)
    lows = [min(series[n][0]) for n in names if series[n][0]]
    highs = [max(series[n][0]) for n in names if series[n][0]]
    if lows and min(lows) < max(highs):  # one x range for all panels: a term that starts late is seen in place
        for ax in list(axes.flat)[:len(names)]:
            ax.set_xlim(min(lows), max(highs))
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    out_png = Path(out_png)
    atomic_write_bytes(out_png, buffer.getvalue())
    return out_png


def plot_losses(losses_jsonl: str | Path, out_png: str | Path) -> Path:
    """Plot every term of a ``losses.jsonl`` and the total against the step into ``out_png``.

    Raises:
        PlotError: the log is missing, empty or corrupt (one line naming the file).
    """
    losses_jsonl = Path(losses_jsonl)
    series = read_losses(losses_jsonl)
    title = f"{losses_jsonl.parent.name}: losses (unweighted terms, weighted total)"
    return plot_panels(series, out_png, title=title)


def losses_path(target: str | Path) -> Path:
    """``RUN/losses.jsonl`` for a run directory, else ``target`` itself (a losses file)."""
    target = Path(target)
    return target / LOSSES_FILE if target.is_dir() else target


# ------------------------------------------------------------------------------------------------ zsgm plot


def add_plot_arguments(parser) -> None:
    parser.add_argument("run", metavar="RUN", help="a run directory (reads RUN/losses.jsonl) or a losses.jsonl file")
    parser.add_argument("--out", metavar="FILE", help="the PNG to write (default: losses.png next to losses.jsonl)")


def cmd_plot(args) -> int:
    """``zsgm plot RUN [--out FILE]``; a missing, empty or corrupt log is a :class:`PlotError` (exit 2)."""
    source = losses_path(args.run)
    out = Path(args.out) if args.out else source.parent / PLOT_FILE
    written = plot_losses(source, out)
    print(written)
    return 0


def plot_command():
    """The :class:`zsgm.commands.CommandSpec` of ``zsgm plot``."""
    from zsgm.commands import CommandSpec

    return CommandSpec(name="plot", add_arguments=add_plot_arguments, run=cmd_plot,
                       help="plot a run's loss terms over the steps (PNG)",
                       description="Plot each loss term of a run's losses.jsonl and the total against the step "
                                   "(raw values faint, a moving average solid) into a PNG, by default RUN/losses.png.")
