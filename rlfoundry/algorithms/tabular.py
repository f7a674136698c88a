"""Tabular temporal-difference control: Q-learning, SARSA and Expected SARSA (seed 003, section 4).

    Q(s, a) <- Q(s, a) + alpha [y - Q(s, a)]
    Q-learning:      y = r + gamma (1 - terminated) max_a' Q(s', a')
    SARSA:           y = r + gamma (1 - terminated) Q(s', a'),  a' the next action actually taken
    Expected SARSA:  y = r + gamma (1 - terminated) sum_a' pi(a'|s') Q(s', a')

One class runs all three; the three public classes differ only in their target rule. Transitions
from N parallel envs are applied one at a time in env order, so N = 1 is the textbook algorithm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np

from rlfoundry.data.finite import require_finite_rewards
from rlfoundry.envs.spaces import observation_batch, require_discrete_actions, require_discrete_observations
from rlfoundry.envs.toytext import path_picture
from rlfoundry.envs.vector import EnvSource, builds_new_envs, make_env, step_vector
from rlfoundry.losses.tabular import (
    Values,
    epsilon_greedy_probabilities,
    expected_sarsa_target,
    q_learning_target,
    sarsa_target,
    td_update,
)
from rlfoundry.run.config import require_choice, require_int, require_range
from rlfoundry.run.lifecycle import initialise, load_model, save_model
from rlfoundry.run.monitor import TrainingCallback, TrainingMonitor
from rlfoundry.run.schedules import LinearSchedule
from rlfoundry.run.seeding import prediction_generator
from rlfoundry.run.evaluation import PeriodicEvaluation


@dataclass(frozen=True)
class TabularConfig:
    """Hyperparameters of tabular Q-learning, SARSA and Expected SARSA."""

    seed: int = 0
    """Seeds python, numpy, torch and the environments."""
    n_envs: int = 1
    """Parallel environments; their transitions are applied one at a time, in env order."""
    gamma: float = 0.99
    """Discount factor, in [0, 1]."""
    learning_rate: float = 0.1
    """Step size alpha in (0, 1] when learning_rate_schedule is 'constant'."""
    learning_rate_schedule: Literal["constant", "visit_count"] = "constant"
    """'visit_count': alpha = 1 / (1 + visits(s, a))^visit_exponent, visits counted before the update."""
    visit_exponent: float = 1.0
    """Exponent of the visit-count schedule, in (0.5, 1]; 1 is the seeds' 1 / (1 + visits)."""
    epsilon_start: float = 1.0
    """Exploration probability at step 0, in [0, 1]."""
    epsilon_end: float = 0.05
    """Exploration probability after epsilon_decay_steps, in [0, 1]."""
    epsilon_decay_steps: int = 10_000
    """Env steps (over all envs) for epsilon's linear decay; absolute, so resumed runs continue it."""
    tie_break: Literal["random", "first"] = "random"
    """How greedy choices break ties while training: uniformly at random, or the lowest action index."""
    initial_q: float = 0.0
    """Initial value of every Q(s, a); optimistic values encourage exploration."""

    # Fields that shape or give meaning to saved state: a loaded model keeps the checkpoint's (run/config.py).
    fixed_by_checkpoint: ClassVar[frozenset[str]] = frozenset({"seed", "n_envs", "initial_q"})

    def __post_init__(self) -> None:
        require_int("seed", self.seed, 0)
        require_int("n_envs", self.n_envs, 1)
        require_range("gamma", self.gamma, 0.0, 1.0)
        require_range("learning_rate", self.learning_rate, 0.0, 1.0, low_inclusive=False)
        require_choice("learning_rate_schedule", self.learning_rate_schedule, ("constant", "visit_count"))
        require_range("visit_exponent", self.visit_exponent, 0.5, 1.0, low_inclusive=False)
        require_range("epsilon_start", self.epsilon_start, 0.0, 1.0)
        require_range("epsilon_end", self.epsilon_end, 0.0, 1.0)
        require_int("epsilon_decay_steps", self.epsilon_decay_steps, 0)
        require_choice("tie_break", self.tie_break, ("random", "first"))
        require_range("initial_q", self.initial_q)


