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
from typing import Literal

import torch

from rlfoundry.run.on_policy import gradient_step
from rlfoundry.algorithms.reinforce import REINFORCE, EpisodeBatch, ReinforceConfig
from rlfoundry.losses.off_policy_pg import IMPORTANCE_RATIOS, importance_weights, off_policy_pg_loss
from rlfoundry.run.config import require_choice, require_int, require_range
from rlfoundry.run.monitor import TrainingMonitor


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


class OffPolicyPG(REINFORCE):
    """REINFORCE whose batches are reused for several importance-weighted gradient steps."""

    name = "off-policy-pg"
    Config = OffPolicyPGConfig

    def update_policy(self, batch: EpisodeBatch, monitor: TrainingMonitor) -> None:
        """`epochs` gradient steps on L(theta'); theta is the policy that sampled the batch."""
        config = self.config
        behaviour_log_probs = None
        for _ in range(config.epochs):
            log_probs = self.episode_log_probs(batch)
            if behaviour_log_probs is None:
                # Before the first step theta' is theta: the same forward pass gives log pi_theta.
                behaviour_log_probs = log_probs.detach()
            policy_loss = off_policy_pg_loss(
                log_probs, behaviour_log_probs, batch.weights, batch.mask, config.ratio, config.max_weight
            )
            self.check_finite(policy_loss, "truncate the importance weights with max_weight, or use ratio='per_step'")
            gradient_step(self.policy_optimizer, policy_loss, config.max_grad_norm)
        # The weights the last step used: how far theta' had moved from theta by then.
        weights = importance_weights(log_probs, behaviour_log_probs, batch.mask, config.ratio, config.max_weight)
        used = weights[batch.mask]
        statistics = torch.stack([policy_loss.detach(), used.mean(), used.max(), used.sum().square() / used.square().sum()])
        for name, value in zip(("policy_loss", "weight_mean", "weight_max", "effective_steps"), statistics.tolist()):
            monitor.record(f"train/{name}", value)
