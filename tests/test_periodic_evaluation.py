"""Periodic evaluation: `PeriodicEvaluation(every=N)` evaluates at the first point between updates
past each multiple of N, leaves training bit for bit as it would be without it, logs every
evaluation and keeps the best policy as RUN_DIR/checkpoints/best."""

import csv
import json

import numpy as np
import pytest
import torch
from gymnasium.envs.classic_control import CartPoleEnv
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import rlfoundry
from rlfoundry import PeriodicEvaluation
from rlfoundry.cli import main
from rlfoundry.run.checkpoint import load_checkpoint
from rlfoundry.run.config import ConfigError
from rlfoundry.run.plotting import read_evaluations

# (algorithm, env, config, total steps, evaluation every, env steps between points where
# training stands between updates; None: whole episodes, so no fixed step)
CASES = {
    "reinforce": ("CartPole-v1", dict(n_envs=2, hidden_sizes=(16,)), 300, 100, None),
    "q-learning": ("FrozenLake-v1", dict(n_envs=2), 400, 150, 2),
    "dqn": ("CartPole-v1", dict(hidden_sizes=(16,), batch_size=8, learning_starts=16, buffer_size=500, train_freq=4), 200, 70, 1),
    "ppo": ("CartPole-v1", dict(n_envs=2, n_steps=16, batch_size=16, n_epochs=2, hidden_sizes=(16,)), 160, 50, 32),
    "sac": ("Pendulum-v1", dict(actor_hidden_sizes=(16,), critic_hidden_sizes=(16,), batch_size=16, learning_starts=50), 150, 60, 1),
}


