"""Temporal-difference targets and the tabular update (seed 003, sections 3.1 and 4.1).

All functions are vectorised over a leading batch dimension and also accept scalars.
"""

from __future__ import annotations

from typing import Union

import numpy as np

Values = Union[np.ndarray, float]
"""A batch [B] or one scalar (a numpy scalar, a float, an int or a bool)."""


def q_learning_target(rewards: Values, next_q_values: np.ndarray, terminated: Values, gamma: float) -> Values:
    """y = r + gamma (1 - terminated) max_a' Q(s', a')

    rewards [B], next_q_values [B, A] (Q(s', .) at the true next states), terminated [B] bool.
    """
    return rewards + gamma * (1.0 - terminated) * next_q_values.max(axis=-1)


def sarsa_target(
    rewards: Values,
    next_q_values: np.ndarray,
    next_actions: Values,
    terminated: Values,
    gamma: float,
) -> Values:
    """y = r + gamma (1 - terminated) Q(s', a'),  a' the action the behaviour policy takes at s'

    rewards [B], next_q_values [B, A], next_actions [B] int, terminated [B] bool.
    """
    chosen = np.take_along_axis(next_q_values, np.asarray(next_actions)[..., None], axis=-1)[..., 0]
    return rewards + gamma * (1.0 - terminated) * chosen


def expected_sarsa_target(
    rewards: Values,
    next_q_values: np.ndarray,
    next_action_probabilities: np.ndarray,
    terminated: Values,
    gamma: float,
) -> Values:
    """y = r + gamma (1 - terminated) sum_a' pi(a'|s') Q(s', a')

    rewards [B], next_q_values [B, A], next_action_probabilities [B, A] (the behaviour policy at
    s'), terminated [B] bool.
    """
    expected = (next_action_probabilities * next_q_values).sum(axis=-1)
    return rewards + gamma * (1.0 - terminated) * expected


def td_update(q_values: Values, targets: Values, learning_rates: Values) -> Values:
    """Q(s, a) <- Q(s, a) + alpha [y - Q(s, a)]

    The step of gradient descent on L = 1/2 (y - Q(s, a))^2 with y held fixed (seed 003, 4.2).
    """
    return q_values + learning_rates * (targets - q_values)


def epsilon_greedy_probabilities(q_values: np.ndarray, epsilon: float, tie_break: str) -> np.ndarray:
    """pi(a|s) = epsilon / |A| + (1 - epsilon) [a is greedy] / (number of greedy actions)

    q_values [B, A]. With tie_break "first" only the lowest-index maximum counts as greedy;
    with "random" the greedy mass is split evenly between all maxima.
    """
    n_actions = q_values.shape[-1]
    if tie_break == "first":
        greedy = np.zeros_like(q_values, dtype=np.float64)
        np.put_along_axis(greedy, q_values.argmax(axis=-1)[..., None], 1.0, axis=-1)
    else:
        greedy = (q_values == q_values.max(axis=-1, keepdims=True)).astype(np.float64)
        greedy /= greedy.sum(axis=-1, keepdims=True)
    return epsilon / n_actions + (1.0 - epsilon) * greedy
