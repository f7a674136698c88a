"""TD3, Twin Delayed DDPG (Fujimoto, van Hoof and Meger, 2018).

    critics:  y = r + gamma (1 - terminated) min_{k=1,2} Q'_k(s', a'),
              a' = clip(mu'(s') + clip(epsilon, -c, c), -1, 1),  epsilon ~ N(0, sigma^2)
              L(phi) = sum_k mean (Q_k(s, a) - y)^2
    actor:    L(theta) = -mean Q_1(s, mu_theta(s)),         every `policy_delay` critic updates
    targets:  theta' <- tau theta + (1 - tau) theta',       with the actor update

DDPG's three fixes against over-estimation: the smaller of two target critics (clipped double Q),
noise on the target action so that the target values a neighbourhood of mu'(s') (target policy
smoothing), and fewer actor and target updates than critic updates (delayed policy updates).
Acting adds Gaussian noise N(0, exploration_noise_std^2) to mu(s) and clips to [-1, 1].
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
from rlfoundry.losses.continuous import polyak_update, q_target, smoothed_target_actions
from rlfoundry.run.config import require_int, require_range
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
class TD3Config(DeterministicPolicyConfig):
    """Hyperparameters of TD3 (the shared ones are in run.off_policy); defaults are the authors' current code's."""

    policy_delay: int = 2
    """Critic updates per actor and target update."""
    target_policy_noise: float = 0.2
    """sigma of the target policy smoothing noise, in unit-action scale."""
    target_noise_clip: float = 0.5
    """c: the smoothing noise is clipped to [-c, c]."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require_int("policy_delay", self.policy_delay, 1)
        require_range("target_policy_noise", self.target_policy_noise, 0.0)
        require_range("target_noise_clip", self.target_noise_clip, 0.0)


N_CRITICS = 2


class TD3:
    """Twin Delayed DDPG: clipped double Q, target policy smoothing, delayed actor updates (Box actions).

    See the module docstring. The networks and the noisy behaviour policy are run.off_policy's,
    built and called by DDPG too."""

    name = "td3"
    Config = TD3Config
    # Set by initialise or load_model (run/lifecycle.py).
    config: TD3Config

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

    def learn(self, total_steps: int, callback: TrainingCallback | None = None) -> "TD3":
        """Train for `total_steps` more env steps (rounded up to a multiple of n_envs): collect with
        the exploring policy and update on every minibatch that falls due.
        callback(status) runs at each point between updates (rlfoundry.TrainingStatus); False ends it."""
        with learning(self, total_steps, callback) as monitor:
            explore = partial(self._act, deterministic=False, rng=self.collector.rng)
            for batch in self.collector.batches(total_steps, explore, monitor, tensors=self.compiled is None):
                self.update(batch, monitor)
        return self

    def update(self, batch: ReplayBatch, monitor: TrainingMonitor) -> None:
        """One critic update; the actor and the targets update after every policy_delay-th one."""
        config = self.config
        actor_due = self.collector.updates % config.policy_delay == 0
        # By shape: the compiled update's minibatches are numpy arrays, the PyTorch update's tensors.
        shape, device = tuple(batch.actions.shape), self.collector.device
        noise = torch.randn(shape, dtype=torch.float32, device=device, generator=self.collector.torch_rng)
        noise = noise * config.target_policy_noise
        if self.compiled is not None:
            losses = self.compiled.update(batch, noise, config.target_noise_clip, actor_due, config.tau)
            record_finite(monitor, losses, self.name, self.collector.steps)
            return
        with torch.no_grad():
            next_actions = smoothed_target_actions(
                self.target_actor(batch.next_observations), noise, config.target_noise_clip
            )
            next_q_values = self.target_critics(batch.next_observations, next_actions)
            targets = q_target(batch.rewards, batch.terminated, next_q_values, batch.discounts)
        metrics = {"train/critic_loss": critic_step(self.critics, self.optimizer, batch, targets)}
        if actor_due:
            metrics["train/actor_loss"] = deterministic_actor_step(
                self.actor, self.critics, self.optimizer, batch.observations
            )
            polyak_update(self.target_actor.parameters(), self.actor.parameters(), config.tau)
            polyak_update(self.target_critics.parameters(), self.critics.parameters(), config.tau)
        record_finite(monitor, metrics, self.name, self.collector.steps)

    def save(self, path: str | Path, replay_buffer: bool = True) -> Path:
        """Write a checkpoint (networks, optimiser, replay buffer, RNGs, env position) that
        `rlfoundry.load` reads back exactly. replay_buffer=False leaves the buffer out (a policy
        checkpoint, as checkpoints/best): a model loaded from it refills learning_starts
        transitions before it trains on."""
        return save_off_policy(self, path, self.parts(), replay_buffer)

    @classmethod
    def load(cls, path: str | Path, env: EnvSource | None = None, **options: Any) -> "TD3":
        """Load a checkpoint of this algorithm; training resumes exactly where it stopped when the
        env state could be saved (classic-control envs), else with fresh episodes."""
        model, collector, checkpoint = load_off_policy(cls, path, env, options)
        model._build(collector)
        restore_torch(checkpoint, *split_parts(model.parts()))
        return model
