"""Test support: many episodes of a FiniteMDP under a tabular softmax policy, sampled at once.

Used by the exact policy-gradient tests and by benchmarks/off_policy_pg_variance.py. Episodes
are laid out like rlfoundry.losses.reinforce expects: [T, M], column i is episode i from row 0,
``mask`` marks its steps. Also the exact expectations of the estimators, from the MDP's model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rlfoundry.losses.off_policy_pg import off_policy_pg_loss
from rlfoundry.losses.reinforce import leave_one_out_baseline, reinforce_loss, reinforce_weights
from rlfoundry.mdp import FiniteMDP
from rlfoundry.returns import discounted_returns, trajectory_returns


@dataclass(frozen=True)
class Episodes:
    """M episodes, time-major; rows after an episode ended are padding (mask False).

    states, actions [T, M] int64 (padding 0); rewards [T, M] float64 (padding 0);
    terminated, truncated, mask [T, M] bool.
    """

    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    mask: np.ndarray


def _draw(cumulative: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One index per row of cumulative probabilities [M, K]."""
    thresholds = rng.random(cumulative.shape[0])[:, None] * cumulative[:, -1:]
    return (cumulative <= thresholds).sum(axis=1)


def sample_episodes(
    mdp: FiniteMDP, logits: np.ndarray, n_episodes: int, rng: np.random.Generator, max_steps: int
) -> Episodes:
    """Sample n_episodes episodes of pi = softmax(logits[s]) side by side; cut (truncated) at max_steps."""
    policy_cumulative = np.cumsum(FiniteMDP.softmax_policy(logits), axis=1)
    transition_cumulative = np.cumsum(mdp.transitions, axis=2)
    states = np.zeros((max_steps, n_episodes), dtype=np.int64)
    actions = np.zeros_like(states)
    rewards = np.zeros((max_steps, n_episodes))
    terminated = np.zeros((max_steps, n_episodes), dtype=bool)
    mask = np.zeros_like(terminated)
    initial_cumulative = np.cumsum(mdp.initial_distribution)[None]
    state = _draw(np.repeat(initial_cumulative, n_episodes, axis=0), rng)
    running = np.flatnonzero(~mdp.terminal_states[state])  # only episodes still going are stepped
    state = state[running]
    steps = 0
    while running.size and steps < max_steps:
        action = _draw(policy_cumulative[state], rng)
        next_state = _draw(transition_cumulative[state, action], rng)
        states[steps, running], actions[steps, running], mask[steps, running] = state, action, True
        rewards[steps, running] = mdp.rewards[state, action, next_state]
        ends = mdp.terminal_states[next_state]
        terminated[steps, running] = ends
        running, state = running[~ends], next_state[~ends]
        steps += 1
    truncated = np.zeros_like(terminated)
    if steps == max_steps:
        truncated[-1, running] = True
    return Episodes(
        states[:steps], actions[:steps], rewards[:steps], terminated[:steps], truncated[:steps], mask[:steps]
    )


def returns_of(episodes: Episodes, gamma: float, kind: str) -> np.ndarray:
    """G [T, M]: the reward-to-go of every step ("reward_to_go") or R(tau) on every step ("trajectory")."""
    function = discounted_returns if kind == "reward_to_go" else trajectory_returns
    return function(episodes.rewards, episodes.terminated, episodes.truncated, gamma)


def log_probabilities(logits: torch.Tensor, episodes: Episodes) -> torch.Tensor:
    """log pi(a_t | s_t) [T, M] of a tabular softmax policy, differentiable in logits [S, A]."""
    states = torch.from_numpy(episodes.states)
    actions = torch.from_numpy(episodes.actions)
    return torch.log_softmax(logits, dim=1)[states, actions]


def loss_gradient(logits: np.ndarray, episodes: Episodes, weights: np.ndarray, behaviour_logits=None, **off_policy):
    """-grad of the library loss w.r.t. logits [S, A]: reinforce_loss, or off_policy_pg_loss when
    behaviour_logits (the sampling policy's table) is given."""
    table = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    log_probs = log_probabilities(table, episodes)
    weights = torch.from_numpy(weights)
    mask = torch.from_numpy(episodes.mask)
    if behaviour_logits is None:
        loss = reinforce_loss(log_probs, weights, mask)
    else:
        behaviour = log_probabilities(torch.tensor(behaviour_logits, dtype=torch.float64), episodes)
        loss = off_policy_pg_loss(log_probs, behaviour, weights, mask, **off_policy)
    loss.backward()
    return -table.grad.numpy()


def per_episode_gradients(logits: np.ndarray, episodes: Episodes, weights: np.ndarray) -> np.ndarray:
    """[M, S, A]: sum_t weights_t grad log pi(a_t|s_t), grad log pi(a|s)[s', b] = 1[s' = s](1[b = a] - pi(b|s)).

    Written from the softmax's closed-form score, independently of the torch loss."""
    policy = FiniteMDP.softmax_policy(logits)
    n_states, n_actions = policy.shape
    n_episodes = episodes.states.shape[1]
    weights = np.where(episodes.mask, weights, 0.0)
    episode = np.broadcast_to(np.arange(n_episodes), weights.shape)
    # sum_t w_t 1[b = a_t] at (s_t, b), minus sum_t w_t pi(b|s_t) at (s_t, b).
    chosen = np.bincount(
        ((episode * n_states + episodes.states) * n_actions + episodes.actions).ravel(),
        weights=weights.ravel(),
        minlength=n_episodes * n_states * n_actions,
    ).reshape(n_episodes, n_states, n_actions)
    visits = np.bincount(
        (episode * n_states + episodes.states).ravel(), weights=weights.ravel(), minlength=n_episodes * n_states
    ).reshape(n_episodes, n_states)
    return chosen - visits[:, :, None] * policy[None]


