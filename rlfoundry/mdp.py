"""Explicit finite MDPs with exact answers.

A :class:`FiniteMDP` holds the full model of a small Markov decision process as arrays, so values,
optimal values, discounted state visitation and the exact policy gradient can be computed by linear
algebra instead of sampling. Tests of learning algorithms compare against these numbers.

Conventions (used by every method):

* ``transitions[s, a, s']`` is P(s' | s, a); ``rewards[s, a, s']`` is the reward received for the
  transition s, a -> s'.
* Entering a terminal state ends the episode: the reward of the transition into it is received, and
  nothing after it. A terminal state's value is 0 and its actions are irrelevant (its rows are kept
  only so the arrays stay well-formed).
* Episodes start from ``initial_distribution``. Time steps are counted from 0, so the return is
  ``sum_t gamma^t r_t`` with ``r_t`` the reward of the transition taken at step t.
"""

from __future__ import annotations

import numbers
from collections import deque
from typing import Any, SupportsFloat

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import TimeLimit

__all__ = ["FiniteMDP", "FiniteMDPEnv"]

# Probability vectors may be off by rounding (e.g. three entries of 1/3); anything further is a bug.
PROBABILITY_TOLERANCE = 1e-8


def _describe(value: Any) -> str:
    """Short text of an argument for error messages: arrays by shape, scalars by value."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return repr(value)


def _short(array: np.ndarray) -> str:
    """An array's values for error messages, or just its shape when it is too long to read."""
    if array.size <= 12:
        return repr(array.tolist())
    return f"an array of shape {array.shape}"


def _as_float_array(name: str, value: Any) -> np.ndarray:
    """Convert to a float64 array, naming the argument if that is impossible or non-finite."""
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be an array of real numbers, got {_describe(value)}") from error
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must contain only finite numbers, got {_describe(value)} with NaN or inf")
    return array


