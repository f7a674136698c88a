"""Trust Region Policy Optimization (Schulman et al., 2015), with GAE advantages.

Each iteration collects a rollout with pi_old and solves, approximately,

    maximise_theta  L(theta) = mean_t pi_theta(a_t|s_t) / pi_old(a_t|s_t) A_t
    subject to      mean_t KL(pi_old(.|s_t) || pi_theta(.|s_t)) <= delta    (delta = target_kl)

1. g = grad L at theta_old; F = Hessian of the mean KL at theta_old (the Fisher matrix).
2. x = F^{-1} g by conjugate gradient on Fisher-vector products (F is never formed).
3. full step s = beta x with beta = sqrt(2 delta / (x^T F x)).
4. Backtracking line search: theta = theta_old + 0.8^k s for the first k whose exact KL is <= delta
   and whose surrogate improved; if none, theta stays theta_old.
5. The value function is trained separately, by Adam on the squared error to the GAE returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.utils import parameters_to_vector

from rlfoundry.run.on_policy import ActorCriticConfig
from rlfoundry.run.on_policy import adam, gradient_step, require_finite, scheduled
from rlfoundry.data.rollout import RolloutBatch
from rlfoundry.losses.natural_gradient import (
    LineSearchResult,
    backtracking_line_search,
    conjugate_gradient,
    fisher_vector_product,
    natural_step_size,
    surrogate_advantage,
)
from rlfoundry.losses.policy_gradient import normalize_advantages, value_loss
from rlfoundry.envs.vector import EnvSource
from rlfoundry.run.lifecycle import initialise, load_model
from rlfoundry.run.on_policy import RolloutCollector, finish_learning, restore_on_policy, save_on_policy, start_learning
from rlfoundry.run.training_env import TrainingEnv
from rlfoundry.run.config import ConfigError, require_choice, require_int, require_range
from rlfoundry.run.evaluation import PeriodicEvaluation
from rlfoundry.run.monitor import TrainingCallback


@dataclass(frozen=True)
class TRPOConfig(ActorCriticConfig):
    """Hyperparameters of TRPO; the defaults are SB3-Contrib's."""

    target_kl: float = 0.01
    """delta: the limit on the mean KL(pi_old || pi_theta) of every accepted policy step."""
    cg_iterations: int = 15
    """Conjugate-gradient iterations for x = F^{-1} g."""
    cg_damping: float = 0.1
    """Added to F (F + damping I) so that conjugate gradient stays stable where F is near singular."""
    line_search_shrink: float = 0.8
    """Backtracking factor: the k-th try is shrink^k times the full natural step."""
    line_search_steps: int = 10
    """Tries before the update gives up and keeps theta_old."""
    normalize_advantage: bool = True
    """Normalise the rollout's advantages to zero mean and unit std before the policy step."""
    learning_rate: float = 1e-3
    """Adam's step size for the value function (the policy's step size comes from target_kl)."""
    adam_epsilon: float = 1e-5
    """Adam's epsilon for the value function."""
    value_epochs: int = 10
    """Passes of minibatch Adam over the rollout for the value function, after the policy step."""
    batch_size: int = 128
    """Minibatch size of the value-function updates."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.shared_torso:
            raise ConfigError(
                "shared_torso=True is not allowed for TRPO: its policy step moves the policy parameters "
                "alone, which a shared torso would let change the value function too; use shared_torso=False"
            )
        require_range("target_kl", self.target_kl, 0.0, low_inclusive=False)
        require_int("cg_iterations", self.cg_iterations, 1)
        require_range("cg_damping", self.cg_damping, 0.0)
        require_range("line_search_shrink", self.line_search_shrink, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        require_int("line_search_steps", self.line_search_steps, 1)
        require_choice("normalize_advantage", self.normalize_advantage, (True, False))
        require_range("learning_rate", self.learning_rate, 0.0, low_inclusive=False)
        require_range("adam_epsilon", self.adam_epsilon, 0.0, low_inclusive=False)
        require_int("value_epochs", self.value_epochs, 0)
        require_int("batch_size", self.batch_size, 1)
        if self.normalize_advantage and self.rollout_size < 2:
            raise ConfigError("normalize_advantage=True needs n_steps * n_envs >= 2 (the std of one number is undefined)")


def copy_into(parameters: list[torch.nn.Parameter], flat: torch.Tensor) -> None:
    """Write a flat vector [P] into the parameters, in place (torch's vector_to_parameters would
    instead make every parameter a view of the one vector). Call under torch.no_grad()."""
    start = 0
    for parameter in parameters:
        parameter.copy_(flat[start : start + parameter.numel()].view_as(parameter))
        start += parameter.numel()


class TRPO:
    """Trust Region Policy Optimization: natural gradient by conjugate gradient, KL-limited line search."""

    name = "trpo"
    Config = TRPOConfig
    # Set by initialise or load_model (run/lifecycle.py).
    config: TRPOConfig
    rng: np.random.Generator

    def __init__(self, env: EnvSource | None, *, run_dir: str | Path | None = None, quiet: bool = False,
                 checkpoint_every: int | None = None, evaluation: PeriodicEvaluation | None = None, **config: Any):
        self._build(initialise(self, env, run_dir, quiet, config, checkpoint_every, evaluation))

    def _build(self, training_env: TrainingEnv) -> None:
        self.training_env = training_env
        self.collector = RolloutCollector(training_env, self.config)
        self.network = self.collector.network
        # Only the value function takes gradient steps; the policy moves by the natural step.
        self.optimizer = adam(self.network.value_parameters(), self.config.learning_rate, self.config.adam_epsilon)

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

    def learn(self, total_steps: int, callback: TrainingCallback | None = None) -> "TRPO":
        """Train for at least `total_steps` more env steps, in whole rollouts of n_steps * n_envs.
        callback(status) runs at each point between updates (rlfoundry.TrainingStatus); False ends it."""
        config = self.config
        iterations, horizon, monitor = start_learning(self, total_steps, callback)
        for _ in range(iterations):
            self.collector.collect(monitor)
            batch = self.collector.gae_batch()
            result = self.update_policy(batch)
            for name, value in zip(LineSearchResult._fields, result):
                monitor.record(f"train/line_search_{name}", float(value))
            learning_rate = scheduled(config.learning_rate, config.learning_rate_schedule, self.steps, horizon)
            value_loss_mean = self.update_value_function(batch, learning_rate)
            if config.value_epochs > 0:  # else no value step was taken, and its loss is NaN
                require_finite({"value_loss": value_loss_mean}, self.name, self.steps)
            monitor.record("train/value_loss", value_loss_mean)
            monitor.step(self.steps)
            if monitor.stop_requested:
                break
        finish_learning(self, monitor)
        return self

    def update_policy(self, batch: RolloutBatch) -> LineSearchResult:
        """One natural-gradient step of the policy, KL-limited by the line search (steps 1-4)."""
        config = self.config
        parameters = self.network.policy_parameters()
        advantages = normalize_advantages(batch.advantages) if config.normalize_advantage else batch.advantages
        distribution = self.network.distribution(batch.observations)
        old_distribution = distribution.detach()
        objective = surrogate_advantage(distribution.log_prob(batch.actions), batch.old_log_probs, advantages)
        gradient = parameters_to_vector(torch.autograd.grad(objective, parameters, retain_graph=True))
        # A NaN here (from huge rewards, say) would surface as a broken Fisher product in CG.
        require_finite({"the policy gradient's norm": float(torch.linalg.vector_norm(gradient))}, self.name, self.steps)
        mean_kl = old_distribution.kl(distribution).mean()

        def fisher_product(vector: torch.Tensor) -> torch.Tensor:
            return fisher_vector_product(mean_kl, parameters, vector, config.cg_damping)

        direction = conjugate_gradient(fisher_product, gradient, config.cg_iterations)
        if not direction.any():
            # |g|^2 is below CG's tolerance (e.g. all advantages equal): the surrogate is flat, no step.
            return LineSearchResult(accepted=False, fraction=0.0, kl=0.0, improvement=0.0, backtracks=0)
        full_step = natural_step_size(direction, fisher_product(direction), config.target_kl) * direction
        old_parameters = parameters_to_vector(parameters).detach()
        old_objective = objective.item()

        def try_step(fraction: float) -> tuple[float, float]:
            with torch.no_grad():
                copy_into(parameters, old_parameters + fraction * full_step)
                new_distribution = self.network.distribution(batch.observations)
                kl = old_distribution.kl(new_distribution).mean()
                new_objective = surrogate_advantage(new_distribution.log_prob(batch.actions), batch.old_log_probs, advantages)
                return kl.item(), new_objective.item() - old_objective

        result = backtracking_line_search(try_step, config.target_kl, config.line_search_shrink, config.line_search_steps)
        if not result.accepted:
            with torch.no_grad():
                copy_into(parameters, old_parameters)
        return result

    def update_value_function(self, batch: RolloutBatch, learning_rate: float) -> float:
        """value_epochs passes of minibatch Adam on mean (V(s_t) - R_t)^2 (step 5); the mean loss
        (NaN if it took no step)."""
        losses = []
        for _ in range(self.config.value_epochs):
            for minibatch in batch.minibatches(self.config.batch_size, self.rng):
                loss = value_loss(self.network.value(minibatch.observations), minibatch.returns)
                gradient_step(self.optimizer, loss, None, learning_rate)
                losses.append(loss.detach())
        return torch.stack(losses).mean().item() if losses else math.nan

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint directory that `rlfoundry.load` reads back exactly."""
        return save_on_policy(self, path)

    @classmethod
    def load(cls, path: str | Path, env: EnvSource | None = None, **options: Any) -> "TRPO":
        """Load a checkpoint of this algorithm; training resumes exactly where it stopped when the
        env state could be saved (classic-control envs), else with fresh episodes."""
        model, checkpoint, training_env = load_model(cls, path, env, options)
        model._build(training_env)
        restore_on_policy(model, checkpoint)
        return model