def trajectory_ratios(target_logits: np.ndarray, behaviour_logits: np.ndarray, episodes: Episodes) -> np.ndarray:
    """[T, M] per-step ratios pi'(a_t|s_t) / pi(a_t|s_t) (1 on padding), computed in numpy."""
    target = FiniteMDP.softmax_policy(target_logits)[episodes.states, episodes.actions]
    behaviour = FiniteMDP.softmax_policy(behaviour_logits)[episodes.states, episodes.actions]
    return np.where(episodes.mask, target / behaviour, 1.0)


def numpy_importance_weights(ratios: np.ndarray, ratio: str) -> np.ndarray:
    """The weights of losses.off_policy_pg written as plain products of ratios [T, M]."""
    if ratio == "trajectory":
        return np.broadcast_to(np.prod(ratios, axis=0), ratios.shape)
    if ratio == "prefix":
        return np.cumprod(ratios, axis=0)
    return ratios


def estimator_weights(episodes: Episodes, gamma: float, returns: str, step_discount: bool, baseline: str):
    """REINFORCE's Psi [T, M] for one configuration, through the library's weight functions."""
    returns_array = returns_of(episodes, gamma, returns)
    baselines = leave_one_out_baseline(returns_array, episodes.mask) if baseline == "batch_mean" else None
    return reinforce_weights(returns_array, episodes.mask, gamma, step_discount, baselines)


# ---------------------------------------------------------------------------------------
# Exact expectations: d(s) pi'(a|s) (Q(s, a) - sum_b pi'(b|s) Q(s, b)) for a visitation d and Q
# ---------------------------------------------------------------------------------------


def softmax_gradient(visitation: np.ndarray, policy: np.ndarray, q_values: np.ndarray) -> np.ndarray:
    """sum_s d(s) sum_a grad pi(a|s) Q(s, a) for the tabular softmax: [S] x [S, A] x [S, A] -> [S, A]."""
    baseline = (policy * q_values).sum(axis=1, keepdims=True)
    return visitation[:, None] * policy * (q_values - baseline)


def undiscounted_visitation(mdp: FiniteMDP, policy: np.ndarray) -> np.ndarray:
    """Expected number of visits E[sum_t 1[s_t = s]] [S] (needs an MDP where every episode ends)."""
    episodic = FiniteMDP(mdp.transitions, mdp.rewards, 1.0, mdp.initial_distribution, mdp.terminal_states)
    return episodic.discounted_visitation(policy)


def expected_undiscounted_weighting(mdp: FiniteMDP, logits: np.ndarray) -> np.ndarray:
    """E[sum_t grad log pi(a_t|s_t) G_t] (no gamma^t): the visit count replaces the discounted visitation."""
    policy = FiniteMDP.softmax_policy(logits)
    _, q_values = mdp.policy_evaluation(policy)
    return softmax_gradient(undiscounted_visitation(mdp, policy), policy, q_values)


def expected_off_policy_gradient(mdp: FiniteMDP, target_logits, behaviour_logits, ratio: str) -> np.ndarray:
    """E_{tau ~ theta}[sum_t w_t grad log pi'(a_t|s_t) gamma^t G_t] for each untruncated ratio:
    trajectory: d^theta' and Q^theta' (the true gradient at theta'); prefix: d^theta' and
    Q^theta (the future is still theta's); per_step: d^theta and Q^theta."""
    target = FiniteMDP.softmax_policy(target_logits)
    behaviour = FiniteMDP.softmax_policy(behaviour_logits)
    state_policy = target if ratio in ("trajectory", "prefix") else behaviour
    action_values_policy = target if ratio == "trajectory" else behaviour
    _, q_values = mdp.policy_evaluation(action_values_policy)
    return softmax_gradient(mdp.discounted_visitation(state_policy), target, q_values)


def random_terminating_mdp(
    seed: int, n_states: int, n_actions: int, gamma: float, termination_probability: float, reward_mean: float
) -> FiniteMDP:
    """n_states non-terminal states plus one terminal state; every action ends the episode with
    termination_probability, otherwise moves by random, peaked (Dirichlet 0.3) transitions; the reward of each
    (state, action) is drawn once from N(reward_mean, 1). Episodes start in state 0."""
    rng = np.random.default_rng(seed)
    total = n_states + 1
    transitions = np.zeros((total, n_actions, total))
    transitions[:n_states, :, :n_states] = (1 - termination_probability) * rng.dirichlet(
        np.full(n_states, 0.3), size=(n_states, n_actions)
    )
    transitions[:n_states, :, n_states] = termination_probability
    transitions[n_states, :, n_states] = 1.0
    rewards = np.zeros((total, n_actions))
    rewards[:n_states] = rng.normal(reward_mean, 1.0, size=(n_states, n_actions))
    initial = np.zeros(total)
    initial[0] = 1.0
    terminal = np.zeros(total, dtype=bool)
    terminal[n_states] = True
    return FiniteMDP(transitions, rewards, gamma, initial, terminal)
