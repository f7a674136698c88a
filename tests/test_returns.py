"""rlfoundry.returns checked against naive per-environment references and hand-computed cases.

The references below walk one environment at a time over explicit episode segments with
plain Python floats and forward sums, so they share no structure with the vectorised
backward recursions they check.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlfoundry.returns import (
    discount_factors,
    discounted_returns,
    generalized_advantages,
    n_step_targets,
    steps_since_episode_start,
    td_errors,
    trajectory_returns,
)

SEEDS = range(6)
DTYPES = [np.float32, np.float64]


# ---------------------------------------------------------------------------------------
# Random rollouts
# ---------------------------------------------------------------------------------------


class Rollout:
    """A random [T, N] rollout with terminated, truncated and both-at-once flags."""

    def __init__(self, seed: int, dtype: type, consistent: bool = False) -> None:
        rng = np.random.default_rng(seed)
        self.steps = int(rng.integers(1, 41))
        self.environments = int(rng.integers(1, 6))
        shape = (self.steps, self.environments)
        self.gamma = float(rng.uniform(0.5, 1.0))
        self.lam = float(rng.uniform(0.0, 1.0))
        self.rewards = rng.normal(size=shape).astype(dtype)
        self.values = rng.normal(size=shape).astype(dtype)
        self.terminated = rng.random(shape) < 0.12
        self.truncated = rng.random(shape) < 0.12
        both = rng.random(shape) < 0.04
        self.terminated |= both
        self.truncated |= both
        next_values = rng.normal(size=shape)
        if consistent:
            # Inside an episode V(s'_t) is V(s_{t+1}), as a real rollout would give.
            continuing = ~(self.terminated | self.truncated)
            continuing[-1] = False
            next_values[:-1][continuing[:-1]] = self.values[1:][continuing[:-1]]
        # The value after a terminal step is "anything": NaN checks that it is masked.
        next_values[self.terminated] = np.nan
        self.next_values = next_values.astype(dtype)


def tolerance(dtype: type) -> dict[str, float]:
    if dtype == np.float32:
        return {"rtol": 2e-5, "atol": 2e-5}
    return {"rtol": 1e-11, "atol": 1e-11}


def assert_matches(actual: np.ndarray, expected: np.ndarray, dtype: type) -> None:
    assert actual.dtype == dtype
    assert actual.shape == expected.shape
    assert np.all(np.isfinite(actual))
    np.testing.assert_allclose(actual, expected, **tolerance(dtype))


# ---------------------------------------------------------------------------------------
# Naive references: one env, explicit segments, forward sums, Python floats
# ---------------------------------------------------------------------------------------


def episode_segments(
    terminated: np.ndarray, truncated: np.ndarray, column: int
) -> list[tuple[int, int]]:
    """Inclusive (first, last) step pairs of the episode pieces of one env column."""
    steps = terminated.shape[0]
    segments = []
    first = 0
    for t in range(steps):
        if terminated[t, column] or truncated[t, column] or t == steps - 1:
            segments.append((first, t))
            first = t + 1
    return segments


def bootstrap_value(
    next_values: np.ndarray | None, terminated: np.ndarray, t: int, column: int
) -> float:
    if terminated[t, column] or next_values is None:
        return 0.0
    return float(next_values[t, column])


def reference_discounted_returns(rewards, terminated, truncated, gamma, next_values=None):
    result = np.zeros(rewards.shape)
    for column in range(rewards.shape[1]):
        for first, last in episode_segments(terminated, truncated, column):
            for t in range(first, last + 1):
                total = 0.0
                for k in range(t, last + 1):
                    total += gamma ** (k - t) * float(rewards[k, column])
                tail = bootstrap_value(next_values, terminated, last, column)
                result[t, column] = total + gamma ** (last - t + 1) * tail
    return result


def reference_trajectory_returns(rewards, terminated, truncated, gamma, next_values=None):
    result = np.zeros(rewards.shape)
    for column in range(rewards.shape[1]):
        for first, last in episode_segments(terminated, truncated, column):
            total = sum(
                gamma ** (k - first) * float(rewards[k, column]) for k in range(first, last + 1)
            )
            tail = bootstrap_value(next_values, terminated, last, column)
            total += gamma ** (last - first + 1) * tail
            result[first : last + 1, column] = total
    return result


def reference_steps_since_start(terminated, truncated, initial_offsets=None):
    steps, environments = terminated.shape
    result = np.zeros((steps, environments), dtype=np.int64)
    for column in range(environments):
        for first, last in episode_segments(terminated, truncated, column):
            offset = 0
            if first == 0 and initial_offsets is not None:
                offset = int(initial_offsets[column])
            for t in range(first, last + 1):
                result[t, column] = offset + t - first
    return result


def reference_td_error(rewards, values, next_values, terminated, gamma, t, column) -> float:
    return (
        float(rewards[t, column])
        + gamma * bootstrap_value(next_values, terminated, t, column)
        - float(values[t, column])
    )


def reference_td_errors(rewards, values, next_values, terminated, gamma):
    result = np.zeros(rewards.shape)
    for column in range(rewards.shape[1]):
        for t in range(rewards.shape[0]):
            result[t, column] = reference_td_error(
                rewards, values, next_values, terminated, gamma, t, column
            )
    return result


def reference_advantages(rewards, values, next_values, terminated, truncated, gamma, lam):
    """A_t as the forward sum of (gamma lam)^k delta_{t+k} over the rest of t's segment."""
    result = np.zeros(rewards.shape)
    for column in range(rewards.shape[1]):
        for first, last in episode_segments(terminated, truncated, column):
            for t in range(first, last + 1):
                result[t, column] = sum(
                    (gamma * lam) ** (k - t)
                    * reference_td_error(rewards, values, next_values, terminated, gamma, k, column)
                    for k in range(t, last + 1)
                )
    return result


