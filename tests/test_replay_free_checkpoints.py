"""Checkpoints without the replay buffer (`save(path, replay_buffer=False)`, and checkpoints/best):
the networks and optimisers exactly, no transitions; a model loaded from one collects
learning_starts transitions again before its first gradient step."""

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium import spaces

import rlfoundry
from rlfoundry import PeriodicEvaluation
from rlfoundry.data.replay import ReplayBuffer
from rlfoundry.run.checkpoint import CheckpointCorruptError, load_checkpoint
from rlfoundry.run.config import ConfigError
from rlfoundry.run.monitor import policy_saver

LEARNING_STARTS = 20
# One gradient step (or update) per env step once training runs, so counts are exact.
CASES = {
    "dqn": ("CartPole-v1", dict(hidden_sizes=(16,), batch_size=8, buffer_size=500, train_freq=1)),
    "ddpg": ("Pendulum-v1", dict(actor_hidden_sizes=(16,), critic_hidden_sizes=(16,), batch_size=8)),
    "td3": ("Pendulum-v1", dict(actor_hidden_sizes=(16,), critic_hidden_sizes=(16,), batch_size=8)),
    "sac": ("Pendulum-v1", dict(actor_hidden_sizes=(16,), critic_hidden_sizes=(16,), batch_size=8)),
}


def updates_of(model) -> int:
    """Gradient steps (DQN) or updates (the actor-critics) taken so far."""
    return model.gradient_steps_done if hasattr(model, "gradient_steps_done") else model.collector.updates


def test_warmed_up_is_more_than_learning_starts_transitions_or_full():
    buffer = ReplayBuffer(6, spaces.Box(-1, 1, (2,)), spaces.Discrete(2), n_envs=2)
    observations = np.zeros((2, 2), dtype=np.float32)
    no = np.zeros(2, dtype=bool)
    seen = []
    for _ in range(4):
        seen.append((len(buffer), buffer.warmed_up(2), buffer.warmed_up(10)))
        buffer.add(observations, np.zeros(2, dtype=np.int64), np.zeros(2, dtype=np.float32), observations, no, no)
    # len 0, 2, 4, 6 (full); learning_starts 10 exceeds the capacity: full is enough.
    assert seen == [(0, False, False), (2, False, False), (4, True, False), (6, True, True)]


@pytest.mark.parametrize("name", list(CASES))
def test_a_checkpoint_without_the_buffer_keeps_everything_else_and_refills_before_training(tmp_path, name):
    env_id, config = CASES[name]
    cls = rlfoundry.ALGORITHMS[name]
    model = cls(env_id, quiet=True, learning_starts=LEARNING_STARTS, **config).learn(60)
    assert updates_of(model) == 60 - LEARNING_STARTS
    model.save(tmp_path / "full")
    model.save(tmp_path / "policy", replay_buffer=False)

    full, policy = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "policy")
    assert any(key.startswith("replay.") for key in full.arrays)
    assert not any(key.startswith("replay.") for key in policy.arrays)
    assert policy.state["replay"] is None
    assert policy.counters == full.counters
    assert model.steps == full.counters["steps"] == 60
    assert policy.tensors.keys() == full.tensors.keys()
    assert all(torch.equal(policy.tensors[key], full.tensors[key]) for key in full.tensors)

    space = gymnasium.make(env_id).observation_space
    space.seed(0)
    observations = np.stack([space.sample() for _ in range(5)])
    loaded = rlfoundry.load(tmp_path / "policy", quiet=True)
    np.testing.assert_array_equal(loaded.predict(observations), model.predict(observations))
    assert len(loaded.replay if name == "dqn" else loaded.collector.replay) == 0

    # The empty buffer is refilled first: no step on the first learning_starts transitions.
    loaded.learn(LEARNING_STARTS)
    assert updates_of(loaded) == 60 - LEARNING_STARTS
    loaded.learn(5)
    assert updates_of(loaded) == 60 - LEARNING_STARTS + 5
    assert loaded.steps == 60 + LEARNING_STARTS + 5
    # With its buffer a loaded model trains on at once.
    with_buffer = rlfoundry.load(tmp_path / "full", quiet=True).learn(5)
    assert updates_of(with_buffer) == 60 - LEARNING_STARTS + 5


def test_the_best_checkpoint_leaves_the_replay_buffer_out(tmp_path):
    run_dir = tmp_path / "run"
    evaluation = PeriodicEvaluation(every=100, episodes=3, seed=5)
    model = rlfoundry.DQN(
        "CartPole-v1", run_dir=run_dir, quiet=True, evaluation=evaluation, learning_starts=LEARNING_STARTS,
        **CASES["dqn"][1],
    ).learn(300)
    best_point = max(model.evaluations, key=lambda point: point.result.mean)
    best = load_checkpoint(run_dir / "checkpoints" / "best")
    final = load_checkpoint(run_dir / "checkpoints" / "final")
    assert best.counters["steps"] == best_point.step
    assert not any(key.startswith("replay.") for key in best.arrays)
    assert final.arrays["replay.observations"].shape == (300, 1, 4)
    again = rlfoundry.evaluate(rlfoundry.load(run_dir / "checkpoints" / "best"), n_episodes=3, seed=5)
    np.testing.assert_array_equal(again.returns, best_point.result.returns)