class TabularTD:
    """A tabular TD control agent; use QLearning, SARSA or ExpectedSARSA."""

    name = "tabular"
    target_rule: Literal["q_learning", "sarsa", "expected_sarsa"] = "q_learning"
    Config = TabularConfig
    # Set by initialise or load_model (run/lifecycle.py).
    config: TabularConfig
    rng: np.random.Generator
    run_dir: Path | None

    def __init__(self, env: EnvSource | None, *, run_dir: str | Path | None = None, quiet: bool = False,
                 checkpoint_every: int | None = None, evaluation: PeriodicEvaluation | None = None, **config: Any):
        self.training_env = initialise(self, env, run_dir, quiet, config, checkpoint_every, evaluation)
        self.steps = 0
        self._check_spaces()
        self.q_table = np.full((self.n_states, self.n_actions), self.config.initial_q, dtype=np.float64)
        self.visits = np.zeros((self.n_states, self.n_actions), dtype=np.int64)
        self._actions: np.ndarray | None = None

    @property
    def env_id(self) -> str | None:
        return self.training_env.env_id

    def _check_spaces(self) -> None:
        self.observation_space = self.training_env.observation_space
        self.action_space = self.training_env.action_space
        self.n_states = require_discrete_observations(self.observation_space, type(self).__name__)
        self.n_actions = require_discrete_actions(self.action_space, type(self).__name__, "PPO (or discretise the actions)")

    # -- acting -------------------------------------------------------------------------------

    def epsilon(self, step: int | None = None) -> float:
        """The exploration probability at `step` (default: the current step)."""
        schedule = LinearSchedule(self.config.epsilon_start, self.config.epsilon_end, self.config.epsilon_decay_steps)
        return schedule(self.steps if step is None else step)

    def _greedy(self, states: np.ndarray, tie_break: str, rng: np.random.Generator) -> np.ndarray:
        q_values = self.q_table[states]
        if tie_break == "first":
            return q_values.argmax(axis=1)
        is_max = q_values == q_values.max(axis=1, keepdims=True)
        # Uniform noise on the maxima only: argmax then picks one of them uniformly.
        return (is_max * (1.0 + rng.random(q_values.shape))).argmax(axis=1)

    def _behaviour(self, states: np.ndarray, epsilon: float, rng: np.random.Generator | None = None) -> np.ndarray:
        """Epsilon-greedy actions for a batch of states, drawn from `rng` (None: training's, self.rng)."""
        rng = self.rng if rng is None else rng
        greedy = self._greedy(states, self.config.tie_break, rng)
        explore = rng.random(states.shape[0]) < epsilon
        return np.where(explore, rng.integers(self.n_actions, size=states.shape[0]), greedy)

    def predict(self, observations: Any, deterministic: bool = True) -> Any:
        """Greedy actions (lowest index on ties), or epsilon-greedy ones if not deterministic (drawn
        from torch's global generator, never from training's)."""
        batch, single = observation_batch(observations, self.observation_space)
        if np.any((batch < 0) | (batch >= self.n_states)):
            raise ValueError(f"observations must be state indices in [0, {self.n_states}), got {observations!r}")
        if deterministic:
            actions = self.q_table[batch].argmax(axis=1)
        else:
            actions = self._behaviour(batch, self.epsilon(), prediction_generator())
        return int(actions[0]) if single else actions

    # -- learning -----------------------------------------------------------------------------

    def _target(self, reward: float, next_state: int, next_action: int, terminated: bool, epsilon: float) -> Values:
        next_q_values = self.q_table[next_state]
        gamma = self.config.gamma
        if self.target_rule == "q_learning":
            return q_learning_target(reward, next_q_values, terminated, gamma)
        if self.target_rule == "sarsa":
            return sarsa_target(reward, next_q_values, next_action, terminated, gamma)
        probabilities = epsilon_greedy_probabilities(next_q_values, epsilon, self.config.tie_break)
        return expected_sarsa_target(reward, next_q_values, probabilities, terminated, gamma)

    def _learning_rate(self, state: int, action: int) -> float:
        if self.config.learning_rate_schedule == "constant":
            return self.config.learning_rate
        return 1.0 / (1.0 + self.visits[state, action]) ** self.config.visit_exponent

    def learn(self, total_steps: int, callback: TrainingCallback | None = None) -> "TabularTD":
        """Train for `total_steps` more env steps (rounded up to a multiple of n_envs).
        callback(status) runs at each point between updates (rlfoundry.TrainingStatus); False ends it."""
        require_int("total_steps", total_steps, 1)
        training_env = self.training_env
        monitor = TrainingMonitor.of(self, total_steps, self.steps, callback)
        states = training_env.start()
        if not training_env.resumed_exactly or self._actions is None:
            self._actions = self._behaviour(states, self.epsilon())
        n_envs = self.config.n_envs
        # SARSA's target needs the next action before the update; the others choose after it.
        chooses_next_action_first = self.target_rule == "sarsa"
        for _ in range(math.ceil(total_steps / n_envs)):
            actions = self._actions
            step, finished_returns, finished_lengths = training_env.step(actions)
            # The policy that acts at the next step: SARSA draws a' from it, Expected SARSA averages over it.
            epsilon = self.epsilon(self.steps + n_envs)
            next_states = step.next_observations
            next_actions = self._behaviour(next_states, epsilon) if chooses_next_action_first else actions
            for index in range(n_envs):
                if not math.isfinite(step.rewards[index]):
                    # Raised before the table changes: a NaN would spread through every bootstrapped value.
                    require_finite_rewards(step.rewards)
                state, action = states[index], actions[index]
                target = self._target(
                    step.rewards[index], next_states[index], next_actions[index], step.terminated[index], epsilon
                )
                self.q_table[state, action] = td_update(
                    self.q_table[state, action], target, self._learning_rate(state, action)
                )
                self.visits[state, action] += 1
            self.steps += n_envs
            if chooses_next_action_first:
                if step.done.any():
                    next_actions[step.done] = self._behaviour(step.observations[step.done], epsilon)
            else:
                next_actions = self._behaviour(step.observations, epsilon)
            states, self._actions = step.observations, next_actions
            monitor.episodes(self.steps, finished_returns, finished_lengths)
            if monitor.due(self.steps):
                monitor.record("train/epsilon", epsilon)
            monitor.step(self.steps)
            if monitor.stop_requested:
                break
        monitor.close(self.steps)
        if self.run_dir is not None:
            self.save(self.run_dir / "checkpoints" / "final")
        return self

    def describe_policy(self) -> str:
        """The greedy path from an initial state, as text (and as a picture on grid worlds)."""
        states, actions, total = greedy_path(self)
        ended = len(states) > len(actions)
        lines = [
            f"greedy path ({len(actions)} step{'' if len(actions) == 1 else 's'}, return {total:g}{'' if ended else ', episode not finished'}): "
            + " -> ".join(str(state) for state in states)
        ]
        source = self.training_env.rebuild_source
        if source is not None:
            with gym.make(source.env_id, **source.kwargs) as env:
                picture = path_picture(env, states, actions)
            if picture is not None:
                lines.append(picture)
        return "\n".join(lines)

    # -- saving -------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint directory that `rlfoundry.load` reads back exactly."""
        arrays = {"q_table": self.q_table, "visits": self.visits}
        if self._actions is not None and self.training_env.observations is not None:  # a run in progress
            arrays["actions"] = self._actions
        return save_model(self, path, counters={"steps": self.steps}, arrays=arrays)

    @classmethod
    def load(cls, path: str | Path, env: EnvSource | None = None, **options: Any) -> "TabularTD":
        """Load a checkpoint of this algorithm; training resumes exactly where it stopped when the
        env state could be saved (toy-text and classic-control envs), else with fresh episodes."""
        model, checkpoint, training_env = load_model(cls, path, env, options)
        model.training_env = training_env
        model.steps = checkpoint.counters["steps"]
        model._check_spaces()
        model.q_table = checkpoint.arrays["q_table"].copy()
        model.visits = checkpoint.arrays["visits"].copy()
        resumed = model.training_env.resumed_exactly and "actions" in checkpoint.arrays
        model._actions = checkpoint.arrays["actions"].copy() if resumed else None
        return model


