"""REINFORCE: the Monte-Carlo likelihood-ratio policy gradient (seeds 000, 001 and 004).

Each update samples m = n_envs whole episodes with the current policy (every env is reset, and
each contributes its next episode) and takes one gradient step on

    L(theta) = -(1/m) sum_{i=1}^{m} sum_t log pi_theta(a_t^(i) | s_t^(i)) Psi_t^(i)

    Psi_t = R(tau) - b                 returns="trajectory"                    seeds 000 / 001
    Psi_t = gamma^t (G_t - b_t)        returns="reward_to_go" (default)        seed 004, exact
    Psi_t = G_t - b_t                  ... with gamma_weighting="undiscounted"  the common form; biased

    b = 0 ("none"), the mean return of the other episodes of the batch ("batch_mean"), or a
    learned V_phi(s_t) ("value") fitted to G_t by regression: L(phi) = mean_t (V_phi(s_t) - G_t)^2.

Whole episodes keep the estimator unbiased: an env whose episode has ended keeps stepping (the
vector env cannot pause one copy) until every env's episode is over; those extra steps count as
env steps but are not trained on. An episode still running after max_episode_steps is cut there.
Where an episode is truncated (a time limit, or that cut), G_t is completed with
gamma^k V_phi(final observation) when there is a learned value, and stops there otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from rlfoundry.run.on_policy import adam, gradient_step
from rlfoundry.data.rollout import RolloutBuffer
from rlfoundry.envs.vector import EnvSource, EpisodeTracker
from rlfoundry.losses.policy_gradient import value_loss
from rlfoundry.losses.reinforce import leave_one_out_baseline, reinforce_loss, reinforce_weights
from rlfoundry.networks.policies import PolicyNetwork, ValueNetwork, env_actions, is_image_space, observation_tensor, predict_actions
from rlfoundry.networks.torsos import ACTIVATIONS
from rlfoundry.returns import discounted_returns, trajectory_returns
from rlfoundry.run.checkpoint import NonFiniteError
from rlfoundry.run.config import ConfigError, require_choice, require_int, require_range
from rlfoundry.run.lifecycle import attach_env, initialise, load_model, restore_torch, save_model
from rlfoundry.run.monitor import TrainingMonitor
from rlfoundry.run.training_env import TrainingEnv


@dataclass(frozen=True)
class ReinforceConfig:
    """Hyperparameters of REINFORCE."""

    seed: int = 0
    """Seeds python, numpy, torch and the environments."""
    n_envs: int = 8
    """Episodes per update (m): every env contributes one whole episode."""
    max_episode_steps: int = 1000
    """An episode still running after this many steps is cut there (and counts as truncated)."""
    gamma: float = 0.99
    """Discount factor of the objective J = E[sum_t gamma^t r_t], in [0, 1]."""
    returns: Literal["reward_to_go", "trajectory"] = "reward_to_go"
    """'reward_to_go': G_t from step t on (seed 004); 'trajectory': R(tau) on every step (seeds 000/001)."""
    gamma_weighting: Literal["discounted", "undiscounted"] = "discounted"
    """'discounted': the exact gradient of J (gamma^t G_t); 'undiscounted': drop gamma^t (biased for gamma < 1)."""
    baseline: Literal["none", "batch_mean", "value"] = "value"
    """b subtracted from the returns: none, the other episodes' mean return, or a learned V(s_t)."""
    learning_rate: float = 1e-3
    """Adam step size of the policy."""
    value_learning_rate: float = 1e-3
    """Adam step size of the value function (baseline='value')."""
    value_gradient_steps: int = 5
    """Gradient steps on the value loss per update (baseline='value'), each on the whole batch."""
    optimizer_epsilon: float = 1e-8
    """Epsilon in Adam's denominator (both optimisers)."""
    max_grad_norm: float | None = None
    """Clip each network's global gradient norm to this before a step; None: no clipping."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Widths of the hidden layers of the policy and value MLPs (ignored by image torsos)."""
    activation: str = "tanh"
    """Activation after each hidden layer: tanh, relu, elu or gelu."""
    orthogonal_init: bool = True
    """Orthogonal weights (gain sqrt 2 hidden, 0.01 policy output, 1 value output) instead of PyTorch's default."""
    log_std_init: float = 0.0
    """Initial log standard deviation of Gaussian policies (Box actions)."""
    device: str = "auto"
    """'auto' (CPU for MLPs, CUDA for images when present), 'cpu' or 'cuda'."""
    torch_threads: int | None = None
    """torch intra-op threads; None uses rlfoundry's measured default (1)."""

    def __post_init__(self) -> None:
        require_int("seed", self.seed, 0)
        require_int("n_envs", self.n_envs, 1)
        require_int("max_episode_steps", self.max_episode_steps, 1)
        require_range("gamma", self.gamma, 0.0, 1.0)
        require_choice("returns", self.returns, ("reward_to_go", "trajectory"))
        require_choice("gamma_weighting", self.gamma_weighting, ("discounted", "undiscounted"))
        require_choice("baseline", self.baseline, ("none", "batch_mean", "value"))
        require_range("learning_rate", self.learning_rate, 0.0, low_inclusive=False)
        require_range("value_learning_rate", self.value_learning_rate, 0.0, low_inclusive=False)
        require_int("value_gradient_steps", self.value_gradient_steps, 1)
        require_range("optimizer_epsilon", self.optimizer_epsilon, 0.0, low_inclusive=False)
        if self.max_grad_norm is not None:
            require_range("max_grad_norm", self.max_grad_norm, 0.0, low_inclusive=False)
        if isinstance(self.hidden_sizes, list):  # YAML presets and JSON checkpoints give lists
            object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))
        if not isinstance(self.hidden_sizes, tuple) or not all(
            isinstance(width, int) and not isinstance(width, bool) and width >= 1 for width in self.hidden_sizes
        ):
            raise ConfigError(f"hidden_sizes must be a tuple of integers >= 1, got {self.hidden_sizes!r}")
        require_choice("activation", self.activation, ACTIVATIONS)
        require_choice("orthogonal_init", self.orthogonal_init, (True, False))
        require_range("log_std_init", self.log_std_init, -20.0, 5.0)
        if self.torch_threads is not None:
            require_int("torch_threads", self.torch_threads, 1)
        require_choice("device", self.device.split(":")[0], ("auto", "cpu", "cuda"))
        if self.returns == "trajectory" and self.gamma_weighting == "undiscounted":
            raise ConfigError(
                "gamma_weighting='undiscounted' only applies to returns='reward_to_go': R(tau) already has "
                "no gamma^t in front of it to drop (use gamma_weighting='discounted', the exact form)"
            )
        if self.returns == "trajectory" and self.baseline == "value":
            raise ConfigError(
                "baseline='value' needs returns='reward_to_go': V(s_t) estimates the return from s_t on, "
                "while R(tau) also holds the rewards before t (use baseline='batch_mean' with 'trajectory')"
            )
        if self.baseline == "batch_mean" and self.n_envs < 2:
            raise ConfigError(
                "baseline='batch_mean' needs n_envs >= 2: an episode's baseline is the mean return of the "
                "OTHER episodes of its batch"
            )

    @property
    def step_discount(self) -> bool:
        """Whether Psi_t carries gamma^t: the reward-to-go in its exact (discounted) form."""
        return self.returns == "reward_to_go" and self.gamma_weighting == "discounted"


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