def test_policy_saver_leaves_out_a_replay_buffer_only_where_there_is_one():
    ppo = rlfoundry.PPO("CartPole-v1", quiet=True, hidden_sizes=(8,))
    assert policy_saver(ppo) == ppo.save
    dqn = rlfoundry.DQN("CartPole-v1", quiet=True, hidden_sizes=(8,))
    saver = policy_saver(dqn)
    assert saver.func == dqn.save and saver.keywords == {"replay_buffer": False}


@pytest.mark.parametrize("name", list(CASES))
def test_a_call_whose_gradient_steps_wait_says_so(tmp_path, name, capsys):
    """Before: a preset's learning_starts beyond --steps, or a buffer left out of a checkpoint,
    trained nothing without a word."""
    env_id, config = CASES[name]
    cls = rlfoundry.ALGORITHMS[name]
    cls(env_id, learning_starts=LEARNING_STARTS, **config).learn(10)
    assert f"learning_starts={LEARNING_STARTS}: the gradient steps begin after env step {LEARNING_STARTS}; " \
           "this call's 10 steps are too few for any" in capsys.readouterr().out
    cls(env_id, learning_starts=LEARNING_STARTS, **config).learn(40).save(tmp_path / "policy", replay_buffer=False)
    capsys.readouterr()
    rlfoundry.load(tmp_path / "policy").learn(10)
    assert "the replay buffer holds 0 transitions (the checkpoint was saved or loaded without it): the gradient steps " \
           f"wait until it holds {LEARNING_STARTS + 1}; this call's 10 steps are too few for any" in capsys.readouterr().out
    cls(env_id, learning_starts=LEARNING_STARTS, **config).learn(40)
    assert "gradient steps" not in capsys.readouterr().out  # a run that trains says nothing


def test_a_load_without_the_replay_buffer_reads_none_and_predicts_the_same(tmp_path):
    """load(path, replay_buffer=False): the policy without its transitions (rlf eval loads so)."""
    model = rlfoundry.DQN("CartPole-v1", hidden_sizes=(8,), buffer_size=500, learning_starts=16, quiet=True).learn(64)
    model.save(tmp_path / "dqn")
    whole = rlfoundry.load(tmp_path / "dqn")
    policy_only = rlfoundry.load(tmp_path / "dqn", replay_buffer=False)
    assert len(whole.replay) == 64 and len(policy_only.replay) == 0
    observations = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    np.testing.assert_array_equal(policy_only.predict(observations), whole.predict(observations))
    # The buffer's files are not even hashed: a damaged one stops only a load that reads it.
    damaged = tmp_path / "dqn" / "arrays" / "replay.rewards.npy"
    damaged.write_bytes(damaged.read_bytes()[:-4] + b"\x00\x00\x80\x7f")
    with pytest.raises(CheckpointCorruptError, match="replay.rewards.npy does not match the hash"):
        rlfoundry.load(tmp_path / "dqn")
    np.testing.assert_array_equal(rlfoundry.load(tmp_path / "dqn", replay_buffer=False).predict(observations), whole.predict(observations))
    sac = rlfoundry.SAC("Pendulum-v1", actor_hidden_sizes=(8,), critic_hidden_sizes=(8,), buffer_size=500, learning_starts=16, quiet=True).learn(32)
    sac.save(tmp_path / "sac")
    assert len(rlfoundry.load(tmp_path / "sac", replay_buffer=False).collector.replay) == 0
    rlfoundry.PPO("CartPole-v1", hidden_sizes=(8,), n_steps=8, batch_size=8, n_epochs=1, quiet=True).save(tmp_path / "ppo")
    with pytest.raises(ConfigError, match="ppo keeps no replay buffer: leave replay_buffer out"):
        rlfoundry.load(tmp_path / "ppo", replay_buffer=False)


@pytest.mark.parametrize("value", [0, "no"])
def test_a_replay_buffer_option_that_is_not_true_or_false_is_refused_before_the_buffer_is_read(tmp_path, value):
    """replay_buffer=0 used to read the whole buffer (only False left it unread)."""
    rlfoundry.DQN("CartPole-v1", hidden_sizes=(8,), buffer_size=500, learning_starts=16, quiet=True).learn(32).save(tmp_path / "dqn")
    with pytest.raises(ConfigError, match=f"replay_buffer={value!r} is not allowed: pass False .*, or True"):
        rlfoundry.load(tmp_path / "dqn", replay_buffer=value)


@pytest.mark.parametrize("name", list(CASES))
def test_a_new_model_with_learning_starts_zero_says_nothing_of_a_checkpoint(name, capsys):
    """Its empty buffer was taken for one left out of a checkpoint: "the replay buffer holds 0
    transitions (the checkpoint was saved or loaded without it)" on a model never saved."""
    env_id, config = CASES[name]
    rlfoundry.ALGORITHMS[name](env_id, learning_starts=0, **config).learn(10)
    assert "checkpoint" not in capsys.readouterr().out
