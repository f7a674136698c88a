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
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlfoundry.data.replay import ReplayBatch
from rlfoundry.envs.vector import EnvSource
from rlfoundry.losses.continuous import polyak_update, q_target
from rlfoundry.run.monitor import TrainingCallback, TrainingMonitor
from rlfoundry.run.lifecycle import restore_torch
from rlfoundry.run.evaluation import PeriodicEvaluation
from rlfoundry.run.seeding import prediction_generator
from rlfoundry.run.off_policy import (
    DeterministicActorCritic,
    DeterministicPolicyConfig,
    Part,
    ReplayCollector,
    critic_step,
    deterministic_actions,
    deterministic_actor_step,
    learning,
    load_off_policy,
    open_collector,
    record_finite,
    save_off_policy,
    split_parts,
)


@dataclass(frozen=True)
class DDPGConfig(DeterministicPolicyConfig):
    """Hyperparameters of DDPG (the shared ones are in run.off_policy); defaults are Stable-Baselines3's."""

    actor_learning_rate: float = 1e-3
    """Adam's step size for the actor."""
    critic_learning_rate: float = 1e-3
    """Adam's step size for the critic."""


N_CRITICS = 1


class DDPG:
    """Deep Deterministic Policy Gradient: a deterministic actor climbing one Q critic (Box actions).

    See the module docstring. The networks (`critics` is a QEnsemble of one) and the noisy
    behaviour policy are run.off_policy's, built and called by TD3 too."""

    name = "ddpg"
    Config = DDPGConfig
    # Set by initialise or load_model (run/lifecycle.py).
    config: DDPGConfig

    def __init__(self, env: EnvSource | None, *, run_dir: str | Path | None = None, quiet: bool = False,
                 checkpoint_every: int | None = None, evaluation: PeriodicEvaluation | None = None, **config: Any):
        self._build(open_collector(self, env, run_dir, quiet, config, checkpoint_every, evaluation))

    def _build(self, collector: ReplayCollector) -> None:
        self.collector = collector
        self.networks = DeterministicActorCritic.build(collector, self.config, n_critics=N_CRITICS)
        self.actor, self.critics, self.target_actor, self.target_critics, self.optimizer = self.networks
        self.compiled = self.networks.compiled(collector, self.config)

    def parts(self) -> dict[str, Part]:
        """What a checkpoint holds, by name."""
        return self.networks.parts()

    @property
    def env_id(self) -> str | None:
        return self.collector.env_id

    @property
    def steps(self) -> int:
        """Env steps trained so far."""
        return self.collector.steps

    def predict(self, observations: Any, deterministic: bool = True) -> np.ndarray:
        """Env actions for observations [B, O] (or one observation [O]): mu(s), or mu(s) plus
        exploration noise drawn from torch's global generator (never from training's)."""
        return self.collector.predict(observations, lambda batch: self._act(batch, deterministic, prediction_generator()))

    def _act(self, observations: np.ndarray, deterministic: bool, rng: np.random.Generator) -> np.ndarray:
        return deterministic_actions(self.actor, self.compiled, self.collector, observations, deterministic,
                                     self.config.exploration_noise_std, rng)

    def learn(self, total_steps: int, callback: TrainingCallback | None = None) -> "DDPG":
        """Train for `total_steps` more env steps (rounded up to a multiple of n_envs): collect with
        the exploring policy and update on every minibatch that falls due.
        callback(status) runs at each point between updates (rlfoundry.TrainingStatus); False ends it."""
        with learning(self, total_steps, callback) as monitor:
            explore = partial(self._act, deterministic=False, rng=self.collector.rng)
            for batch in self.collector.batches(total_steps, explore, monitor, tensors=self.compiled is None):
                self.update(batch, monitor)
        return self

    def update(self, batch: ReplayBatch, monitor: TrainingMonitor) -> None:
        """One critic update, one actor update, one Polyak step of both targets."""
        if self.compiled is not None:
            losses = self.compiled.update(batch, None, 0.0, True, self.config.tau)
            record_finite(monitor, losses, self.name, self.collector.steps)
            return
        with torch.no_grad():
            next_q_values = self.target_critics(batch.next_observations, self.target_actor(batch.next_observations))
            targets = q_target(batch.rewards, batch.terminated, next_q_values, batch.discounts)
        critic_loss = critic_step(self.critics, self.optimizer, batch, targets)
        actor_loss = deterministic_actor_step(self.actor, self.critics, self.optimizer, batch.observations)
        polyak_update(self.target_actor.parameters(), self.actor.parameters(), self.config.tau)
        polyak_update(self.target_critics.parameters(), self.critics.parameters(), self.config.tau)
        record_finite(monitor, {"train/critic_loss": critic_loss, "train/actor_loss": actor_loss}, self.name, self.collector.steps)

    def save(self, path: str | Path, replay_buffer: bool = True) -> Path:
        """Write a checkpoint (networks, optimiser, replay buffer, RNGs, env position) that
        `rlfoundry.load` reads back exactly. replay_buffer=False leaves the buffer out (a policy
        checkpoint, as checkpoints/best): a model loaded from it refills learning_starts
        transitions before it trains on."""
        return save_off_policy(self, path, self.parts(), replay_buffer)

    @classmethod
    def load(cls, path: str | Path, env: EnvSource | None = None, **options: Any) -> "DDPG":
        """Load a checkpoint of this algorithm; training resumes exactly where it stopped when the
        env state could be saved (classic-control envs), else with fresh episodes."""
        model, collector, checkpoint = load_off_policy(cls, path, env, options)
        model._build(collector)
        restore_torch(checkpoint, *split_parts(model.parts()))
        return model