def first_points_past_multiples(total: int, every: int, granularity: int) -> list[int]:
    """The step counts among granularity, 2 granularity, ... (up to the first >= total) where a
    multiple of `every` was passed since the one before."""
    end = -(-total // granularity) * granularity
    steps = range(granularity, end + 1, granularity)
    return [step for step in steps if step // every > (step - granularity) // every]


def test_first_points_past_multiples_by_hand():
    assert first_points_past_multiples(160, 50, 32) == [64, 128, 160]
    assert first_points_past_multiples(400, 150, 2) == [150, 300]
    assert first_points_past_multiples(100, 10, 25) == [25, 50, 75, 100]
    assert first_points_past_multiples(70, 30, 25) == [50, 75]


def final_numbers(run_dir):
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "final")
    return checkpoint.counters, checkpoint.tensors, checkpoint.arrays


@pytest.mark.parametrize("name", list(CASES))
def test_evaluations_fall_past_each_multiple_and_leave_training_bit_for_bit_unchanged(tmp_path, name):
    """Stochastic evaluation draws only from torch's global generator, which is put back, so the
    final checkpoint equals that of a run without evaluation in every counter, tensor and array."""
    env_id, config, total, every, granularity = CASES[name]
    cls = rlfoundry.ALGORITHMS[name]
    plain = cls(env_id, run_dir=tmp_path / "plain", quiet=True, **config).learn(total)
    evaluation = PeriodicEvaluation(every=every, episodes=3, deterministic=False)
    evaluated = cls(env_id, run_dir=tmp_path / "evaluated", quiet=True, evaluation=evaluation, **config).learn(total)

    assert plain.evaluations == []
    steps = [point.step for point in evaluated.evaluations]
    if granularity is None:
        assert steps and steps == sorted(steps) and len({step // every for step in steps}) == len(steps)
    else:
        assert steps == first_points_past_multiples(total, every, granularity)
    assert all(point.result.returns.shape == (3,) for point in evaluated.evaluations)
    counters, tensors, arrays = final_numbers(tmp_path / "evaluated")
    plain_counters, plain_tensors, plain_arrays = final_numbers(tmp_path / "plain")
    assert counters == plain_counters
    assert tensors.keys() == plain_tensors.keys() and arrays.keys() == plain_arrays.keys()
    assert all(torch.equal(tensors[key], plain_tensors[key]) for key in tensors)
    assert all(np.array_equal(arrays[key], plain_arrays[key]) for key in arrays)


STOPPING_CASES = {
    **CASES,
    "a2c": ("CartPole-v1", dict(n_envs=2, n_steps=5, hidden_sizes=(16,)), 100, 30, 10),
    "trpo": ("CartPole-v1", dict(n_envs=2, n_steps=16, batch_size=16, hidden_sizes=(16,)), 96, 40, 32),
}


@pytest.mark.parametrize("name", list(STOPPING_CASES))
def test_stop_at_ends_learn_at_the_first_evaluation_that_reaches_it(tmp_path, name):
    """Every learn loop ends where the evaluation asks, and writes its final checkpoint there."""
    env_id, config, total, every, granularity = STOPPING_CASES[name]
    cls = rlfoundry.ALGORITHMS[name]
    evaluation = PeriodicEvaluation(every=every, episodes=1, stop_at=-1e9)
    model = cls(env_id, run_dir=tmp_path, quiet=True, evaluation=evaluation, **config).learn(total)
    (point,) = model.evaluations
    if granularity is not None:
        assert point.step == first_points_past_multiples(total, every, granularity)[0]
    assert point.step < total
    assert load_checkpoint(tmp_path / "checkpoints" / "final").counters["steps"] == point.step
    if name == "reinforce":
        # The next learn() call counts its steps from the stop, not from the target it did not reach.
        assert model.collector.step_target == point.step


def test_stop_at_a_return_the_run_reaches_stops_at_its_first_evaluation_there(tmp_path):
    evaluation = PeriodicEvaluation(every=1024, episodes=4, seed=7)
    full = rlfoundry.PPO("CartPole-v1", quiet=True, evaluation=evaluation, **PPO_CONFIG).learn(6144)
    means = [point.result.mean for point in full.evaluations]
    target = sorted(means)[-2]  # reached before the end of the run, whichever order they came in
    first = next(index for index, mean in enumerate(means) if mean >= target)
    assert first < len(means) - 1

    stopping = PeriodicEvaluation(every=1024, episodes=4, seed=7, stop_at=target)
    stopped = rlfoundry.PPO("CartPole-v1", quiet=True, evaluation=stopping, **PPO_CONFIG).learn(6144)
    assert stopped.steps == full.evaluations[first].step
    assert [point.result.mean for point in stopped.evaluations] == means[: first + 1]


def evaluation_rows(run_dir):
    with open(run_dir / "evaluations.csv", newline="") as handle:
        return list(csv.DictReader(handle))


PPO_CONFIG = dict(n_envs=4, n_steps=64, batch_size=64, n_epochs=4, learning_rate=3e-3, hidden_sizes=(32,), seed=3)


def test_the_best_checkpoint_holds_the_best_evaluated_policy(tmp_path):
    run_dir = tmp_path / "run"
    evaluation = PeriodicEvaluation(every=1024, episodes=4, seed=7)
    model = rlfoundry.PPO("CartPole-v1", run_dir=run_dir, quiet=True, evaluation=evaluation, **PPO_CONFIG).learn(6144)

    steps = [point.step for point in model.evaluations]
    means = [point.result.mean for point in model.evaluations]
    assert steps == [1024, 2048, 3072, 4096, 5120, 6144]
    assert len(set(means)) > 1, "every evaluation scored the same: the test cannot tell the best apart"
    rows = evaluation_rows(run_dir)
    assert list(rows[0]) == ["step", "mean_return", "std_return", "mean_length", "episodes", "cut_episodes"]
    assert [int(row["step"]) for row in rows] == steps
    assert [float(row["mean_return"]) for row in rows] == pytest.approx(means)
    assert {int(row["episodes"]) for row in rows} == {4}
    assert {int(row["cut_episodes"]) for row in rows} == {0}
    events = EventAccumulator(str(run_dir))
    events.Reload()
    scalars = events.Scalars("eval/mean_return")
    assert [event.step for event in scalars] == steps
    assert [event.value for event in scalars] == pytest.approx(means)

    best = model.evaluations[int(np.argmax(means))]  # the first of equal bests is kept
    assert load_checkpoint(run_dir / "checkpoints" / "best").counters["steps"] == best.step
    again = rlfoundry.evaluate(rlfoundry.load(run_dir / "checkpoints" / "best"), n_episodes=4, seed=7)
    np.testing.assert_array_equal(again.returns, best.result.returns)
    # The last evaluation is the final policy's: the same episodes as evaluate() on it.
    final = rlfoundry.evaluate(model, n_episodes=4, seed=7)
    np.testing.assert_array_equal(final.returns, model.evaluations[-1].result.returns)


def test_resuming_in_the_run_directory_replaces_best_only_with_a_better_one(tmp_path):
    run_dir = tmp_path / "run"
    evaluation = PeriodicEvaluation(every=512, episodes=2)
    rlfoundry.PPO("CartPole-v1", run_dir=run_dir, quiet=True, evaluation=evaluation, **PPO_CONFIG).learn(1024)
    best_steps = load_checkpoint(run_dir / "checkpoints" / "best").counters["steps"]
    with open(run_dir / "evaluations.csv", "a", newline="") as handle:
        # An unbeatable score recorded earlier in this run directory.
        handle.write("1024,1000000.0,0.0,500.0,2\n")

    resumed = rlfoundry.load(run_dir / "checkpoints" / "final", run_dir=run_dir, quiet=True, evaluation=evaluation)
    resumed.learn(1024)
    assert [point.step for point in resumed.evaluations] == [1536, 2048]
    assert load_checkpoint(run_dir / "checkpoints" / "best").counters["steps"] == best_steps
    assert [int(row["step"]) for row in evaluation_rows(run_dir)] == [512, 1024, 1024, 1536, 2048]


def test_without_a_run_directory_nothing_is_written_and_the_evaluations_are_on_the_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    model = rlfoundry.QLearning("FrozenLake-v1", evaluation=PeriodicEvaluation(every=100, episodes=5)).learn(300)
    assert not any(tmp_path.iterdir())
    assert [point.step for point in model.evaluations] == [100, 200, 300]
    out = capsys.readouterr().out
    assert "q-learning: evaluation at step 200: mean return" in out


def test_bad_evaluations_are_refused_before_anything_is_trained(tmp_path):
    with pytest.raises(ConfigError, match="evaluation every=0 is out of range"):
        PeriodicEvaluation(every=0)
    with pytest.raises(ConfigError, match="evaluation episodes must be an integer"):
        PeriodicEvaluation(every=10, episodes=2.5)
    with pytest.raises(ConfigError, match="evaluation deterministic must be True or False"):
        PeriodicEvaluation(every=10, deterministic="yes")
    with pytest.raises(ConfigError, match=r"evaluation stop_at=nan is out of range"):
        PeriodicEvaluation(every=10, stop_at=float("nan"))
    with pytest.raises(ConfigError, match=r"pass rlfoundry.PeriodicEvaluation\(every=...\)"):
        rlfoundry.PPO("CartPole-v1", evaluation=10_000)
    rlfoundry.QLearning("FrozenLake-v1", quiet=True).save(tmp_path / "saved")
    with pytest.raises(ConfigError, match="unknown TabularConfig config key 'evaluate_every'"):
        rlfoundry.load(tmp_path / "saved", evaluate_every=10)

    # An env object made without gym.make has no id to evaluate on: said at learn(), before the first step.
    model = rlfoundry.DQN(CartPoleEnv(), quiet=True, evaluation=PeriodicEvaluation(every=10))
    with pytest.raises(ConfigError, match=r"pass PeriodicEvaluation\(..., env=...\)"):
        model.learn(100)
    assert model.steps == 0
    model.evaluation = PeriodicEvaluation(every=50, episodes=1, env="CartPole-v1")
    assert [point.step for point in model.learn(100).evaluations] == [50, 100]


def test_periodic_evaluations_cut_episodes_at_their_step_cap(tmp_path):
    """CliffWalking-v1 has no time limit; its shortest path takes 13 steps, so a cap of 7 cuts
    every evaluation episode there (falling off the cliff only sends the agent back to the start)."""
    evaluation = PeriodicEvaluation(every=100, episodes=2, max_episode_steps=7)
    model = rlfoundry.QLearning("CliffWalking-v1", run_dir=tmp_path, quiet=True, evaluation=evaluation).learn(200)
    assert [point.step for point in model.evaluations] == [100, 200]
    for point in model.evaluations:
        assert point.result.lengths.tolist() == [7, 7] and point.result.cut.tolist() == [True, True]
    assert [int(row["cut_episodes"]) for row in evaluation_rows(tmp_path)] == [2, 2]
    with pytest.raises(ConfigError, match="evaluation max_episode_steps=0 is out of range"):
        PeriodicEvaluation(every=10, max_episode_steps=0)


class CountedClosesCartPole(CartPoleEnv):
    closes = 0

    def close(self):
        self.closes += 1
        super().close()


def test_an_evaluation_env_object_serves_every_learn_call():
    """An env object given for evaluation is the caller's: it stays open from one learn() to the next."""
    evaluation_env = CountedClosesCartPole()
    evaluation = PeriodicEvaluation(every=50, episodes=2, env=evaluation_env, seed=5)
    model = rlfoundry.DQN(CartPoleEnv(), quiet=True, evaluation=evaluation, learning_starts=1000)
    model.learn(100).learn(100)
    points = model.evaluations
    assert [point.step for point in points] == [50, 100, 150, 200]
    # Before learning_starts the network is untouched, so every evaluation plays the same episodes.
    assert all(np.array_equal(point.result.returns, points[0].result.returns) for point in points)
    assert evaluation_env.closes == 0


def test_rlf_train_eval_every_writes_evaluations_and_the_best_checkpoint(tmp_path, capsys):
    status = main([
        "train", "q-learning", "FrozenLake-v1", "--steps", "300", "--eval-every", "100", "--eval-episodes", "3",
        "--runs-dir", str(tmp_path), "--quiet",
    ])
    out = capsys.readouterr().out
    assert status == 0
    (run_dir,) = list(tmp_path.iterdir())
    recorded = json.loads((run_dir / "config.json").read_text())["periodic_evaluation"]
    assert recorded == dict(every=100, episodes=3, env=None, deterministic=True, seed=None, stop_at=None, max_episode_steps=None)
    assert [int(row["step"]) for row in evaluation_rows(run_dir)] == [100, 200, 300]
    assert (run_dir / "checkpoints" / "best" / "manifest.json").is_file()
    assert "best periodic evaluation of the run: mean return" in out
    assert read_evaluations(run_dir)[0] == [100.0, 200.0, 300.0]  # the markers on learning_curve.png

    assert main(["resume", str(run_dir), "--steps", "100", "--eval-every", "100", "--eval-episodes", "3", "--quiet"]) == 0
    assert [int(row["step"]) for row in evaluation_rows(run_dir)] == [100, 200, 300, 400]
    capsys.readouterr()

    assert main(["train", "q-learning", "FrozenLake-v1", "--eval-every", "0", "--runs-dir", str(tmp_path)]) == 2
    assert "--eval-every=0 is out of range" in capsys.readouterr().err
    assert main(["train", "q-learning", "FrozenLake-v1", "--stop-at-return", "1", "--runs-dir", str(tmp_path)]) == 2
    assert "--stop-at-return needs --eval-every N" in capsys.readouterr().err
    assert len(list(tmp_path.iterdir())) == 1

    stop_root = tmp_path / "stopping"
    assert main([
        "train", "q-learning", "FrozenLake-v1", "--steps", "300", "--eval-every", "100", "--stop-at-return", "-1",
        "--runs-dir", str(stop_root), "--quiet",
    ]) == 0
    (run_dir,) = list(stop_root.iterdir())
    assert load_checkpoint(run_dir / "checkpoints" / "final").counters["steps"] == 100
    assert "stopped at step 100 of 300: the evaluation there reached --stop-at-return (mean 0.00)" in capsys.readouterr().out


def test_rlf_resume_says_it_stopped_early_only_when_stop_at_return_stopped_it(tmp_path, capsys):
    """A REINFORCE run ends past its step target (whole batches of episodes) and the next learn()
    counts from that target, so a resumed call can end before the run's steps plus --steps
    without being stopped: that is no --stop-at-return stop, which was never asked for."""
    assert main([
        "train", "reinforce", "CartPole-v1", "--no-preset", "--steps", "15", "--env-kwarg", "max_episode_steps=10",
        "--set", "n_envs=1", "--eval-every", "5", "--eval-episodes", "1", "--runs-dir", str(tmp_path), "--quiet",
    ]) == 0
    (run_dir,) = list(tmp_path.iterdir())
    capsys.readouterr()
    # Steps 20, step target 15: the call's target is 27, reached by the one batch that ends at 30 (< 20 + 12).
    assert main(["resume", str(run_dir), "--steps", "12", "--quiet"]) == 0
    assert load_checkpoint(run_dir / "checkpoints" / "final").counters["steps"] == 30
    assert "stopped at step" not in capsys.readouterr().out


def test_rlf_train_does_not_replay_an_evaluation_made_at_its_last_step(tmp_path, capsys, monkeypatch):
    """The final evaluation's episodes (seed + 10,000, --eval-episodes, the final policy) are those
    of a periodic evaluation at the last step: they are printed from it instead of played again."""
    final_evaluations = []
    real_evaluate = rlfoundry.evaluate

    def counted(*arguments, **options):
        final_evaluations.append(options)
        return real_evaluate(*arguments, **options)

    monkeypatch.setattr(rlfoundry, "evaluate", counted)
    for every, expected_calls in ((100, 0), (200, 1)):
        root = tmp_path / f"every{every}"
        assert main([
            "train", "q-learning", "FrozenLake-v1", "--steps", "300", "--eval-every", str(every),
            "--eval-episodes", "4", "--runs-dir", str(root), "--quiet",
        ]) == 0
        assert len(final_evaluations) == expected_calls
        (run_dir,) = list(root.iterdir())
        model = rlfoundry.load(run_dir / "checkpoints" / "final")
        played = real_evaluate(model, n_episodes=4, seed=model.config.seed + 10_000)
        assert f"evaluation: {played}\n" in capsys.readouterr().out
