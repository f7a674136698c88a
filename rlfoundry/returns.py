"""Returns, advantages and bootstrapped targets over time-major rollouts.

Every array is [T, N]: T steps of N parallel environments. For step t of env n,
``rewards[t, n]`` is the reward of s_t -> s_{t+1}; ``terminated[t, n]`` says s_{t+1} is
terminal (discount 0, no bootstrap); ``truncated[t, n]`` says the episode was cut after
this step (bootstrap from the true final observation; terminated wins if both are set);
``values[t, n]`` is V(s_t); ``next_values[t, n]`` is V(s'_t) of the true next observation
(values[t + 1] inside an episode, the final observation's value when truncated, ignored
when terminated, V(last observation) at t = T - 1).

An episode "ends" at t when terminated or truncated; step t + 1 starts a new one.
Float outputs have the dtype of ``rewards`` (float64 when rewards are not floating).
"""

from __future__ import annotations

import numbers

import numpy as np
import numpy.typing as npt

__all__ = [
    "discount_factors",
    "discounted_returns",
    "trajectory_returns",
    "steps_since_episode_start",
    "generalized_advantages",
    "td_errors",
    "n_step_targets",
]


# ---------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------


def _check_array(name: str, array: object) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy array; got {type(array).__name__}")
    if array.ndim != 2:
        raise ValueError(f"{name} must be a [T, N] array; got shape {array.shape}")
    return array


def _check_same_shape(reference_name: str, reference: np.ndarray, **others: np.ndarray) -> None:
    for name, array in others.items():
        if array.shape != reference.shape:
            raise ValueError(
                f"{name} must have the same [T, N] shape as {reference_name}; "
                f"got {array.shape} and {reference.shape}"
            )


def _check_unit_interval(name: str, number: float) -> float:
    if isinstance(number, bool) or not isinstance(number, numbers.Real):
        raise ValueError(f"{name} must be a real number in [0, 1]; got {number!r}")
    # Written as a negated range so that NaN is rejected too.
    if not 0.0 <= float(number) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1]; got {number!r}")
    return float(number)


def _float_dtype(rewards: np.ndarray) -> np.dtype:
    # Outputs follow the rewards' precision; integer rewards are promoted.
    if np.issubdtype(rewards.dtype, np.floating):
        return rewards.dtype
    return np.dtype(np.float64)


def _as_flags(name: str, flags: object) -> np.ndarray:
    # Flags are meant to be bool; 0/1 numbers are accepted and read as bool.
    return _check_array(name, flags).astype(bool, copy=False)


def _as_float(name: str, array: object, dtype: np.dtype) -> np.ndarray:
    return _check_array(name, array).astype(dtype, copy=False)


def _masked_bootstrap(next_values: np.ndarray, terminated: np.ndarray) -> np.ndarray:
    # next_values is "anything" (even NaN) at terminated steps; multiplying by
    # (1 - terminated) would let NaN * 0 = NaN through, so select zeros instead.
    return np.where(terminated, next_values.dtype.type(0), next_values)


# ---------------------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------------------


def discount_factors(
    terminated: np.ndarray, gamma: float, dtype: npt.DTypeLike = np.float64
) -> np.ndarray:
    """discount_t = gamma * (1 - terminated_t)

    terminated: [T, N] bool. Returns [T, N] of ``dtype`` (float64 by default).
    """
    terminated = _as_flags("terminated", terminated)
    gamma = _check_unit_interval("gamma", gamma)
    return np.where(terminated, 0.0, gamma).astype(dtype, copy=False)


def discounted_returns(
    rewards: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    gamma: float,
    next_values: np.ndarray | None = None,
) -> np.ndarray:
    """G_t = r_t + gamma (1 - terminated_t) * (next_values_t if truncated_t or t = T-1 else G_{t+1})

    rewards, terminated, truncated, next_values: [T, N]. Returns G: [T, N], rewards' dtype.
    next_values=None bootstraps from zero (pure Monte-Carlo reward-to-go per episode piece).
    """
    rewards = _check_array("rewards", rewards)
    dtype = _float_dtype(rewards)
    terminated = _as_flags("terminated", terminated)
    truncated = _as_flags("truncated", truncated)
    _check_same_shape("rewards", rewards, terminated=terminated, truncated=truncated)
    gamma = _check_unit_interval("gamma", gamma)
    if next_values is None:
        bootstrap = np.zeros(rewards.shape, dtype=dtype)
    else:
        next_values = _as_float("next_values", next_values, dtype)
        _check_same_shape("rewards", rewards, next_values=next_values)
        bootstrap = _masked_bootstrap(next_values, terminated)

    rewards = rewards.astype(dtype, copy=False)
    discount = discount_factors(terminated, gamma, dtype)
    returns = np.empty(rewards.shape, dtype=dtype)
    steps = rewards.shape[0]
    if steps == 0:
        return returns
    # `following` holds what step t bootstraps from: G_{t+1}, or V(s'_t) where the
    # episode was truncated (copyto with where= swaps it in without a new array).
    following = bootstrap[-1].copy()
    for t in range(steps - 1, -1, -1):
        np.copyto(following, bootstrap[t], where=truncated[t])
        np.multiply(discount[t], following, out=returns[t])
        returns[t] += rewards[t]
        following[...] = returns[t]
    return returns


