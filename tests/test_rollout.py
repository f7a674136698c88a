"""On-policy rollout storage: next_values bootstrap from true final observations, flattening, minibatches."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from rlfoundry.data.rollout import RolloutBuffer
from rlfoundry.envs.vector import VectorStep, make_env, step_vector
from rlfoundry.returns import generalized_advantages
from rlfoundry.run.checkpoint import NonFiniteError

BOX1 = spaces.Box(-np.inf, np.inf, (1,), np.float32)


def hand_step(observations, next_observations, rewards, terminated, truncated) -> VectorStep:
    return VectorStep(
        observations=np.array(observations, dtype=np.float32)[:, None],
        next_observations=np.array(next_observations, dtype=np.float32)[:, None],
        rewards=np.array(rewards, dtype=np.float32),
        terminated=np.array(terminated),
        truncated=np.array(truncated),
        infos={},
    )


def ten_times(observations: np.ndarray) -> np.ndarray:
    """A value function that is easy to read back: V(s) = 10 s."""
    return 10.0 * observations[:, 0]


def filled_buffer() -> RolloutBuffer:
    """Two envs, three steps. Env 0 is truncated at t=1 (final obs 7, reset obs 0); env 1 terminates
    at t=0 (final obs 9) and is both terminated and truncated at t=2 (terminated wins)."""
    buffer = RolloutBuffer(3, 2, BOX1, spaces.Discrete(2))
    rows = [
        # acted on, returned (reset where done), true next, rewards, terminated, truncated
        ([1, 2], [2, 0], [2, 9], [1, 1], [False, True], [False, False]),
        ([2, 0], [0, 4], [7, 4], [1, 1], [False, False], [True, False]),
        ([0, 4], [5, 0], [5, 8], [1, 1], [False, True], [False, True]),
    ]
    for acted, returned, true_next, rewards, terminated, truncated in rows:
        step = hand_step(returned, true_next, rewards, terminated, truncated)
        values = ten_times(np.array(acted, dtype=np.float32)[:, None])
        buffer.add(np.array(acted, dtype=np.float32)[:, None], np.array([0, 1]), np.zeros(2), values, step)
    return buffer


def test_next_values_bootstrap_from_the_true_final_observation():
    buffer = filled_buffer()
    buffer.finish(np.array([[5.0], [0.0]], dtype=np.float32), ten_times)
    # Row by row (env 0, env 1):
    #   t=0: values[1] = (20, 0); env 1 terminated, its entry is masked downstream.
    #   t=1: env 0 truncated -> V(final obs 7) = 70, not V(reset obs 0); env 1: values[2] = 40.
    #   t=2: the last row -> V(last observations) = (50, 0); env 1 terminated.
    assert buffer.next_values.tolist() == [[20.0, 0.0], [70.0, 40.0], [50.0, 0.0]]
    advantages, returns = generalized_advantages(
        buffer.rewards, buffer.values, buffer.next_values, buffer.terminated, buffer.truncated, gamma=0.5, lam=1.0
    )
    # Env 0: G_1 = 1 + 0.5 * 70 = 36 (truncation bootstraps); G_0 = 1 + 0.5 * 36 = 19; G_2 = 1 + 0.5 * 50.
    assert returns[:, 0].tolist() == [19.0, 36.0, 26.0]
    # Env 1: t=0 and t=2 terminate (no bootstrap), G_1 = 1 + 0.5 * G_2 = 1.5.
    assert returns[:, 1].tolist() == [1.0, 1.5, 1.0]


def test_finish_without_a_critic_bootstraps_from_zero():
    buffer = filled_buffer()
    buffer.finish(np.zeros((2, 1), dtype=np.float32), None)
    assert not buffer.next_values.any()


def test_truncation_bootstrap_with_a_real_time_limit():
    # CartPole cut after 3 steps by a TimeLimit, pushed left/right alternately so it never falls.
    env = make_env(lambda: gym.make("CartPole-v1", max_episode_steps=3), n_envs=2, seed=0)
    buffer = RolloutBuffer(5, 2, env.single_observation_space, env.single_action_space)
    observations, _ = env.reset(seed=0)
    final_observations = []
    for t in range(5):
        actions = np.array([t % 2, t % 2])
        step = step_vector(env, actions)
        buffer.add(observations, actions, np.zeros(2), observations[:, 0], step)
        if step.truncated.any():
            final_observations.append(step.next_observations.copy())
            assert not np.array_equal(step.next_observations, step.observations)
        observations = step.observations
    buffer.finish(observations, lambda batch: batch[:, 0])
    assert buffer.truncated[2].all() and not buffer.terminated.any()
    np.testing.assert_array_equal(buffer.next_values[2], final_observations[0][:, 0])
    np.testing.assert_array_equal(buffer.next_values[:2], buffer.values[1:3])
    np.testing.assert_array_equal(buffer.next_values[3], buffer.values[4])
    np.testing.assert_array_equal(buffer.next_values[4], observations[:, 0])


def test_training_batch_is_time_major_and_minibatches_partition_it():
    buffer = filled_buffer()
    buffer.finish(np.zeros((2, 1), dtype=np.float32), ten_times)
    advantages = np.arange(6, dtype=np.float64).reshape(3, 2)
    batch = buffer.training_batch(advantages, advantages + 100)
    assert batch.observations[:, 0].tolist() == [1.0, 2.0, 2.0, 0.0, 0.0, 4.0]  # row = t * N + n
    assert batch.actions.tolist() == [0, 1, 0, 1, 0, 1] and batch.actions.dtype == torch.int64
    assert batch.advantages.tolist() == [0, 1, 2, 3, 4, 5] and batch.advantages.dtype == torch.float32
    assert batch.returns.tolist() == [100, 101, 102, 103, 104, 105]
    rng = np.random.default_rng(0)
    minibatches = list(batch.minibatches(4, rng))
    assert [len(minibatch) for minibatch in minibatches] == [4, 2]
    assert sorted(torch.cat([minibatch.advantages for minibatch in minibatches]).tolist()) == [0, 1, 2, 3, 4, 5]
    assert list(batch.minibatches(6, rng)) == [batch]
    buffer.observations[0, 0, 0] = 123.0
    assert batch.observations[0, 0].item() == 1.0  # the batch is a copy


def test_misuse_is_a_clear_error():
    buffer = filled_buffer()
    with pytest.raises(RuntimeError, match="call reset"):
        buffer.add(np.zeros((2, 1)), np.zeros(2), np.zeros(2), np.zeros(2), hand_step([0, 0], [0, 0], [0, 0], [0, 0], [0, 0]))
    with pytest.raises(ValueError, match=r"\[T, N\]"):
        buffer.training_batch(np.zeros((2, 3)), np.zeros((2, 3)))
    buffer.reset()
    assert buffer.position == 0 and not buffer.full
    with pytest.raises(RuntimeError, match="full rollout"):
        buffer.finish(np.zeros((2, 1)), ten_times)
    nan_buffer = filled_buffer()
    nan_buffer.rewards[1, 1] = np.nan
    with pytest.raises(NonFiniteError, match="reward"):
        nan_buffer.finish(np.zeros((2, 1)), ten_times)
    never_called = lambda observations: pytest.fail("the critic must not see a NaN observation")  # noqa: E731
    with pytest.raises(NonFiniteError, match="NaN or infinite observation"):
        filled_buffer().finish(np.array([[5.0], [np.nan]], dtype=np.float32), never_called)  # the last observations
    truncated_nan = filled_buffer()
    truncated_nan._truncations[0][2][:] = np.inf  # env 0's true final observation at t=1
    with pytest.raises(NonFiniteError, match="NaN or infinite observation"):
        truncated_nan.finish(np.zeros((2, 1), dtype=np.float32), never_called)


def test_layouts_of_action_spaces():
    box = RolloutBuffer(2, 3, BOX1, spaces.Box(-1.0, 1.0, (4,), np.float32))
    assert box.actions.shape == (2, 3, 4) and box.actions.dtype == np.float32
    multi = RolloutBuffer(2, 3, spaces.Discrete(5), spaces.MultiDiscrete([2, 3]))
    assert multi.actions.shape == (2, 3, 2) and multi.actions.dtype == np.int64
    assert multi.observations.shape == (2, 3) and multi.observations.dtype == np.int64
