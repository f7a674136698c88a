"""What A2C, PPO and TRPO share and call, so that their own files hold their learn loop and update.

`ActorCriticConfig` holds the network and runtime fields the three have in common (each
algorithm's Config extends it with its own fields and defaults). `RolloutCollector` holds the
experience side: the vector env, the actor-critic network, the rollout buffer, the optional
observation and reward normalisation (run/normalization.py) and the step counter; it collects
rollouts and predicts. `start_learning`, `finish_learning`, `save_on_policy`
and `restore_on_policy` frame a learn loop and write and read checkpoints. Each algorithm builds
its optimiser and writes its own `learn()` and update.

A learn(total_steps) call runs ceil(total_steps / (n_steps * n_envs)) whole rollouts, so it ends
on a rollout boundary: the checkpoint it writes needs no half-filled buffer, and training N steps,
saving, loading and training N more equals training 2N straight whenever N is a multiple of the
rollout size (and schedules use `schedule_steps`, see below).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from gymnasium import spaces

from rlfoundry.data.rollout import RolloutBatch, RolloutBuffer
from rlfoundry.envs.vector import VectorStep
from rlfoundry.networks.manual_actor_critic import ManualActorCritic
from rlfoundry.networks.policies import ActorCritic, Distribution, env_actions, is_image_space, observation_tensor, predict_actions
from rlfoundry.networks.torsos import ACTIVATIONS
from rlfoundry.returns import generalized_advantages
from rlfoundry.run.backend import BACKENDS, compiled_backend, mlp_obstacle
from rlfoundry.run.checkpoint import Checkpoint, NonFiniteError
from rlfoundry.run.config import ConfigError, require_choice, require_int, require_range
from rlfoundry.run.device import configure_threads, resolve_device
from rlfoundry.run.lifecycle import restore_torch, restore_torch_generator, save_model
from rlfoundry.run.monitor import TrainingCallback, TrainingMonitor
from rlfoundry.run.normalization import Normalization
from rlfoundry.run.optimizer_step import clear_gradients, clip_gradient_norm, step_optimizer
from rlfoundry.run.schedules import LinearSchedule
from rlfoundry.run.seeding import torch_generator
from rlfoundry.run.training_env import TrainingEnv

if TYPE_CHECKING:  # numba loads only when a model compiles its kernels
    from rlfoundry.networks.compiled_actor_critic import CompiledActorCritic
    from rlfoundry.networks.compiled_mlp import CompiledAdam

Schedule = Literal["constant", "linear"]
NORMALIZATION = "normalization"  # the checkpoint arrays' prefix


@dataclass(frozen=True)
class ActorCriticConfig:
    """Fields every actor-critic algorithm here has; each algorithm's Config extends it."""

    seed: int = 0
    """Seeds python, numpy, torch and the environments."""
    n_envs: int = 1
    """Parallel environments stepped together (a rollout holds n_steps * n_envs steps)."""
    n_steps: int = 2048
    """Steps per env in one rollout."""
    gamma: float = 0.99
    """Discount factor, in [0, 1]."""
    gae_lambda: float = 0.95
    """GAE's lambda in [0, 1]: 0 is the one-step TD error, 1 the Monte-Carlo return to the rollout's end."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Widths of the hidden layers of the policy and value MLPs (ignored by image torsos)."""
    activation: str = "tanh"
    """Activation after each hidden layer: tanh, relu, elu or gelu."""
    shared_torso: bool = False
    """One torso for the policy and the value head (True) or two separate networks (False)."""
    orthogonal_init: bool = True
    """Orthogonal weights (gain sqrt 2 hidden, 0.01 policy output, 1 value output) instead of PyTorch's default."""
    log_std_init: float = 0.0
    """Initial log standard deviation of Gaussian policies (Box actions)."""
    normalize_observations: bool = False
    """Feed the networks running-mean/std normalised observations, clipped to +-10 (float Box observations; run/normalization.py)."""
    normalize_rewards: bool = False
    """Train on rewards divided by the running std of the discounted return, clipped to +-10; reported returns stay raw."""
    learning_rate_schedule: Schedule = "constant"
    """'linear': the learning rate falls linearly to 0 at schedule_steps."""
    schedule_steps: int | None = None
    """Env steps at which linear schedules reach 0; None: the end of the current learn() call (set it for exact resume)."""
    device: str = "auto"
    """'auto' (CPU for MLPs, CUDA for images when present), 'cpu' or 'cuda'."""
    torch_threads: int | None = None
    """torch intra-op threads; None uses rlfoundry's measured default (1). The compiled kernels run on one thread either way."""
    backend: Literal["auto", "compiled", "torch"] = "auto"
    """'compiled': numba-compiled acting and gradient steps for separate MLP torsos with ReLU or tanh on the CPU; 'torch': PyTorch only; 'auto': compiled where it applies (rlfoundry.run.backend)."""

    # Fields that shape or give meaning to saved state: a loaded model keeps the checkpoint's (run/config.py).
    fixed_by_checkpoint: ClassVar[frozenset[str]] = frozenset({
        "seed", "n_envs", "hidden_sizes", "activation", "shared_torso", "orthogonal_init", "log_std_init",
        "normalize_observations", "normalize_rewards",
    })

    def __post_init__(self) -> None:
        require_int("seed", self.seed, 0)
        require_int("n_envs", self.n_envs, 1)
        require_int("n_steps", self.n_steps, 1)
        require_range("gamma", self.gamma, 0.0, 1.0)
        require_range("gae_lambda", self.gae_lambda, 0.0, 1.0)
        if isinstance(self.hidden_sizes, list):  # YAML presets and JSON checkpoints give lists
            object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))
        if not isinstance(self.hidden_sizes, tuple) or not all(
            isinstance(width, int) and not isinstance(width, bool) and width >= 1 for width in self.hidden_sizes
        ):
            raise ConfigError(f"hidden_sizes must be a tuple of integers >= 1, got {self.hidden_sizes!r}")
        require_choice("activation", self.activation, ACTIVATIONS)
        require_choice("shared_torso", self.shared_torso, (True, False))
        require_choice("orthogonal_init", self.orthogonal_init, (True, False))
        require_range("log_std_init", self.log_std_init, -20.0, 5.0)
        require_choice("normalize_observations", self.normalize_observations, (True, False))
        require_choice("normalize_rewards", self.normalize_rewards, (True, False))
        require_choice("learning_rate_schedule", self.learning_rate_schedule, ("constant", "linear"))
        if self.schedule_steps is not None:
            require_int("schedule_steps", self.schedule_steps, 1)
        if self.torch_threads is not None:
            require_int("torch_threads", self.torch_threads, 1)
        require_choice("device", self.device.split(":")[0], ("auto", "cpu", "cuda"))
        require_choice("backend", self.backend, BACKENDS)

    @property
    def rollout_size(self) -> int:
        """Steps in one rollout: n_steps * n_envs."""
        return self.n_steps * self.n_envs