def reference_n_step(rewards, next_values, terminated, truncated, gamma, n):
    result = np.zeros(rewards.shape)
    for column in range(rewards.shape[1]):
        for first, last in episode_segments(terminated, truncated, column):
            for t in range(first, last + 1):
                length = min(n, last - t + 1)
                total = sum(gamma**k * float(rewards[t + k, column]) for k in range(length))
                tail = bootstrap_value(next_values, terminated, t + length - 1, column)
                result[t, column] = total + gamma**length * tail
    return result


# ---------------------------------------------------------------------------------------
# Exact agreement with the references on random rollouts
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_discounted_returns_match_reference(seed: int, dtype: type) -> None:
    rollout = Rollout(seed, dtype)
    arguments = (rollout.rewards, rollout.terminated, rollout.truncated, rollout.gamma)
    for next_values in (None, rollout.next_values):
        actual = discounted_returns(*arguments, next_values)
        assert_matches(actual, reference_discounted_returns(*arguments, next_values), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_trajectory_returns_match_reference(seed: int, dtype: type) -> None:
    rollout = Rollout(seed, dtype)
    arguments = (rollout.rewards, rollout.terminated, rollout.truncated, rollout.gamma)
    for next_values in (None, rollout.next_values):
        actual = trajectory_returns(*arguments, next_values)
        assert_matches(actual, reference_trajectory_returns(*arguments, next_values), dtype)


@pytest.mark.parametrize("seed", SEEDS)
def test_steps_since_episode_start_match_reference(seed: int) -> None:
    rollout = Rollout(seed, np.float64)
    offsets = np.random.default_rng(seed).integers(0, 100, size=rollout.environments)
    for initial_offsets in (None, offsets):
        actual = steps_since_episode_start(rollout.terminated, rollout.truncated, initial_offsets)
        expected = reference_steps_since_start(
            rollout.terminated, rollout.truncated, initial_offsets
        )
        assert actual.dtype == np.int64
        np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_td_errors_match_reference(seed: int, dtype: type) -> None:
    rollout = Rollout(seed, dtype)
    arguments = (
        rollout.rewards,
        rollout.values,
        rollout.next_values,
        rollout.terminated,
        rollout.gamma,
    )
    assert_matches(td_errors(*arguments), reference_td_errors(*arguments), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_generalized_advantages_match_reference(seed: int, dtype: type) -> None:
    rollout = Rollout(seed, dtype)
    arguments = (
        rollout.rewards,
        rollout.values,
        rollout.next_values,
        rollout.terminated,
        rollout.truncated,
        rollout.gamma,
        rollout.lam,
    )
    advantages, returns = generalized_advantages(*arguments)
    expected = reference_advantages(*arguments)
    assert_matches(advantages, expected, dtype)
    assert_matches(returns, expected + rollout.values.astype(np.float64), dtype)
    # returns is defined as advantages + values, computed in the same dtype.
    np.testing.assert_array_equal(returns, advantages + rollout.values)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 100])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_n_step_targets_match_reference(seed: int, dtype: type, n: int) -> None:
    rollout = Rollout(seed, dtype)
    arguments = (
        rollout.rewards,
        rollout.next_values,
        rollout.terminated,
        rollout.truncated,
        rollout.gamma,
    )
    actual = n_step_targets(*arguments, n)
    assert_matches(actual, reference_n_step(*arguments, n), dtype)


