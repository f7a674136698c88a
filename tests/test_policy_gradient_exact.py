"""REINFORCE and the importance-sampled policy gradient against exact gradients of finite MDPs.

Each test samples many episodes of a small random MDP (4 states + a terminal one, 3 actions,
gamma 0.8, every step ends the episode with probability 0.3, so episodes last 3.3 steps on
average and the cut at 200 steps has probability 0.7^200 ~ 1e-31) under a tabular softmax
policy, takes the gradient of the LIBRARY loss with torch autograd, and compares it with
``FiniteMDP.policy_gradient`` (or with the exact expectation of a biased variant).

Confidence bound: the estimate is a mean of M independent per-episode gradients. Of its 15
components, the terminal state's 3 are exactly 0; each of the other 12 is within Z = 4.5
standard errors of its expectation except with probability 7e-6 (1e-4 for all 12). The
standard errors come from per-episode gradients computed here from the softmax's closed-form
score (independently of torch). The seeds are fixed, so each test is deterministic; the bound
says it would pass for almost every seed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from policy_gradient_sampling import (
    estimator_weights,
    expected_off_policy_gradient,
    expected_undiscounted_weighting,
    loss_gradient,
    numpy_importance_weights,
    per_episode_gradients,
    random_terminating_mdp,
    returns_of,
    sample_episodes,
    trajectory_ratios,
)
from rlfoundry.losses.off_policy_pg import IMPORTANCE_RATIOS, importance_weights
from rlfoundry.losses.reinforce import leave_one_out_baseline, reinforce_weights

Z = 4.5
EPISODES = 60_000
MAX_STEPS = 200
GAMMA = 0.8


@pytest.fixture(scope="module")
def mdp():
    return random_terminating_mdp(
        seed=6, n_states=4, n_actions=3, gamma=GAMMA, termination_probability=0.3, reward_mean=1.0
    )


@pytest.fixture(scope="module")
def logits(mdp):
    return np.random.default_rng(11).normal(size=(mdp.n_states, mdp.n_actions))


@pytest.fixture(scope="module")
def episodes(mdp, logits):
    sampled = sample_episodes(mdp, logits, EPISODES, np.random.default_rng(5), MAX_STEPS)
    assert not sampled.truncated.any(), "an episode hit the step cap: the estimate would miss its tail"
    return sampled


def checked_estimate(logits, episodes, weights):
    """The gradient of reinforce_loss, after checking it equals the mean of the independently
    computed per-episode gradients; returns (estimate, standard errors), both [S, A]."""
    estimate = loss_gradient(logits, episodes, weights)
    per_episode = per_episode_gradients(logits, episodes, weights)
    np.testing.assert_allclose(estimate, per_episode.mean(axis=0), rtol=1e-9, atol=1e-12)
    return estimate, per_episode.std(axis=0, ddof=1) / np.sqrt(per_episode.shape[0])


def assert_within_bound(estimate, standard_errors, expected, alternative=None):
    """|estimate - expected| < Z SE on every component. The bound must be able to fail: it must
    exclude `alternative` (the answer a plausible mistake would give), or without one, be
    narrower than 15% of the largest gradient component."""
    sampled = standard_errors > 0
    if alternative is None:
        assert Z * standard_errors.max() < 0.15 * np.abs(expected).max()
    else:
        separation = np.abs(expected - alternative)[sampled] / standard_errors[sampled]
        assert separation.max() > 2 * Z, f"the bound cannot tell expected from alternative ({separation.max():.1f} SE)"
    # The terminal state is never acted in: its logits get exactly zero gradient, without noise.
    np.testing.assert_array_equal(estimate[~sampled], expected[~sampled])
    z_scores = np.abs(estimate - expected)[sampled] / standard_errors[sampled]
    assert z_scores.max() < Z, f"max |estimate - expected| / SE = {z_scores.max():.2f}"


# ---------------------------------------------------------------------------------------
# On-policy REINFORCE
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "returns, step_discount",
    [("trajectory", False), ("reward_to_go", True)],
    ids=["R(tau) (seeds 000/001)", "gamma^t G_t (seed 004)"],
)
@pytest.mark.parametrize("baseline", ["none", "batch_mean"])
def test_reinforce_is_unbiased_for_the_discounted_objective(mdp, logits, episodes, returns, step_discount, baseline):
    weights = estimator_weights(episodes, GAMMA, returns, step_discount, baseline)
    estimate, standard_errors = checked_estimate(logits, episodes, weights)
    assert_within_bound(estimate, standard_errors, mdp.policy_gradient(logits))


def test_a_state_value_baseline_keeps_the_mean_and_lowers_the_variance(mdp, logits, episodes):
    returns = returns_of(episodes, GAMMA, "reward_to_go")
    no_baseline = reinforce_weights(returns, episodes.mask, GAMMA, True)
    values, _ = mdp.policy_evaluation(mdp.softmax_policy(logits))
    with_values = reinforce_weights(returns, episodes.mask, GAMMA, True, values[episodes.states])
    exact = mdp.policy_gradient(logits)
    estimate, with_values_errors = checked_estimate(logits, episodes, with_values)
    assert_within_bound(estimate, with_values_errors, exact)
    _, no_baseline_errors = checked_estimate(logits, episodes, no_baseline)
    # Total variance (trace of the covariance): measured 0.39 of the no-baseline one here.
    assert (with_values_errors**2).sum() < 0.5 * (no_baseline_errors**2).sum()


def test_dropping_gamma_t_is_biased_by_the_predicted_amount(mdp, logits, episodes):
    weights = estimator_weights(episodes, GAMMA, "reward_to_go", False, "none")
    estimate, standard_errors = checked_estimate(logits, episodes, weights)
    biased_expectation = expected_undiscounted_weighting(mdp, logits)
    exact = mdp.policy_gradient(logits)
    assert_within_bound(estimate, standard_errors, biased_expectation, alternative=exact)
    # The sizes quoted in docs/algorithms/reinforce.md: each state's block is scaled by its visit
    # count over its discounted visitation (1.22 for the start state, up to 1.90 for later ones).
    relative_bias = np.linalg.norm(biased_expectation - exact) / np.linalg.norm(exact)
    cosine = (biased_expectation * exact).sum() / np.linalg.norm(biased_expectation) / np.linalg.norm(exact)
    assert relative_bias == pytest.approx(0.866, abs=0.001)
    assert cosine == pytest.approx(0.996, abs=0.001)


def test_leave_one_out_keeps_small_batches_unbiased_where_the_plain_mean_shrinks(mdp, logits, episodes):
    """Batches of m = 4 episodes: the leave-one-out baseline is unbiased; the plain batch mean
    (which includes the episode's own return) gives (1 - 1/m) times the gradient in expectation."""
    batch = 4
    returns = returns_of(episodes, GAMMA, "trajectory")
    groups = np.arange(EPISODES).reshape(-1, batch)
    episode_returns = returns[0][groups]  # R(tau) [groups, m]
    plain_means = np.repeat(episode_returns.mean(axis=1), batch)
    leave_one_out = ((episode_returns.sum(axis=1, keepdims=True) - episode_returns) / (batch - 1)).reshape(-1)
    for group in groups[:100]:  # the library function gives the vectorised formula above
        np.testing.assert_allclose(
            leave_one_out_baseline(returns[:, group], episodes.mask[:, group]), leave_one_out[group]
        )
    exact = mdp.policy_gradient(logits)
    unbiased = reinforce_weights(returns, episodes.mask, GAMMA, False, leave_one_out)
    estimate, standard_errors = checked_estimate(logits, episodes, unbiased)
    assert_within_bound(estimate, standard_errors, exact)
    shrunk = reinforce_weights(returns, episodes.mask, GAMMA, False, plain_means)
    estimate, standard_errors = checked_estimate(logits, episodes, shrunk)
    assert_within_bound(estimate, standard_errors, (1 - 1 / batch) * exact, alternative=exact)


# ---------------------------------------------------------------------------------------
# Off-policy: samples of theta, gradient at theta' (seed 002)
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def target_logits(logits):
    return logits + np.random.default_rng(23).normal(scale=1.0, size=logits.shape)


@pytest.mark.parametrize("ratio", IMPORTANCE_RATIOS)
@pytest.mark.parametrize("max_weight", [None, 2.0])
def test_at_theta_prime_equal_theta_every_variant_is_the_on_policy_estimator(logits, episodes, ratio, max_weight):
    weights = estimator_weights(episodes, GAMMA, "reward_to_go", True, "none")
    on_policy = loss_gradient(logits, episodes, weights)
    off_policy = loss_gradient(logits, episodes, weights, logits, ratio=ratio, max_weight=max_weight)
    np.testing.assert_array_equal(off_policy, on_policy)


@pytest.mark.parametrize("returns, step_discount", [("trajectory", False), ("reward_to_go", True)])
def test_full_trajectory_ratio_gives_the_exact_gradient_at_theta_prime(
    mdp, logits, target_logits, episodes, returns, step_discount
):
    weights = estimator_weights(episodes, GAMMA, returns, step_discount, "none")
    importance = numpy_importance_weights(trajectory_ratios(target_logits, logits, episodes), "trajectory")
    estimate, standard_errors = checked_estimate(target_logits, episodes, importance * weights)
    library = loss_gradient(target_logits, episodes, weights, logits, ratio="trajectory")
    np.testing.assert_allclose(library, estimate, rtol=1e-9, atol=1e-12)
    # theta' is far enough from theta that the bound excludes the gradient at theta.
    assert_within_bound(
        library, standard_errors, mdp.policy_gradient(target_logits), alternative=mdp.policy_gradient(logits)
    )


@pytest.mark.parametrize("ratio", ["prefix", "per_step"])
def test_dropping_ratios_estimates_the_predicted_surrogate_gradient(mdp, logits, target_logits, episodes, ratio):
    """prefix (no future ratios): d^theta' and Q^theta; per_step (no past ones either): d^theta and
    Q^theta. Both are measurably off the exact gradient at theta' (seed 002, questions 2 and 3)."""
    weights = estimator_weights(episodes, GAMMA, "reward_to_go", True, "none")
    importance = numpy_importance_weights(trajectory_ratios(target_logits, logits, episodes), ratio)
    estimate, standard_errors = checked_estimate(target_logits, episodes, importance * weights)
    library = loss_gradient(target_logits, episodes, weights, logits, ratio=ratio)
    np.testing.assert_allclose(library, estimate, rtol=1e-9, atol=1e-12)
    assert_within_bound(
        library,
        standard_errors,
        expected_off_policy_gradient(mdp, target_logits, logits, ratio),
        alternative=mdp.policy_gradient(target_logits),
    )


def test_truncated_weights_are_capped_and_match_numpy(logits, target_logits, episodes):
    weights = estimator_weights(episodes, GAMMA, "reward_to_go", True, "none")
    ratios = trajectory_ratios(target_logits, logits, episodes)
    capped = np.minimum(numpy_importance_weights(ratios, "trajectory"), 1.5)
    assert (capped == 1.5).mean() > 0.05  # the cap is active on a real share of the episodes
    expected, _ = checked_estimate(target_logits, episodes, capped * weights)
    library = loss_gradient(target_logits, episodes, weights, logits, ratio="trajectory", max_weight=1.5)
    np.testing.assert_allclose(library, expected, rtol=1e-9, atol=1e-12)


def test_importance_weights_by_hand_are_zero_on_padding():
    # Episode 0 has ratios 2, 1/2, 4; episode 1 ends after one step of ratio 2. Its padding rows
    # carry log-probabilities that would give ratios of 8: they must be ignored and weigh 0.
    log_two = math.log(2.0)
    log_probs = torch.tensor([[log_two, log_two], [-log_two, 3 * log_two], [2 * log_two, 3 * log_two]], dtype=torch.float64)
    mask = torch.tensor([[True, True], [True, False], [True, False]])
    expected = {
        "trajectory": [[4.0, 2.0], [4.0, 0.0], [4.0, 0.0]],
        "prefix": [[2.0, 2.0], [1.0, 0.0], [4.0, 0.0]],
        "per_step": [[2.0, 2.0], [0.5, 0.0], [4.0, 0.0]],
    }
    for ratio, weights in expected.items():
        library = importance_weights(log_probs, torch.zeros_like(log_probs), mask, ratio)
        torch.testing.assert_close(library, torch.tensor(weights, dtype=torch.float64), rtol=1e-15, atol=0.0)
    capped = importance_weights(log_probs, torch.zeros_like(log_probs), mask, "trajectory", max_weight=3.0)
    torch.testing.assert_close(capped, torch.tensor([[3.0, 2.0], [3.0, 0.0], [3.0, 0.0]], dtype=torch.float64))


def test_reinforce_weights_by_hand_are_zero_on_padding():
    # Episode 1 ends after one step; its padding holds NaN, which must not reach the weights.
    returns = np.array([[4.0, 2.0], [2.0, np.nan], [1.0, np.nan]])
    mask = np.array([[True, True], [True, False], [True, False]])
    baselines = np.array([1.0, 1.0])
    discounted = reinforce_weights(returns, mask, 0.5, True, baselines)  # gamma^t (G_t - b): 0.5^t
    np.testing.assert_array_equal(discounted, [[3.0, 1.0], [0.5, 0.0], [0.0, 0.0]])
    plain = reinforce_weights(returns, mask, 0.5, False, baselines)
    np.testing.assert_array_equal(plain, [[3.0, 1.0], [1.0, 0.0], [0.0, 0.0]])


def test_importance_weights_reject_an_unknown_ratio():
    zeros = torch.zeros(2, 1)
    with pytest.raises(ValueError, match="ratio='pre_step' is not allowed"):
        importance_weights(zeros, zeros, torch.ones(2, 1, dtype=torch.bool), "pre_step")