def adam(parameters, learning_rate: float, epsilon: float) -> torch.optim.Adam:
    """Adam with its fused implementation: one kernel for all parameters instead of a Python loop
    over them; it made a whole PPO gradient step of a 64x64 actor-critic on the CPU 2.3 times
    faster (benchmarks/RESULTS.md)."""
    return torch.optim.Adam(parameters, lr=learning_rate, eps=epsilon, fused=True)


def gradient_step(
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor | None,
    max_grad_norm: float | None,
    learning_rate: float | None = None,
    flat_gradient: torch.Tensor | None = None,
    compiled: "CompiledAdam | None" = None,
) -> None:
    """One optimiser step on `loss`: clear, backpropagate, clip the global gradient norm (unless
    max_grad_norm is None) and step, at `learning_rate` (every parameter group) when one is given.
    loss=None: the parameters' .grad already hold the gradient (ManualActorCritic.backward or the
    compiled kernels wrote it into the views of its flat_gradient, which clipping then measures and
    scales as one tensor); `compiled` (RolloutCollector.compiled_optimizer) then clips and steps."""
    if compiled is not None and loss is None:
        compiled.step(max_grad_norm, learning_rate)
        return
    groups = optimizer.param_groups
    if learning_rate is not None:
        for group in groups:
            group["lr"] = learning_rate
    if loss is not None:
        clear_gradients(optimizer)
        loss.backward()
    if max_grad_norm is not None:
        parameters = [parameter for group in groups for parameter in group["params"]]
        clip_gradient_norm(parameters, max_grad_norm, flat_gradient)
    step_optimizer(optimizer)


