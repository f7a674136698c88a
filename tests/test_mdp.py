"""FiniteMDP: exact values, visitation and policy gradients checked against hand results and brute force."""

from __future__ import annotations

import types

import gymnasium
import numpy as np
import pytest

from rlfoundry.envs.chain import LEFT, RIGHT, chain_mdp
from rlfoundry.mdp import FiniteMDP, FiniteMDPEnv

RANDOM_CASES = [
    # (n_states, n_actions, gamma, seed, terminal_fraction)
    (4, 2, 0.9, 0, 0.0),
    (6, 3, 0.95, 1, 0.0),
    (5, 3, 0.9, 2, 0.4),
    (7, 2, 0.99, 3, 0.3),
    (5, 2, 1.0, 4, 0.4),  # gamma = 1 is allowed: dense transitions reach the terminal states
]


def random_mdp(case: tuple) -> FiniteMDP:
    n_states, n_actions, gamma, seed, terminal_fraction = case
    return FiniteMDP.random(n_states, n_actions, gamma, seed, terminal_fraction=terminal_fraction)


def random_policy(mdp: FiniteMDP, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(mdp.n_actions), size=mdp.n_states)


def two_state_mdp() -> FiniteMDP:
    """State 0: action 0 stays (+1), action 1 moves to state 1 (0). State 1: either action goes to
    state 0 with reward 2 or stays with reward 0, each with probability 1/2. gamma = 1/2."""
    transitions = np.zeros((2, 2, 2))
    rewards = np.zeros((2, 2, 2))
    transitions[0, 0, 0] = 1.0
    rewards[0, 0, 0] = 1.0
    transitions[0, 1, 1] = 1.0
    transitions[1, :, 0] = 0.5
    transitions[1, :, 1] = 0.5
    rewards[1, :, 0] = 2.0
    return FiniteMDP(transitions, rewards, 0.5, np.array([1.0, 0.0]))


# ---------------------------------------------------------------- optimal values


