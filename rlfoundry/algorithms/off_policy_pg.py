"""Off-policy policy gradient with importance sampling (seed 002): REINFORCE that reuses its data.

Each batch of m whole episodes is sampled by the policy pi_theta of the moment and then used for
`epochs` gradient steps of the current policy pi_theta', which moves away from theta after the
first step. The importance weights w_t correct (fully or in part) for that:

    L(theta') = -(1/m) sum_{i=1}^{m} sum_t w_t log pi_theta'(a_t^(i) | s_t^(i)) Psi_t^(i),   w_t held fixed

    rho_k = pi_theta'(a_k|s_k) / pi_theta(a_k|s_k)
    w_t = prod_{k=0}^{T-1} rho_k    ratio="trajectory"   p_theta'(tau) / p_theta(tau): exact, high variance
    w_t = prod_{k=0}^{t} rho_k      ratio="prefix"       drops the future ratios (seed 002, question 2)
    w_t = rho_t                     ratio="per_step"     drops the past ones too: the seed's final formula
    w_t <- min(w_t, max_weight)     when max_weight is set (truncated importance sampling)

Psi_t are REINFORCE's weights (returns, gamma_weighting, baseline), computed once per batch from
theta's episodes. The first step of each batch is taken at theta' = theta, where every w_t is
exactly 1, so OffPolicyPG with epochs=1 is REINFORCE, step for step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from rlfoundry.algorithms.reinforce import ReinforceConfig
from rlfoundry.envs.vector import EnvSource
from rlfoundry.losses.off_policy_pg import IMPORTANCE_RATIOS, importance_weights, off_policy_pg_loss
from rlfoundry.run.config import require_choice, require_int, require_range
from rlfoundry.run.episodes import EpisodeBatch, EpisodeCollector, restore_episodic, save_episodic
from rlfoundry.run.lifecycle import initialise, load_model
from rlfoundry.run.monitor import TrainingCallback, TrainingMonitor
from rlfoundry.run.on_policy import finish_learning
from rlfoundry.run.training_env import TrainingEnv
from rlfoundry.run.evaluation import PeriodicEvaluation


@dataclass(frozen=True)
class OffPolicyPGConfig(ReinforceConfig):
    """Hyperparameters of the importance-sampled policy gradient: REINFORCE's, plus the reuse."""

    epochs: int = 4
    """Gradient steps of theta' on each batch of episodes sampled by theta."""
    ratio: Literal["trajectory", "prefix", "per_step"] = "per_step"
    """Importance weight of step t: the whole trajectory's ratio, the ratios up to t, or step t's alone."""
    max_weight: float | None = None
    """Truncate every importance weight to at most this (> 0); None: no truncation."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require_int("epochs", self.epochs, 1)
        require_choice("ratio", self.ratio, IMPORTANCE_RATIOS)
        if self.max_weight is not None:
            require_range("max_weight", self.max_weight, 0.0, low_inclusive=False)


class OffPolicyPG:
    """REINFORCE whose batches are reused for several importance-weighted gradient steps.

    It collects, weights and fits its baseline with the same EpisodeCollector as REINFORCE."""

    name = "off-policy-pg"
    Config = OffPolicyPGConfig
    # Set by initialise or load_model (run/lifecycle.py).
    config: OffPolicyPGConfig

    def __init__(self, env: EnvSource | None, *, run_dir: str | Path | None = None, quiet: bool = False,
                 checkpoint_every: int | None = None, evaluation: PeriodicEvaluation | None = None, **config: Any):
        self._build(initialise(self, env, run_dir, quiet, config, checkpoint_every, evaluation))

    def _build(self, training_env: TrainingEnv) -> None:
        self.training_env = training_env
        self.collector = EpisodeCollector(training_env, self.config)
        self.policy, self.value_function = self.collector.policy, self.collector.value_function

    @property
    def steps(self) -> int:
        """Env steps taken so far (padding steps of finished envs included)."""
        return self.collector.steps

    @property
    def env_id(self) -> str | None:
        return self.training_env.env_id

    def predict(self, observations: Any, deterministic: bool = True) -> Any:
        """Actions for observations [B, *obs] (or one unbatched observation): the policy's mode
        when deterministic, else a sample. Box actions are clipped into the action space."""
        return self.collector.predict(observations, deterministic)

    def learn(self, total_steps: int, callback: TrainingCallback | None = None) -> "OffPolicyPG":
        """Train for `total_steps` more env steps, in whole batches of episodes (as REINFORCE.learn).
        callback(status) runs at each point between updates (rlfoundry.TrainingStatus); False ends it."""
        monitor = self.collector.start(self, total_steps, callback)
        for batch in self.collector.batches(monitor):
            self.update_policy(batch, monitor)
            self.collector.fit_value(batch, monitor)
        finish_learning(self, monitor)
        return self

    def update_policy(self, batch: EpisodeBatch, monitor: TrainingMonitor) -> None:
        """`epochs` gradient steps on L(theta'); theta is the policy that sampled the batch."""
        config = self.config
        log_probs = self.collector.log_probs(batch)
        # Before the first step theta' is theta: the same forward pass gives log pi_theta.
        behaviour_log_probs = log_probs.detach()
        for epoch in range(config.epochs):
            if epoch > 0:
                log_probs = self.collector.log_probs(batch)
            policy_loss = off_policy_pg_loss(
                log_probs, behaviour_log_probs, batch.weights, batch.mask, config.ratio, config.max_weight
            )
            self.collector.policy_step(policy_loss, "truncate the importance weights with max_weight, or use ratio='per_step'")
        # The weights the last step used: how far theta' had moved from theta by then.
        weights = importance_weights(log_probs, behaviour_log_probs, batch.mask, config.ratio, config.max_weight)
        used = weights[batch.mask]
        statistics = torch.stack([policy_loss.detach(), used.mean(), used.max(), used.sum().square() / used.square().sum()])
        for name, value in zip(("policy_loss", "weight_mean", "weight_max", "effective_steps"), statistics.tolist()):
            monitor.record(f"train/{name}", value)

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint directory that `rlfoundry.load` reads back exactly."""
        return save_episodic(self, path)

    @classmethod
    def load(cls, path: str | Path, env: EnvSource | None = None, **options: Any) -> "OffPolicyPG":
        """Load a checkpoint of this algorithm; training resumes exactly where it stopped when the
        env state could be saved (classic-control envs), else from freshly seeded envs."""
        model, checkpoint, training_env = load_model(cls, path, env, options)
        model._build(training_env)
        restore_episodic(model, checkpoint)
        return model