ManualBackward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], None]
"""backward(actions, log_prob_weights, value_weights, entropy_weight): ManualActorCritic.backward of one pass."""


def training_forward(
    collector: "RolloutCollector", observations: torch.Tensor
) -> tuple[Distribution, torch.Tensor, ManualBackward | None]:
    """(pi(.|s), V(s) [B], the pass's hand-written backward) for a gradient step's observations:
    through the collector's ManualActorCritic when it has one (no graph is recorded; the caller
    writes the loss's gradient with backward), else through the network with autograd (backward None)."""
    manual = collector.manual
    if manual is None:
        distribution, values = collector.network(observations)
        return distribution, values, None
    with torch.no_grad():
        forward = manual.forward(observations)
    return forward.distribution, forward.values, functools.partial(manual.backward, forward)


def require_finite(statistics: dict[str, float], algorithm: str, step: int) -> None:
    """NonFiniteError naming the first NaN or infinite training statistic: training diverged."""
    for name, value in statistics.items():
        if not math.isfinite(value):
            raise NonFiniteError(
                f"{algorithm} diverged at step {step}: {name} is {value}; lower the learning rate or check the "
                "env's rewards and observations (no checkpoint is written from a diverged model)"
            )


def scheduled(value: float, schedule: Schedule, step: int, horizon: int) -> float:
    """`value` at `step`: constant, or falling linearly from `value` at step 0 to 0 at `horizon`."""
    return value if schedule == "constant" else LinearSchedule(value, 0.0, horizon)(step)


