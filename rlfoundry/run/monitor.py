"""What a learn() loop reports to: episode statistics, metrics files, the progress display,
periodic checkpoints and periodic evaluations.

With a run directory it writes TensorBoard event files, `progress.csv` (one row per logging
interval, a column per metric), `evaluations.csv` (one row per periodic evaluation) and, at the
end, `learning_curve.png`. Without one (a Python caller who named none) it writes no files. The
display is a rich progress bar on a terminal, plain log lines otherwise, and nothing when quiet.
"""

from __future__ import annotations

import csv
import functools
import inspect
import math
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from rlfoundry.run.evaluation import EvaluationPoint, PeriodicEvaluator
from rlfoundry.run.record import record_learn_call

RETURN_METRIC = "rollout/episode_return"
LENGTH_METRIC = "rollout/episode_length"
RECENT_EPISODES = 100
EVALUATION_COLUMNS = ("step", "mean_return", "std_return", "mean_length", "episodes", "cut_episodes")


RUN_FILES = ("config.json", "progress.csv", "evaluations.csv", "learning_curve.png", "checkpoints")
"""What a run writes into its directory, besides TensorBoard's event files."""
TENSORBOARD_PREFIX = "events.out.tfevents."


def new_run_dir(algorithm: str, env_id: str | None, seed: int, root: str | Path = "runs") -> Path:
    """A path runs/<algo>-<env>-s<seed>-<timestamp>/ that does not exist yet (suffixed if taken);
    the caller creates it once the model has accepted it, so that a refused model leaves nothing."""
    environment = (env_id or "custom-env").replace("/", "-")
    base = Path(root) / f"{algorithm}-{environment}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, counter = base, 1
    while candidate.exists():
        candidate = base.with_name(f"{base.name}-{counter}")
        counter += 1
    return candidate


def existing_run_files(run_dir: Path) -> list[str]:
    """The names in `run_dir` that a run writes, sorted, TensorBoard's event files as one
    `events.out.tfevents.*`: any one of them means the directory already holds a run."""
    if not run_dir.is_dir():
        return []
    names = {entry.name for entry in run_dir.iterdir()}
    return sorted(
        {name for name in names if name in RUN_FILES}
        | {f"{TENSORBOARD_PREFIX}*" for name in names if name.startswith(TENSORBOARD_PREFIX)}
    )