# ---------------------------------------------------------------------------------------
# Identities between the functions
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_gae_with_lambda_zero_is_td_error(seed: int, dtype: type) -> None:
    rollout = Rollout(seed, dtype)
    advantages, _ = generalized_advantages(
        rollout.rewards,
        rollout.values,
        rollout.next_values,
        rollout.terminated,
        rollout.truncated,
        rollout.gamma,
        0.0,
    )
    deltas = td_errors(
        rollout.rewards, rollout.values, rollout.next_values, rollout.terminated, rollout.gamma
    )
    np.testing.assert_allclose(advantages, deltas, **tolerance(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_gae_with_lambda_one_is_return_minus_value(seed: int, dtype: type) -> None:
    # The deltas telescope only when next_values[t] = values[t + 1] inside episodes.
    rollout = Rollout(seed, dtype, consistent=True)
    advantages, returns = generalized_advantages(
        rollout.rewards,
        rollout.values,
        rollout.next_values,
        rollout.terminated,
        rollout.truncated,
        rollout.gamma,
        1.0,
    )
    reward_to_go = discounted_returns(
        rollout.rewards,
        rollout.terminated,
        rollout.truncated,
        rollout.gamma,
        rollout.next_values,
    )
    looser = {key: 5 * value for key, value in tolerance(dtype).items()}
    np.testing.assert_allclose(advantages, reward_to_go - rollout.values, **looser)
    np.testing.assert_allclose(returns, reward_to_go, **looser)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_one_step_target_is_bootstrapped_reward(seed: int, dtype: type) -> None:
    rollout = Rollout(seed, dtype)
    targets = n_step_targets(
        rollout.rewards,
        rollout.next_values,
        rollout.terminated,
        rollout.truncated,
        rollout.gamma,
        1,
    )
    masked_next_values = np.where(rollout.terminated, 0.0, rollout.next_values)
    expected = rollout.rewards + rollout.gamma * masked_next_values
    np.testing.assert_allclose(targets, expected, **tolerance(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_long_n_step_target_is_discounted_return(seed: int, dtype: type) -> None:
    rollout = Rollout(seed, dtype)
    arguments = (rollout.rewards, rollout.terminated, rollout.truncated, rollout.gamma)
    for n in (rollout.steps, rollout.steps + 5):
        targets = n_step_targets(
            rollout.rewards,
            rollout.next_values,
            rollout.terminated,
            rollout.truncated,
            rollout.gamma,
            n,
        )
        expected = discounted_returns(*arguments, rollout.next_values)
        np.testing.assert_allclose(targets, expected, **tolerance(dtype))


def test_trajectory_return_is_reward_to_go_at_piece_start() -> None:
    rollout = Rollout(3, np.float64)
    arguments = (rollout.rewards, rollout.terminated, rollout.truncated, rollout.gamma)
    whole = trajectory_returns(*arguments, rollout.next_values)
    reward_to_go = discounted_returns(*arguments, rollout.next_values)
    starts = steps_since_episode_start(rollout.terminated, rollout.truncated) == 0
    np.testing.assert_array_equal(whole[starts], reward_to_go[starts])


# ---------------------------------------------------------------------------------------
# Hand-computed cases (one environment, column vectors)
# ---------------------------------------------------------------------------------------


def column(*numbers: float) -> np.ndarray:
    return np.array(numbers, dtype=np.float64).reshape(-1, 1)


def flags(*positions: int, steps: int) -> np.ndarray:
    result = np.zeros((steps, 1), dtype=bool)
    result[list(positions)] = True
    return result


def test_hand_returns_without_episode_ends() -> None:
    # G_2 = 3; G_1 = 2 + 0.5 * 3 = 3.5; G_0 = 1 + 0.5 * 3.5 = 2.75.
    rewards = column(1, 2, 3)
    none = flags(steps=3)
    np.testing.assert_allclose(discounted_returns(rewards, none, none, 0.5), column(2.75, 3.5, 3))
    np.testing.assert_allclose(
        trajectory_returns(rewards, none, none, 0.5), column(2.75, 2.75, 2.75)
    )


def test_hand_truncation_bootstraps_and_does_not_leak() -> None:
    rewards = column(1, 2, 3, 4)
    terminated = flags(steps=4)
    truncated = flags(1, steps=4)
    next_values = column(-7, 10, -7, 20)  # -7 inside episodes must never be read
    # G_3 = 4 + 0.5 * 20 = 14; G_2 = 3 + 0.5 * 14 = 10;
    # G_1 = 2 + 0.5 * 10 (V of the final observation, not G_2) = 7; G_0 = 1 + 0.5 * 7 = 4.5.
    np.testing.assert_allclose(
        discounted_returns(rewards, terminated, truncated, 0.5, next_values),
        column(4.5, 7, 10, 14),
    )
    # Without values: G_3 = 4, G_2 = 3 + 2 = 5, G_1 = 2, G_0 = 1 + 1 = 2.
    np.testing.assert_allclose(
        discounted_returns(rewards, terminated, truncated, 0.5), column(2, 2, 5, 4)
    )
    np.testing.assert_allclose(
        trajectory_returns(rewards, terminated, truncated, 0.5, next_values),
        column(4.5, 4.5, 10, 10),
    )


def test_hand_termination_zeroes_bootstrap() -> None:
    rewards = column(1, 2, 3, 4)
    terminated = flags(1, steps=4)
    next_values = column(-7, np.nan, -7, 0)
    # G_1 = 2 (terminal: its NaN next value is ignored); G_0 = 1 + 0.5 * 2 = 2;
    # G_3 = 4; G_2 = 3 + 0.5 * 4 = 5.
    for truncated in (flags(steps=4), flags(1, steps=4)):  # terminated wins over truncated
        np.testing.assert_allclose(
            discounted_returns(rewards, terminated, truncated, 0.5, next_values),
            column(2, 2, 5, 4),
        )


def test_hand_generalized_advantages() -> None:
    rewards = column(1, 1)
    values = column(0.5, 0.5)
    next_values = column(0.5, 2)
    none = flags(steps=2)
    # delta_0 = 1 + 0.5 * 0.5 - 0.5 = 0.75; delta_1 = 1 + 0.5 * 2 - 0.5 = 1.5;
    # A_1 = 1.5; A_0 = 0.75 + 0.5 * 0.5 * 1.5 = 1.125.
    advantages, returns = generalized_advantages(
        rewards, values, next_values, none, none, 0.5, 0.5
    )
    np.testing.assert_allclose(advantages, column(1.125, 1.5))
    np.testing.assert_allclose(returns, column(1.625, 2.0))
    # A truncation at step 0 cuts the trace: A_0 = delta_0 = 0.75.
    advantages, _ = generalized_advantages(
        rewards, values, next_values, none, flags(0, steps=2), 0.5, 0.5
    )
    np.testing.assert_allclose(advantages, column(0.75, 1.5))


def test_hand_n_step_targets() -> None:
    rewards = column(1, 2, 3, 4)
    next_values = column(10, 20, 30, 40)
    none = flags(steps=4)
    # y_0 = 1 + 0.5 * 2 + 0.25 * 20 = 7; y_1 = 2 + 1.5 + 0.25 * 30 = 11;
    # y_2 = 3 + 2 + 0.25 * 40 = 15; y_3 = 4 + 0.5 * 40 = 24 (rollout ends).
    np.testing.assert_allclose(
        n_step_targets(rewards, next_values, none, none, 0.5, 2), column(7, 11, 15, 24)
    )
    # Terminal at step 1: y_0 = 1 + 0.5 * 2 = 2, y_1 = 2, the rest unchanged.
    np.testing.assert_allclose(
        n_step_targets(rewards, next_values, flags(1, steps=4), none, 0.5, 2),
        column(2, 2, 15, 24),
    )
    # Truncated at step 0: y_0 = 1 + 0.5 * 10 = 6.
    np.testing.assert_allclose(
        n_step_targets(rewards, next_values, none, flags(0, steps=4), 0.5, 2),
        column(6, 11, 15, 24),
    )


def test_hand_steps_since_episode_start() -> None:
    terminated = flags(1, steps=5)
    truncated = flags(3, steps=5)
    np.testing.assert_array_equal(
        steps_since_episode_start(terminated, truncated), [[0], [1], [0], [1], [0]]
    )
    np.testing.assert_array_equal(
        steps_since_episode_start(terminated, truncated, np.array([5])),
        [[5], [6], [0], [1], [0]],
    )


def test_discount_factors() -> None:
    terminated = np.array([[False, True], [True, False]])
    np.testing.assert_array_equal(discount_factors(terminated, 0.9), [[0.9, 0.0], [0.0, 0.9]])
    assert discount_factors(terminated, 0.9, np.float32).dtype == np.float32


# ---------------------------------------------------------------------------------------
# Dtypes, edge cases, inputs left untouched, errors
# ---------------------------------------------------------------------------------------


def call_all(rollout: Rollout) -> dict[str, np.ndarray]:
    advantages, returns = generalized_advantages(
        rollout.rewards,
        rollout.values,
        rollout.next_values,
        rollout.terminated,
        rollout.truncated,
        rollout.gamma,
        rollout.lam,
    )
    flags_and_gamma = (rollout.terminated, rollout.truncated, rollout.gamma)
    return {
        "discounted_returns": discounted_returns(rollout.rewards, *flags_and_gamma),
        "bootstrapped_returns": discounted_returns(
            rollout.rewards, *flags_and_gamma, rollout.next_values
        ),
        "trajectory_returns": trajectory_returns(rollout.rewards, *flags_and_gamma),
        "advantages": advantages,
        "returns": returns,
        "td_errors": td_errors(
            rollout.rewards,
            rollout.values,
            rollout.next_values,
            rollout.terminated,
            rollout.gamma,
        ),
        "n_step_targets": n_step_targets(
            rollout.rewards, rollout.next_values, *flags_and_gamma, 3
        ),
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_preserved_and_inputs_are_untouched(dtype: type) -> None:
    rollout = Rollout(1, dtype)
    before = {
        name: getattr(rollout, name).copy()
        for name in ("rewards", "values", "next_values", "terminated", "truncated")
    }
    for name, result in call_all(rollout).items():
        assert result.dtype == dtype, name
        assert result.shape == rollout.rewards.shape, name
    for name, original in before.items():
        np.testing.assert_array_equal(getattr(rollout, name), original)


def test_float64_values_with_float32_rewards_give_float32() -> None:
    rewards = np.ones((3, 2), dtype=np.float32)
    values = np.ones((3, 2), dtype=np.float64)
    none = np.zeros((3, 2), dtype=bool)
    advantages, returns = generalized_advantages(rewards, values, values, none, none, 0.9, 0.9)
    assert advantages.dtype == returns.dtype == np.float32


def test_empty_rollout() -> None:
    empty = np.zeros((0, 3))
    none = np.zeros((0, 3), dtype=bool)
    assert discounted_returns(empty, none, none, 0.9, empty).shape == (0, 3)
    assert trajectory_returns(empty, none, none, 0.9).shape == (0, 3)
    assert generalized_advantages(empty, empty, empty, none, none, 0.9, 0.9)[0].shape == (0, 3)
    assert n_step_targets(empty, empty, none, none, 0.9, 3).shape == (0, 3)
    assert steps_since_episode_start(none, none).shape == (0, 3)


def test_gamma_edges() -> None:
    rewards = column(1, 2, 3)
    none = flags(steps=3)
    np.testing.assert_allclose(discounted_returns(rewards, none, none, 0.0), rewards)
    np.testing.assert_allclose(discounted_returns(rewards, none, none, 1.0), column(6, 5, 3))
    assert math.isclose(float(n_step_targets(rewards, rewards, none, none, 1.0, 2)[0, 0]), 5.0)


def test_shape_mismatch_names_the_argument() -> None:
    rewards = np.zeros((4, 2))
    none = np.zeros((4, 2), dtype=bool)
    with pytest.raises(ValueError, match="truncated"):
        discounted_returns(rewards, none, np.zeros((4, 3), dtype=bool), 0.9)
    with pytest.raises(ValueError, match="next_values"):
        discounted_returns(rewards, none, none, 0.9, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="values"):
        generalized_advantages(rewards, np.zeros((4, 1)), rewards, none, none, 0.9, 0.9)
    with pytest.raises(ValueError, match="terminated"):
        td_errors(rewards, rewards, rewards, np.zeros((2, 2), dtype=bool), 0.9)
    with pytest.raises(ValueError, match="rewards"):
        discounted_returns(np.zeros(4), none[:, 0], none[:, 0], 0.9)
    with pytest.raises(ValueError, match="initial_offsets"):
        steps_since_episode_start(none, none, np.zeros(3, dtype=np.int64))


def test_out_of_range_parameters_raise() -> None:
    rewards = np.zeros((4, 2))
    none = np.zeros((4, 2), dtype=bool)
    with pytest.raises(ValueError, match="gamma"):
        discounted_returns(rewards, none, none, 1.5)
    with pytest.raises(ValueError, match="gamma"):
        discount_factors(none, -0.1)
    with pytest.raises(ValueError, match="gamma"):
        td_errors(rewards, rewards, rewards, none, float("nan"))
    with pytest.raises(ValueError, match="lam"):
        generalized_advantages(rewards, rewards, rewards, none, none, 0.9, 1.5)
    with pytest.raises(ValueError, match="n must"):
        n_step_targets(rewards, rewards, none, none, 0.9, 0)
    with pytest.raises(ValueError, match="initial_offsets"):
        steps_since_episode_start(none, none, np.array([-1, 0]))


def test_non_numpy_input_raises() -> None:
    none = np.zeros((2, 1), dtype=bool)
    with pytest.raises(TypeError, match="rewards"):
        discounted_returns([[1.0], [2.0]], none, none, 0.9)
