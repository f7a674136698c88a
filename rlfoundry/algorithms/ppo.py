"""Proximal Policy Optimization with the clipped surrogate (Schulman et al., 2017).

Each iteration collects a rollout of n_steps x n_envs steps with the current policy pi_old,
computes GAE advantages, then runs n_epochs passes of minibatch gradient descent on

    L = L^CLIP + value_coef L^V - entropy_coef H[pi_theta]
    L^CLIP = -mean_t min(rho_t A_t, clip(rho_t, 1 - epsilon, 1 + epsilon) A_t),  rho_t = pi_theta(a_t|s_t) / pi_old(a_t|s_t)

The clip removes the incentive to move rho outside [1 - epsilon, 1 + epsilon], so many gradient
steps can reuse one rollout without the policy running away from the data that scored it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

from rlfoundry.run.on_policy import ActorCriticConfig, Schedule
from rlfoundry.run.on_policy import adam, gradient_step, require_finite, scheduled, training_forward
from rlfoundry.data.rollout import RolloutBatch
from rlfoundry.losses.policy_gradient import (
    approximate_kl,
    clipped_surrogate_loss,
    clipped_surrogate_loss_and_gradient,
    normalize_advantages,
    value_loss,
    value_loss_and_gradient,
)
from rlfoundry.envs.vector import EnvSource
from rlfoundry.run.lifecycle import initialise, load_model
from rlfoundry.run.on_policy import RolloutCollector, finish_learning, restore_on_policy, save_on_policy, start_learning
from rlfoundry.run.training_env import TrainingEnv
from rlfoundry.run.config import ConfigError, require_choice, require_int, require_range
from rlfoundry.run.monitor import TrainingCallback, TrainingMonitor
from rlfoundry.run.evaluation import PeriodicEvaluation


@dataclass(frozen=True)
class PPOConfig(ActorCriticConfig):
    """Hyperparameters of PPO; the defaults are Stable-Baselines3's (after the original paper's MuJoCo settings)."""

    n_steps: int = 2048
    """Steps per env in one rollout."""
    batch_size: int = 64
    """Minibatch size (rows per gradient step); the rollout is cut into ceil(rollout_size / batch_size) minibatches."""
    n_epochs: int = 10
    """Passes over each rollout."""
    learning_rate: float = 3e-4
    """Adam's step size (at step 0 when learning_rate_schedule is 'linear')."""
    adam_epsilon: float = 1e-5
    """Adam's epsilon (1e-5 as in OpenAI Baselines and Stable-Baselines3, not torch's 1e-8)."""
    clip_range: float = 0.2
    """epsilon of the clipped surrogate (at step 0 when clip_range_schedule is 'linear')."""
    clip_range_schedule: Schedule = "constant"
    """'linear': the clip range falls linearly to 0 at schedule_steps (see learning_rate_schedule)."""
    value_clip_range: float | None = None
    """None: plain squared value error; a number c: PPO's value clipping around the collection-time values."""
    normalize_advantage: bool = True
    """Normalise advantages per minibatch to zero mean and unit std (needs every minibatch to have >= 2 rows)."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus."""
    value_coef: float = 0.5
    """Weight of the value loss (the loss has no 1/2 factor)."""
    max_grad_norm: float | None = 0.5
    """Clip the global gradient norm to this before each step; None: no clipping."""
    target_kl: float | None = None
    """Stop the update early when the approximate KL(pi_old || pi_theta) exceeds this; None: never (see target_kl_check)."""
    target_kl_check: Literal["minibatch", "epoch"] = "minibatch"
    """'minibatch': before each gradient step, on that minibatch (the step is skipped, and so is the rest of the update); 'epoch': after each epoch, the mean over its minibatches (the remaining epochs are skipped)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require_int("batch_size", self.batch_size, 1)
        require_int("n_epochs", self.n_epochs, 1)
        require_range("learning_rate", self.learning_rate, 0.0, low_inclusive=False)
        require_range("adam_epsilon", self.adam_epsilon, 0.0, low_inclusive=False)
        require_range("clip_range", self.clip_range, 0.0, low_inclusive=False)
        require_choice("clip_range_schedule", self.clip_range_schedule, ("constant", "linear"))
        if self.value_clip_range is not None:
            require_range("value_clip_range", self.value_clip_range, 0.0, low_inclusive=False)
        require_choice("normalize_advantage", self.normalize_advantage, (True, False))
        require_range("entropy_coef", self.entropy_coef, 0.0)
        require_range("value_coef", self.value_coef, 0.0)
        if self.max_grad_norm is not None:
            require_range("max_grad_norm", self.max_grad_norm, 0.0, low_inclusive=False)
        if self.target_kl is not None:
            require_range("target_kl", self.target_kl, 0.0, low_inclusive=False)
        require_choice("target_kl_check", self.target_kl_check, ("minibatch", "epoch"))
        smallest_minibatch = self.rollout_size % self.batch_size or min(self.batch_size, self.rollout_size)
        if self.normalize_advantage and smallest_minibatch < 2:
            raise ConfigError(
                f"normalize_advantage=True needs minibatches of at least 2 rows, but n_steps * n_envs = "
                f"{self.rollout_size} with batch_size={self.batch_size} leaves a minibatch of {smallest_minibatch}: "
                "change batch_size or n_steps, or set normalize_advantage=False"
            )


class PPOUpdate(NamedTuple):
    """Statistics of one PPO update (also logged as train/<name>).

    policy_loss, value_loss: means over the update's gradient steps (NaN if it took none).
    entropy, approximate_kl, clip_fraction: of the updated policy on the whole rollout, against
    the rollout's policy pi_old (clip fraction: the share of rows with |rho - 1| > the update's clip range).
    stopped_by_target_kl: target_kl skipped at least one gradient step of this update.
    """

    policy_loss: float
    value_loss: float
    entropy: float
    approximate_kl: float
    clip_fraction: float
    gradient_steps: int
    stopped_by_target_kl: bool


class MinibatchGradient(NamedTuple):
    """One minibatch's step: the loss to backpropagate (None: .grad already holds its gradient), its
    clipped-surrogate and value losses, its approximate KL (None when target_kl is off and torch
    computed it), and whether target_kl's minibatch check skipped it."""

    loss: torch.Tensor | None
    policy_loss: torch.Tensor | float
    value_loss: torch.Tensor | float
    approximate_kl: torch.Tensor | float | None
    skipped: bool