class CsvLog:
    """progress.csv or evaluations.csv: one row per write, the `columns` first; a new name adds
    a column and the file is rewritten.

    An existing file (an earlier learn() call into the same run directory, or a resumed run) is
    continued, never replaced; only its rows past `last_step` go: a run resumed from a checkpoint
    behind them (the `latest` of a run that crashed) trains those steps again, and its rows must
    not follow rows of later steps."""

    def __init__(self, path: Path, columns: tuple[str, ...] = ("step",), last_step: int | None = None):
        self.path = path
        self.columns: list[str] = list(columns)
        self.rows: list[Mapping[str, float | str]] = []
        if path.exists():
            with open(path, newline="") as handle:
                reader = csv.DictReader(handle)
                self.columns = list(reader.fieldnames or self.columns)
                self.rows = list(reader)
            if last_step is not None:
                kept = [row for row in self.rows if float(row["step"]) <= last_step]
                if len(kept) < len(self.rows):
                    self.rows = kept
                    self._write_all()

    def write(self, row: Mapping[str, float | str]) -> None:
        self.rows.append(row)
        new_columns = [name for name in row if name not in self.columns]
        if new_columns or not self.path.exists():
            self.columns.extend(sorted(new_columns))
            self._write_all()
        else:
            with open(self.path, "a", newline="") as handle:
                csv.DictWriter(handle, fieldnames=self.columns).writerow(row)

    def _write_all(self) -> None:
        with open(self.path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(self.rows)


class TrainingStatus(NamedTuple):
    """What a learn() callback is given at each point where training stands between updates."""

    model: Any
    """The model being trained (its networks may be read; changing them changes training)."""
    step: int
    """Env steps trained so far (model.steps)."""
    record: Callable[[str, float], None]
    """record(name, value): a metric, averaged into the next row of progress.csv and TensorBoard."""


TrainingCallback = Callable[[TrainingStatus], "bool | None"]
"""learn(steps, callback=f): f(status) at each point between updates; False ends learn() there."""


class TrainingMonitor:
    """Collects metrics from one learn() call and reports them at every `log_interval` steps."""

    def __init__(
        self,
        run_dir: Path | None,
        total_steps: int,
        start_step: int = 0,
        quiet: bool = False,
        log_interval: int | None = None,
        title: str = "training",
        checkpoint_every: int | None = None,
        save: Callable[[Path], object] | None = None,
        evaluator: PeriodicEvaluator | None = None,
        save_best: Callable[[Path], object] | None = None,
    ):
        self.run_dir = run_dir
        self.checkpoint_every = checkpoint_every
        self.save = save
        self.save_best = save_best or save
        self.evaluator = evaluator
        # step -> the learn() callback's answer; set by `of`, which binds the model.
        self.callback: Callable[[int], bool | None] | None = None
        # Set by an evaluation that reaches the evaluation's stop_at, or a callback that returns
        # False: the learn loop ends there.
        self.stop_requested = False
        self.evaluation_log = None
        self.best_mean_return = -math.inf
        # An earlier evaluations.csv is opened without an evaluator too: its rows past start_step
        # belong to steps trained again, and go.
        if run_dir is not None and (evaluator is not None or (run_dir / "evaluations.csv").exists()):
            self.evaluation_log = CsvLog(run_dir / "evaluations.csv", EVALUATION_COLUMNS, last_step=start_step)
            # The run directory's best so far (from earlier learn() calls into it) is the one to beat.
            self.best_mean_return = max((float(row["mean_return"]) for row in self.evaluation_log.rows), default=-math.inf)
        self.last_step = start_step
        self.start_step = start_step
        self.end_step = start_step + total_steps
        self.quiet = quiet
        self.log_interval = log_interval or max(1, total_steps // 100)
        self.next_dump = start_step + self.log_interval
        self.recent_returns: deque[float] = deque(maxlen=RECENT_EPISODES)
        self.interval_returns: list[float] = []
        self.interval_lengths: list[int] = []
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.start_time = time.perf_counter()
        self.last_dump_time = self.start_time
        self.last_dump_step = start_step
        self.episode_count = 0
        self.csv = CsvLog(run_dir / "progress.csv", last_step=start_step) if run_dir is not None else None
        self.tensorboard = None
        if run_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            # TensorBoard hides the earlier event files' points from this step on, as CsvLog drops
            # the rows past start_step: they belong to steps that are being trained again.
            self.tensorboard = SummaryWriter(log_dir=str(run_dir), purge_step=start_step + 1 if start_step else None)
        self.display = _make_display(quiet, title, start_step, self.end_step)

    @property
    def recent_mean_return(self) -> float:
        """Mean return of the last 100 finished episodes (NaN before the first)."""
        return float(np.mean(self.recent_returns)) if self.recent_returns else math.nan

    def episodes(self, step: int, returns: np.ndarray, lengths: np.ndarray) -> None:
        """Episodes that ended at `step`."""
        if returns.size == 0:
            return
        self.recent_returns.extend(returns.tolist())
        self.interval_returns.extend(returns.tolist())
        self.interval_lengths.extend(lengths.tolist())
        self.episode_count += int(returns.size)
        if self.tensorboard is not None:
            for episode_return, episode_length in zip(returns.tolist(), lengths.tolist()):
                self.tensorboard.add_scalar(RETURN_METRIC, episode_return, step)
                self.tensorboard.add_scalar(LENGTH_METRIC, episode_length, step)

    def record(self, name: str, value: float) -> None:
        """A training metric; its mean over the logging interval is reported."""
        self.sums[name] = self.sums.get(name, 0.0) + float(value)
        self.counts[name] = self.counts.get(name, 0) + 1

    def due(self, step: int) -> bool:
        """Whether step() will report at this step: record metrics that cost something only then."""
        return step >= self.next_dump

    @classmethod
    def of(
        cls, model: Any, total_steps: int, start_step: int, callback: TrainingCallback | None = None,
        asked_steps: int | None = None,
    ) -> "TrainingMonitor":
        """The monitor of one learn() call of `model`: its run directory, quietness, name,
        periodic checkpoints (`model.checkpoint_every` env steps, written with `model.save`),
        periodic evaluations (`model.evaluation`) and the call's callback. Nothing of the model
        changes before the callback and the evaluation are accepted, so a refused one loses
        nothing; then the run directory's record is written or brought up to date
        (run/record.py; `asked_steps`: the steps the call was asked for, default total_steps)."""
        if callback is not None and not callable(callback):
            raise TypeError(
                f"callback must be a function taking a rlfoundry.TrainingStatus (return False to stop), "
                f"got {type(callback).__name__}"
            )
        evaluator = PeriodicEvaluator(model, model.evaluation) if model.evaluation is not None else None
        record_learn_call(model, total_steps if asked_steps is None else asked_steps)
        monitor = cls(
            model.run_dir, total_steps, start_step, model.quiet, title=model.name,
            checkpoint_every=model.checkpoint_every, save=model.save, evaluator=evaluator,
            save_best=policy_saver(model),
        )
        if callback is not None:
            monitor.callback = lambda step: callback(TrainingStatus(model, step, monitor.record))
        training_env = getattr(model, "training_env", None)
        if training_env is not None and training_env.position_lost:
            monitor.display.note(
                "the checkpoint holds no env position (the env keeps its state in native code, as MuJoCo, "
                "Box2D and Atari do, or in an object a checkpoint cannot hold): training goes on from fresh episodes"
            )
            training_env.position_lost = False
        return monitor

    def step(self, step: int) -> None:
        """Called where training stands between updates (every algorithm calls it only there):
        evaluates each time the env-step count passes a multiple of the evaluation's `every`,
        calls the callback, reports when due, and writes RUN_DIR/checkpoints/latest each time it
        passes a multiple of checkpoint_every. The loop ends when `stop_requested` is set after it."""
        if self.evaluator is not None and self.evaluator.due(self.last_step, step):
            self.evaluation(self.evaluator.run(step), self.evaluator.plan.stop_at)
        if self.callback is not None and self.callback(step) is False:
            self.stop_requested = True
            self.display.note(f"stopping: the callback returned False at step {step}")
        # After the callback: what it records at this step belongs in this step's row.
        if step >= self.next_dump:
            self.dump(step)
            while self.next_dump <= step:
                self.next_dump += self.log_interval
        every = self.checkpoint_every
        # Periodic checkpoints need somewhere to go and something to write.
        if every is not None and self.run_dir is not None and self.save is not None and step // every > self.last_step // every:
            self.save(self.run_dir / "checkpoints" / "latest")
        self.last_step = step

    def evaluation(self, point: EvaluationPoint, stop_at: float | None) -> None:
        """Report a periodic evaluation, with a run directory keep a new best as checkpoints/best,
        and ask the learn loop to stop if the evaluation reached stop_at (None: never)."""
        result = point.result
        self.stop_requested = stop_at is not None and result.mean >= stop_at
        is_best = result.mean > self.best_mean_return
        if is_best:
            self.best_mean_return = result.mean
        row = {
            "step": point.step, "mean_return": result.mean, "std_return": result.std,
            "mean_length": float(result.lengths.mean()), "episodes": result.returns.size,
            "cut_episodes": int(result.cut.sum()),
        }
        if self.evaluation_log is not None:
            self.evaluation_log.write(row)
        if self.tensorboard is not None:
            for name in ("mean_return", "std_return", "mean_length"):
                self.tensorboard.add_scalar(f"eval/{name}", row[name], point.step)
        if is_best and self.run_dir is not None and self.save_best is not None:
            self.save_best(self.run_dir / "checkpoints" / "best")
        self.display.note(f"evaluation at step {point.step}: {result}{' (new best)' if is_best else ''}")
        if self.stop_requested:
            self.display.note(f"stopping: the mean return reached stop_at={stop_at:g}")

    def dump(self, step: int) -> None:
        now = time.perf_counter()
        elapsed = max(now - self.last_dump_time, 1e-9)
        row: dict[str, float] = {"step": step, "time/steps_per_second": (step - self.last_dump_step) / elapsed}
        row["time/elapsed_seconds"] = now - self.start_time
        if self.interval_returns:
            row[RETURN_METRIC] = float(np.mean(self.interval_returns))
            row[LENGTH_METRIC] = float(np.mean(self.interval_lengths))
        for name, total in self.sums.items():
            row[name] = total / self.counts[name]
        if self.csv is not None:
            self.csv.write(row)
        if self.tensorboard is not None:
            for name, value in row.items():
                if name != "step" and name not in (RETURN_METRIC, LENGTH_METRIC):
                    self.tensorboard.add_scalar(name, value, step)
        self.display.update(step, row["time/steps_per_second"], self.recent_mean_return, self.episode_count)
        self.interval_returns.clear()
        self.interval_lengths.clear()
        self.sums.clear()
        self.counts.clear()
        self.last_dump_time, self.last_dump_step = now, step

    def close(self, step: int) -> None:
        """Final report, the learning curve, and closing files."""
        if step > self.last_dump_step or self.interval_returns or self.sums:
            self.dump(step)
        self.display.close()
        if self.evaluator is not None:
            self.evaluator.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.run_dir is not None and self.csv is not None and self.csv.rows:
            from rlfoundry.run.plotting import has_something_to_plot, plot_learning_curves

            # An empty chart would say nothing (rlf plot refuses such runs too).
            if has_something_to_plot(self.run_dir):
                plot_learning_curves([self.run_dir], self.run_dir / "learning_curve.png")


def policy_saver(model: Any) -> Callable[[Path], object]:
    """model.save for checkpoints/best: without the replay buffer where the model has one. Best
    is rewritten at every new best mean, and an Atari buffer of 1M transitions takes about 7 GB;
    the networks and optimisers are what it is kept for (a model loaded from it refills its
    buffer before training on)."""
    if "replay_buffer" in inspect.signature(model.save).parameters:
        return functools.partial(model.save, replay_buffer=False)
    return model.save


def _make_display(quiet: bool, title: str, start_step: int, end_step: int):
    if quiet:
        return _SilentDisplay()
    if sys.stdout.isatty():
        return _BarDisplay(title, start_step, end_step)
    return _LineDisplay(title, start_step, end_step)


class _SilentDisplay:
    def update(self, step: int, steps_per_second: float, mean_return: float, episodes: int) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class _LineDisplay:
    """Plain log lines, for logs and pipes where a redrawn bar would be noise: about 20 a run."""

    def __init__(self, title: str, start_step: int, end_step: int):
        self.title = title
        self.end_step = end_step
        self.every = max(1, (end_step - start_step) // 20)
        self.next_line = start_step + self.every
        self.last_printed = start_step

    def update(self, step: int, steps_per_second: float, mean_return: float, episodes: int) -> None:
        if step == self.last_printed or (step < self.next_line and step < self.end_step):
            return
        self.last_printed = step
        while self.next_line <= step:
            self.next_line += self.every
        recent = "n/a" if math.isnan(mean_return) else f"{mean_return:.2f}"
        print(
            f"{self.title}: step {step}/{self.end_step} | {steps_per_second:,.0f} steps/s | "
            f"{episodes} episode{'' if episodes == 1 else 's'} | mean return (last {RECENT_EPISODES}) {recent}",
            flush=True,
        )

    def note(self, text: str) -> None:
        print(f"{self.title}: {text}", flush=True)

    def close(self) -> None:
        pass


class _BarDisplay:
    """A rich progress bar with steps, steps/s and the recent mean return."""

    def __init__(self, title: str, start_step: int, end_step: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[speed]} steps/s"),
            TextColumn("return {task.fields[mean_return]}"),
            TimeRemainingColumn(),
        )
        self.task = self.progress.add_task(title, total=end_step, completed=start_step, speed="-", mean_return="n/a")
        self.progress.start()

    def update(self, step: int, steps_per_second: float, mean_return: float, episodes: int) -> None:
        recent = "n/a" if math.isnan(mean_return) else f"{mean_return:.2f}"
        self.progress.update(self.task, completed=step, speed=f"{steps_per_second:,.0f}", mean_return=recent)

    def note(self, text: str) -> None:
        """A line above the bar."""
        self.progress.console.print(text)

    def close(self) -> None:
        self.progress.stop()