class REINFORCE:
    """Monte-Carlo policy gradient over whole episodes, with an optional baseline."""

    name = "reinforce"
    Config = ReinforceConfig

    def __init__(self, env: EnvSource | None, *, run_dir: str | Path | None = None, quiet: bool = False,
                 checkpoint_every: int | None = None, **config: Any):
        self._build(initialise(self, env, run_dir, quiet, config, checkpoint_every))

    def _build(self, training_env: TrainingEnv) -> None:
        config = self.config
        self.device = attach_env(self, training_env, uses_images=is_image_space(training_env.observation_space))
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

    @property
    def env_id(self) -> str | None:
        return self.training_env.env_id

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return observation_tensor(array, self.device)

    def _values(self, observations: np.ndarray) -> np.ndarray:
        """V(s) for a numpy batch, without gradients."""
        with torch.inference_mode():
            return self.value_function(self._tensor(observations)).cpu().numpy()

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

    def collect_episodes(self, monitor: TrainingMonitor) -> np.ndarray:
        """Fill `self.rollout` with one whole episode per env; returns the mask [T, m] of their steps."""
        rollout, training_env, n_envs = self.rollout, self.training_env, self.config.n_envs
        rollout.reset()
        observations = self._fresh_episodes()
        mask = np.zeros((rollout.n_steps, n_envs), dtype=bool)
        running = np.ones(n_envs, dtype=bool)  # the env's first episode has not ended yet
        # V(s_t) is filled in after the episodes, in one batched call: the value net does not change meanwhile.
        values_later = np.zeros(n_envs, dtype=np.float32)
        with torch.inference_mode():
            while running.any() and not rollout.full:
                distribution = self.policy(self._tensor(observations))
                actions = distribution.sample()
                actions_array = actions.cpu().numpy()
                step, finished_returns, finished_lengths = training_env.step(env_actions(actions_array, self.action_space))
                mask[rollout.position] = running
                rollout.add(observations, actions_array, distribution.log_prob(actions).cpu().numpy(), values_later, step)
                running &= ~step.done
                self.steps += n_envs
                monitor.episodes(self.steps, finished_returns, finished_lengths)
                observations = step.observations
        rows = rollout.position
        if self.value_function is not None:
            flat = rollout.observations[:rows].reshape(rows * n_envs, *rollout.observations.shape[2:])
            rollout.values[:rows] = self._values(flat).reshape(rows, n_envs)
        rollout.finish(observations, None if self.value_function is None else self._values, stopped_early=True)
        return mask[:rows]

    def episode_batch(self, mask: np.ndarray) -> EpisodeBatch:
        """Returns, baselines and the weights Psi of the collected episodes (see the module docstring)."""
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

    def learn(self, total_steps: int) -> "REINFORCE":
        """Train until the env steps of all learn() calls so far add up to `total_steps` more;
        updates are whole batches of episodes, so it stops at the first batch boundary past that
        (and always runs at least one update)."""
        require_int("total_steps", total_steps, 1)
        self.step_target += total_steps
        monitor = TrainingMonitor.of(self, max(self.step_target - self.steps, 1), self.steps)
        while True:
            mask = self.collect_episodes(monitor)
            self.update(self.episode_batch(mask), monitor)
            monitor.step(self.steps)
            if self.steps >= self.step_target:
                break
        monitor.close(self.steps)
        if self.run_dir is not None:
            self.save(self.run_dir / "checkpoints" / "final")
        return self

    def episode_log_probs(self, batch: EpisodeBatch) -> torch.Tensor:
        """log pi_theta(a_t|s_t) laid out [T, m] (zero on padding), differentiable in theta."""
        log_probs = self.policy(batch.observations).log_prob(batch.actions)
        return torch.zeros(batch.mask.shape, dtype=log_probs.dtype, device=self.device).masked_scatter(batch.mask, log_probs)

    def update(self, batch: EpisodeBatch, monitor: TrainingMonitor) -> None:
        """The policy step(s), then the value regression."""
        self.update_policy(batch, monitor)
        if self.value_function is not None:
            for _ in range(self.config.value_gradient_steps):
                critic_loss = value_loss(self.value_function(batch.observations), batch.returns)
                gradient_step(self.value_optimizer, critic_loss, self.config.max_grad_norm)
            monitor.record("train/value_loss", critic_loss.item())
        # Env steps trained on / env steps taken: the rest is envs waiting for the longest episode.
        monitor.record("train/used_step_fraction", batch.returns.shape[0] / batch.mask.numel())

    def update_policy(self, batch: EpisodeBatch, monitor: TrainingMonitor) -> None:
        """One gradient step on L(theta) = -(1/m) sum_i sum_t log pi_theta(a_t|s_t) Psi_t."""
        policy_loss = reinforce_loss(self.episode_log_probs(batch), batch.weights, batch.mask)
        self.check_finite(policy_loss)
        gradient_step(self.policy_optimizer, policy_loss, self.config.max_grad_norm)
        monitor.record("train/policy_loss", policy_loss.item())

    @staticmethod
    def check_finite(loss: torch.Tensor, advice: str = "lower learning_rate or set max_grad_norm") -> None:
        if not torch.isfinite(loss):
            raise NonFiniteError(f"the policy loss is {loss.item()}: the policy has diverged; {advice}")

    # -- saving -------------------------------------------------------------------------------

    def _networks(self) -> tuple[dict[str, torch.nn.Module], dict[str, torch.optim.Optimizer]]:
        modules, optimizers = {"policy": self.policy}, {"policy_optimizer": self.policy_optimizer}
        if self.value_function is not None:
            modules["value"], optimizers["value_optimizer"] = self.value_function, self.value_optimizer
        return modules, optimizers

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint directory that `rlfoundry.load` reads back exactly."""
        modules, optimizers = self._networks()
        counters = {"steps": self.steps, "step_target": self.step_target}
        return save_model(self, path, counters, modules=modules, optimizers=optimizers)

    @classmethod
    def load(cls, path: str | Path, env: EnvSource | None = None, **options: Any):
        """Load a checkpoint of this algorithm; training resumes exactly where it stopped when the
        env state could be saved (classic-control envs), else from freshly seeded envs."""
        model, checkpoint, training_env = load_model(cls, path, env, options)
        model._build(training_env)
        model.steps, model.step_target = checkpoint.counters["steps"], checkpoint.counters["step_target"]
        restore_torch(checkpoint, *model._networks())
        return model
