"""The training monitor's files and displays."""

import csv

import numpy as np

from rlfoundry.run.monitor import TrainingMonitor, make_run_dir
from rlfoundry.run.plotting import read_curve


def test_files_and_a_metric_that_appears_later(tmp_path):
    run_dir = make_run_dir("algo", "Some/Env-v0", 7, root=tmp_path)
    assert run_dir.name.startswith("algo-Some-Env-v0-s7-")
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