def test_value_iteration_on_chain_matches_hand_computed_q_star():
    values, q_values = chain_mdp(gamma=0.9).value_iteration()
    expected = np.zeros((3, 2))
    expected[1, RIGHT] = 1.0
    expected[0, RIGHT] = 0.9
    expected[0, LEFT] = 0.81
    expected[1, LEFT] = 0.81
    np.testing.assert_allclose(q_values, expected, rtol=0, atol=1e-10)
    np.testing.assert_allclose(values, [0.9, 1.0, 0.0], rtol=0, atol=1e-10)
    np.testing.assert_array_equal(chain_mdp().greedy_policy(q_values), [RIGHT, RIGHT, RIGHT])
    np.testing.assert_allclose(chain_mdp().q_star(), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("case", RANDOM_CASES)
def test_q_star_satisfies_bellman_optimality_and_equals_greedy_policy_value(case):
    mdp = random_mdp(case)
    values, q_values = mdp.value_iteration()
    continuing = ~mdp.terminal_states
    # Bellman optimality written out separately from the implementation's vectorised backup.
    bellman = np.zeros_like(q_values)
    for state in np.flatnonzero(continuing):
        for action in range(mdp.n_actions):
            bellman[state, action] = sum(
                mdp.transitions[state, action, next_state]
                * (
                    mdp.rewards[state, action, next_state]
                    + mdp.gamma * continuing[next_state] * q_values[next_state].max()
                )
                for next_state in range(mdp.n_states)
            )
    np.testing.assert_allclose(q_values, bellman, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(q_values[mdp.terminal_states], 0.0)
    np.testing.assert_allclose(values, q_values.max(axis=1), rtol=0, atol=0)

    greedy_values, greedy_q_values = mdp.policy_evaluation(mdp.greedy_policy(q_values))
    np.testing.assert_allclose(greedy_values, values, rtol=0, atol=1e-9)
    np.testing.assert_allclose(greedy_q_values, q_values, rtol=0, atol=1e-9)
    # No other deterministic policy does better anywhere (small enough to enumerate).
    if mdp.n_actions ** mdp.n_states <= 256:
        for flat in range(mdp.n_actions ** mdp.n_states):
            actions = np.array(np.unravel_index(flat, (mdp.n_actions,) * mdp.n_states))
            assert np.all(mdp.policy_evaluation(actions)[0] <= values + 1e-9)


def test_optimal_values_of_gymnasium_grids_by_hand():
    frozen = FiniteMDP.from_gymnasium(gymnasium.make("FrozenLake-v1", is_slippery=False), 0.95)
    # Shortest path to the goal takes 6 steps; the +1 arrives on the 6th.
    assert frozen.value_iteration()[0][0] == pytest.approx(0.95**5, abs=1e-10)
    cliff = FiniteMDP.from_gymnasium("CliffWalking-v1", 0.95)
    # Up, 11 x Right, Down: 13 steps of -1.
    assert cliff.value_iteration()[0][36] == pytest.approx(-sum(0.95**t for t in range(13)), abs=1e-10)


def test_value_iteration_reports_non_convergence():
    with pytest.raises(RuntimeError, match="max_iterations"):
        FiniteMDP.random(4, 2, 0.99, seed=0).value_iteration(max_iterations=3)
    with pytest.raises(ValueError, match="tolerance"):
        chain_mdp().value_iteration(tolerance=0.0)


# ---------------------------------------------------------------- a fixed policy


def brute_force_evaluation(mdp: FiniteMDP, policy: np.ndarray, sweeps: int) -> np.ndarray:
    values = np.zeros(mdp.n_states)
    for _ in range(sweeps):
        new_values = np.zeros(mdp.n_states)
        for state in range(mdp.n_states):
            if mdp.terminal_states[state]:
                continue
            for action in range(mdp.n_actions):
                for next_state in range(mdp.n_states):
                    continuation = 0.0 if mdp.terminal_states[next_state] else values[next_state]
                    new_values[state] += (
                        policy[state, action]
                        * mdp.transitions[state, action, next_state]
                        * (mdp.rewards[state, action, next_state] + mdp.gamma * continuation)
                    )
        values = new_values
    return values


@pytest.mark.parametrize("case", [RANDOM_CASES[0], RANDOM_CASES[2]])
def test_policy_evaluation_matches_iterative_evaluation(case):
    mdp = random_mdp(case)
    policy = random_policy(mdp, seed=10)
    values, q_values = mdp.policy_evaluation(policy)
    np.testing.assert_allclose(values, brute_force_evaluation(mdp, policy, sweeps=400), rtol=0, atol=1e-12)
    np.testing.assert_allclose(values, (policy * q_values).sum(axis=1), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(values[mdp.terminal_states], 0.0)


def test_policy_evaluation_on_two_state_mdp_by_hand():
    mdp = two_state_mdp()
    # V0 = 1/2 (1 + V0/2) + 1/2 (V1/2) and V1 = 1/2 (2 + V0/2) + 1/2 (V1/2) give V = (5/4, 7/4).
    values, q_values = mdp.policy_evaluation(np.array([[0.5, 0.5], [0.5, 0.5]]))
    np.testing.assert_allclose(values, [1.25, 1.75], rtol=0, atol=1e-14)
    np.testing.assert_allclose(q_values, [[1.625, 0.875], [1.75, 1.75]], rtol=0, atol=1e-14)
    assert mdp.objective(np.array([[0.5, 0.5], [0.5, 0.5]])) == pytest.approx(1.25, abs=1e-14)
    np.testing.assert_allclose(mdp.expected_rewards, [[1.0, 0.0], [1.0, 1.0]], rtol=0, atol=0)
    # Deterministic "always stay": V0 = 1 / (1 - 1/2).
    assert mdp.policy_evaluation(np.array([0, 0]))[0][0] == pytest.approx(2.0, abs=1e-14)


def test_expected_rewards_input_gives_same_values_as_transition_rewards():
    mdp = random_mdp(RANDOM_CASES[2])
    from_expected = FiniteMDP(
        mdp.transitions, mdp.expected_rewards, mdp.gamma, mdp.initial_distribution, mdp.terminal_states
    )
    np.testing.assert_allclose(from_expected.expected_rewards, mdp.expected_rewards, rtol=0, atol=1e-14)
    policy = random_policy(mdp, seed=3)
    np.testing.assert_allclose(
        from_expected.policy_evaluation(policy)[0], mdp.policy_evaluation(policy)[0], rtol=0, atol=1e-12
    )


@pytest.mark.parametrize("case", RANDOM_CASES)
def test_discounted_visitation_is_power_series_and_sums_to_discounted_length(case):
    mdp = random_mdp(case)
    policy = random_policy(mdp, seed=5)
    visitation = mdp.discounted_visitation(policy)

    # Brute force: sum_t gamma^t Pr(s_t = s, not yet terminated), stepping the state distribution.
    continuing = ~mdp.terminal_states
    state_transitions = np.einsum("sa,sat->st", policy, mdp.transitions)
    distribution = mdp.initial_distribution * continuing
    power_series = np.zeros(mdp.n_states)
    for step in range(3000):
        power_series += mdp.gamma**step * distribution
        distribution = (distribution @ state_transitions) * continuing
    np.testing.assert_allclose(visitation, power_series, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(visitation[mdp.terminal_states], 0.0)

    # A reward of 1 per step makes the objective the expected discounted episode length.
    ones = np.ones((mdp.n_states, mdp.n_actions))
    unit_rewards = FiniteMDP(mdp.transitions, ones, mdp.gamma, mdp.initial_distribution, mdp.terminal_states)
    assert visitation.sum() == pytest.approx(unit_rewards.objective(policy), rel=1e-12)
    if not mdp.terminal_states.any():
        assert visitation.sum() == pytest.approx(1.0 / (1.0 - mdp.gamma), rel=1e-12)


def test_an_episode_that_starts_in_a_terminal_state_takes_no_step():
    # mu puts half its mass on the terminal state 1: those episodes end before their first step,
    # so d(1) = 0 and the discounted length is 1/2 (the other half step once, 0 -> 1, reward 1).
    transitions = np.zeros((2, 1, 2))
    transitions[:, 0, 1] = 1.0
    mdp = FiniteMDP(transitions, np.ones((2, 1)), 0.9, np.array([0.5, 0.5]), np.array([False, True]))
    policy = np.array([0, 0])
    np.testing.assert_array_equal(mdp.discounted_visitation(policy), [0.5, 0.0])
    assert mdp.objective(policy) == 0.5


def test_objective_weights_values_by_initial_distribution():
    mdp = random_mdp(RANDOM_CASES[1])
    policy = random_policy(mdp, seed=1)
    values, _ = mdp.policy_evaluation(policy)
    assert mdp.objective(policy) == pytest.approx(mdp.initial_distribution @ values, abs=1e-14)


def test_softmax_policy_is_stable_and_normalised():
    probabilities = FiniteMDP.softmax_policy(np.array([[1000.0, 1000.0, -1000.0], [0.0, np.log(3.0), 0.0]]))
    np.testing.assert_allclose(probabilities[0], [0.5, 0.5, 0.0], atol=1e-15)
    np.testing.assert_allclose(probabilities[1], [0.2, 0.6, 0.2], atol=1e-15)
    with pytest.raises(ValueError, match="logits"):
        FiniteMDP.softmax_policy(np.array([[np.nan, 0.0]]))


# ---------------------------------------------------------------- the policy gradient


def finite_difference_gradient(mdp: FiniteMDP, logits: np.ndarray, step: float) -> np.ndarray:
    gradient = np.zeros_like(logits)
    for index in np.ndindex(*logits.shape):
        plus, minus = logits.copy(), logits.copy()
        plus[index] += step
        minus[index] -= step
        gradient[index] = (
            mdp.objective(FiniteMDP.softmax_policy(plus)) - mdp.objective(FiniteMDP.softmax_policy(minus))
        ) / (2 * step)
    return gradient


def assert_gradient_matches_finite_differences(mdp: FiniteMDP, seed: int) -> None:
    logits = np.random.default_rng(seed).normal(size=(mdp.n_states, mdp.n_actions))
    exact = mdp.policy_gradient(logits)
    numerical = finite_difference_gradient(mdp, logits, step=1e-5)
    scale = np.max(np.abs(exact))
    assert scale > 0
    np.testing.assert_allclose(numerical, exact, rtol=0, atol=1e-6 * scale)
    np.testing.assert_array_equal(exact[mdp.terminal_states], 0.0)


@pytest.mark.parametrize("case", RANDOM_CASES)
def test_policy_gradient_matches_finite_differences_on_random_mdps(case):
    assert_gradient_matches_finite_differences(random_mdp(case), seed=case[3])


@pytest.mark.parametrize("env_id", ["FrozenLake-v1", "CliffWalking-v1"])
def test_policy_gradient_matches_finite_differences_on_gymnasium_envs(env_id):
    assert_gradient_matches_finite_differences(FiniteMDP.from_gymnasium(env_id, 0.95), seed=7)


# ---------------------------------------------------------------- from_gymnasium


def test_from_gymnasium_frozen_lake_slippery():
    mdp = FiniteMDP.from_gymnasium("FrozenLake-v1", 0.95)
    assert (mdp.n_states, mdp.n_actions) == (16, 4)
    left, down, right, up = 0, 1, 2, 3
    # Slippery: the intended move and the two perpendicular ones, 1/3 each.
    np.testing.assert_allclose(mdp.transitions[9, down, [8, 13, 10]], [1 / 3] * 3, rtol=1e-12)
    # From the corner, Left and Up both bump into walls, so staying gets 2/3.
    np.testing.assert_allclose(mdp.transitions[0, left, [0, 4]], [2 / 3, 1 / 3], rtol=1e-12)
    # The goal pays 1 on entry: from 14, Right slips to Up (10), Right (15) or Down (stays at 14).
    assert mdp.rewards[14, right, 15] == 1.0
    assert mdp.expected_rewards[14, right] == pytest.approx(1 / 3, rel=1e-12)
    assert mdp.rewards[10, up, 6] == 0.0
    np.testing.assert_array_equal(np.flatnonzero(mdp.terminal_states), [5, 7, 11, 12, 15])
    np.testing.assert_array_equal(mdp.initial_distribution, np.eye(16)[0])


def test_from_gymnasium_frozen_lake_deterministic_instance():
    env = gymnasium.make("FrozenLake-v1", is_slippery=False)
    mdp = FiniteMDP.from_gymnasium(env, 0.9)
    assert np.all(np.isin(mdp.transitions, [0.0, 1.0]))
    assert mdp.transitions[14, 2, 15] == 1.0 and mdp.rewards[14, 2, 15] == 1.0
    env.reset(seed=0)  # the caller's env is not closed by from_gymnasium
    env.close()


def test_from_gymnasium_cliff_walking():
    mdp = FiniteMDP.from_gymnasium("CliffWalking-v1", 0.95)
    up, right, down, left = 0, 1, 2, 3
    assert (mdp.n_states, mdp.n_actions) == (48, 4)
    np.testing.assert_array_equal(mdp.initial_distribution, np.eye(48)[36])
    np.testing.assert_array_equal(np.flatnonzero(mdp.terminal_states), [47])
    # Stepping into the cliff (37) costs -100 and returns to the start.
    assert mdp.transitions[36, right, 36] == 1.0 and mdp.rewards[36, right, 36] == -100.0
    assert mdp.transitions[25, down, 36] == 1.0 and mdp.rewards[25, down, 36] == -100.0
    assert mdp.transitions[35, down, 47] == 1.0 and mdp.rewards[35, down, 47] == -1.0
    assert mdp.transitions[36, up, 24] == 1.0 and mdp.transitions[36, left, 36] == 1.0


def test_from_gymnasium_taxi():
    mdp = FiniteMDP.from_gymnasium("Taxi-v4", 0.9)
    assert (mdp.n_states, mdp.n_actions) == (500, 6)
    # Terminal: passenger delivered, taxi at the destination (one state per destination).
    assert mdp.terminal_states.sum() == 4
    assert mdp.initial_distribution[mdp.terminal_states].sum() == 0.0
    assert set(np.unique(mdp.rewards)) <= {-10.0, -1.0, 0.0, 20.0}


def fake_toy_text_env(model: dict, initial: list[float]) -> types.SimpleNamespace:
    return types.SimpleNamespace(P=model, initial_state_distrib=np.array(initial))


def test_from_gymnasium_rejects_inconsistent_termination():
    model = {
        0: {0: [(1.0, 2, 1.0, True)], 1: [(1.0, 1, 0.0, False)]},
        1: {0: [(1.0, 2, 0.0, False)], 1: [(1.0, 0, 0.0, False)]},
        2: {0: [(1.0, 2, 0.0, True)], 1: [(1.0, 2, 0.0, True)]},
    }
    with pytest.raises(ValueError, match="termination for state 2.*property of the next state"):
        FiniteMDP.from_gymnasium(fake_toy_text_env(model, [1.0, 0.0, 0.0]), 0.9)
    # The same conflict from a state no episode reaches is ignored (state 1 unreachable from state 2).
    model[0][1] = [(1.0, 0, 0.0, False)]
    mdp = FiniteMDP.from_gymnasium(fake_toy_text_env(model, [1.0, 0.0, 0.0]), 0.9)
    np.testing.assert_array_equal(mdp.terminal_states, [False, False, True])


def test_from_gymnasium_averages_rewards_of_duplicate_transitions():
    model = {
        0: {0: [(0.25, 1, 4.0, True), (0.5, 1, 1.0, True), (0.25, 0, 3.0, False)]},
        1: {0: [(1.0, 1, 0.0, True)]},
    }
    mdp = FiniteMDP.from_gymnasium(fake_toy_text_env(model, [1.0, 0.0]), 0.5)
    assert mdp.transitions[0, 0, 1] == 0.75
    assert mdp.rewards[0, 0, 1] == pytest.approx(2.0, abs=1e-15)
    assert mdp.expected_rewards[0, 0] == pytest.approx(0.25 * 4 + 0.5 * 1 + 0.25 * 3, abs=1e-15)


def test_from_gymnasium_rejects_env_without_model():
    with pytest.raises(ValueError, match="env_or_id.*initial_state_distrib"):
        FiniteMDP.from_gymnasium(gymnasium.make("CartPole-v1"), 0.9)


# ---------------------------------------------------------------- as_env


def test_as_env_samples_transitions_with_model_frequencies():
    mdp = FiniteMDP.random(4, 2, 0.9, seed=11, terminal_fraction=0.25)
    env = mdp.as_env()
    state, _ = env.reset(seed=123)
    actions = np.random.default_rng(0).integers(mdp.n_actions, size=40_000)
    counts = np.zeros_like(mdp.transitions)
    for action in actions:
        next_state, reward, terminated, truncated, info = env.step(action)
        assert reward == mdp.rewards[state, action, next_state]
        assert terminated == mdp.terminal_states[next_state] and not truncated
        assert info["prob"] == mdp.transitions[state, action, next_state]
        counts[state, action, next_state] += 1
        state = env.reset()[0] if terminated else next_state
    for state in np.flatnonzero(~mdp.terminal_states):
        for action in range(mdp.n_actions):
            total = counts[state, action].sum()
            assert total > 1000
            expected = total * mdp.transitions[state, action]
            chi_square = np.sum((counts[state, action] - expected) ** 2 / expected)
            # 3 degrees of freedom: P(chi2 > 25) ~ 2e-5, and the seed is fixed anyway.
            assert chi_square < 25.0, (state, action, chi_square)


def test_as_env_same_seed_same_trajectory_and_time_limit():
    mdp = FiniteMDP.random(5, 3, 0.9, seed=2)

    def trajectory(seed: int) -> list:
        env = mdp.as_env(max_episode_steps=50)
        steps = [env.reset(seed=seed)[0]]
        truncated = False
        while not truncated:
            state, _, _, truncated, _ = env.step(len(steps) % 3)
            steps.append(state)
        return steps

    assert trajectory(7) == trajectory(7)
    assert trajectory(7) != trajectory(8)
    assert len(trajectory(7)) == 51
    assert isinstance(mdp.as_env(max_episode_steps=50), gymnasium.wrappers.TimeLimit)


def test_as_env_exposes_toy_text_model_and_round_trips():
    mdp = random_mdp(RANDOM_CASES[2])
    env = mdp.as_env(max_episode_steps=10)
    base = env.unwrapped
    assert isinstance(base, FiniteMDPEnv)
    assert base.observation_space == gymnasium.spaces.Discrete(5)
    assert base.action_space == gymnasium.spaces.Discrete(3)
    state, _ = env.reset(seed=0)
    assert isinstance(base.s, int) and base.s == state and base.lastaction is None
    env.step(2)
    assert base.lastaction == 2
    round_trip = FiniteMDP.from_gymnasium(env, mdp.gamma)
    for name in ("transitions", "rewards", "expected_rewards", "initial_distribution", "terminal_states"):
        np.testing.assert_array_equal(getattr(round_trip, name), getattr(mdp, name), err_msg=name)
    assert round_trip.gamma == mdp.gamma


def test_as_env_passes_gymnasium_env_checker():
    from gymnasium.utils.env_checker import check_env

    check_env(FiniteMDP.random(3, 2, 0.9, seed=0, terminal_fraction=0.3).as_env().unwrapped, skip_render_check=True)


def test_as_env_rejects_bad_arguments():
    mdp = chain_mdp()
    with pytest.raises(ValueError, match="max_episode_steps"):
        mdp.as_env(max_episode_steps=0)
    with pytest.raises(ValueError, match="render_mode"):
        mdp.as_env(render_mode="human")
    env = mdp.as_env(render_mode="ansi")
    env.reset(seed=0)
    assert "state 0" in env.render()
    with pytest.raises(ValueError, match="action"):
        env.step(5)


# ---------------------------------------------------------------- validation


def valid_arguments() -> dict:
    return dict(
        transitions=np.full((2, 2, 2), 0.5),
        rewards=np.zeros((2, 2)),
        gamma=0.9,
        initial_distribution=np.array([1.0, 0.0]),
        terminal_states=np.array([False, True]),
    )


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("transitions", np.full((2, 2, 2), 0.4), r"transitions\[0, 0, :\] sums to 0\.8"),
        ("transitions", np.array([[[1.5, -0.5]] * 2] * 2), "transitions must be non-negative"),
        ("transitions", np.full((2, 2), 0.5), r"transitions must have shape .* got shape \(2, 2\)"),
        ("transitions", np.full((2, 2, 3), 1 / 3), r"transitions must have shape .* got shape \(2, 2, 3\)"),
        ("transitions", np.full((2, 2, 2), np.nan), "transitions must contain only finite"),
        ("rewards", np.zeros((2, 3)), r"rewards must have shape .* got shape \(2, 3\)"),
        ("rewards", "abc", "rewards must be an array of real numbers"),
        ("gamma", -0.1, r"gamma must be in \[0, 1\], got -0\.1"),
        ("gamma", 1.5, r"gamma must be in \[0, 1\], got 1\.5"),
        ("gamma", float("nan"), r"gamma must be in \[0, 1\], got nan"),
        ("gamma", "0.9", "gamma must be a real number"),
        ("initial_distribution", np.array([0.5, 0.4]), r"initial_distribution must be .* sum to 1"),
        ("initial_distribution", np.array([1.5, -0.5]), "initial_distribution must be non-negative"),
        ("initial_distribution", np.array([1.0]), r"initial_distribution must have shape .* got shape \(1,\)"),
        ("terminal_states", np.array([False]), r"terminal_states must have shape .* got shape \(1,\)"),
        ("terminal_states", np.array([0, 2]), "terminal_states must be booleans"),
    ],
)
def test_constructor_validation_names_the_argument(name, value, message):
    arguments = valid_arguments()
    arguments[name] = value
    with pytest.raises(ValueError, match=message):
        FiniteMDP(**arguments)


def test_gamma_one_needs_every_policy_to_terminate():
    # The chain's Left at S1 loops forever, so gamma = 1 could give infinite values.
    with pytest.raises(ValueError, match="gamma must be < 1"):
        chain_mdp(gamma=1.0)
    arguments = valid_arguments()
    arguments["gamma"] = 1.0
    values, _ = FiniteMDP(**arguments).value_iteration()
    np.testing.assert_allclose(values, [0.0, 0.0], atol=1e-12)


def test_impossible_transitions_store_zero_reward():
    arguments = valid_arguments()
    arguments["transitions"] = np.array([[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.0, 1.0]]])
    arguments["rewards"] = np.array([[3.0, -1.0], [0.0, 0.0]])
    mdp = FiniteMDP(**arguments)
    np.testing.assert_array_equal(mdp.rewards[0], [[3.0, 0.0], [-1.0, -1.0]])
    np.testing.assert_array_equal(mdp.expected_rewards[0], [3.0, -1.0])


def test_policy_arguments_are_validated():
    mdp = chain_mdp()
    with pytest.raises(ValueError, match="policy rows must be non-negative and sum to 1"):
        mdp.policy_evaluation(np.full((3, 2), 0.3))
    with pytest.raises(ValueError, match="policy must have shape"):
        mdp.objective(np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match="policy as actions"):
        mdp.discounted_visitation(np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="logits must have shape"):
        mdp.policy_gradient(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="q_values must have shape"):
        mdp.greedy_policy(np.zeros(3))
