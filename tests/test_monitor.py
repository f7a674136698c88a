"""The training monitor's files and displays."""

import csv

import numpy as np

from rlfoundry.run.monitor import TrainingMonitor, new_run_dir
from rlfoundry.run.plotting import read_curve


def test_files_and_a_metric_that_appears_later(tmp_path):
    run_dir = new_run_dir("algo", "Some/Env-v0", 7, root=tmp_path)
    assert run_dir.name.startswith("algo-Some-Env-v0-s7-") and not run_dir.exists()  # created by its first writer
    monitor = TrainingMonitor(run_dir, total_steps=100, quiet=True, log_interval=10)
    for step in range(1, 101):
        if step % 25 == 0:
            monitor.episodes(step, np.array([float(step)]), np.array([25]))
        if step > 50:
            monitor.record("train/loss", 2.0)
            monitor.record("train/loss", 4.0)
        monitor.step(step)
    monitor.close(100)
    with open(run_dir / "progress.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["step"] for row in rows] == [str(step) for step in range(10, 101, 10)]
    assert rows[0]["train/loss"] == "" and rows[-1]["train/loss"] == "3.0"
    assert rows[2]["rollout/episode_return"] == "25.0" and rows[2]["rollout/episode_length"] == "25.0"
    assert read_curve(run_dir) == ([30.0, 50.0, 80.0, 100.0], [25.0, 50.0, 75.0, 100.0])
    assert (run_dir / "learning_curve.png").stat().st_size > 1000
    assert any(path.name.startswith("events.out.tfevents") for path in run_dir.iterdir())


def test_a_run_without_a_finished_episode_draws_no_empty_learning_curve(tmp_path):
    monitor = TrainingMonitor(tmp_path, total_steps=20, quiet=True, log_interval=10)
    for step in range(1, 21):
        monitor.record("train/loss", 1.0)
        monitor.step(step)
    monitor.close(20)
    assert (tmp_path / "progress.csv").exists() and not (tmp_path / "learning_curve.png").exists()


def test_a_second_learn_call_continues_progress_csv(tmp_path):
    """Two monitors in one run directory (two learn() calls, or a resumed run): the second one
    appends its rows, with a metric the first one never had, and loses none of the first's."""
    first = TrainingMonitor(tmp_path, total_steps=20, quiet=True, log_interval=10)
    for step in range(1, 21):
        first.record("train/loss", 1.0)
        first.step(step)
    first.close(20)
    second = TrainingMonitor(tmp_path, total_steps=20, start_step=20, quiet=True, log_interval=10)
    for step in range(21, 41):
        second.record("train/loss", 2.0)
        second.record("train/entropy", 0.5)
        second.step(step)
    second.close(40)
    with open(tmp_path / "progress.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["step"] for row in rows] == ["10", "20", "30", "40"]
    assert [row["train/loss"] for row in rows] == ["1.0", "1.0", "2.0", "2.0"]
    assert [row["train/entropy"] for row in rows] == ["", "", "0.5", "0.5"]


def test_no_run_dir_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monitor = TrainingMonitor(None, total_steps=10, quiet=True)
    monitor.episodes(5, np.array([1.0]), np.array([5]))
    monitor.step(10)
    monitor.close(10)
    assert list(tmp_path.iterdir()) == []
    assert monitor.recent_mean_return == 1.0


def test_plain_lines_when_not_a_terminal(capsys):
    monitor = TrainingMonitor(None, total_steps=1000, quiet=False, log_interval=10, title="demo")
    for step in range(1, 1001):
        monitor.step(step)
    monitor.close(1000)
    lines = capsys.readouterr().out.strip().splitlines()
    assert 15 <= len(lines) <= 21
    assert lines[-1].startswith("demo: step 1000/1000 |")
