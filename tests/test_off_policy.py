"""What DDPG, TD3 and SAC share (run/off_policy.py): the collect-then-update schedule, action
bounds, exact resume, clear errors, and smoke runs on MuJoCo and Box2D."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import rlfoundry
from off_policy_checks import TINY
from rlfoundry import DDPG, SAC, TD3
from rlfoundry.envs.spaces import SpaceError
from rlfoundry.run.config import ConfigError
from rlfoundry.run.off_policy import crossings

ALGORITHMS = [DDPG, TD3, SAC]


@pytest.mark.parametrize("before, after, interval, expected", [(0, 1, 1, 1), (3, 4, 4, 1), (4, 7, 4, 0), (5, 13, 4, 2)])
def test_crossings_counts_the_multiples_passed(before, after, interval, expected):
    assert crossings(before, after, interval) == expected


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_updates_follow_learning_starts_train_freq_and_gradient_steps(cls):
    # 4 envs: 15 iterations = 60 env steps. Bursts are due when a multiple of train_freq=8 is
    # passed after more than learning_starts=20 steps: at 24, 32, 40, 48, 56, each of 3 steps.
    model = cls("Pendulum-v1", n_envs=4, train_freq=8, gradient_steps=3, **{**TINY, "learning_starts": 20})
    model.learn(60)
    assert model.collector.steps == 60 and model.collector.updates == 5 * 3
    assert len(model.collector.replay) == 60


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_actions_respect_the_env_bounds_and_the_replay_stores_unit_actions(cls):
    model = cls("MountainCarContinuous-v0", **{**TINY, "learning_starts": 10}).learn(40)
    stored = model.collector.replay.actions[: len(model.collector.replay)]
    assert stored.min() >= -1 and stored.max() <= 1
    observations = np.random.default_rng(0).normal(size=(64, 2)) * 5
    for deterministic in (True, False):
        actions = model.predict(observations, deterministic=deterministic)
        assert actions.shape == (64, 1) and actions.dtype == np.float32
        assert actions.min() >= -1.0 and actions.max() <= 1.0
    assert model.predict(observations[0]).shape == (1,)


def test_actions_are_scaled_onto_asymmetric_bounds():
    env = gym.wrappers.RescaleAction(gym.make("Pendulum-v1"), min_action=np.float32(0.0), max_action=np.float32(4.0))
    model = TD3(env, **TINY)
    model.actor.head.bias.data.fill_(100.0)  # tanh saturates: unit action +1 -> the upper bound
    assert model.predict(np.zeros(3, dtype=np.float32)).tolist() == [4.0]
    model.actor.head.bias.data.fill_(-100.0)
    assert model.predict(np.zeros(3, dtype=np.float32)).tolist() == [0.0]


def train_half_and_resume(cls, tmp_path) -> tuple[object, object]:
    settings = dict(seed=4, **TINY)
    straight = cls("Pendulum-v1", **settings).learn(200)
    first = cls("Pendulum-v1", **settings).learn(100)
    first.save(tmp_path / "half")
    resumed = rlfoundry.load(tmp_path / "half").learn(100)
    return straight, resumed


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_training_resumes_exactly(cls, tmp_path):
    straight, resumed = train_half_and_resume(cls, tmp_path)
    assert type(resumed) is cls and resumed.collector.steps == 200
    assert resumed.collector.updates == straight.collector.updates
    for name, part in straight.parts().items():
        other = resumed.parts()[name]
        if isinstance(part, torch.optim.Optimizer):
            parameters = [parameter for group in part.param_groups for parameter in group["params"]]
            other_parameters = [parameter for group in other.param_groups for parameter in group["params"]]
            for parameter, other_parameter in zip(parameters, other_parameters):
                state, other_state = part.state[parameter], other.state[other_parameter]
                assert state.keys() == other_state.keys(), name
                assert all(torch.equal(state[key], other_state[key]) for key in state), name
        else:
            for (key, tensor), other_tensor in zip(part.state_dict().items(), other.state_dict().values()):
                assert torch.equal(tensor, other_tensor), f"{name}.{key}"
    filled = len(straight.collector.replay)
    assert np.array_equal(straight.collector.replay.observations[:filled], resumed.collector.replay.observations[:filled])


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_loaded_model_predicts_the_same_actions(cls, tmp_path):
    model = cls("Pendulum-v1", **TINY).learn(60)
    model.save(tmp_path / "model")
    loaded = rlfoundry.load(tmp_path / "model")
    observations = np.random.default_rng(1).normal(size=(16, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(observations), model.predict(observations))


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_discrete_actions_are_refused_with_a_suggestion(cls):
    with pytest.raises(SpaceError, match=r"Discrete\(2\).*DQN or PPO"):
        cls("CartPole-v1")


class UnboundedActions(gym.Wrapper):
    """Pendulum with its action bounds removed."""

    def __init__(self):
        super().__init__(gym.make("Pendulum-v1"))
        self.action_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)


def test_infinite_action_bounds_are_refused_naming_the_space():
    with pytest.raises(SpaceError, match=r"Box\(-inf, inf, \(1,\), float32\).*infinite"):
        SAC(UnboundedActions())


class ObservationShape(gym.ObservationWrapper):
    """Pendulum whose observations are zeros of another shape and dtype (never stepped)."""

    def __init__(self, shape: tuple[int, ...], dtype: type):
        super().__init__(gym.make("Pendulum-v1"))
        self.observation_space = gym.spaces.Box(0, 255, shape, dtype)

    def observation(self, observation):
        return np.zeros(self.observation_space.shape, self.observation_space.dtype)


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_observations_that_are_not_vectors_are_refused_with_the_remedy_for_their_kind(cls):
    # Flattening suits a small array; frames need an image encoder, which PPO and A2C have.
    with pytest.raises(SpaceError, match=r"\(2, 3\).*FlattenObservation"):
        cls(ObservationShape((2, 3), np.float32))
    with pytest.raises(SpaceError, match=r"\(3, 84, 84\).*no image encoder; PPO and A2C read") as refused:
        cls(ObservationShape((3, 84, 84), np.uint8))
    assert "FlattenObservation" not in str(refused.value)


class WholeNumberObservations(gym.ObservationWrapper):
    """Pendulum observed as int64 vectors (rounded to hundredths, times 100)."""

    def __init__(self):
        super().__init__(gym.make("Pendulum-v1"))
        self.observation_space = gym.spaces.Box(-800, 800, (3,), np.int64)

    def observation(self, observation):
        return np.round(observation * 100).astype(np.int64)


@pytest.mark.parametrize("cls", ALGORITHMS)
def test_integer_vector_observations_train(cls):
    """Acting cast them to float32, but the sampled minibatches kept int64 and the first update
    failed with torch's "mat1 and mat2 must have the same dtype"."""
    model = cls(WholeNumberObservations(), **{**TINY, "learning_starts": 20}).learn(30)
    assert model.collector.updates == 10
    assert model.predict(np.array([100, 0, -50])).shape == (1,)


