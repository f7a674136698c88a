"""Learning curves from runs' progress.csv files (and their evaluations.csv, where periodic
evaluation was on), drawn with matplotlib's Agg backend: one line per run, or, aggregated, one
line per algorithm and env with the band its seeds span."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from rlfoundry.envs.registry import RegisteredEnv
from rlfoundry.run.monitor import RETURN_METRIC


class RunDirectoryError(ValueError):
    """A path that is not a run directory with a progress.csv."""


def read_curve(run_dir: Path) -> tuple[list[float], list[float]]:
    """(steps, mean episode returns) from a run's progress.csv, skipping rows without episodes."""
    path = Path(run_dir) / "progress.csv"
    if not path.is_file():
        raise RunDirectoryError(f"{run_dir} has no progress.csv: give a run directory written by `rlf train`")
    steps, returns = [], []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            value = row.get(RETURN_METRIC, "")
            if value not in ("", None):
                steps.append(float(row["step"]))
                returns.append(float(value))
    return steps, returns


def read_evaluations(run_dir: Path) -> tuple[list[float], list[float]]:
    """(steps, mean evaluation returns) from a run's evaluations.csv; empty lists without one."""
    path = Path(run_dir) / "evaluations.csv"
    if not path.is_file():
        return [], []
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [float(row["step"]) for row in rows], [float(row["mean_return"]) for row in rows]


def has_something_to_plot(run_dir: Path) -> bool:
    """Whether the run has a finished episode in its progress.csv or an evaluation."""
    return bool(read_curve(run_dir)[0] or read_evaluations(run_dir)[0])


def require_something_to_plot(run_dir: Path) -> None:
    """RunDirectoryError if the run has neither a finished episode in its progress.csv nor an evaluation."""
    if not has_something_to_plot(run_dir):
        raise RunDirectoryError(
            f"{run_dir} has no finished episode in its progress.csv and no evaluations: nothing to plot "
            "(train it longer, or with --eval-every N)"
        )


class AggregateCurve(NamedTuple):
    """Several runs' curves on one grid of env steps: their mean and the range they span."""

    steps: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray


def aggregate_curves(
    curves: list[tuple[list[float], list[float]]], points: int = 200, names: list[str] | None = None
) -> AggregateCurve:
    """mean_k r_k(t), min_k r_k(t), max_k r_k(t) on `points` evenly spaced steps t, each run's
    curve r_k linearly interpolated between its logged steps. The grid spans only the steps every
    run logged (from the latest first step to the earliest last step), so no curve is extended
    beyond its data. `names` (one per curve) name the runs in the error for curves that do not
    overlap."""
    names = names if names is not None else [f"curve {index}" for index in range(len(curves))]
    latest = max(range(len(curves)), key=lambda index: curves[index][0][0])
    earliest = min(range(len(curves)), key=lambda index: curves[index][0][-1])
    start, end = curves[latest][0][0], curves[earliest][0][-1]
    if start > end:
        raise RunDirectoryError(
            f"these runs' logged steps do not overlap: {names[latest]} starts at step {start:g}, after "
            f"{names[earliest]} ends at step {end:g}; aggregate runs trained for comparable numbers of steps"
        )
    grid = np.linspace(start, end, points)
    values = np.stack([np.interp(grid, steps, returns) for steps, returns in curves])
    return AggregateCurve(grid, values.mean(axis=0), values.min(axis=0), values.max(axis=0))


def group_runs(run_dirs: list[Path]) -> dict[str, list[Path]]:
    """Runs grouped by "<algorithm> <env>" as their config.json records them (run/record.py): see
    env_label."""
    groups: dict[str, list[Path]] = {}
    for run_dir in run_dirs:
        path = Path(run_dir) / "config.json"
        if not path.is_file():
            raise RunDirectoryError(
                f"{run_dir} has no config.json: aggregated curves group runs by the algorithm and env that "
                "runs record there (a Python run of an rlfoundry that wrote none: plot it without --aggregate)"
            )
        recorded = json.loads(path.read_text())
        groups.setdefault(f"{recorded['algorithm']} {env_label(recorded)}", []).append(Path(run_dir))
    return groups


def env_label(recorded: dict) -> str:
    """The env a run's record names: its id with the keyword arguments it was made with, in name
    order (the order they were given in makes no other env); for an env the record does not
    describe (made by a function, or an env object with wrappers or keyword arguments it cannot
    record: run/training_env.py), a label that says so, never the id's own env."""
    env_id, kwargs = recorded["env_id"], recorded.get("env_kwargs", {})  # runs before env kwargs recorded none
    if env_id is None:
        return "(an env without a registered id)"
    if kwargs is None:
        return f"{env_id} (with wrappers or keyword arguments not recorded)"
    return str(RegisteredEnv(env_id, dict(sorted(kwargs.items()))))


def plot_aggregated_curves(run_dirs: list[Path], output: Path) -> Path:
    """One line per algorithm and env: the mean over its runs (seeds) of the mean episode return,
    with the band between the lowest and the highest run."""
    figure, axes = _new_figure()
    for label, runs in group_runs(run_dirs).items():
        curves = [read_curve(run) for run in runs]
        for run, (steps, _) in zip(runs, curves):
            if not steps:
                raise RunDirectoryError(f"{run} has no finished episode in its progress.csv: nothing to aggregate")
        curve = aggregate_curves(curves, names=[str(run) for run in runs])
        (line,) = axes.plot(curve.steps, curve.mean, label=f"{label} (mean of {len(runs)}, band: min to max)", linewidth=1.5)
        axes.fill_between(curve.steps, curve.low, curve.high, color=line.get_color(), alpha=0.2, linewidth=0)
    return _finish(figure, axes, output)


def plot_learning_curves(run_dirs: list[Path], output: Path) -> Path:
    """One line per run: mean episode return per logging interval against environment steps, and
    the periodic evaluations' mean returns as markers in the same colour."""
    figure, axes = _new_figure()
    for run_dir in run_dirs:
        steps, returns = read_curve(Path(run_dir))
        # A line through a single point draws nothing: that one gets a marker.
        marker = "o" if len(steps) == 1 else None
        (line,) = axes.plot(steps, returns, label=Path(run_dir).name, linewidth=1.5, marker=marker, markersize=4)
        evaluation_steps, evaluation_returns = read_evaluations(Path(run_dir))
        if evaluation_steps:
            axes.plot(evaluation_steps, evaluation_returns, "o--", color=line.get_color(), markersize=4,
                      linewidth=0.8, label=f"{Path(run_dir).name} (evaluation)")
    return _finish(figure, axes, output)


def _new_figure():
    """(figure, axes) of a learning-curve plot, drawn off-screen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7, 4.5), dpi=110)


def _finish(figure, axes, output: Path) -> Path:
    """Label the axes, write the figure to `output` (a PNG) and free it."""
    import matplotlib.pyplot as plt

    axes.set_xlabel("environment steps")
    axes.set_ylabel("mean episode return")
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output)
    plt.close(figure)
    return output
