"""Termination is not truncation: a time limit cuts an episode, it does not end the task.

The env is a ring of 10 states that never terminates: every step moves to the next state and pays
r = 1, so V(s) = r / (1 - gamma) = 10 for gamma = 0.9 in every state. A TimeLimit cuts episodes
after 10 steps. REINFORCE's learned value baseline, whose targets bootstrap the cut episodes from
V(final observation), learns V(s0) ~ 10. Reporting the cut as a termination (the wrapper below,
the old gym `done` mistake) makes the targets stop at the cut, and V(s0) goes to
r (1 - gamma^10) / (1 - gamma) = 6.51 instead: s0 is only ever seen 10 steps before a cut.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlfoundry import REINFORCE
from rlfoundry.mdp import FiniteMDP

GAMMA = 0.9
STATES = 10
REWARD = 1.0
TRUE_VALUE = REWARD / (1 - GAMMA)
VALUE_IF_CUT_ENDS_THE_TASK = REWARD * (1 - GAMMA**STATES) / (1 - GAMMA)


def ring_mdp() -> FiniteMDP:
    transitions = np.zeros((STATES, 1, STATES))
    transitions[np.arange(STATES), 0, (np.arange(STATES) + 1) % STATES] = 1.0
    start = np.zeros(STATES)
    start[0] = 1.0
    return FiniteMDP(transitions, np.full((STATES, 1), REWARD), GAMMA, start)


class TruncationAsTermination(gym.Wrapper):
    """The mistake under test: a time-limit cut reported as a terminal state."""

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        return observation, reward, terminated or truncated, False, info


def learned_values(make_env) -> np.ndarray:
    model = REINFORCE(
        make_env, quiet=True, seed=0, n_envs=4, gamma=GAMMA, baseline="value",
        hidden_sizes=(32,), value_learning_rate=0.01, value_gradient_steps=10,
    ).learn(1500)
    with torch.no_grad():
        return model.value_function(torch.arange(STATES)).numpy()


def test_the_exact_value_is_r_over_one_minus_gamma():
    values, _ = ring_mdp().policy_evaluation(np.ones((STATES, 1)))
    np.testing.assert_allclose(values, TRUE_VALUE)


def test_bootstrapping_the_cut_learns_the_infinite_horizon_value():
    values = learned_values(lambda: ring_mdp().as_env(max_episode_steps=STATES))
    assert values[0] == pytest.approx(TRUE_VALUE, abs=0.3)
    np.testing.assert_allclose(values, TRUE_VALUE, atol=0.3)


def test_treating_the_cut_as_termination_learns_a_finite_horizon_value_instead():
    values = learned_values(lambda: TruncationAsTermination(ring_mdp().as_env(max_episode_steps=STATES)))
    assert values[0] == pytest.approx(VALUE_IF_CUT_ENDS_THE_TASK, abs=0.3)
    assert abs(values[0] - TRUE_VALUE) > 3.0
    # State s is seen 10 - s steps before the cut: a finite-horizon return, different in every state.
    steps_left = STATES - np.arange(STATES)
    np.testing.assert_allclose(values, REWARD * (1 - GAMMA**steps_left) / (1 - GAMMA), atol=0.3)
