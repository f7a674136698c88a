"""Learning curves from runs' progress.csv files, drawn with matplotlib's Agg backend."""

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


def plot_learning_curves(run_dirs: list[Path], output: Path) -> Path:
    """One line per run: mean episode return per logging interval against environment steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=110)
    for run_dir in run_dirs:
        steps, returns = read_curve(Path(run_dir))
        axes.plot(steps, returns, label=Path(run_dir).name, linewidth=1.5)
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