class QLearning(TabularTD):
    """Off-policy TD control: y = r + gamma (1 - terminated) max_a' Q(s', a')."""

    name = "q-learning"
    target_rule = "q_learning"


class SARSA(TabularTD):
    """On-policy TD control: y = r + gamma (1 - terminated) Q(s', a') with a' the next action taken."""

    name = "sarsa"
    target_rule = "sarsa"


class ExpectedSARSA(TabularTD):
    """TD control on the expectation under the epsilon-greedy policy: y = r + gamma (1 - terminated) E_pi Q(s', .)."""

    name = "expected-sarsa"
    target_rule = "expected_sarsa"


def greedy_path(model: TabularTD, max_steps: int = 200, seed: int = 0) -> tuple[list[int], list[int], float]:
    """Follow the greedy policy from an initial state: (states, actions, return); states has one
    more entry than actions when the episode ended in a terminal state (not when a time limit or
    max_steps cut it)."""
    # A new env, never the model's own: that one stands mid-episode in training.
    source: EnvSource | None = model.training_env.rebuild_source
    if source is None:
        source = model.training_env.source
    if source is None or not builds_new_envs(source):
        raise ValueError(
            "this model's env is an env object with no registered id (or one its id does not rebuild), which cannot "
            "be copied: create the model with an env id (a RegisteredEnv for keyword arguments) or a function that "
            "makes the env to follow its greedy path"
        )
    env = make_env(source, n_envs=1)
    observations, _ = env.reset(seed=seed)
    states, actions, total = [int(observations[0])], [], 0.0
    for _ in range(max_steps):
        action = model.predict(observations, deterministic=True)
        step = step_vector(env, action)
        actions.append(int(action[0]))
        total += float(step.rewards[0])
        states.append(int(step.next_observations[0]))
        if step.done[0]:
            if not step.terminated[0]:  # cut by the env's time limit: the path ends nowhere
                states.pop()
            break
        observations = step.observations
    else:
        states.pop()
    env.close()
    return states, actions, total
