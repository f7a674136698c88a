"""SAC, Soft Actor-Critic (Haarnoja et al., 2018a; automatic entropy tuning: Haarnoja et al., 2018b).

    critics:      y = r + gamma (1 - terminated) (min_{k=1,2} Q'_k(s', a') - alpha log pi(a'|s')),  a' ~ pi(.|s')
                  L(phi) = sum_k mean (Q_k(s, a) - y)^2
    actor:        L(theta) = mean (alpha log pi(a|s) - min_k Q_k(s, a)),  a = tanh(mu(s) + sigma(s) epsilon)
    temperature:  L(log alpha) = -mean log alpha (log pi(a|s) + H_target),  H_target = -dim(A)
    targets:      phi' <- tau phi + (1 - tau) phi'   after every update

Maximum-entropy RL: the return being maximised carries a bonus alpha H(pi(.|s)) at every step, so
the policy stays as random as the rewards allow. The policy is a Gaussian squashed by tanh into
[-1, 1] (networks.continuous.SquashedGaussianActor, with the exact log-density correction), the
two critics and their minimum fight over-estimation as in TD3, and alpha is tuned so that the
policy's entropy stays near H_target (or fixed, with learn_alpha=False). There is no target actor:
a' is sampled from the current policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from rlfoundry.data.replay import ReplayBatch
from rlfoundry.envs.vector import EnvSource
from rlfoundry.losses.continuous import (
    critic_loss,
    entropy_temperature_loss,
    polyak_update,
    soft_actor_loss,
    soft_q_target,
    target_entropy_for,
)
from rlfoundry.networks.continuous import QEnsemble, SquashedGaussianActor
from rlfoundry.run.config import require_choice, require_range
from rlfoundry.run.monitor import TrainingCallback, TrainingMonitor
from rlfoundry.run.lifecycle import restore_torch
from rlfoundry.run.evaluation import PeriodicEvaluation
from rlfoundry.run.off_policy import (
    OffPolicyConfig,
    Part,
    ReplayCollector,
    adam,
    compiled_update,
    descend,
    frozen_copy,
    learning,
    load_off_policy,
    open_collector,
    record_finite,
    save_off_policy,
    split_parts,
)

if TYPE_CHECKING:  # numba loads only when a model compiles its kernels
    from rlfoundry.networks.compiled_continuous import CompiledSAC


@dataclass(frozen=True)
class SACConfig(OffPolicyConfig):
    """Hyperparameters of SAC (the shared ones are OffPolicyConfig's); defaults are Haarnoja et al. (2018b)'s and Stable-Baselines3's."""

    learn_alpha: bool = True
    """Tune the entropy temperature alpha towards target_entropy (True) or keep it fixed at `alpha`."""
    alpha: float = 1.0
    """The fixed alpha, or the initial one when learn_alpha; > 0."""
    alpha_learning_rate: float = 3e-4
    """Adam's step size for log alpha."""
    target_entropy: float | None = None
    """H_target, in nats; None: -dim(A)."""
    update_order: Literal["simultaneous", "sequential"] = "simultaneous"
    """'simultaneous': all three gradients from the same parameters, one backward pass and one Adam step
    (rlkit's SACTrainer); 'sequential': the critics step first and the actor and
    temperature see the stepped critics (Stable-Baselines3, CleanRL)."""

    fixed_by_checkpoint: ClassVar[frozenset[str]] = OffPolicyConfig.fixed_by_checkpoint | {"alpha"}

    def __post_init__(self) -> None:
        super().__post_init__()
        require_choice("learn_alpha", self.learn_alpha, (True, False))
        require_range("alpha", self.alpha, 0.0, low_inclusive=False)
        require_range("alpha_learning_rate", self.alpha_learning_rate, 0.0, low_inclusive=False)
        if self.target_entropy is not None:
            require_range("target_entropy", self.target_entropy)
        require_choice("update_order", self.update_order, ("simultaneous", "sequential"))


class EntropyTemperature(nn.Module):
    """alpha = exp(log alpha): the learned weight of the entropy bonus, positive by construction."""

    def __init__(self, initial_alpha: float):
        super().__init__()
        self.log_alpha = nn.Parameter(torch.tensor(math.log(initial_alpha)))

    def forward(self) -> torch.Tensor:
        """alpha, detached: the losses that use it must not move it."""
        return self.log_alpha.detach().exp()


class SAC:
    """Soft Actor-Critic: a tanh-Gaussian actor, twin critics, automatic entropy tuning (Box actions).

    See the module docstring; collection, the replay buffer and checkpoints are run.off_policy's."""

    name = "sac"
    Config = SACConfig
    # Set by initialise or load_model (run/lifecycle.py).
    config: SACConfig

    def __init__(self, env: EnvSource | None, *, run_dir: str | Path | None = None, quiet: bool = False,
                 checkpoint_every: int | None = None, evaluation: PeriodicEvaluation | None = None, **config: Any):
        self._build(open_collector(self, env, run_dir, quiet, config, checkpoint_every, evaluation))

    def _build(self, collector: ReplayCollector) -> None:
        config = self.config
        self.collector = collector
        sizes = (collector.observation_size, collector.action_size)
        self.actor = SquashedGaussianActor(*sizes, config.actor_hidden_sizes, config.activation).to(collector.device)
        self.critics = QEnsemble(*sizes, config.critic_hidden_sizes, 2, config.activation).to(collector.device)
        self.target_critics = frozen_copy(self.critics)
        self.temperature = EntropyTemperature(config.alpha).to(collector.device)
        self.temperature.requires_grad_(config.learn_alpha)
        self.target_entropy = (
            target_entropy_for(collector.action_size) if config.target_entropy is None else config.target_entropy
        )
        self.optimizer = adam(
            (self.actor, config.actor_learning_rate),
            (self.critics, config.critic_learning_rate),
            (self.temperature, config.alpha_learning_rate),
        )
        # Where they apply (and backend allows), numba-compiled kernels take the updates on the same
        # parameters and optimiser state (networks/compiled_continuous.py).
        self.compiled: CompiledSAC | None = None
        uncovered = None if config.update_order == "simultaneous" else "update_order='sequential' (the kernels cover 'simultaneous')"
        threads = compiled_update(config, collector.device, uncovered)
        if threads:
            from rlfoundry.networks.compiled_continuous import CompiledSAC

            self.compiled = CompiledSAC(
                self.actor, self.critics, self.target_critics, self.temperature.log_alpha, config.learn_alpha,
                self.optimizer, config.batch_size, collector.observation_size, config.activation, threads,
                config.matmul_precision == "bfloat16",
            )

    def parts(self) -> dict[str, Part]:
        """What a checkpoint holds, by name."""
        return {
            "actor": self.actor,
            "critics": self.critics,
            "target_critics": self.target_critics,
            "temperature": self.temperature,
            "optimizer": self.optimizer,
        }

    @property
    def env_id(self) -> str | None:
        return self.collector.env_id

    @property
    def steps(self) -> int:
        """Env steps trained so far."""
        return self.collector.steps

    @property
    def alpha(self) -> float:
        """The current entropy temperature."""
        return float(self.temperature())

    def predict(self, observations: Any, deterministic: bool = True) -> np.ndarray:
        """Env actions for observations [B, O] (or one observation [O]): tanh(mu(s)), or a sample."""
        return self.collector.predict(observations, lambda batch: self._act(batch, deterministic, None))

    def _act(self, observations: np.ndarray, deterministic: bool, generator: torch.Generator | None) -> np.ndarray:
        """tanh(mu(s)), or a sample of the squashed Gaussian drawn with `generator` (None: torch's
        global one, as predict samples): unit actions [N, A]."""
        if self.compiled is not None:
            return self.compiled.act(observations, deterministic, generator)
        if deterministic:
            return self.collector.actions_of(self.actor.mode, observations)
        return self.collector.actions_of(lambda batch: self.actor.sample(batch, generator), observations)

    def learn(self, total_steps: int, callback: TrainingCallback | None = None) -> "SAC":
        """Train for `total_steps` more env steps (rounded up to a multiple of n_envs): collect with
        the sampling policy and update on every minibatch that falls due.
        callback(status) runs at each point between updates (rlfoundry.TrainingStatus); False ends it."""
        with learning(self, total_steps, callback) as monitor:
            explore = partial(self._act, deterministic=False, generator=self.collector.torch_rng)
            for batch in self.collector.batches(total_steps, explore, monitor, tensors=self.compiled is None):
                self.update(batch, monitor)
        return self

    def update(self, batch: ReplayBatch, monitor: TrainingMonitor) -> None:
        """One step each of the critics, the actor and the temperature, then one Polyak step.

        alpha is read once, before its own step, and used by all three losses. Each loss reaches
        only its own parameters (the targets are computed without gradients, the actor sees the
        critics frozen, the temperature loss sees log pi detached), so a backward pass of their
        sum gives each network exactly its own gradient."""
        config = self.config
        generator = self.collector.torch_rng
        if self.compiled is not None:
            # The action noise of both samples, drawn as SquashedGaussianActor draws it (the minibatch is numpy).
            shape = tuple(batch.actions.shape)
            noise = torch.randn(shape, dtype=torch.float32, generator=generator)
            next_noise = torch.randn(shape, dtype=torch.float32, generator=generator)
            values = self.compiled.update(batch, noise, next_noise, self.target_entropy, config.tau)
            record_finite(monitor, values, self.name, self.collector.steps)
            return
        alpha = self.temperature()
        actions, log_probs = self.actor(batch.observations, generator)
        with torch.no_grad():
            next_actions, next_log_probs = self.actor(batch.next_observations, generator)
            next_q_values = self.target_critics(batch.next_observations, next_actions)
            targets = soft_q_target(batch.rewards, batch.terminated, next_q_values, next_log_probs, alpha, batch.discounts)
        critic_loss_value = critic_loss(self.critics(batch.observations, batch.actions), targets)
        if config.update_order == "sequential":
            descend(self.optimizer, critic_loss_value)  # the actor's loss below sees the stepped critics
        actor_loss = soft_actor_loss(self.critics(batch.observations, actions, frozen=True), log_probs, alpha)
        policy_losses = actor_loss
        if config.learn_alpha:
            policy_losses = policy_losses + entropy_temperature_loss(
                self.temperature.log_alpha, log_probs, self.target_entropy
            )
        if config.update_order == "sequential":
            descend(self.optimizer, policy_losses)
        else:
            descend(self.optimizer, critic_loss_value + policy_losses)
        polyak_update(self.target_critics.parameters(), self.critics.parameters(), config.tau)
        metrics = {
            "train/critic_loss": critic_loss_value.detach(),
            "train/actor_loss": actor_loss.detach(),
            "train/alpha": alpha,
            "train/entropy": -log_probs.detach().mean(),
        }
        record_finite(monitor, metrics, self.name, self.collector.steps)

    def save(self, path: str | Path, replay_buffer: bool = True) -> Path:
        """Write a checkpoint (networks, temperature, optimiser, replay buffer, RNGs, env position) that
        `rlfoundry.load` reads back exactly. replay_buffer=False leaves the buffer out (a policy
        checkpoint, as checkpoints/best): a model loaded from it refills learning_starts
        transitions before it trains on."""
        return save_off_policy(self, path, self.parts(), replay_buffer)

    @classmethod
    def load(cls, path: str | Path, env: EnvSource | None = None, **options: Any) -> "SAC":
        """Load a checkpoint of this algorithm; training resumes exactly where it stopped when the
        env state could be saved (classic-control envs), else with fresh episodes."""
        model, collector, checkpoint = load_off_policy(cls, path, env, options)
        model._build(collector)
        restore_torch(checkpoint, *split_parts(model.parts()))
        return model
