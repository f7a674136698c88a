"""Each model draws its training randomness from its own generators (numpy's `rng` and the torch
generator of its collector): training two models in turn in one process, drawing from torch's
global generator between learn() calls, or sampling predictions and evaluations there, leaves every
model's training as it would be alone. Sampled predictions draw from torch's global generator, so
a seeded evaluation plays the same episodes every time."""

import numpy as np
import pytest
import torch

import rlfoundry
from rlfoundry.run.checkpoint import load_checkpoint
from rlfoundry.run.lifecycle import restore_torch_generator
from rlfoundry.run.seeding import torch_generator

# Algorithms whose training draws from torch: sampled actions (on-policy, REINFORCE), SAC's
# reparameterised actions, TD3's target smoothing noise.
SMALL_MODELS = {
    "PPO": lambda seed: rlfoundry.PPO("CartPole-v1", seed=seed, n_envs=2, n_steps=32, batch_size=32, n_epochs=2,
                                      hidden_sizes=(16,), quiet=True),
    "REINFORCE": lambda seed: rlfoundry.REINFORCE("CartPole-v1", seed=seed, hidden_sizes=(16,), quiet=True),
    "SAC": lambda seed: rlfoundry.SAC("Pendulum-v1", seed=seed, learning_starts=32, batch_size=16,
                                      actor_hidden_sizes=(16,), critic_hidden_sizes=(16,), quiet=True),
    "TD3": lambda seed: rlfoundry.TD3("Pendulum-v1", seed=seed, learning_starts=32, batch_size=16,
                                      actor_hidden_sizes=(16,), critic_hidden_sizes=(16,), quiet=True),
}
# And those whose stochastic predictions are numpy draws: Gaussian exploration noise, epsilon-greedy.
SAMPLING_MODELS = {
    **SMALL_MODELS,
    "DDPG": lambda seed: rlfoundry.DDPG("Pendulum-v1", seed=seed, learning_starts=32, batch_size=16,
                                        actor_hidden_sizes=(16,), critic_hidden_sizes=(16,), quiet=True),
    "DQN": lambda seed: rlfoundry.DQN("CartPole-v1", seed=seed, learning_starts=32, batch_size=16, train_freq=4,
                                      hidden_sizes=(16,), quiet=True),
    "QLearning": lambda seed: rlfoundry.QLearning("CliffWalking-v1", seed=seed, quiet=True),
}


def assert_same_training(model, expected, directory):
    saved = load_checkpoint(model.save(directory / "model")).tensors
    saved_expected = load_checkpoint(expected.save(directory / "expected")).tensors
    assert saved.keys() == saved_expected.keys()
    assert [key for key in saved if not torch.equal(saved[key], saved_expected[key])] == []
    np.testing.assert_array_equal(model.predict(OBSERVATIONS[type(model).__name__]),
                                  expected.predict(OBSERVATIONS[type(model).__name__]))


OBSERVATIONS = {
    "PPO": np.zeros((3, 4), np.float32), "REINFORCE": np.zeros((3, 4), np.float32), "DQN": np.zeros((3, 4), np.float32),
    "SAC": np.zeros((3, 3), np.float32), "TD3": np.zeros((3, 3), np.float32), "DDPG": np.zeros((3, 3), np.float32),
    "QLearning": np.arange(3),
}


@pytest.mark.parametrize("name", sorted(SMALL_MODELS))
def test_models_trained_in_turn_each_train_as_they_would_alone(name, tmp_path):
    make = SMALL_MODELS[name]
    alone = make(1).learn(64).learn(64)
    first, second = make(1), make(2)
    for _ in range(2):
        first.learn(64)
        second.learn(64)
        torch.randn(100)  # the caller's own draws from the global generator
    assert first.steps == alone.steps
    assert_same_training(first, alone, tmp_path)


@pytest.mark.parametrize("name", sorted(SAMPLING_MODELS))
def test_sampled_predictions_and_evaluations_leave_training_as_it_was(name, tmp_path):
    """They used to draw from the model's training generator (DQN's and the tabular methods'
    epsilon-greedy, TD3's and DDPG's noise), so looking at the stochastic policy changed the run."""
    make = SAMPLING_MODELS[name]
    straight = make(1).learn(64).learn(64)
    looked_at = make(1).learn(64)
    looked_at.predict(OBSERVATIONS[name], deterministic=False)
    rlfoundry.evaluate(looked_at, n_episodes=2, deterministic=False, seed=0, max_episode_steps=50)
    assert_same_training(looked_at.learn(64), straight, tmp_path)


@pytest.mark.parametrize("name", ["SAC", "TD3", "DQN", "QLearning"])
def test_a_seeded_sampling_evaluation_plays_the_same_episodes_and_leaves_the_global_stream(name):
    model = SAMPLING_MODELS[name](1).learn(64)
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    first = rlfoundry.evaluate(model, n_episodes=3, deterministic=False, seed=7, max_episode_steps=50)
    assert torch.equal(torch.rand(3), expected_draw)  # the caller's stream goes on as if untouched
    second = rlfoundry.evaluate(model, n_episodes=3, deterministic=False, seed=7, max_episode_steps=50)
    np.testing.assert_array_equal(first.returns, second.returns)
    np.testing.assert_array_equal(first.lengths, second.lengths)


def test_a_checkpoint_from_another_device_type_reseeds_the_generator(tmp_path):
    """A CUDA generator's state does not fit a CPU generator: the loaded model's draws start from
    the config's seed plus the step count instead, the rule for an env without a saved position."""
    model = SMALL_MODELS["PPO"](3).learn(64)
    checkpoint = load_checkpoint(model.save(tmp_path / "ppo"))
    saved = checkpoint.tensors.pop("rng.torch_cpu")
    checkpoint.tensors["rng.torch_cuda"] = saved
    generator = torch_generator(0, torch.device("cpu"))
    restore_torch_generator(checkpoint, generator)
    expected = torch.Generator().manual_seed(3 + 64)
    assert torch.equal(torch.rand(5, generator=generator), torch.rand(5, generator=expected))
