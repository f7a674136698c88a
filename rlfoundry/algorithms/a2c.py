"""Advantage Actor-Critic, the synchronous A3C (Mnih et al., 2016).

Each iteration collects n_steps steps of n_envs envs with the current policy, estimates
advantages with a learned V, and takes ONE gradient step on the whole rollout:

    L = -mean_t log pi_theta(a_t|s_t) A_t + value_coef mean_t (V(s_t) - y_t)^2 - entropy_coef H[pi_theta]

    n-step (advantage_estimator="n_step"):  y_t = sum_{k<m} gamma^k r_{t+k} + gamma^m (1 - terminated_{t+m-1}) V(s_{t+m}),
                                            A_t = y_t - V(s_t)
    GAE    (advantage_estimator="gae"):     A_t = sum_k (gamma lambda)^k delta_{t+k},  y_t = A_t + V(s_t)

(m stops at an episode's end: a terminated step bootstraps nothing, a truncated one from the value
of its true final observation; returns.n_step_targets.)

With n_step_horizon=None each step looks ahead to the end of the rollout (m <= n_steps - t), the
original A3C target; GAE with gae_lambda=1 gives exactly the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from rlfoundry.run.on_policy import ActorCriticConfig
from rlfoundry.run.on_policy import adam, gradient_step, require_finite, scheduled, training_forward
from rlfoundry.data.rollout import RolloutBatch, RolloutBuffer
from rlfoundry.losses.policy_gradient import (
    normalize_advantages,
    policy_gradient_loss,
    policy_gradient_loss_gradient,
    value_loss,
    value_loss_and_gradient,
)
from rlfoundry.returns import generalized_advantages, n_step_targets
from rlfoundry.envs.vector import EnvSource
from rlfoundry.run.lifecycle import initialise, load_model
from rlfoundry.run.on_policy import RolloutCollector, finish_learning, restore_on_policy, save_on_policy, start_learning
from rlfoundry.run.training_env import TrainingEnv
from rlfoundry.run.config import ConfigError, require_choice, require_int, require_range
from rlfoundry.run.monitor import TrainingCallback, TrainingMonitor
from rlfoundry.run.evaluation import PeriodicEvaluation


@dataclass(frozen=True)
class A2CConfig(ActorCriticConfig):
    """Hyperparameters of A2C; the defaults are Stable-Baselines3's."""

    n_steps: int = 5
    """Steps per env in one rollout (one gradient step per rollout)."""
    gae_lambda: float = 1.0
    """GAE's lambda when advantage_estimator is 'gae'."""
    advantage_estimator: Literal["n_step", "gae"] = "n_step"
    """'n_step': A_t = y_t^(n) - V(s_t) with n-step targets; 'gae': generalized advantage estimation."""
    n_step_horizon: int | None = None
    """n of the n-step targets; None: look ahead to the end of the rollout (n = n_steps)."""
    learning_rate: float = 7e-4
    """The optimiser's step size (at step 0 when learning_rate_schedule is 'linear')."""
    optimizer: Literal["rmsprop", "adam"] = "rmsprop"
    """RMSprop (A3C's choice) or Adam."""
    rmsprop_alpha: float = 0.99
    """RMSprop's smoothing constant for the squared-gradient average."""
    optimizer_epsilon: float = 1e-5
    """Epsilon added to the denominator of RMSprop or Adam."""
    normalize_advantage: bool = False
    """Normalise the rollout's advantages to zero mean and unit std before the step."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus."""
    value_coef: float = 0.5
    """Weight of the value loss (the loss has no 1/2 factor)."""
    max_grad_norm: float | None = 0.5
    """Clip the global gradient norm to this before each step; None: no clipping."""

    fixed_by_checkpoint: ClassVar[frozenset[str]] = ActorCriticConfig.fixed_by_checkpoint | {"optimizer"}

    def __post_init__(self) -> None:
        super().__post_init__()
        require_choice("advantage_estimator", self.advantage_estimator, ("n_step", "gae"))
        if self.n_step_horizon is not None:
            require_int("n_step_horizon", self.n_step_horizon, 1)
        require_range("learning_rate", self.learning_rate, 0.0, low_inclusive=False)
        require_choice("optimizer", self.optimizer, ("rmsprop", "adam"))
        require_range("rmsprop_alpha", self.rmsprop_alpha, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        require_range("optimizer_epsilon", self.optimizer_epsilon, 0.0, low_inclusive=False)
        require_choice("normalize_advantage", self.normalize_advantage, (True, False))
        require_range("entropy_coef", self.entropy_coef, 0.0)
        require_range("value_coef", self.value_coef, 0.0)
        if self.max_grad_norm is not None:
            require_range("max_grad_norm", self.max_grad_norm, 0.0, low_inclusive=False)
        if self.normalize_advantage and self.rollout_size < 2:
            raise ConfigError("normalize_advantage=True needs n_steps * n_envs >= 2 (the std of one number is undefined)")


def a2c_advantages(rollout: RolloutBuffer, config: A2CConfig) -> tuple[np.ndarray, np.ndarray]:
    """(advantages, value targets), both [T, N], by the configured estimator."""
    if config.advantage_estimator == "gae":
        return generalized_advantages(
            rollout.rewards, rollout.values, rollout.next_values, rollout.terminated, rollout.truncated,
            config.gamma, config.gae_lambda,
        )
    horizon = config.n_step_horizon or config.n_steps
    targets = n_step_targets(rollout.rewards, rollout.next_values, rollout.terminated, rollout.truncated, config.gamma, horizon)
    return targets - rollout.values, targets


class A2C:
    """Advantage Actor-Critic: one gradient step per short rollout, n-step or GAE advantages."""

    name = "a2c"
    Config = A2CConfig
    # Set by initialise or load_model (run/lifecycle.py).
    config: A2CConfig

    def __init__(self, env: EnvSource | None, *, run_dir: str | Path | None = None, quiet: bool = False,
                 checkpoint_every: int | None = None, evaluation: PeriodicEvaluation | None = None, **config: Any):
        self._build(initialise(self, env, run_dir, quiet, config, checkpoint_every, evaluation))

    def _build(self, training_env: TrainingEnv) -> None:
        self.training_env = training_env
        self.collector = RolloutCollector(training_env, self.config)
        self.network = self.collector.network
        config = self.config
        self.optimizer: torch.optim.Optimizer
        if config.optimizer == "adam":
            self.optimizer = adam(self.network.parameters(), config.learning_rate, config.optimizer_epsilon)
        else:
            self.optimizer = torch.optim.RMSprop(
                self.network.parameters(), lr=config.learning_rate, alpha=config.rmsprop_alpha, eps=config.optimizer_epsilon
            )
        # The compiled backend's Adam step (None: torch's, and always for RMSprop), on this optimiser's state.
        self.compiled_optimizer = self.collector.compiled_optimizer(self.optimizer)

    @property
    def steps(self) -> int:
        """Env steps trained so far."""
        return self.collector.steps

    @property
    def env_id(self) -> str | None:
        return self.collector.env_id

    def predict(self, observations: Any, deterministic: bool = True) -> Any:
        """Actions for observations [B, *obs] (or one unbatched observation): the policy's mode
        when deterministic, else a sample."""
        return self.collector.predict(observations, deterministic)

    def learn(self, total_steps: int, callback: TrainingCallback | None = None) -> "A2C":
        """Train for at least `total_steps` more env steps, in whole rollouts of n_steps * n_envs.
        callback(status) runs at each point between updates (rlfoundry.TrainingStatus); False ends it."""
        config = self.config
        iterations, horizon, monitor = start_learning(self, total_steps, callback)
        for _ in range(iterations):
            self.collector.collect(monitor)
            advantages, targets = a2c_advantages(self.collector.rollout, config)
            batch = self.collector.rollout.training_batch(advantages, targets, self.collector.device)
            learning_rate = scheduled(config.learning_rate, config.learning_rate_schedule, self.steps, horizon)
            self.update(batch, learning_rate, monitor)
            monitor.step(self.steps)
            if monitor.stop_requested:
                break
        finish_learning(self, monitor)
        return self

    def update(self, batch: RolloutBatch, learning_rate: float, monitor: TrainingMonitor) -> None:
        """One gradient step on the whole rollout."""
        config = self.config
        compiled = self.collector.compiled
        if compiled is not None:
            # The same loss's gradient, from numba-compiled passes and losses' rows.
            step = compiled.gradient(
                batch, clipped=False, clip_range=0.0, value_clip_range=None, value_coef=config.value_coef,
                entropy_coef=config.entropy_coef, normalize=config.normalize_advantage,
            )
            gradient_step(self.optimizer, None, config.max_grad_norm, learning_rate, self.collector.flat_gradient,
                          self.compiled_optimizer)
            self._record({"policy_loss": step.policy_loss, "value_loss": step.value_loss, "entropy": step.entropy},
                         learning_rate, monitor)
            return
        distribution, values, backward = training_forward(self.collector, batch.observations)
        with torch.set_grad_enabled(backward is None):
            advantages = normalize_advantages(batch.advantages) if config.normalize_advantage else batch.advantages
            policy_loss = policy_gradient_loss(distribution.log_prob(batch.actions), advantages)
            entropy = distribution.entropy().mean()
            if backward is None:
                critic_loss = value_loss(values, batch.returns)
                loss = policy_loss + config.value_coef * critic_loss - config.entropy_coef * entropy
            else:
                # The same loss's gradient, written into .grad without autograd.
                loss = None
                critic_loss, value_weights = value_loss_and_gradient(values, batch.returns)
                backward(
                    batch.actions,
                    policy_gradient_loss_gradient(advantages),
                    value_weights.mul_(config.value_coef),
                    -config.entropy_coef / len(advantages),
                )
        gradient_step(self.optimizer, loss, config.max_grad_norm, learning_rate, self.collector.flat_gradient)
        statistics = dict(zip(("policy_loss", "value_loss", "entropy"), torch.stack([policy_loss, critic_loss, entropy]).tolist()))
        self._record(statistics, learning_rate, monitor)

    def _record(self, statistics: dict[str, float], learning_rate: float, monitor: TrainingMonitor) -> None:
        """Log the update's statistics (NonFiniteError if training diverged)."""
        require_finite(statistics, self.name, self.steps)
        for name, value in statistics.items():
            monitor.record(f"train/{name}", value)
        monitor.record("train/learning_rate", learning_rate)

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint directory that `rlfoundry.load` reads back exactly."""
        return save_on_policy(self, path)

    @classmethod
    def load(cls, path: str | Path, env: EnvSource | None = None, **options: Any) -> "A2C":
        """Load a checkpoint of this algorithm; training resumes exactly where it stopped when the
        env state could be saved (classic-control envs), else with fresh episodes."""
        model, checkpoint, training_env = load_model(cls, path, env, options)
        model._build(training_env)
        restore_on_policy(model, checkpoint)
        return model