@pytest.mark.parametrize(
    "cls, settings, field",
    [
        (TD3, {"policy_delay": 0}, "policy_delay"),
        (TD3, {"target_noise_clip": -0.1}, "target_noise_clip"),
        (SAC, {"alpha": 0.0}, "alpha"),
        (DDPG, {"tau": 0.0}, "tau"),
        (DDPG, {"batch_size": 0}, "batch_size"),
        (SAC, {"critic_hidden_sizes": (64, 0)}, "critic_hidden_sizes"),
        (TD3, {"exploration_noise_std": float("nan")}, "exploration_noise_std"),
        (SAC, {"policy_delay": 2}, "policy_delay"),  # a TD3 field: SAC does not have it
        (SAC, {"buffer_size": 1}, "buffer_size. gives 1 rows"),  # not the buffer's "capacity"
    ],
)
def test_bad_config_values_name_the_field(cls, settings, field):
    with pytest.raises(ConfigError, match=field):
        cls("Pendulum-v1", **settings)


@pytest.mark.parametrize("cls", ALGORITHMS)
@pytest.mark.parametrize("env_id", ["HalfCheetah-v5", "Hopper-v5", "LunarLanderContinuous-v3"])
def test_smoke_runs_on_mujoco_and_box2d(cls, env_id, tmp_path):
    model = cls(env_id, **{**TINY, "learning_starts": 100}).learn(200)
    assert model.collector.updates == 100
    action_space = gym.make(env_id).action_space
    observations = np.stack([gym.make(env_id).observation_space.sample() for _ in range(4)])
    actions = model.predict(observations, deterministic=False)
    assert actions.shape == (4,) + action_space.shape
    assert (actions >= action_space.low).all() and (actions <= action_space.high).all()
    # MuJoCo and Box2D states cannot be saved: a loaded model continues with fresh episodes.
    model.save(tmp_path / "model")
    rlfoundry.load(tmp_path / "model").learn(20)