def trajectory_returns(
    rewards: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    gamma: float,
    next_values: np.ndarray | None = None,
) -> np.ndarray:
    """R_t = sum_{k=0}^{L-1} gamma^k r_{s+k} + gamma^L (1 - terminated_{s+L-1}) b_{s+L-1}, t in piece [s, s+L)

    rewards, terminated, truncated, next_values: [T, N]. Returns [T, N], rewards' dtype:
    every step carries the discounted return of its whole episode piece (from the piece's
    first step inside the rollout). b is next_values where the piece ends by truncation or
    at T - 1 and zero if next_values is None.
    """
    # The return of a piece is exactly the reward-to-go at its first step.
    reward_to_go = discounted_returns(rewards, terminated, truncated, gamma, next_values)
    ended = _as_flags("terminated", terminated) | _as_flags("truncated", truncated)
    piece_returns = np.empty_like(reward_to_go)
    steps = reward_to_go.shape[0]
    if steps == 0:
        return piece_returns
    piece_returns[0] = reward_to_go[0]
    for t in range(1, steps):
        # Carry the piece's value forward; a new piece starts after an end.
        piece_returns[t] = piece_returns[t - 1]
        np.copyto(piece_returns[t], reward_to_go[t], where=ended[t - 1])
    return piece_returns


def steps_since_episode_start(
    terminated: np.ndarray,
    truncated: np.ndarray,
    initial_offsets: np.ndarray | None = None,
) -> np.ndarray:
    """k_t = 0 if t starts an episode else k_{t-1} + 1, with k_0 = initial_offsets

    terminated, truncated: [T, N]; initial_offsets: [N] integer step counts of the episodes
    already running at t = 0 (zeros if None). Returns int64 [T, N].
    """
    terminated = _as_flags("terminated", terminated)
    truncated = _as_flags("truncated", truncated)
    _check_same_shape("terminated", terminated, truncated=truncated)
    steps, environments = terminated.shape
    if initial_offsets is None:
        offsets = np.zeros(environments, dtype=np.int64)
    else:
        if not isinstance(initial_offsets, np.ndarray):
            raise TypeError(
                f"initial_offsets must be a numpy array; got {type(initial_offsets).__name__}"
            )
        if initial_offsets.shape != (environments,):
            raise ValueError(
                f"initial_offsets must have shape [N] = ({environments},); "
                f"got {initial_offsets.shape}"
            )
        if not np.issubdtype(initial_offsets.dtype, np.integer):
            raise ValueError(f"initial_offsets must be integers; got {initial_offsets.dtype}")
        if np.any(initial_offsets < 0):
            raise ValueError("initial_offsets must be >= 0")
        offsets = initial_offsets.astype(np.int64)

    ended = terminated | truncated
    counts = np.empty((steps, environments), dtype=np.int64)
    if steps == 0:
        return counts
    counts[0] = offsets
    for t in range(1, steps):
        counts[t] = np.where(ended[t - 1], 0, counts[t - 1] + 1)
    return counts


