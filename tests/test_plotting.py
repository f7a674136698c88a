"""Aggregated learning curves: the mean and min-max band of several runs on a shared grid of
steps, checked on hand-made curves, and `rlf plot --aggregate`."""

import json

import numpy as np
import pytest

from rlfoundry.cli import main
from rlfoundry.run.monitor import RETURN_METRIC
from rlfoundry.run.plotting import RunDirectoryError, aggregate_curves, group_runs


def test_aggregate_curves_interpolates_each_run_on_the_steps_all_of_them_logged():
    rising = ([0.0, 10.0, 20.0], [0.0, 10.0, 20.0])
    flat = ([5.0, 15.0, 25.0], [10.0, 10.0, 10.0])
    curve = aggregate_curves([rising, flat], points=4)
    # The grid runs from the latest first step (5) to the earliest last step (20).
    np.testing.assert_array_equal(curve.steps, [5.0, 10.0, 15.0, 20.0])
    np.testing.assert_array_equal(curve.mean, [7.5, 10.0, 12.5, 15.0])
    np.testing.assert_array_equal(curve.low, [5.0, 10.0, 10.0, 10.0])
    np.testing.assert_array_equal(curve.high, [10.0, 10.0, 15.0, 20.0])
    # The error names the run that starts latest and the one that ends earliest.
    with pytest.raises(RunDirectoryError, match="late starts at step 20, after early ends at step 5;"):
        aggregate_curves(
            [([0.0, 5.0], [1.0, 1.0]), ([20.0, 30.0], [1.0, 1.0]), ([0.0, 10.0], [1.0, 1.0])],
            names=["early", "late", "other"],
        )


def fake_run(root, name, algorithm, env_id, returns, config=True, **recorded):
    """A run directory whose config.json holds the algorithm, the env id and `recorded` (runs of
    rlfoundry before env keyword arguments recorded no env_kwargs)."""
    run_dir = root / name
    run_dir.mkdir()
    if config:
        (run_dir / "config.json").write_text(json.dumps({"algorithm": algorithm, "env_id": env_id, **recorded}))
    rows = [f"{100 * (index + 1)},{value}" for index, value in enumerate(returns)]
    (run_dir / "progress.csv").write_text("\n".join([f"step,{RETURN_METRIC}", *rows]) + "\n")
    return run_dir