class RolloutCollector:
    """What A2C, PPO and TRPO each hold to gather experience: the training env, the actor-critic
    network, the rollout buffer and the count of env steps taken. Each algorithm builds one and
    calls `collect`, `gae_batch` and `predict` from its own learn loop."""

    def __init__(self, training_env: TrainingEnv, config: ActorCriticConfig):
        configure_threads(config.torch_threads)
        self.config = config
        self.training_env = training_env
        self.observation_space = training_env.observation_space
        self.action_space = training_env.action_space
        self.device = resolve_device(config.device, uses_images=is_image_space(self.observation_space))
        # The actions' draws; predict(deterministic=False) samples with torch's global generator.
        self.torch_rng = torch_generator(config.seed, self.device)
        self.network = ActorCritic(
            self.observation_space,
            self.action_space,
            hidden_sizes=config.hidden_sizes,
            activation=config.activation,
            shared_torso=config.shared_torso,
            orthogonal=config.orthogonal_init,
            log_std_init=config.log_std_init,
        ).to(self.device)
        # Separate MLP torsos (the default) act and take gradient steps through hand-written passes,
        # without autograd or module calls (networks/manual_actor_critic.py); other networks keep
        # autograd (manual is None).
        self.manual = ManualActorCritic.of(self.network)
        # Where they apply (and backend allows), numba-compiled kernels act and take the gradient
        # steps on the same parameters (networks/compiled_actor_critic.py); else manual or autograd.
        self.compiled: CompiledActorCritic | None = None
        uncovered = None if self.manual is not None else self._uncovered_setting()
        if compiled_backend(config.backend, self.device, uncovered):
            from rlfoundry.networks.compiled_actor_critic import CompiledActorCritic

            assert self.manual is not None  # covered
            self.compiled = CompiledActorCritic(self.manual, config.n_envs)
        self.rollout = RolloutBuffer(config.n_steps, config.n_envs, self.observation_space, self.action_space)
        self.normalization = None
        if config.normalize_observations or config.normalize_rewards:
            self.normalization = Normalization(
                self.observation_space, config.n_envs, config.gamma, config.normalize_observations, config.normalize_rewards
            )
        self.steps = 0

    def _uncovered_setting(self) -> str:
        """The setting that keeps a network without written-out passes (manual None) from the kernels."""
        config = self.config
        if config.shared_torso:
            return "shared_torso=True (the kernels cover separate policy and value networks)"
        if not isinstance(self.action_space, (spaces.Discrete, spaces.Box)):
            return f"{type(self.action_space).__name__} actions (the kernels cover Discrete and Box actions)"
        return mlp_obstacle(is_image_space(self.observation_space), config.activation, config.hidden_sizes)

    def compiled_optimizer(self, optimizer: torch.optim.Optimizer) -> "CompiledAdam | None":
        """The compiled Adam step for the optimiser of the compiled networks; None where the
        networks are not compiled or the optimiser is not such an Adam (it then steps in torch)."""
        if self.compiled is None or self.manual is None:
            return None
        from rlfoundry.networks.compiled_mlp import CompiledAdam

        return None if CompiledAdam.obstacle(optimizer) else CompiledAdam(optimizer, self.manual.gradient)

    @property
    def env_id(self) -> str | None:
        return self.training_env.env_id

    @property
    def flat_gradient(self) -> torch.Tensor | None:
        """The flat tensor the written-out gradients are views of (gradient_step's flat_gradient);
        None for networks that keep autograd."""
        return None if self.manual is None else self.manual.gradient

    def distribution(self, observations: torch.Tensor) -> Distribution:
        """pi(.|s) for network inputs [B, *obs], without gradients."""
        with torch.no_grad():
            if self.manual is None:
                return self.network.distribution(observations)
            return self.manual.distribution(observations)

    def values(self, inputs: np.ndarray) -> np.ndarray:
        """V(s) for a numpy batch of network inputs (normalised observations when normalising),
        without gradients: the rollout's bootstrap values."""
        with torch.inference_mode():
            return self.network.value(observation_tensor(inputs, self.device)).cpu().numpy()

    def _start(self) -> np.ndarray:
        """The network inputs for the envs' current observations. A first reset moves the
        normalisation statistics; later rollouts continue from inputs the statistics have seen."""
        training_env, normalization = self.training_env, self.normalization
        resetting = training_env.observations is None
        observations = training_env.start()
        if normalization is None:
            return observations
        if resetting:
            normalization.returns[:] = 0.0
            return normalization.observe(observations)
        return normalization.observations(observations)

    def _normalised(self, step: VectorStep) -> VectorStep:
        """The step as the networks and the rollout see it (training: moves the statistics)."""
        normalization = self.normalization
        if normalization is None:
            return step
        return replace(
            step,
            observations=normalization.observe(step.observations),
            next_observations=normalization.observations(step.next_observations),
            rewards=normalization.rewards(step.rewards, step.done),
        )

    def collect(self, monitor: TrainingMonitor) -> None:
        """Act for n_steps steps in every env with the current policy and fill `self.rollout`,
        next_values included (truncated episodes bootstrap from their true final observation).
        With normalisation the rollout holds normalised observations and scaled rewards; the
        monitor sees the raw episode returns."""
        rollout, training_env = self.rollout, self.training_env
        rollout.reset()
        if self.compiled is not None:
            self.compiled.reattach()
        inputs = self._start()
        n_envs = self.config.n_envs
        with torch.inference_mode():
            for _ in range(self.config.n_steps):
                actions_array, log_probs = self._act(inputs)
                step, finished_returns, finished_lengths = training_env.step(env_actions(actions_array, self.action_space))
                step = self._normalised(step)
                rollout.add(inputs, actions_array, log_probs, None, step)
                self.steps += n_envs
                monitor.episodes(self.steps, finished_returns, finished_lengths)
                inputs = step.observations
        # V(s_t) of the whole rollout in one batched call: the critic does not change while acting.
        rollout.fill_values(self.values)
        rollout.finish(inputs, self.values)

    def _act(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(a_t ~ pi(.|s_t), log pi(a_t|s_t)) for the envs' network inputs, as numpy arrays."""
        if self.compiled is not None:
            return self.compiled.act(inputs, self.torch_rng)
        distribution = self.distribution(observation_tensor(inputs, self.device))
        actions = distribution.sample(self.torch_rng)
        return actions.cpu().numpy(), distribution.log_prob(actions).cpu().numpy()

    def gae_batch(self) -> RolloutBatch:
        """The finished rollout as a training batch with GAE advantages and returns A_t + V(s_t)."""
        rollout, config = self.rollout, self.config
        advantages, returns = generalized_advantages(
            rollout.rewards, rollout.values, rollout.next_values, rollout.terminated, rollout.truncated,
            config.gamma, config.gae_lambda,
        )
        return rollout.training_batch(advantages, returns, self.device)

    def predict(self, observations: Any, deterministic: bool = True) -> Any:
        """Actions for observations [B, *obs] (or one unbatched observation): the policy's mode
        when deterministic, else a sample. Box actions are clipped into the action space.
        Normalisation statistics are applied, not moved."""
        normalize = None if self.normalization is None else self.normalization.observations
        return predict_actions(
            self.network.distribution, observations, self.observation_space, self.action_space, self.device,
            deterministic, normalize,
        )


# -- the frame of a learn loop, and checkpoints: called by each algorithm ---------------------------


def start_learning(
    model: Any, total_steps: int, callback: TrainingCallback | None = None
) -> tuple[int, int, TrainingMonitor]:
    """For a learn(total_steps, callback) call: (iterations = whole rollouts covering total_steps,
    the step where linear schedules reach 0 = schedule_steps or the end of this call, the monitor)."""
    require_int("total_steps", total_steps, 1)
    config, steps = model.config, model.collector.steps
    iterations = math.ceil(total_steps / config.rollout_size)
    end = steps + iterations * config.rollout_size
    monitor = TrainingMonitor.of(model, end - steps, steps, callback, asked_steps=total_steps)
    return iterations, config.schedule_steps or end, monitor


def finish_learning(model: Any, monitor: TrainingMonitor) -> None:
    """Final report, and the final checkpoint when there is a run directory."""
    monitor.close(model.collector.steps)
    if model.run_dir is not None:
        model.save(model.run_dir / "checkpoints" / "final")


def save_on_policy(model: Any, path: str | Path) -> Path:
    """Checkpoint an actor-critic algorithm (network, optimiser, step count, normalisation
    statistics, RNGs, env position)."""
    normalization = model.collector.normalization
    return save_model(
        model,
        path,
        {"steps": model.collector.steps},
        modules={"network": model.network},
        optimizers={"optimizer": model.optimizer},
        arrays=None if normalization is None else normalization.checkpoint_arrays(NORMALIZATION),
        generator=model.collector.torch_rng,
    )


def restore_on_policy(model: Any, checkpoint: Checkpoint) -> None:
    """Put a checkpoint's network, optimiser, step count and normalisation statistics into a freshly built model."""
    model.collector.steps = checkpoint.counters["steps"]
    restore_torch(checkpoint, modules={"network": model.network}, optimizers={"optimizer": model.optimizer})
    restore_torch_generator(checkpoint, model.collector.torch_rng)
    if model.collector.normalization is not None:
        model.collector.normalization.restore(checkpoint.arrays, NORMALIZATION)
