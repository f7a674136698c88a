"""DDPG, Deep Deterministic Policy Gradient (Lillicrap et al., 2016; Silver et al., 2014).

    critic:   y = r + gamma (1 - terminated) Q'(s', mu'(s'))
              L(phi) = mean (Q(s, a) - y)^2
    actor:    L(theta) = -mean Q(s, mu_theta(s))          (the deterministic policy gradient)
    targets:  theta' <- tau theta + (1 - tau) theta'      after every update

Q-learning for continuous actions: the max over a' that DQN takes by enumeration is replaced by
a deterministic actor mu trained to climb the critic, and a slowly moving copy of both (the
target networks mu', Q') supplies the bootstrap. Acting adds Gaussian noise
N(0, exploration_noise_std^2) to mu(s) and clips to [-1, 1]. The paper's Ornstein-Uhlenbeck
noise, batch normalisation and critic weight decay are left out, as in Fujimoto et al. (2018)'s
re-tuned DDPG and Stable-Baselines3.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlfoundry.data.replay import ReplayBatch
from rlfoundry.losses.continuous import polyak_update, q_target
from rlfoundry.run.monitor import TrainingMonitor
from rlfoundry.run.off_policy import (
    DeterministicActorCritic,
    DeterministicPolicyConfig,
    critic_step,
    deterministic_actor_step,
    record_finite,
)


@dataclass(frozen=True)
class DDPGConfig(DeterministicPolicyConfig):
    """Hyperparameters of DDPG (the shared ones are in run.off_policy); defaults are Stable-Baselines3's."""

    actor_learning_rate: float = 1e-3
    """Adam's step size for the actor."""
    critic_learning_rate: float = 1e-3
    """Adam's step size for the critic."""


class DDPG(DeterministicActorCritic):
    """Deep Deterministic Policy Gradient: a deterministic actor climbing one Q critic (Box actions).

    See the module docstring. The networks (`critics` is a QEnsemble of one), acting, the learn
    loop and saving are run.off_policy's DeterministicActorCritic, shared with TD3."""

    name = "ddpg"
    Config = DDPGConfig
    n_critics = 1

    def _update(self, batch: ReplayBatch, monitor: TrainingMonitor) -> None:
        """One critic update, one actor update, one Polyak step of both targets."""
        with torch.no_grad():
            next_q_values = self.target_critics(batch.next_observations, self.target_actor(batch.next_observations))
            targets = q_target(batch.rewards, batch.terminated, next_q_values, batch.discounts)
        critic_loss = critic_step(self.critics, self.optimizer, batch, targets)
        actor_loss = deterministic_actor_step(self.actor, self.critics, self.optimizer, batch.observations)
        polyak_update(self.target_actor.parameters(), self.actor.parameters(), self.config.tau)
        polyak_update(self.target_critics.parameters(), self.critics.parameters(), self.config.tau)
        record_finite(monitor, {"train/critic_loss": critic_loss, "train/actor_loss": actor_loss}, self.name, self.collector.steps)
