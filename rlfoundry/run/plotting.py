"""Learning curves from runs' progress.csv files (and their evaluations.csv, where periodic
evaluation was on), drawn with matplotlib's Agg backend."""

from __future__ import annotations

import csv
from pathlib import Path

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


def plot_learning_curves(run_dirs: list[Path], output: Path) -> Path:
    """One line per run: mean episode return per logging interval against environment steps, and
    the periodic evaluations' mean returns as markers in the same colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=110)
    for run_dir in run_dirs:
        steps, returns = read_curve(Path(run_dir))
        (line,) = axes.plot(steps, returns, label=Path(run_dir).name, linewidth=1.5)
        evaluation_steps, evaluation_returns = read_evaluations(Path(run_dir))
        if evaluation_steps:
            axes.plot(evaluation_steps, evaluation_returns, "o--", color=line.get_color(), markersize=4,
                      linewidth=0.8, label=f"{Path(run_dir).name} (evaluation)")
    axes.set_xlabel("environment steps")
    axes.set_ylabel("mean episode return")
    axes.grid(alpha=0.3)
    if run_dirs:
        axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output)
    plt.close(figure)
    return output