def generalized_advantages(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    gamma: float,
    lam: float,
) -> tuple[np.ndarray, np.ndarray]:
    """A_t = delta_t + gamma lam (1 - terminated_t)(1 - truncated_t) A_{t+1}, A_T = 0

    with delta_t = r_t + gamma (1 - terminated_t) V(s'_t) - V(s_t) (see td_errors).
    rewards, values, next_values, terminated, truncated: [T, N].
    Returns (advantages, returns = advantages + values), both [T, N] in rewards' dtype.
    """
    rewards = _check_array("rewards", rewards)
    dtype = _float_dtype(rewards)
    values = _as_float("values", values, dtype)
    next_values = _as_float("next_values", next_values, dtype)
    terminated = _as_flags("terminated", terminated)
    truncated = _as_flags("truncated", truncated)
    _check_same_shape(
        "rewards",
        rewards,
        values=values,
        next_values=next_values,
        terminated=terminated,
        truncated=truncated,
    )
    gamma = _check_unit_interval("gamma", gamma)
    lam = _check_unit_interval("lam", lam)

    # delta is computed for all steps at once; it becomes the advantage buffer in place.
    advantages = _td_errors_unchecked(rewards, values, next_values, terminated, gamma, dtype)
    # The trace is cut at any episode end: the next row belongs to another episode.
    trace = np.where(terminated | truncated, 0.0, gamma * lam).astype(dtype, copy=False)
    carried = np.empty(rewards.shape[1], dtype=dtype)
    for t in range(rewards.shape[0] - 2, -1, -1):
        np.multiply(trace[t], advantages[t + 1], out=carried)
        advantages[t] += carried
    return advantages, advantages + values


def td_errors(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    terminated: np.ndarray,
    gamma: float,
) -> np.ndarray:
    """delta_t = r_t + gamma (1 - terminated_t) V(s'_t) - V(s_t)

    rewards, values, next_values, terminated: [T, N]. Returns [T, N] in rewards' dtype.
    """
    rewards = _check_array("rewards", rewards)
    dtype = _float_dtype(rewards)
    values = _as_float("values", values, dtype)
    next_values = _as_float("next_values", next_values, dtype)
    terminated = _as_flags("terminated", terminated)
    _check_same_shape(
        "rewards", rewards, values=values, next_values=next_values, terminated=terminated
    )
    gamma = _check_unit_interval("gamma", gamma)
    return _td_errors_unchecked(rewards, values, next_values, terminated, gamma, dtype)


def _td_errors_unchecked(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    terminated: np.ndarray,
    gamma: float,
    dtype: np.dtype,
) -> np.ndarray:
    errors = _masked_bootstrap(next_values, terminated)  # fresh array, safe to write into
    errors *= dtype.type(gamma)
    errors += rewards
    errors -= values
    return errors


def n_step_targets(
    rewards: np.ndarray,
    next_values: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    gamma: float,
    n: int,
) -> np.ndarray:
    """y_t = sum_{k=0}^{m-1} gamma^k r_{t+k} + gamma^m (1 - terminated_{t+m-1}) V(s'_{t+m-1}), m = min(n, steps left in the piece, T - t)

    rewards, next_values, terminated, truncated: [T, N]; n >= 1. Returns [T, N] in
    rewards' dtype. With n >= T this equals discounted_returns(..., next_values).
    """
    rewards = _check_array("rewards", rewards)
    dtype = _float_dtype(rewards)
    next_values = _as_float("next_values", next_values, dtype)
    terminated = _as_flags("terminated", terminated)
    truncated = _as_flags("truncated", truncated)
    _check_same_shape(
        "rewards", rewards, next_values=next_values, terminated=terminated, truncated=truncated
    )
    gamma = _check_unit_interval("gamma", gamma)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be an integer >= 1; got {n!r}")

    rewards = rewards.astype(dtype, copy=False)
    bootstrap = _masked_bootstrap(next_values, terminated)
    ended = terminated | truncated
    steps = rewards.shape[0]
    targets = np.zeros(rewards.shape, dtype=dtype)
    # Loop over the offset k (at most n), vectorised over every start t and env:
    # `alive[t]` says step t + k still lies in the piece that starts at t.
    alive = np.ones(rewards.shape, dtype=bool)
    power = 1.0  # gamma^k, kept in float64 and cast on use
    for k in range(min(n, steps)):
        rows = steps - k  # starts t with t + k < T
        alive = alive[:rows]
        targets[:rows] += np.where(alive, dtype.type(power) * rewards[k:], dtype.type(0))
        # The window closes at t + k when it has n rewards, the piece ends, or the rollout does.
        closes = ended[k:] if k < n - 1 else np.ones_like(alive)
        closes = closes & alive
        closes[-1] = alive[-1]
        targets[:rows] += np.where(
            closes, dtype.type(power * gamma) * bootstrap[k:], dtype.type(0)
        )
        alive = alive & ~ended[k:]
        power *= gamma
    return targets
