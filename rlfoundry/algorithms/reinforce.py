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
env steps but are not trained on (nor logged: the episodes that end meanwhile are the short
ones). An episode still running after max_episode_steps is cut there (and logged with its
return so far).
Where an episode is truncated (a time limit, or that cut), G_t is completed with
gamma^k V_phi(final observation) when there is a learned value, and stops there otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from rlfoundry.envs.vector import EnvSource
from rlfoundry.losses.reinforce import reinforce_loss
from rlfoundry.networks.torsos import ACTIVATIONS
from rlfoundry.run.config import ConfigError, require_choice, require_int, require_range
from rlfoundry.run.episodes import EpisodeBatch, EpisodeCollector, restore_episodic, save_episodic
from rlfoundry.run.lifecycle import initialise, load_model
from rlfoundry.run.monitor import TrainingCallback, TrainingMonitor
from rlfoundry.run.on_policy import finish_learning
from rlfoundry.run.training_env import TrainingEnv
from rlfoundry.run.evaluation import PeriodicEvaluation


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

    # Fields that shape or give meaning to saved state: a loaded model keeps the checkpoint's (run/config.py).
    fixed_by_checkpoint: ClassVar[frozenset[str]] = frozenset(
        {"seed", "n_envs", "baseline", "hidden_sizes", "activation", "orthogonal_init", "log_std_init"}
    )

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


class REINFORCE:
    """Monte-Carlo policy gradient over whole episodes, with an optional baseline."""

    name = "reinforce"
    Config = ReinforceConfig
    # Set by initialise or load_model (run/lifecycle.py).
    config: ReinforceConfig

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

    def learn(self, total_steps: int, callback: TrainingCallback | None = None) -> "REINFORCE":
        """Train until the env steps of all learn() calls so far add up to `total_steps` more;
        updates are whole batches of episodes, so it stops at the first batch boundary past that
        (and always runs at least one update).
        callback(status) runs at each point between updates (rlfoundry.TrainingStatus); False ends it."""
        monitor = self.collector.start(self, total_steps, callback)
        for batch in self.collector.batches(monitor):
            self.update_policy(batch, monitor)
            self.collector.fit_value(batch, monitor)
        finish_learning(self, monitor)
        return self

    def update_policy(self, batch: EpisodeBatch, monitor: TrainingMonitor) -> None:
        """One gradient step on L(theta) = -(1/m) sum_i sum_t log pi_theta(a_t|s_t) Psi_t."""
        policy_loss = reinforce_loss(self.collector.log_probs(batch), batch.weights, batch.mask)
        self.collector.policy_step(policy_loss, "lower learning_rate or set max_grad_norm")
        monitor.record("train/policy_loss", policy_loss.item())

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint directory that `rlfoundry.load` reads back exactly."""
        return save_episodic(self, path)

    @classmethod
    def load(cls, path: str | Path, env: EnvSource | None = None, **options: Any) -> "REINFORCE":
        """Load a checkpoint of this algorithm; training resumes exactly where it stopped when the
        env state could be saved (classic-control envs), else from freshly seeded envs."""
        model, checkpoint, training_env = load_model(cls, path, env, options)
        model._build(training_env)
        restore_episodic(model, checkpoint)
        return model