class FiniteMDP:
    """A finite MDP given by explicit arrays, validated on construction.

    Args:
        transitions: P[s, a, s'], shape [S, A, S]; non-negative, each [s, a] row sums to 1.
        rewards: shape [S, A] (expected reward of taking a in s) or [S, A, S] (reward of s, a -> s').
            Stored in the [S, A, S] form: an [S, A] input is repeated over s', which keeps the
            expected rewards. Rewards of impossible transitions (P = 0) are stored as 0, so the
            arrays are determined by what can happen (this makes round trips through an env exact).
        gamma: discount in [0, 1]. gamma == 1 is allowed only if every policy reaches a terminal state
            with probability 1 from every state; otherwise values could be infinite.
        initial_distribution: mu[s], shape [S]; non-negative, sums to 1.
        terminal_states: optional bool array [S]; entering a terminal state ends the episode.

    Attributes (float64 arrays unless stated; treat them as read-only):
        transitions [S, A, S], rewards [S, A, S], expected_rewards [S, A], initial_distribution [S],
        terminal_states (bool [S]), gamma (float), n_states (int), n_actions (int).
    """

    def __init__(
        self,
        transitions: Any,
        rewards: Any,
        gamma: SupportsFloat,
        initial_distribution: Any,
        terminal_states: Any = None,
    ) -> None:
        transitions = _as_float_array("transitions", transitions)
        if transitions.ndim != 3 or transitions.shape[0] != transitions.shape[2] or 0 in transitions.shape:
            raise ValueError(
                "transitions must have shape [n_states, n_actions, n_states] with n_states, n_actions >= 1, "
                f"got shape {transitions.shape}"
            )
        n_states, n_actions, _ = transitions.shape
        if np.any(transitions < 0):
            state, action, next_state = np.argwhere(transitions < 0)[0]
            raise ValueError(
                "transitions must be non-negative probabilities, got "
                f"transitions[{state}, {action}, {next_state}] = {float(transitions[state, action, next_state])!r}"
            )
        row_sums = transitions.sum(axis=2)
        bad_rows = np.argwhere(np.abs(row_sums - 1.0) > PROBABILITY_TOLERANCE)
        if len(bad_rows) > 0:
            state, action = bad_rows[0]
            raise ValueError(
                f"transitions[s, a, :] must sum to 1 (within {PROBABILITY_TOLERANCE}) for every s, a; "
                f"transitions[{state}, {action}, :] sums to {float(row_sums[state, action])!r}"
            )

        rewards = _as_float_array("rewards", rewards)
        if rewards.shape == (n_states, n_actions):
            rewards = np.repeat(rewards[:, :, None], n_states, axis=2)
        elif rewards.shape != (n_states, n_actions, n_states):
            raise ValueError(
                f"rewards must have shape [n_states, n_actions] = {(n_states, n_actions)} or "
                f"[n_states, n_actions, n_states] = {(n_states, n_actions, n_states)}, got shape {rewards.shape}"
            )
        rewards = np.where(transitions > 0, rewards, 0.0)

        initial_distribution = _as_float_array("initial_distribution", initial_distribution)
        if initial_distribution.shape != (n_states,):
            raise ValueError(
                f"initial_distribution must have shape [n_states] = ({n_states},), "
                f"got shape {initial_distribution.shape}"
            )
        if np.any(initial_distribution < 0) or abs(initial_distribution.sum() - 1.0) > PROBABILITY_TOLERANCE:
            raise ValueError(
                "initial_distribution must be non-negative and sum to 1 "
                f"(within {PROBABILITY_TOLERANCE}), got {_short(initial_distribution)} "
                f"(sum {float(initial_distribution.sum())!r})"
            )

        if terminal_states is None:
            terminal_states = np.zeros(n_states, dtype=bool)
        else:
            raw_terminal_states = np.asarray(terminal_states)
            if raw_terminal_states.shape != (n_states,):
                raise ValueError(
                    f"terminal_states must have shape [n_states] = ({n_states},), "
                    f"got shape {raw_terminal_states.shape}"
                )
            if raw_terminal_states.dtype != bool and not np.all(
                (raw_terminal_states == 0) | (raw_terminal_states == 1)
            ):
                raise ValueError(
                    f"terminal_states must be booleans (or 0/1), got {_short(raw_terminal_states)}"
                )
            terminal_states = raw_terminal_states.astype(bool)

        if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real):
            raise ValueError(f"gamma must be a real number in [0, 1], got {gamma!r}")
        gamma = float(gamma)
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma!r}")

        self.transitions: np.ndarray = transitions
        self.rewards: np.ndarray = rewards
        self.expected_rewards: np.ndarray = (transitions * rewards).sum(axis=2)
        self.gamma: float = gamma
        self.initial_distribution: np.ndarray = initial_distribution
        self.terminal_states: np.ndarray = terminal_states
        self.n_states: int = int(n_states)
        self.n_actions: int = int(n_actions)

        if gamma == 1.0 and not self._every_policy_terminates():
            raise ValueError(
                "gamma must be < 1 for this MDP, got gamma = 1.0: gamma = 1 is only allowed when every "
                "policy reaches a terminal state with probability 1, and here some policy can keep "
                "the episode going forever (so its undiscounted return may be infinite)"
            )

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_gymnasium(cls, env_or_id: gymnasium.Env | str, gamma: SupportsFloat) -> FiniteMDP:
        """Build the MDP of a toy-text style environment from its model.

        The env (or its ``unwrapped``) must expose ``P[s][a]``, a list of
        ``(probability, next_state, reward, terminated)`` tuples, and ``initial_state_distrib`` [S];
        this holds for FrozenLake-v1, CliffWalking-v1, Taxi-v4 and :class:`FiniteMDPEnv`.

        * Several entries with the same (s, a, s') have their probabilities added; if their rewards
          differ, the stored reward is the probability-weighted mean, which keeps expected rewards and
          therefore all values exact (only the reward distribution of that transition is lost).
        * ``terminated`` must be a property of the next state, because FiniteMDP marks states as
          terminal. This is checked on the transitions an episode can take: those from states
          reachable from the initial distribution without terminating first. Transitions out of
          states no episode can be in are ignored (Taxi-v4 has such states: "passenger delivered"
          with the taxi elsewhere); a state reached only that way is terminal if any transition into
          it terminates.

        Args:
            env_or_id: an env instance (not closed here) or a Gymnasium id (made and closed here).
            gamma: discount, as in the constructor.

        Raises:
            ValueError: if the env has no model, the model is malformed, or termination is not a
                property of the next state.
        """
        if isinstance(env_or_id, str):
            env = gymnasium.make(env_or_id)
            try:
                return cls._from_toy_text_model(env.unwrapped, gamma, f"env {env_or_id!r}")
            finally:
                env.close()
        return cls._from_toy_text_model(getattr(env_or_id, "unwrapped", env_or_id), gamma, "env_or_id")

    @classmethod
    def _from_toy_text_model(cls, env: Any, gamma: SupportsFloat, name: str) -> FiniteMDP:
        model = getattr(env, "P", None)
        initial = getattr(env, "initial_state_distrib", None)
        if not isinstance(model, dict) or initial is None:
            raise ValueError(
                f"{name} must expose a toy-text model: a dict P[s][a] = [(probability, next_state, reward, "
                f"terminated), ...] and initial_state_distrib; got {type(env).__name__} without them"
            )
        n_states = len(model)
        if n_states == 0 or set(model) != set(range(n_states)):
            raise ValueError(f"{name}.P must have the states 0..n_states - 1 as keys, got {n_states} other keys")
        n_actions = len(model[0])
        for state in range(n_states):
            if set(model[state]) != set(range(n_actions)):
                raise ValueError(
                    f"{name}.P[{state}] must have actions 0..{n_actions - 1} as keys, got {sorted(model[state])!r}"
                )

        transitions = np.zeros((n_states, n_actions, n_states))
        reward_sums = np.zeros((n_states, n_actions, n_states))  # sum of probability * reward
        first_rewards: dict[tuple[int, int, int], float] = {}
        rewards_differ: set[tuple[int, int, int]] = set()
        for state in range(n_states):
            for action in range(n_actions):
                for entry in model[state][action]:
                    probability, next_state, reward, _ = entry
                    key = (state, action, int(next_state))
                    if not 0 <= key[2] < n_states:
                        raise ValueError(
                            f"{name}.P[{state}][{action}] has next_state {next_state!r}, allowed 0..{n_states - 1}"
                        )
                    if probability == 0:
                        continue  # impossible entries carry no reward information
                    transitions[key] += probability
                    reward_sums[key] += probability * reward
                    # Averaging identical rewards could change them by rounding; keep them verbatim.
                    if key not in first_rewards:
                        first_rewards[key] = float(reward)
                    elif float(reward) != first_rewards[key]:
                        rewards_differ.add(key)
        rewards = np.zeros_like(transitions)
        for key, reward in first_rewards.items():
            rewards[key] = reward
        for key in rewards_differ:
            if transitions[key] > 0:
                rewards[key] = reward_sums[key] / transitions[key]

        initial_distribution = _as_float_array(f"{name}.initial_state_distrib", initial)
        if initial_distribution.shape != (n_states,):
            raise ValueError(
                f"{name}.initial_state_distrib must have shape ({n_states},), got {initial_distribution.shape}"
            )
        terminal_states = cls._terminal_states_of_toy_text_model(model, initial_distribution, name)
        return cls(transitions, rewards, gamma, initial_distribution, terminal_states)

    @staticmethod
    def _terminal_states_of_toy_text_model(
        model: dict, initial_distribution: np.ndarray, name: str
    ) -> np.ndarray:
        """Terminal flags [S] from the ``terminated`` entries of a toy-text model (see from_gymnasium)."""
        n_states = len(model)
        # flag[s]: -1 not yet entered by a possible transition, 0 entered without terminating, 1 terminating.
        flag = np.full(n_states, -1, dtype=np.int64)
        witness: dict[int, str] = {}
        queue: deque[int] = deque()
        for start in np.flatnonzero(initial_distribution > 0).tolist():
            flag[start] = 0
            witness[start] = "starting an episode there (initial_state_distrib > 0)"
            queue.append(start)
        # Breadth-first over states an episode can be in; terminating entries are not expanded.
        while queue:
            state = queue.popleft()
            for action, entries in model[state].items():
                for probability, next_state, _, terminated in entries:
                    if probability <= 0:
                        continue
                    next_state, terminated = int(next_state), int(bool(terminated))
                    here = f"the transition (state {state}, action {action}) -> {next_state}"
                    if flag[next_state] == -1:
                        flag[next_state] = terminated
                        witness[next_state] = here
                        if not terminated:
                            queue.append(next_state)
                    elif flag[next_state] != terminated:
                        ends = (here, witness[next_state]) if terminated else (witness[next_state], here)
                        raise ValueError(
                            f"{name} has inconsistent termination for state {next_state}: entering it ends "
                            f"the episode via {ends[0]} but not via {ends[1]}. FiniteMDP needs termination to "
                            "be a property of the next state (terminal_states); give such an env distinct "
                            "terminal states"
                        )
        terminal_states = flag == 1
        # States no episode reaches: terminal if any transition into them terminates (values there are moot).
        for state in range(n_states):
            for entries in model[state].values():
                for probability, next_state, _, terminated in entries:
                    if probability > 0 and terminated and flag[int(next_state)] == -1:
                        terminal_states[int(next_state)] = True
        return terminal_states

    @classmethod
    def random(
        cls,
        n_states: int,
        n_actions: int,
        gamma: SupportsFloat,
        seed: int,
        terminal_fraction: float = 0.0,
    ) -> FiniteMDP:
        """A random MDP for tests, reproducible from ``seed``.

        Transition rows are Dirichlet(1, ..., 1) (so every transition is possible), rewards [S, A, S] are
        standard normal, the initial distribution is Dirichlet over the non-terminal states, and
        ``round(terminal_fraction * n_states)`` states (at most n_states - 1) are terminal.
        """
        for name, value in (("n_states", n_states), ("n_actions", n_actions)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(terminal_fraction, numbers.Real) or not 0.0 <= terminal_fraction < 1.0:
            raise ValueError(f"terminal_fraction must be a number in [0, 1), got {terminal_fraction!r}")
        generator = np.random.default_rng(seed)
        transitions = generator.dirichlet(np.ones(n_states), size=(n_states, n_actions))
        rewards = generator.normal(size=(n_states, n_actions, n_states))
        n_terminal = min(int(round(terminal_fraction * n_states)), n_states - 1)
        terminal_states = np.zeros(n_states, dtype=bool)
        terminal_states[generator.choice(n_states, size=n_terminal, replace=False)] = True
        initial_distribution = np.zeros(n_states)
        initial_distribution[~terminal_states] = generator.dirichlet(np.ones(n_states - n_terminal))
        return cls(transitions, rewards, gamma, initial_distribution, terminal_states)

    # ------------------------------------------------------------------ optimal values

    def value_iteration(
        self, tolerance: float = 1e-12, max_iterations: int = 100_000
    ) -> tuple[np.ndarray, np.ndarray]:
        """Optimal values by value iteration.

        Iterates Q(s, a) = r(s, a) + gamma sum_s' P(s'|s, a) V(s'), V(s) = max_a Q(s, a), with V and Q
        of terminal states held at 0, until max |V_new - V| <= tolerance (floored at the floating-point
        resolution of the values, so the stopping rule can always be met).

        Returns:
            values [S] (V*) and q_values [S, A] (Q*).

        Raises:
            RuntimeError: if not converged within max_iterations.
        """
        if not isinstance(tolerance, numbers.Real) or not tolerance > 0:
            raise ValueError(f"tolerance must be a number > 0, got {tolerance!r}")
        if isinstance(max_iterations, bool) or not isinstance(max_iterations, numbers.Integral) or max_iterations < 1:
            raise ValueError(f"max_iterations must be an integer >= 1, got {max_iterations!r}")
        values = np.zeros(self.n_states)
        change = np.inf
        for _ in range(max_iterations):
            q_values = self._backup(values)
            new_values = q_values.max(axis=1)
            change = float(np.max(np.abs(new_values - values)))
            values = new_values
            resolution = 16 * np.finfo(np.float64).eps * float(np.max(np.abs(values)))
            if change <= max(tolerance, resolution):
                return values, q_values
        raise RuntimeError(
            f"value iteration did not converge in max_iterations={max_iterations} "
            f"(last change {change:.3e} > tolerance {tolerance:.1e}); raise max_iterations"
        )

    def q_star(self) -> np.ndarray:
        """Q* [S, A] (value iteration with default settings)."""
        return self.value_iteration()[1]

    def greedy_policy(self, q_values: Any) -> np.ndarray:
        """argmax_a q_values[s, a] for each state as an int array [S] (ties go to the lowest action)."""
        q_values = _as_float_array("q_values", q_values)
        if q_values.shape != (self.n_states, self.n_actions):
            raise ValueError(
                f"q_values must have shape [n_states, n_actions] = {(self.n_states, self.n_actions)}, "
                f"got shape {q_values.shape}"
            )
        return np.argmax(q_values, axis=1).astype(np.int64)

    # ------------------------------------------------------------------ a fixed policy

    def policy_evaluation(self, policy: Any) -> tuple[np.ndarray, np.ndarray]:
        """Exact V^pi [S] and Q^pi [S, A] by solving (I - gamma P_pi) V = r_pi.

        P_pi and r_pi have the rows of terminal states and the columns into terminal states zeroed,
        which makes V(terminal) = 0 and stops bootstrapping past termination.

        Args:
            policy: pi(a|s) as probabilities [S, A], or deterministic actions as an int array [S].
        """
        policy = self._policy_matrix(policy)
        state_transitions, state_rewards = self._policy_dynamics(policy)
        values = np.linalg.solve(np.eye(self.n_states) - self.gamma * state_transitions, state_rewards)
        return values, self._backup(values)

    def discounted_visitation(self, policy: Any) -> np.ndarray:
        """d(s) = sum_t gamma^t Pr(s_t = s, episode not yet ended), shape [S].

        Terminal states get 0: an episode that enters one is over, so no step is taken there. Hence
        sum_s d(s) is the expected discounted episode length E[sum_{t < T} gamma^t] (1 / (1 - gamma)
        without terminal states). Solves d = mu + gamma P_pi^T d with the masked P_pi of
        :meth:`policy_evaluation`.

        Args:
            policy: as in :meth:`policy_evaluation`.
        """
        policy = self._policy_matrix(policy)
        state_transitions, _ = self._policy_dynamics(policy)
        start = np.where(self.terminal_states, 0.0, self.initial_distribution)
        return np.linalg.solve(np.eye(self.n_states) - self.gamma * state_transitions.T, start)

    def objective(self, policy: Any) -> float:
        """J(pi) = sum_s mu(s) V^pi(s), the expected discounted return from the initial distribution."""
        values, _ = self.policy_evaluation(policy)
        return float(self.initial_distribution @ values)

    @staticmethod
    def softmax_policy(logits: Any) -> np.ndarray:
        """softmax over the last axis: [..., A] logits -> [..., A] probabilities (max subtracted first)."""
        logits = _as_float_array("logits", logits)
        if logits.ndim == 0 or logits.shape[-1] == 0:
            raise ValueError(f"logits must have shape [..., n_actions] with n_actions >= 1, got shape {logits.shape}")
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)

    def policy_gradient(self, logits: Any) -> np.ndarray:
        """Exact gradient [S, A] of J(theta) for the tabular softmax policy pi(a|s) = softmax(theta[s])_a.

        Derivation: the policy gradient theorem gives
            dJ/dtheta = sum_s d(s) sum_b dpi(b|s)/dtheta Q(s, b)
        with d the discounted visitation above. For a softmax, dpi(b|s)/dtheta[s, a] =
        pi(b|s) (1[a = b] - pi(a|s)) and is 0 for other states' logits, so
            dJ/dtheta[s, a] = d(s) (pi(a|s) Q(s, a) - pi(a|s) sum_b pi(b|s) Q(s, b))
                            = d(s) pi(a|s) (Q(s, a) - V(s)).
        Terminal states have d = 0, so their logits get no gradient.
        """
        logits = _as_float_array("logits", logits)
        if logits.shape != (self.n_states, self.n_actions):
            raise ValueError(
                f"logits must have shape [n_states, n_actions] = {(self.n_states, self.n_actions)}, "
                f"got shape {logits.shape}"
            )
        policy = self.softmax_policy(logits)
        values, q_values = self.policy_evaluation(policy)
        visitation = self.discounted_visitation(policy)
        return visitation[:, None] * policy * (q_values - values[:, None])

    # ------------------------------------------------------------------ sampling

    def as_env(self, max_episode_steps: int | None = None, render_mode: str | None = None) -> gymnasium.Env:
        """A Gymnasium env sampling from this MDP (see :class:`FiniteMDPEnv`).

        Wrapped in gymnasium's TimeLimit if ``max_episode_steps`` is given.
        """
        env: gymnasium.Env = FiniteMDPEnv(self, render_mode=render_mode)
        if max_episode_steps is not None:
            if (
                isinstance(max_episode_steps, bool)
                or not isinstance(max_episode_steps, numbers.Integral)
                or max_episode_steps < 1
            ):
                raise ValueError(f"max_episode_steps must be None or an integer >= 1, got {max_episode_steps!r}")
            env = TimeLimit(env, max_episode_steps=int(max_episode_steps))
        return env

    # ------------------------------------------------------------------ helpers

    def _backup(self, values: np.ndarray) -> np.ndarray:
        """Q[s, a] = r(s, a) + gamma sum_s' P(s'|s, a) V(s') with terminal V and Q at 0; [S] -> [S, A]."""
        continuing_values = np.where(self.terminal_states, 0.0, values)
        q_values = self.expected_rewards + self.gamma * (self.transitions @ continuing_values)
        q_values[self.terminal_states] = 0.0
        return q_values

    def _policy_dynamics(self, policy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Masked P_pi [S, S] and r_pi [S] of a policy matrix [S, A] (terminal rows and columns zeroed)."""
        continuing = ~self.terminal_states
        state_transitions = np.einsum("sa,sat->st", policy, self.transitions)
        state_transitions *= continuing[:, None] & continuing[None, :]
        state_rewards = np.where(continuing, np.einsum("sa,sa->s", policy, self.expected_rewards), 0.0)
        return state_transitions, state_rewards

    def _policy_matrix(self, policy: Any) -> np.ndarray:
        """Validate a policy; int actions [S] become one-hot [S, A]."""
        raw = np.asarray(policy)
        if raw.ndim == 1 and raw.dtype.kind in "iu":
            if raw.shape != (self.n_states,) or np.any((raw < 0) | (raw >= self.n_actions)):
                raise ValueError(
                    f"policy as actions must be an int array of shape ({self.n_states},) with values in "
                    f"0..{self.n_actions - 1}, got {_short(raw)}"
                )
            return np.eye(self.n_actions)[raw]
        policy = _as_float_array("policy", policy)
        if policy.shape != (self.n_states, self.n_actions):
            raise ValueError(
                f"policy must have shape [n_states, n_actions] = {(self.n_states, self.n_actions)} "
                f"(probabilities) or [n_states] (int actions), got shape {policy.shape}"
            )
        row_sums = policy.sum(axis=1)
        if np.any(policy < 0) or np.any(np.abs(row_sums - 1.0) > PROBABILITY_TOLERANCE):
            state = int(np.argmax(np.any(policy < 0, axis=1) | (np.abs(row_sums - 1.0) > PROBABILITY_TOLERANCE)))
            raise ValueError(
                "policy rows must be non-negative and sum to 1, got "
                f"policy[{state}] = {policy[state].tolist()!r}"
            )
        return policy

    def _every_policy_terminates(self) -> bool:
        """Whether every policy ends the episode with probability 1 from every state.

        Some policy runs forever iff some non-empty set C of non-terminal states lets each of its states
        pick an action whose successors all lie in C; the largest such C is found by repeatedly dropping
        states that cannot stay.
        """
        staying = ~self.terminal_states
        while True:
            leaves = np.any((self.transitions > 0) & ~staying[None, None, :], axis=2)  # [S, A]
            new_staying = staying & np.any(~leaves, axis=1)
            if np.array_equal(new_staying, staying):
                return not np.any(staying)
            staying = new_staying

    def __repr__(self) -> str:
        return (
            f"FiniteMDP(n_states={self.n_states}, n_actions={self.n_actions}, gamma={self.gamma}, "
            f"n_terminal={int(self.terminal_states.sum())})"
        )


class FiniteMDPEnv(gymnasium.Env):
    """Gymnasium env that samples a :class:`FiniteMDP` (Discrete(S) observations, Discrete(A) actions).

    Initial states, next states and termination are drawn from the MDP's arrays with the env's own
    ``np_random`` (seeded by ``reset(seed=...)``). Like the toy-text envs it exposes its model as
    ``P[s][a] = [(probability, next_state, reward, terminated), ...]`` (possible transitions only) and
    ``initial_state_distrib`` [S], so ``FiniteMDP.from_gymnasium(env, gamma)`` recovers the MDP, and
    keeps the current state in ``s`` and the last action in ``lastaction``. Stepping after termination
    without a reset continues from the terminal state's rows, as toy-text envs do.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, mdp: FiniteMDP, render_mode: str | None = None) -> None:
        if not isinstance(mdp, FiniteMDP):
            raise ValueError(f"mdp must be a FiniteMDP, got {type(mdp).__name__}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.mdp = mdp
        self.render_mode = render_mode
        self.nS, self.nA = mdp.n_states, mdp.n_actions
        self.observation_space = spaces.Discrete(mdp.n_states)
        self.action_space = spaces.Discrete(mdp.n_actions)
        self.P: dict[int, dict[int, list[tuple[float, int, float, bool]]]] = {
            state: {
                action: [
                    (
                        float(mdp.transitions[state, action, next_state]),
                        int(next_state),
                        float(mdp.rewards[state, action, next_state]),
                        bool(mdp.terminal_states[next_state]),
                    )
                    for next_state in np.flatnonzero(mdp.transitions[state, action] > 0)
                ]
                for action in range(mdp.n_actions)
            }
            for state in range(mdp.n_states)
        }
        self.initial_state_distrib: np.ndarray = mdp.initial_distribution.copy()
        self._cumulative_transitions = np.cumsum(mdp.transitions, axis=2)  # [S, A, S]
        self._cumulative_initial = np.cumsum(mdp.initial_distribution)  # [S]
        self.s: int = int(np.argmax(mdp.initial_distribution))  # placeholder until reset
        self.lastaction: int | None = None

    def _sample(self, cumulative: np.ndarray) -> int:
        # Scaling by the total keeps rows that sum to 1 - 1e-9 from drawing past the last possible state;
        # side="right" never selects a zero-probability entry.
        threshold = self.np_random.random() * cumulative[-1]
        return int(np.searchsorted(cumulative, threshold, side="right"))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        super().reset(seed=seed)
        self.s = self._sample(self._cumulative_initial)
        self.lastaction = None
        return self.s, {"prob": float(self.mdp.initial_distribution[self.s])}

    def step(self, action: Any) -> tuple[int, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(f"action must be an integer in 0..{self.mdp.n_actions - 1}, got {action!r}")
        action = int(action)
        state = self.s
        next_state = self._sample(self._cumulative_transitions[state, action])
        self.s = next_state
        self.lastaction = action
        reward = float(self.mdp.rewards[state, action, next_state])
        terminated = bool(self.mdp.terminal_states[next_state])
        # truncated is always False: time limits come from the TimeLimit wrapper.
        return next_state, reward, terminated, False, {"prob": float(self.mdp.transitions[state, action, next_state])}

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        last = "" if self.lastaction is None else f" (last action {self.lastaction})"
        return f"state {self.s}{last}\n"
