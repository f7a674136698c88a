"""Whole-episode experience for the Monte-Carlo policy gradients (REINFORCE and OffPolicyPG).

Each of the two algorithms holds an `EpisodeCollector` and calls it from its own learn loop:

    monitor = self.collector.start(self, total_steps)
    for batch in self.collector.batches(monitor):      # m whole episodes, their returns and Psi_t
        self.update(batch, monitor)                     # the algorithm's own policy step(s)
    finish_learning(self, monitor)

The collector owns what the two share: the training env, the policy pi_theta and the optional value
baseline V_phi with their optimisers, the episode buffer, the step counts, the weights Psi_t
(rlfoundry.algorithms.reinforce's module docstring), the value regression and checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from rlfoundry.data.rollout import RolloutBuffer, ValueFunction
from rlfoundry.envs.vector import EpisodeTracker
from rlfoundry.losses.policy_gradient import value_loss
from rlfoundry.losses.reinforce import leave_one_out_baseline, reinforce_weights
from rlfoundry.networks.policies import PolicyNetwork, ValueNetwork, env_actions, is_image_space, observation_tensor, predict_actions
from rlfoundry.returns import discounted_returns, trajectory_returns
from rlfoundry.run.checkpoint import Checkpoint, NonFiniteError
from rlfoundry.run.config import require_int
from rlfoundry.run.lifecycle import attach_env, restore_torch, restore_torch_generator, save_model
from rlfoundry.run.monitor import TrainingCallback, TrainingMonitor
from rlfoundry.run.on_policy import adam, gradient_step
from rlfoundry.run.seeding import torch_generator
from rlfoundry.run.training_env import TrainingEnv


@dataclass(frozen=True)
class EpisodeBatch:
    """m whole episodes, ready for the losses (tensors on the training device).

    Column i of every [T, m] array is episode i from its first step; K is the number of
    unpadded steps, listed in row-major (t, i) order (the order of ``mask``'s True entries).

    observations: [K, *obs]  s_t of the unpadded steps
    actions:      [K, *act]  a_t as sampled
    mask:         [T, m]     bool, True on the episodes' steps
    weights:      [T, m]     Psi_t (zero on padding)
    returns:      [K]        G_t, the value targets
    """

    observations: torch.Tensor
    actions: torch.Tensor
    mask: torch.Tensor
    weights: torch.Tensor
    returns: torch.Tensor


class EpisodeCollector:
    """What REINFORCE and OffPolicyPG each hold (see the module docstring). `config` is a
    ReinforceConfig or a config with its fields."""

    # Set by attach_env.
    training_env: TrainingEnv
    observation_space: spaces.Space
    action_space: spaces.Space

    def __init__(self, training_env: TrainingEnv, config: Any):
        self.config = config
        self.device = attach_env(self, training_env, uses_images=is_image_space(training_env.observation_space))
        # The actions' draws; predict(deterministic=False) samples with torch's global generator.
        self.torch_rng = torch_generator(config.seed, self.device)
        network_options = dict(hidden_sizes=config.hidden_sizes, activation=config.activation, orthogonal=config.orthogonal_init)
        self.policy = PolicyNetwork(
            self.observation_space, self.action_space, log_std_init=config.log_std_init, **network_options
        ).to(self.device)
        self.policy_optimizer = adam(self.policy.parameters(), config.learning_rate, config.optimizer_epsilon)
        self.value_function: ValueNetwork | None = None
        self.value_optimizer: torch.optim.Optimizer | None = None
        if config.baseline == "value":
            self.value_function = ValueNetwork(self.observation_space, **network_options).to(self.device)
            self.value_optimizer = adam(self.value_function.parameters(), config.value_learning_rate, config.optimizer_epsilon)
        self.rollout = RolloutBuffer(config.max_episode_steps, config.n_envs, self.observation_space, self.action_space)
        self.steps = 0
        self.step_target = 0

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return observation_tensor(array, self.device)

    def _value_function(self) -> ValueFunction | None:
        """V(s) for numpy batches, without gradients; None without a learned baseline."""
        value_function = self.value_function
        if value_function is None:
            return None

        def values(observations: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return value_function(self._tensor(observations)).cpu().numpy()

        return values

    # -- the learn loop -------------------------------------------------------------------------

    def start(self, model: Any, total_steps: int, callback: TrainingCallback | None = None) -> TrainingMonitor:
        """Begin a learn(total_steps, callback) call: the step target moves on by total_steps."""
        require_int("total_steps", total_steps, 1)
        monitor = TrainingMonitor.of(
            model, max(self.step_target + total_steps - self.steps, 1), self.steps, callback, asked_steps=total_steps
        )
        self.step_target += total_steps
        return monitor

    def batches(self, monitor: TrainingMonitor) -> Iterator[EpisodeBatch]:
        """Batches of fresh episodes until the step target is reached; updates are whole batches, so
        the last one ends past it (and there is always at least one). The caller updates on each
        batch before asking for the next, so a periodic checkpoint falls between updates."""
        while True:
            yield self.batch(self.collect(monitor))
            monitor.step(self.steps)
            if monitor.stop_requested:
                # The next learn() call counts its steps from here, not from the unreached target.
                self.step_target = self.steps
            if self.steps >= self.step_target:
                return

    # -- acting -------------------------------------------------------------------------------

    def _fresh_episodes(self) -> np.ndarray:
        """Observations [N, *obs] of a new episode in every env. The first reset uses the seed; later
        ones continue each env's own generator, so a resumed run resets exactly as a straight one."""
        training_env = self.training_env
        if training_env.observations is None:
            return training_env.start()
        training_env.observations, _ = training_env.open().reset()
        training_env.episodes = EpisodeTracker(self.config.n_envs)
        return training_env.observations

    def collect(self, monitor: TrainingMonitor) -> np.ndarray:
        """Fill `self.rollout` with one whole episode per env; returns the mask [T, m] of their steps."""
        rollout, training_env, n_envs = self.rollout, self.training_env, self.config.n_envs
        rollout.reset()
        observations = self._fresh_episodes()
        mask = np.zeros((rollout.n_steps, n_envs), dtype=bool)
        running = np.ones(n_envs, dtype=bool)  # the env's first episode has not ended yet
        with torch.inference_mode():
            while running.any() and not rollout.full:
                distribution = self.policy(self._tensor(observations))
                actions = distribution.sample(self.torch_rng)
                actions_array = actions.cpu().numpy()
                step, finished_returns, finished_lengths = training_env.step(env_actions(actions_array, self.action_space))
                mask[rollout.position] = running
                rollout.add(observations, actions_array, distribution.log_prob(actions).cpu().numpy(), None, step)
                # Only each env's first episode is logged: those that end while the others wait are
                # the short ones (the long ones are reset unfinished), so they would bias the mean down.
                first_episodes = running[step.done]
                running &= ~step.done
                self.steps += n_envs
                monitor.episodes(self.steps, finished_returns[first_episodes], finished_lengths[first_episodes])
                observations = step.observations
        if running.any():
            # Cut at max_episode_steps: the next batch resets these envs, so their episodes end here.
            episodes = training_env.episodes
            monitor.episodes(self.steps, episodes.returns[running], episodes.lengths[running])
        rows = rollout.position
        values = self._value_function()
        if values is not None:
            # V(s_t) after the episodes, in one batched call: the value net does not change meanwhile.
            rollout.fill_values(values)
        rollout.finish(observations, values, stopped_early=True)
        return mask[:rows]

    def batch(self, mask: np.ndarray) -> EpisodeBatch:
        """Returns, baselines and the weights Psi of the collected episodes."""
        config, rollout = self.config, self.rollout
        rows = mask.shape[0]
        returns_function = discounted_returns if config.returns == "reward_to_go" else trajectory_returns
        returns = returns_function(
            rollout.rewards[:rows], rollout.terminated[:rows], rollout.truncated[:rows], config.gamma, rollout.next_values[:rows]
        )
        baselines = None
        if config.baseline == "batch_mean":
            baselines = leave_one_out_baseline(returns, mask)
        elif config.baseline == "value":
            baselines = rollout.values[:rows]
        weights = reinforce_weights(returns, mask, config.gamma, config.step_discount, baselines)
        return EpisodeBatch(
            observations=self._tensor(rollout.observations[:rows][mask]),
            actions=self._tensor(rollout.actions[:rows][mask]),
            mask=self._tensor(mask),
            weights=torch.as_tensor(weights, dtype=torch.float32, device=self.device),
            returns=torch.as_tensor(returns[mask], dtype=torch.float32, device=self.device),
        )

    def predict(self, observations: Any, deterministic: bool = True) -> Any:
        """Actions for observations [B, *obs] (or one unbatched observation): the policy's mode
        when deterministic, else a sample. Box actions are clipped into the action space."""
        return predict_actions(self.policy, observations, self.observation_space, self.action_space, self.device, deterministic)

    # -- learning -----------------------------------------------------------------------------

    def log_probs(self, batch: EpisodeBatch) -> torch.Tensor:
        """log pi_theta(a_t|s_t) laid out [T, m] (zero on padding), differentiable in theta."""
        log_probs = self.policy(batch.observations).log_prob(batch.actions)
        return torch.zeros(batch.mask.shape, dtype=log_probs.dtype, device=self.device).masked_scatter(batch.mask, log_probs)

    def policy_step(self, policy_loss: torch.Tensor, advice: str) -> None:
        """One gradient step of the policy on `policy_loss`; NonFiniteError (with `advice`) when it is NaN or infinite."""
        if not torch.isfinite(policy_loss):
            raise NonFiniteError(f"the policy loss is {policy_loss.item()}: the policy has diverged; {advice}")
        gradient_step(self.policy_optimizer, policy_loss, self.config.max_grad_norm)

    def fit_value(self, batch: EpisodeBatch, monitor: TrainingMonitor) -> None:
        """The value regression L(phi) = mean_t (V_phi(s_t) - G_t)^2, when there is a learned baseline."""
        if self.value_function is not None and self.value_optimizer is not None:  # both or neither
            for _ in range(self.config.value_gradient_steps):
                critic_loss = value_loss(self.value_function(batch.observations), batch.returns)
                gradient_step(self.value_optimizer, critic_loss, self.config.max_grad_norm)
            monitor.record("train/value_loss", critic_loss.item())
        # Env steps trained on / env steps taken: the rest is envs waiting for the longest episode.
        monitor.record("train/used_step_fraction", batch.returns.shape[0] / batch.mask.numel())

    # -- saving -------------------------------------------------------------------------------

    def networks(self) -> tuple[dict[str, torch.nn.Module], dict[str, torch.optim.Optimizer]]:
        """The modules and optimisers of a checkpoint, by name."""
        modules: dict[str, torch.nn.Module] = {"policy": self.policy}
        optimizers: dict[str, torch.optim.Optimizer] = {"policy_optimizer": self.policy_optimizer}
        if self.value_function is not None and self.value_optimizer is not None:  # both or neither
            modules["value"], optimizers["value_optimizer"] = self.value_function, self.value_optimizer
        return modules, optimizers


def save_episodic(model: Any, path: str | Path) -> Path:
    """Checkpoint REINFORCE or OffPolicyPG: networks, optimisers, step counts, RNGs, env position."""
    collector = model.collector
    # Saved inside a learn() call (checkpoints/latest, best), the target is that call's, ahead of
    # the steps: a loaded model's learn(N) trains N more from here, as after a stopped call.
    counters = {"steps": collector.steps, "step_target": min(collector.step_target, collector.steps)}
    modules, optimizers = collector.networks()
    return save_model(model, path, counters, modules=modules, optimizers=optimizers, generator=collector.torch_rng)


def restore_episodic(model: Any, checkpoint: Checkpoint) -> None:
    """Put a checkpoint's networks, optimisers and step counts into a freshly built model."""
    collector = model.collector
    collector.steps, collector.step_target = checkpoint.counters["steps"], checkpoint.counters["step_target"]
    restore_torch(checkpoint, *collector.networks())
    restore_torch_generator(checkpoint, collector.torch_rng)
