"""learn(steps, callback=f): f(TrainingStatus) at every point between updates, in every learn
loop; returning False ends learn() there; record() reaches progress.csv."""

import csv

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import rlfoundry
from rlfoundry import TrainingStatus
from rlfoundry.run.checkpoint import load_checkpoint

# (algorithm, env, config, total steps, env steps between points where training stands between
# updates; None: whole episodes, so no fixed step). One case per learn loop.
CASES = {
    "q-learning": ("FrozenLake-v1", dict(n_envs=2), 40, 2),
    "dqn": ("CartPole-v1", dict(hidden_sizes=(16,), batch_size=8, learning_starts=16, buffer_size=500, train_freq=4), 40, 1),
    "a2c": ("CartPole-v1", dict(n_envs=2, n_steps=5, hidden_sizes=(16,)), 40, 10),
    "ppo": ("CartPole-v1", dict(n_envs=2, n_steps=16, batch_size=16, n_epochs=2, hidden_sizes=(16,)), 96, 32),
    "trpo": ("CartPole-v1", dict(n_envs=2, n_steps=16, hidden_sizes=(16,)), 96, 32),
    "sac": ("Pendulum-v1", dict(actor_hidden_sizes=(16,), critic_hidden_sizes=(16,), batch_size=8, learning_starts=10), 30, 1),
    "reinforce": ("CartPole-v1", dict(n_envs=2, hidden_sizes=(16,)), 400, None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_callback_sees_every_point_between_updates(name):
    env_id, config, total, granularity = CASES[name]
    model = rlfoundry.ALGORITHMS[name](env_id, quiet=True, **config)
    seen: list[TrainingStatus] = []
    assert model.learn(total, callback=seen.append) is model
    steps = [status.step for status in seen]
    if granularity is None:  # REINFORCE: once per batch of whole episodes, the last past the target
        assert steps == sorted(set(steps)) and steps[-1] == model.steps >= total
    else:
        assert steps == list(range(granularity, model.steps + 1, granularity))
        assert model.steps == -(-total // granularity) * granularity
    assert all(status.model is model for status in seen)


@pytest.mark.parametrize("name", list(CASES))
def test_returning_false_ends_learn_at_that_point_with_its_final_checkpoint(tmp_path, name):
    env_id, config, total, granularity = CASES[name]
    model = rlfoundry.ALGORITHMS[name](env_id, run_dir=tmp_path, quiet=True, **config)
    calls = []

    def stop_at_the_second(status):
        calls.append(status.step)
        return len(calls) < 2  # True, then False

    model.learn(total, callback=stop_at_the_second)
    assert len(calls) == 2
    assert model.steps == calls[1] < total
    assert load_checkpoint(tmp_path / "checkpoints" / "final").counters["steps"] == calls[1]


def test_a_callback_that_returns_none_changes_nothing_and_its_records_reach_progress_csv(tmp_path):
    env_id, config, total, _ = CASES["ppo"]
    plain = rlfoundry.PPO(env_id, run_dir=tmp_path / "plain", quiet=True, **config).learn(total)
    watched = rlfoundry.PPO(env_id, run_dir=tmp_path / "watched", quiet=True, **config)
    watched.learn(total, callback=lambda status: status.record("custom/steps_seen", status.step))
    assert watched.steps == plain.steps
    for key, tensor in load_checkpoint(tmp_path / "plain" / "checkpoints" / "final").tensors.items():
        assert torch.equal(tensor, load_checkpoint(tmp_path / "watched" / "checkpoints" / "final").tensors[key])
    with open(tmp_path / "watched" / "progress.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    recorded = [float(row["custom/steps_seen"]) for row in rows if row.get("custom/steps_seen")]
    # Each row averages what was recorded since the one before: one value per rollout of 32 steps.
    assert recorded and all(value % 32 == 0 for value in recorded)
    assert np.isclose(recorded[-1], total)


def test_a_callback_that_is_not_a_function_is_refused_before_anything_changes():
    model = rlfoundry.QLearning("FrozenLake-v1", quiet=True)  # its learn() draws first actions at once
    rng_state = model.rng.bit_generator.state
    with pytest.raises(TypeError, match="callback must be a function taking a rlfoundry.TrainingStatus"):
        model.learn(100, callback=5)
    assert model.steps == 0 and model.rng.bit_generator.state == rng_state
    reinforce = rlfoundry.REINFORCE("CartPole-v1", quiet=True, hidden_sizes=(8,))
    with pytest.raises(TypeError, match="got str"):
        reinforce.learn(100, callback="stop")
    reinforce.learn(10)  # the refused call did not move the step target on
    assert reinforce.collector.step_target == 10


def test_what_the_callback_records_at_a_step_is_in_that_steps_row_and_no_row_is_written_twice(tmp_path):
    """The callback runs before the row of its step is written: a value recorded at step 32 is in
    the row of step 32 (not 64), and the one recorded at the last step does not add a second row
    for that step to progress.csv and TensorBoard."""
    env_id, config, total, _ = CASES["ppo"]  # a row per rollout of 32 steps
    model = rlfoundry.PPO(env_id, run_dir=tmp_path, quiet=True, **config)
    model.learn(total, callback=lambda status: status.record("custom/step", status.step))
    with open(tmp_path / "progress.csv", newline="") as handle:
        rows = [(row["step"], row["custom/step"]) for row in csv.DictReader(handle)]
    assert rows == [("32", "32.0"), ("64", "64.0"), ("96", "96.0")]
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [(event.step, event.value) for event in events.Scalars("custom/step")] == [(32, 32.0), (64, 64.0), (96, 96.0)]
