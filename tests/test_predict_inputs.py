"""predict() takes what a user hands it: one observation or a batch, as a list, ints or float64;
the wrong shape, a non-number or a NaN is refused with an error that says what to pass."""

import numpy as np
import pytest
from gymnasium import spaces

import rlfoundry
from rlfoundry.envs.spaces import SpaceError, observation_batch
from rlfoundry.run.checkpoint import NonFiniteError

OBSERVATION_SIZES = {"CartPole-v1": 4, "Pendulum-v1": 3}
NEURAL = [
    ("ppo", "CartPole-v1"), ("a2c", "CartPole-v1"), ("trpo", "CartPole-v1"), ("reinforce", "CartPole-v1"),
    ("off-policy-pg", "CartPole-v1"), ("dqn", "CartPole-v1"), ("sac", "Pendulum-v1"), ("td3", "Pendulum-v1"),
    ("ddpg", "Pendulum-v1"),
]


@pytest.mark.parametrize("algorithm, env_id", NEURAL)
def test_every_neural_model_takes_lists_ints_and_float64(algorithm, env_id):
    model = rlfoundry.ALGORITHMS[algorithm](env_id, quiet=True, seed=0)
    size = OBSERVATION_SIZES[env_id]
    observation = np.linspace(-0.5, 0.5, size).astype(np.float32)
    reference = model.predict(observation)
    # float64 and a plain list hold the same float32 values: the same action.
    assert np.array_equal(model.predict(observation.astype(np.float64)), reference)
    assert np.array_equal(model.predict(observation.tolist()), reference)
    batch = model.predict(np.stack([observation] * 3).astype(np.float64))
    assert len(batch) == 3 and all(np.array_equal(action, reference) for action in batch)
    model.predict([0] * size)  # ints: numbers the float32 network takes exactly
    with pytest.raises(SpaceError, match=rf"shape \({size + 1},\) do not fit this model, which observes shape \({size},\)"):
        model.predict(np.zeros(size + 1))
    with pytest.raises(SpaceError, match=rf"pass one observation of shape \({size},\) or a batch of shape \(B, {size}\)"):
        model.predict(np.zeros((2, size, 1)))
    with pytest.raises(NonFiniteError, match="NaN or infinity"):
        model.predict(np.full(size, np.nan))
    with pytest.raises(SpaceError, match="dtype <U1"):
        model.predict(["a"] * size)


def test_a_reset_pair_or_a_ragged_list_is_a_clear_error():
    box = spaces.Box(-1.0, 1.0, (2,), np.float32)
    with pytest.raises(SpaceError, match=r"not the \(observation, info\) pair that env.reset\(\) returns"):
        observation_batch((np.zeros(2, np.float32), {}), box)
    with pytest.raises(SpaceError, match=r"one array of shape \(2,\) or \(B, 2\)"):
        observation_batch([[0.0, 1.0], [0.0]], box)


def test_observation_batch_converts_only_what_keeps_its_meaning():
    box = spaces.Box(-1.0, 1.0, (2,), np.float32)
    batch, single = observation_batch([0.25, 1], box)
    assert single and batch.dtype == np.float32 and batch.tolist() == [[0.25, 1.0]]
    batch, single = observation_batch(np.zeros((5, 2), dtype=np.float32), box)
    assert not single and batch.shape == (5, 2)
    frames = spaces.Box(0, 255, (4, 84, 84), np.uint8)
    batch, single = observation_batch(np.full((4, 84, 84), 200, dtype=np.int64), frames)
    assert single and batch.dtype == np.uint8 and batch.max() == 200
    with pytest.raises(SpaceError, match="which observes uint8"):
        observation_batch(np.full((4, 84, 84), 300), frames)  # would wrap to 44
    with pytest.raises(SpaceError, match="which observes uint8"):
        observation_batch(np.full((4, 84, 84), 0.5), frames)  # a normalised frame, not a pixel
    states = spaces.Discrete(16)
    batch, single = observation_batch(3, states)
    assert single and batch.tolist() == [3]
    batch, single = observation_batch([3, 4], states)
    assert not single and batch.dtype == np.int64
    with pytest.raises(SpaceError, match="shape \\(2, 1\\)"):
        observation_batch([[3], [4]], states)
    with pytest.raises(NonFiniteError):
        observation_batch([0.0, np.inf], box)


def test_tabular_predict_takes_whole_numbers_and_refuses_fractions():
    model = rlfoundry.QLearning("FrozenLake-v1", quiet=True, seed=0).learn(200)
    assert model.predict(3.0) == model.predict(3) == model.predict(np.int32(3))
    assert model.predict([3, 4]).tolist() == [model.predict(3), model.predict(4)]
    with pytest.raises(SpaceError, match="dtype float64 do not fit"):
        model.predict(1.7)  # used to be truncated to state 1
    with pytest.raises(ValueError, match=r"state indices in \[0, 16\)"):
        model.predict(16)


def test_tabular_predict_of_an_empty_batch_is_an_empty_batch_of_actions():
    # As the networks' predict answers it; the range check took the minimum of no states and raised
    # numpy's "zero-size array to reduction operation minimum which has no identity".
    model = rlfoundry.QLearning("FrozenLake-v1", quiet=True, seed=0)
    for deterministic in (True, False):
        actions = model.predict(np.zeros(0, dtype=np.int64), deterministic=deterministic)
        assert actions.shape == (0,) and actions.dtype.kind == "i"