def test_rlf_plot_aggregate_groups_runs_by_algorithm_and_env(tmp_path, capsys):
    ppo = [fake_run(tmp_path, f"ppo-s{seed}", "ppo", "CartPole-v1", [10 * seed, 20, 30]) for seed in range(3)]
    a2c = fake_run(tmp_path, "a2c-s0", "a2c", "CartPole-v1", [5, 6, 7])
    assert group_runs([ppo[0], a2c, ppo[1], ppo[2]]) == {"ppo CartPole-v1": ppo, "a2c CartPole-v1": [a2c]}
    # Another env, though the same id: not averaged with the runs on the registered one.
    longer = fake_run(tmp_path, "ppo-longer", "ppo", "CartPole-v1", [1, 2, 3], env_kwargs={"max_episode_steps": 1000})
    plain = fake_run(tmp_path, "ppo-plain", "ppo", "CartPole-v1", [1, 2, 3], env_kwargs={})
    assert group_runs([ppo[0], longer, plain]) == {"ppo CartPole-v1": [ppo[0], plain], "ppo CartPole-v1(max_episode_steps=1000)": [longer]}
    # The same keyword arguments given in another order (rlf train --env-kwarg a=1 --env-kwarg b=2, then b, a): one env.
    both = {"max_episode_steps": 1000, "disable_env_checker": True}
    first = fake_run(tmp_path, "ppo-both", "ppo", "CartPole-v1", [1, 2, 3], env_kwargs=both)
    second = fake_run(tmp_path, "ppo-both-reversed", "ppo", "CartPole-v1", [1, 2, 3], env_kwargs=dict(reversed(both.items())))
    assert group_runs([first, second]) == {"ppo CartPole-v1(disable_env_checker=True, max_episode_steps=1000)": [first, second]}
    # A Python run on an env its record cannot describe is not averaged with the runs on the id's own env.
    wrapped = fake_run(tmp_path, "ppo-wrapped", "ppo", "CartPole-v1", [1, 2, 3], env_kwargs=None)
    made = fake_run(tmp_path, "ppo-function", "ppo", None, [1, 2, 3], env_kwargs=None)
    assert group_runs([plain, wrapped, made]) == {
        "ppo CartPole-v1": [plain],
        "ppo CartPole-v1 (with wrappers or keyword arguments not recorded)": [wrapped],
        "ppo (an env without a registered id)": [made],
    }
    output = tmp_path / "curves.png"
    assert main(["plot", *map(str, [*ppo, a2c]), "--aggregate", "-o", str(output)]) == 0
    assert capsys.readouterr().out.strip() == str(output)
    assert output.stat().st_size > 1000

    python_run = fake_run(tmp_path, "python-run", None, None, [1, 2], config=False)
    assert main(["plot", str(ppo[0]), str(python_run), "--aggregate", "-o", str(tmp_path / "no.png")]) == 2
    assert "has no config.json" in capsys.readouterr().err
    quiet = fake_run(tmp_path, "no-episodes", "ppo", "CartPole-v1", [])
    assert main(["plot", str(ppo[0]), str(quiet), "--aggregate", "-o", str(tmp_path / "no.png")]) == 2
    assert "has no finished episode" in capsys.readouterr().err
    assert not (tmp_path / "no.png").exists()


def test_a_run_with_one_logged_return_is_drawn_as_a_point(tmp_path, monkeypatch):
    # A line through one point draws nothing: a short run whose only finished episodes fell in one
    # row of progress.csv was plotted as an empty chart.
    from rlfoundry.run import plotting

    drawn = []
    monkeypatch.setattr(plotting, "_finish", lambda figure, axes, output: drawn.append(axes.lines))
    plotting.plot_learning_curves([fake_run(tmp_path, "one-row", "ppo", "CartPole-v1", [12.0])], tmp_path / "one.png")
    plotting.plot_learning_curves([fake_run(tmp_path, "two-rows", "ppo", "CartPole-v1", [12.0, 13.0])], tmp_path / "two.png")
    [one_point], [two_points] = drawn
    assert one_point.get_marker() not in ("None", "", " ", None)
    assert two_points.get_marker() == "None"  # a line is drawn as before


def test_rlf_plot_of_a_run_with_nothing_to_draw_is_an_error_naming_it(tmp_path, capsys):
    # Rows of train/* metrics but no finished episode: what a short Pendulum run logs.
    quiet = tmp_path / "no-episodes"
    quiet.mkdir()
    (quiet / "progress.csv").write_text(f"step,{RETURN_METRIC},train/value_loss\n64,,1.5\n")
    assert main(["plot", str(quiet)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"rlf plot: error: {quiet} has no finished episode in its progress.csv and no evaluations: "
        "nothing to plot (train it longer, or with --eval-every N)"
    )
    assert not (quiet / "learning_curve.png").exists()
    ppo = fake_run(tmp_path, "ppo", "ppo", "CartPole-v1", [10, 20])
    assert main(["plot", str(ppo), str(quiet), "-o", str(tmp_path / "both.png")]) == 2
    assert f"{quiet} has no finished episode" in capsys.readouterr().err
    assert not (tmp_path / "both.png").exists()
    # Its evaluations are something to draw.
    (quiet / "evaluations.csv").write_text("step,mean_return\n64,-1200.5\n")
    assert main(["plot", str(quiet)]) == 0
    assert capsys.readouterr().out.strip() == str(quiet / "learning_curve.png")