class PPO:
    """Proximal Policy Optimization: clipped surrogate, GAE, minibatch epochs (Discrete, Box, MultiDiscrete)."""

    name = "ppo"
    Config = PPOConfig
    # Set by initialise or load_model (run/lifecycle.py).
    config: PPOConfig
    rng: np.random.Generator

    def __init__(self, env: EnvSource | None, *, run_dir: str | Path | None = None, quiet: bool = False,
                 checkpoint_every: int | None = None, evaluation: PeriodicEvaluation | None = None, **config: Any):
        self._build(initialise(self, env, run_dir, quiet, config, checkpoint_every, evaluation))

    def _build(self, training_env: TrainingEnv) -> None:
        self.training_env = training_env
        self.collector = RolloutCollector(training_env, self.config)
        self.network = self.collector.network
        self.optimizer = adam(self.network.parameters(), self.config.learning_rate, self.config.adam_epsilon)
        # The compiled backend's Adam step (None: torch's), on this optimiser's state.
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

    def learn(self, total_steps: int, callback: TrainingCallback | None = None) -> "PPO":
        """Train for at least `total_steps` more env steps, in whole rollouts of n_steps * n_envs.
        callback(status) runs at each point between updates (rlfoundry.TrainingStatus); False ends it."""
        config = self.config
        iterations, horizon, monitor = start_learning(self, total_steps, callback)
        for _ in range(iterations):
            self.collector.collect(monitor)
            batch = self.collector.gae_batch()
            learning_rate = scheduled(config.learning_rate, config.learning_rate_schedule, self.steps, horizon)
            clip_range = scheduled(config.clip_range, config.clip_range_schedule, self.steps, horizon)
            self.update(batch, learning_rate, clip_range, monitor)
            monitor.step(self.steps)
            if monitor.stop_requested:
                break
        finish_learning(self, monitor)
        return self

    def update(self, batch: RolloutBatch, learning_rate: float, clip_range: float, monitor: TrainingMonitor) -> None:
        """n_epochs passes of minibatch steps on one rollout, stopped early by target_kl if set."""
        config = self.config
        normalize_each_minibatch = config.normalize_advantage
        if normalize_each_minibatch and config.batch_size >= len(batch):
            # The only minibatch is the whole batch: normalise once, not once per epoch.
            batch = replace(batch, advantages=normalize_advantages(batch.advantages))
            normalize_each_minibatch = False
        policy_losses: list[torch.Tensor | float] = []
        value_losses: list[torch.Tensor | float] = []
        stopped = False
        for epoch in range(config.n_epochs):
            epoch_kls: list[torch.Tensor | float] = []
            for minibatch in batch.minibatches(config.batch_size, self.rng):
                step = self._minibatch_gradient(minibatch, clip_range, normalize_each_minibatch)
                if step.skipped:
                    stopped = True
                    break
                if step.approximate_kl is not None:
                    epoch_kls.append(step.approximate_kl)
                gradient_step(self.optimizer, step.loss, config.max_grad_norm, learning_rate,
                              self.collector.flat_gradient, self.compiled_optimizer)
                policy_losses.append(step.policy_loss)
                value_losses.append(step.value_loss)
            # After the last epoch there is nothing left to skip, so there is nothing to check.
            if config.target_kl_check == "epoch" and config.target_kl is not None and epoch < config.n_epochs - 1:
                stopped = stopped or mean_of(epoch_kls) > config.target_kl
            if stopped:
                break
        self.last_update = self._statistics(batch, policy_losses, value_losses, clip_range, stopped)
        taken = self.last_update._asdict() if policy_losses else {"entropy": self.last_update.entropy}
        require_finite({name: float(value) for name, value in taken.items()}, self.name, self.steps)
        for name, value in zip(PPOUpdate._fields, self.last_update):
            monitor.record(f"train/{name}", float(value))
        monitor.record("train/learning_rate", learning_rate)
        monitor.record("train/clip_range", clip_range)

    def _minibatch_gradient(self, minibatch: RolloutBatch, clip_range: float, normalize: bool) -> "MinibatchGradient":
        """The minibatch's loss L for autograd, or, by the written-out or compiled passes, its gradient
        written into .grad (loss None); skipped when target_kl's minibatch check stops the update."""
        config = self.config
        kl_limit = config.target_kl if config.target_kl_check == "minibatch" else None
        compiled = self.collector.compiled
        if compiled is not None:
            step = compiled.gradient(
                minibatch, clipped=True, clip_range=clip_range, value_clip_range=config.value_clip_range,
                value_coef=config.value_coef, entropy_coef=config.entropy_coef, normalize=normalize, kl_limit=kl_limit,
            )
            return MinibatchGradient(None, step.policy_loss, step.value_loss, step.approximate_kl, step.skipped)
        distribution, values, backward = training_forward(self.collector, minibatch.observations)
        with torch.set_grad_enabled(backward is None):
            log_probs = distribution.log_prob(minibatch.actions)
            kl = None
            if config.target_kl is not None:
                kl = approximate_kl(log_probs.detach(), minibatch.old_log_probs)
                if kl_limit is not None and kl.item() > kl_limit:
                    return MinibatchGradient(None, math.nan, math.nan, kl, True)
            advantages = normalize_advantages(minibatch.advantages) if normalize else minibatch.advantages
            if backward is None:
                policy_loss = clipped_surrogate_loss(log_probs, minibatch.old_log_probs, advantages, clip_range)
                critic_loss = value_loss(values, minibatch.returns, minibatch.old_values, config.value_clip_range)
                loss = policy_loss + config.value_coef * critic_loss
                if config.entropy_coef > 0:
                    loss = loss - config.entropy_coef * distribution.entropy().mean()
                return MinibatchGradient(loss, policy_loss.detach(), critic_loss.detach(), kl, False)
            # The same loss's gradient, written into .grad without autograd; the losses come from
            # the same pass as their gradients.
            policy_loss, log_prob_weights = clipped_surrogate_loss_and_gradient(
                log_probs, minibatch.old_log_probs, advantages, clip_range
            )
            critic_loss, value_weights = value_loss_and_gradient(
                values, minibatch.returns, minibatch.old_values, config.value_clip_range
            )
            backward(minibatch.actions, log_prob_weights, value_weights.mul_(config.value_coef), -config.entropy_coef / len(log_probs))
        return MinibatchGradient(None, policy_loss, critic_loss, kl, False)

    def _statistics(
        self,
        batch: RolloutBatch,
        policy_losses: list[torch.Tensor | float],
        value_losses: list[torch.Tensor | float],
        clip_range: float,
        stopped: bool,
    ) -> "PPOUpdate":
        """What one update did: its steps' mean losses, and how far it moved the policy on the rollout."""
        with torch.no_grad():
            distribution = self.network.distribution(batch.observations)
            log_probs = distribution.log_prob(batch.actions)
            ratios = (log_probs - batch.old_log_probs).exp()
            numbers = [
                torch.tensor(mean_of(policy_losses)),
                torch.tensor(mean_of(value_losses)),
                distribution.entropy().mean(),
                approximate_kl(log_probs, batch.old_log_probs),
                ((ratios - 1.0).abs() > clip_range).float().mean(),
            ]
        policy_loss, critic_loss, entropy, kl, clip_fraction = torch.stack(numbers).tolist()
        return PPOUpdate(policy_loss, critic_loss, entropy, kl, clip_fraction, len(policy_losses), stopped)

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint directory that `rlfoundry.load` reads back exactly."""
        return save_on_policy(self, path)

    @classmethod
    def load(cls, path: str | Path, env: EnvSource | None = None, **options: Any) -> "PPO":
        """Load a checkpoint of this algorithm; training resumes exactly where it stopped when the
        env state could be saved (classic-control envs), else with fresh episodes."""
        model, checkpoint, training_env = load_model(cls, path, env, options)
        model._build(training_env)
        restore_on_policy(model, checkpoint)
        return model


def mean_of(numbers: list[torch.Tensor | float]) -> float:
    """The mean of per-step numbers: 0-dim tensors (torch's steps) or floats (compiled steps); NaN for none."""
    if not numbers:
        return math.nan
    tensors = [number for number in numbers if isinstance(number, torch.Tensor)]
    if len(tensors) == len(numbers):
        return torch.stack(tensors).mean().item()  # one stack and one read for torch's steps
    return sum(float(number) for number in numbers) / len(numbers)
