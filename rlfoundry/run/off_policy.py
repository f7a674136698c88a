"""What DDPG, TD3 and SAC share, so that their own files hold their targets and their update.

- `OffPolicyConfig`: the fields the three have in common (each algorithm's Config extends it).
- `ReplayCollector`: the collect-then-update schedule. It acts in the training env, stores every
  step in the replay buffer and yields the minibatches that fall due (`train_freq`,
  `gradient_steps`, `learning_starts`).
- Actions are unit actions in [-1, 1]^A everywhere inside (actors, exploration noise, replay
  buffer); `ActionScale` maps them to the env's bounds right before `env.step`, the one place
  where that happens.
- Update helpers: `critic_step`, `deterministic_actor_step`, `adam`, `descend`,
  `frozen_copy`, `gaussian_exploration`, `record_finite`.
- What every algorithm file calls around its own learn loop and update: `open_collector`
  (construction), `learning` (the loop's frame: monitor, final report and checkpoint),
  `save_off_policy` / `load_off_policy` / `split_parts` (checkpoints).
- `DeterministicActorCritic` and `deterministic_actions`: the networks and the noisy behaviour
  policy that DDPG and TD3 both build and call (TD3 is not DDPG with overrides).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple, TypeVar, Union

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from rlfoundry.data.replay import ReplayBatch, ReplayBuffer
from rlfoundry.envs.spaces import SpaceError, describe, observation_batch, require_box_actions
from rlfoundry.envs.vector import EnvSource
from rlfoundry.losses.continuous import critic_loss, deterministic_actor_loss
from rlfoundry.networks.continuous import ActionScale, DeterministicActor, QEnsemble
from rlfoundry.networks.policies import is_image_space
from rlfoundry.networks.torsos import ACTIVATIONS
from rlfoundry.run.checkpoint import Checkpoint, CheckpointCorruptError, NonFiniteError
from rlfoundry.run.config import ConfigError, require_choice, require_int, require_range
from rlfoundry.run.backend import BACKENDS, compiled_backend
from rlfoundry.run.device import DEFAULT_TORCH_THREADS, configure_threads, denormals_flushed, resolve_device
from rlfoundry.run.evaluation import PeriodicEvaluation
from rlfoundry.run.lifecycle import initialise, load_model, restore_torch_generator, save_model
from rlfoundry.run.monitor import TrainingCallback, TrainingMonitor
from rlfoundry.run.optimizer_step import clear_gradients, step_optimizer
from rlfoundry.run.seeding import torch_generator
from rlfoundry.run.training_env import TrainingEnv

if TYPE_CHECKING:  # numba loads only when a model compiles its kernels
    from rlfoundry.networks.compiled_continuous import CompiledDeterministicActorCritic

UnitPolicy = Callable[[np.ndarray], np.ndarray]
"""Observations [N, O] (numpy) -> unit actions [N, A] in [-1, 1] (numpy float32)."""
Part = Union[nn.Module, torch.optim.Optimizer]


MATMUL_PRECISIONS = ("float32", "bfloat16")

# What every checkpoint with a replay buffer keeps (DQN's and OffPolicyConfig's fixed_by_checkpoint).
FIXED_WITH_REPLAY = frozenset({"seed", "n_envs", "buffer_size"})


@dataclass(frozen=True)
class OffPolicyConfig:
    """Fields every off-policy actor-critic here has; DDPG's, TD3's and SAC's Config extend it."""

    seed: int = 0
    """Seeds python, numpy, torch and the environments."""
    n_envs: int = 1
    """Parallel environments, acted in by one batched forward pass."""
    buffer_size: int = 1_000_000
    """Transitions the replay buffer keeps (rounded up to a multiple of n_envs)."""
    check_replay_memory: bool = True
    """Refuse a replay buffer that would not fit in the memory available (rlfoundry.run.memory); False skips the check."""
    learning_starts: int = 100
    """Env steps (over all envs) of uniformly random actions before the first gradient step."""
    batch_size: int = 256
    """Transitions per minibatch."""
    gamma: float = 0.99
    """Discount factor, in [0, 1]."""
    tau: float = 0.005
    """Polyak weight of the target networks, theta' <- tau theta + (1 - tau) theta', in (0, 1]."""
    train_freq: int = 1
    """Env steps (over all envs) between bursts of gradient steps."""
    gradient_steps: int = 1
    """Gradient steps per burst, i.e. per train_freq env steps."""
    actor_learning_rate: float = 3e-4
    """Adam's step size for the actor."""
    critic_learning_rate: float = 3e-4
    """Adam's step size for the critics."""
    actor_hidden_sizes: tuple[int, ...] = (256, 256)
    """Widths of the actor MLP's hidden layers."""
    critic_hidden_sizes: tuple[int, ...] = (256, 256)
    """Widths of each critic MLP's hidden layers."""
    activation: str = "relu"
    """Activation after each hidden layer: relu, tanh, elu or gelu."""
    device: str = "auto"
    """'auto' (the CPU: these MLPs are faster there), 'cpu' or 'cuda'."""
    torch_threads: int | None = None
    """torch intra-op threads; with the compiled backend, the compiled update's threads (2 or more: the
    twin critics' passes run on two threads at once), torch keeping one. None uses rlfoundry's measured default (1)."""
    backend: Literal["auto", "compiled", "torch"] = "auto"
    """'compiled': numba-compiled updates for MLPs with relu or tanh on the CPU (SAC: with update_order 'simultaneous'); 'torch': PyTorch only; 'auto': compiled where it applies (rlfoundry.run.backend)."""
    matmul_precision: Literal["float32", "bfloat16"] = "float32"
    """'bfloat16': the compiled update's large matrix products round their operands to bfloat16 and sum in float32, about twice as fast on a CPU with AVX-512 BF16 (rlfoundry.networks.bfloat16); acting stays float32."""

    # Fields that shape or give meaning to saved state: a loaded model keeps the checkpoint's (run/config.py).
    fixed_by_checkpoint: ClassVar[frozenset[str]] = FIXED_WITH_REPLAY | {
        "actor_hidden_sizes", "critic_hidden_sizes", "activation",
    }

    def __post_init__(self) -> None:
        require_int("seed", self.seed, 0)
        require_int("n_envs", self.n_envs, 1)
        require_int("buffer_size", self.buffer_size, 1)
        require_choice("check_replay_memory", self.check_replay_memory, (True, False))
        require_int("learning_starts", self.learning_starts, 0)
        require_int("batch_size", self.batch_size, 1)
        require_range("gamma", self.gamma, 0.0, 1.0)
        require_range("tau", self.tau, 0.0, 1.0, low_inclusive=False)
        require_int("train_freq", self.train_freq, 1)
        require_int("gradient_steps", self.gradient_steps, 1)
        require_range("actor_learning_rate", self.actor_learning_rate, 0.0, low_inclusive=False)
        require_range("critic_learning_rate", self.critic_learning_rate, 0.0, low_inclusive=False)
        for name in ("actor_hidden_sizes", "critic_hidden_sizes"):
            require_widths(self, name)
        require_choice("activation", self.activation, ACTIVATIONS)
        require_choice("device", self.device.split(":")[0], ("auto", "cpu", "cuda"))
        if self.torch_threads is not None:
            require_int("torch_threads", self.torch_threads, 1)
        require_choice("backend", self.backend, BACKENDS)
        require_choice("matmul_precision", self.matmul_precision, MATMUL_PRECISIONS)


def require_widths(config: Any, name: str) -> None:
    """Check a tuple-of-widths field (turning the lists of YAML and JSON into a tuple first)."""
    widths = getattr(config, name)
    if isinstance(widths, list):
        widths = tuple(widths)
        object.__setattr__(config, name, widths)
    if not isinstance(widths, tuple) or not all(
        isinstance(width, int) and not isinstance(width, bool) and width >= 1 for width in widths
    ):
        raise ConfigError(f"{name} must be a tuple of integers >= 1, e.g. (256, 256), got {widths!r}")


def crossings(before: int, after: int, interval: int) -> int:
    """How many multiples of `interval` lie in (before, after]: the events due between two step counts."""
    return after // interval - before // interval


# -- collecting ---------------------------------------------------------------------------------


class ReplayCollector:
    """The env, the replay buffer, the numpy generator and the step counters of a run.

    steps:   env steps taken, over all envs (absolute: a loaded model continues the count)
    updates: gradient steps taken; the minibatch being yielded is update number `updates`
    """

    def __init__(self, training_env: TrainingEnv, config: OffPolicyConfig, algorithm: str, rng: np.random.Generator):
        self.training_env = training_env
        self.config = config
        self.rng = rng
        observation_space = training_env.observation_space
        if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
            # Flattening is the fix for a small array, not for frames: a 84x84x3 image would make a
            # 21,168-input first layer.
            remedy = (
                "its networks have no image encoder; PPO and A2C read [C, H, W] uint8 frames with the Nature CNN "
                "(Box actions too)"
                if is_image_space(observation_space)
                else "wrap it with gymnasium.wrappers.FlattenObservation"
            )
            raise SpaceError(
                f"{algorithm} takes vector observations (a 1-D Box), but this env observes {describe(observation_space)}: {remedy}"
            )
        self.observation_size = int(observation_space.shape[0])
        self.scale = ActionScale(*require_box_actions(training_env.action_space, algorithm, "DQN or PPO"))
        self.action_size = len(self.scale.low)
        self.device = resolve_device(config.device)
        # SAC's action and target draws, TD3's smoothing noise (exploration noise is numpy's, `rng`).
        self.torch_rng = torch_generator(config.seed, self.device)
        unit_box = spaces.Box(-1.0, 1.0, (self.action_size,), np.float32)
        self.replay = ReplayBuffer(
            config.buffer_size, observation_space, unit_box, config.n_envs,
            gamma=config.gamma, check_memory=config.check_replay_memory,
        )
        self.steps = 0
        self.updates = 0

    @property
    def env_id(self) -> str | None:
        return self.training_env.env_id

    def tensor(self, observations: np.ndarray) -> torch.Tensor:
        """Observations as a float32 tensor on the device (MuJoCo observes float64)."""
        return torch.as_tensor(observations, dtype=torch.float32, device=self.device)

    def actions_of(self, actor: Callable[[torch.Tensor], torch.Tensor], observations: np.ndarray) -> np.ndarray:
        """actor(observations) without gradients, as numpy unit actions [N, A]."""
        with torch.inference_mode():
            return actor(self.tensor(observations)).cpu().numpy()

    def batches(self, total_steps: int, explore: UnitPolicy, monitor: TrainingMonitor,
                tensors: bool = True) -> Iterator[ReplayBatch]:
        """Act for `total_steps` more env steps (rounded up to a multiple of n_envs) and yield,
        after each step, the minibatches due: `gradient_steps` per `train_freq` env steps once
        more than `learning_starts` steps were taken and the buffer holds more than that many
        transitions (it refills after a load without its buffer). Actions are uniformly random
        before `learning_starts`, then `explore(observations)`. The minibatches hold tensors on
        the device, observations as float32; tensors=False: the buffer's numpy arrays as they
        are (for the compiled updates, which read numpy)."""
        config, training_env = self.config, self.training_env
        if not training_env.resumed_exactly:
            # Fresh episodes begin: the stored ones must not run on into them.
            self.replay.restart_episodes()
        observations = training_env.start()
        for _ in range(math.ceil(total_steps / config.n_envs)):
            if self.steps < config.learning_starts:
                actions = self.rng.uniform(-1.0, 1.0, (config.n_envs, self.action_size)).astype(np.float32)
            else:
                actions = explore(observations)
            step, finished_returns, finished_lengths = training_env.step(self.scale.to_env(actions))
            self.replay.add(observations, actions, step.rewards, step.next_observations, step.terminated, step.truncated)
            observations = step.observations
            before, self.steps = self.steps, self.steps + config.n_envs
            bursts = crossings(before, self.steps, config.train_freq)
            if bursts and self.steps > config.learning_starts and self.replay.warmed_up(config.learning_starts):
                count = bursts * config.gradient_steps
                # One draw for the whole burst: a single fancy-index per array instead of `count`.
                batch = self.replay.sample(config.batch_size * count, self.rng)
                if tensors:
                    batch = batch.to_tensors(self.device)
                    # The buffer keeps integer observations as they come; the networks take float32, as in acting.
                    batch = batch._replace(
                        observations=batch.observations.float(), next_observations=batch.next_observations.float()
                    )
                for minibatch in batch.split(count):
                    self.updates += 1
                    yield minibatch
            monitor.episodes(self.steps, finished_returns, finished_lengths)
            monitor.step(self.steps)
            if monitor.stop_requested:
                return

    def predict(self, observations: Any, policy: UnitPolicy) -> np.ndarray:
        """Env actions for observations [B, O] (or one unbatched observation [O])."""
        batch, single = observation_batch(observations, self.training_env.observation_space)
        actions = self.scale.to_env(policy(batch))
        return actions[0] if single else actions


def gaussian_exploration(unit_actions: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """a = clip(mu(s) + epsilon, -1, 1),  epsilon ~ N(0, std^2 I): DDPG's and TD3's behaviour policy."""
    noise = rng.normal(0.0, std, unit_actions.shape)
    return np.clip(unit_actions + noise, -1.0, 1.0).astype(np.float32)


# -- updating -----------------------------------------------------------------------------------


def adam(*groups: tuple[nn.Module, float]) -> torch.optim.Adam:
    """One fused Adam (a single kernel for all tensors) over (module, learning rate) groups.

    A step moves only the parameters that received a gradient since they were last cleared, so one
    optimiser serves updates that step the critics and the actor at different times; Adam's
    moments and step counts stay per parameter, exactly as with one optimiser per network."""
    return torch.optim.Adam([{"params": list(module.parameters()), "lr": rate} for module, rate in groups], fused=True)


def descend(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """Clear the gradients, backpropagate `loss` and take one optimiser step."""
    clear_gradients(optimizer)
    loss.backward()
    step_optimizer(optimizer)


def compiled_update(config: OffPolicyConfig, device: torch.device, uncovered: str | None = None) -> int:
    """The threads of the compiled update (networks/compiled_continuous.py) where the model builds one
    (run.backend.compiled_backend, with the activation among `uncovered`'s reasons); 0 where it
    keeps PyTorch's. Each thread's BLAS runs single-threaded. matmul_precision='bfloat16' needs the
    compiled update and a CPU and torch build that give it bfloat16 products: else a ConfigError."""
    if uncovered is None and config.activation not in ("relu", "tanh"):
        uncovered = f"activation={config.activation!r} (the kernels cover relu and tanh)"
    if config.matmul_precision == "bfloat16":
        require_bfloat16_products(config.backend, device, uncovered)
    if not compiled_backend(config.backend, device, uncovered):
        return 0
    # torch then only draws noise: a second thread of its own would wait for the kernels' core.
    configure_threads(1)
    return min(2, DEFAULT_TORCH_THREADS if config.torch_threads is None else config.torch_threads)


def require_bfloat16_products(backend: str, device: torch.device, uncovered: str | None) -> None:
    """ConfigError unless the compiled update can run with bfloat16 products here."""
    obstacle = (
        "backend='torch'" if backend == "torch"
        else f"the network is on {device}" if device.type != "cpu"
        else uncovered
    )
    if obstacle is None:
        from rlfoundry.networks.bfloat16 import enable

        obstacle = enable()
    if obstacle is not None:
        raise ConfigError(
            f"matmul_precision='bfloat16' needs the compiled update on a CPU with AVX-512 BF16, but here {obstacle}: "
            "use matmul_precision='float32'"
        )


def critic_step(
    critics: QEnsemble, optimizer: torch.optim.Optimizer, batch: ReplayBatch, targets: torch.Tensor
) -> torch.Tensor:
    """One gradient step of every critic towards the targets y: minimise sum_k mean_i (Q_k(s_i, a_i) - y_i)^2."""
    loss = critic_loss(critics(batch.observations, batch.actions), targets)
    descend(optimizer, loss)
    return loss.detach()


def deterministic_actor_step(
    actor: DeterministicActor, critics: QEnsemble, optimizer: torch.optim.Optimizer, observations: torch.Tensor
) -> torch.Tensor:
    """One gradient step of the actor up the first critic, -mean_i Q_1(s_i, mu(s_i)); the critic's
    weights are used frozen, so no gradient is computed for them."""
    loss = deterministic_actor_loss(critics(observations, actor(observations), count=1, frozen=True))
    descend(optimizer, loss)
    return loss.detach()


ModuleType = TypeVar("ModuleType", bound=nn.Module)


def frozen_copy(module: ModuleType) -> ModuleType:
    """A target network: a copy of `module` that takes no gradients (moved by Polyak averaging)."""
    return copy.deepcopy(module).requires_grad_(False)


def record_finite(monitor: TrainingMonitor, metrics: Mapping[str, torch.Tensor | float], algorithm: str, step: int) -> None:
    """Report each metric; NonFiniteError if one is NaN or infinite (training diverged)."""
    for name, value in metrics.items():
        number = float(value)
        if not math.isfinite(number):
            raise NonFiniteError(
                f"{algorithm} diverged at env step {step}: {name} is {number}; lower the learning rates or check "
                "the env's rewards and observations for NaN or huge values (no checkpoint is written from it)"
            )
        monitor.record(name, number)


# -- the algorithm plumbing ---------------------------------------------------------------------


# -- construction, the learn loop's frame, checkpoints: called by each algorithm ---------------------


def open_collector(
    model: Any,
    env: EnvSource | None,
    run_dir: str | Path | None,
    quiet: bool,
    config: dict,
    checkpoint_every: int | None,
    evaluation: PeriodicEvaluation | None,
) -> ReplayCollector:
    """Set up a new model (validated config, RNGs, run directory, env; torch threads, periodic
    checkpoints and evaluations) and return the ReplayCollector it trains with."""
    model.training_env = initialise(model, env, run_dir, quiet, config, checkpoint_every, evaluation)
    configure_threads(model.config.torch_threads)
    return ReplayCollector(model.training_env, model.config, type(model).__name__, model.rng)


def note_warm_up(monitor: TrainingMonitor, replay: ReplayBuffer, steps: int, total_steps: int, learning_starts: int) -> None:
    """Say so when a learn() call's gradient steps wait: on a buffer left out of a checkpoint,
    which refills `learning_starts` transitions first, or when the whole call falls before
    `learning_starts` (a preset's 25,000 against --steps 300, say)."""
    if replay.warmed_up(learning_starts):
        return
    needed = learning_starts + 1 - min(steps, len(replay))
    too_few = f"; this call's {total_steps} steps are too few for any" if total_steps < needed else ""
    if steps >= learning_starts and steps > len(replay):  # fewer transitions than steps: the buffer was left out
        monitor.display.note(
            f"the replay buffer holds {len(replay)} transitions (the checkpoint was saved or loaded without it): "
            f"the gradient steps wait until it holds {learning_starts + 1}{too_few}"
        )
    elif too_few:
        monitor.display.note(f"learning_starts={learning_starts}: the gradient steps begin after env step {learning_starts}{too_few}")


@contextlib.contextmanager
def learning(model: Any, total_steps: int, callback: TrainingCallback | None = None) -> Iterator[TrainingMonitor]:
    """The frame of an off-policy learn loop: yields the monitor, with denormals flushed inside;
    afterwards the final report and, with a run directory, the final checkpoint."""
    require_int("total_steps", total_steps, 1)
    collector = model.collector
    monitor = TrainingMonitor.of(model, total_steps, collector.steps, callback)
    note_warm_up(monitor, collector.replay, collector.steps, total_steps, model.config.learning_starts)
    with denormals_flushed():
        yield monitor
    monitor.close(collector.steps)
    if model.run_dir is not None:
        model.save(model.run_dir / "checkpoints" / "final")


def split_parts(parts: dict[str, Part]) -> tuple[dict[str, nn.Module], dict[str, torch.optim.Optimizer]]:
    """(modules, optimisers) of a name -> part mapping."""
    optimizers = {name: part for name, part in parts.items() if isinstance(part, torch.optim.Optimizer)}
    return {name: part for name, part in parts.items() if isinstance(part, nn.Module)}, optimizers


def save_off_policy(model: Any, path: str | Path, parts: dict[str, Part], replay_buffer: bool = True) -> Path:
    """Write a checkpoint of `parts` (networks and optimisers by name), the replay buffer (unless
    replay_buffer=False), the counters, the RNGs and the env position, which `load_off_policy`
    reads back exactly."""
    modules, optimizers = split_parts(parts)
    collector = model.collector
    replay_json, replay_arrays = collector.replay.checkpoint_state("replay", transitions=replay_buffer)
    return save_model(
        model,
        path,
        counters={"steps": collector.steps, "updates": collector.updates},
        modules=modules,
        optimizers=optimizers,
        state={"replay": replay_json},
        arrays=replay_arrays,
        generator=collector.torch_rng,
    )


def restore_replay(replay: ReplayBuffer, checkpoint: Checkpoint, options: dict[str, Any]) -> None:
    """The checkpoint's replay buffer into `replay`, built from the checkpoint's config, unless the
    load options say replay_buffer=False (a policy to evaluate needs none: an Atari buffer is
    gigabytes); a buffer that does not fit that config (an edited manifest.json) is a
    CheckpointCorruptError."""
    if options.get("replay_buffer") is False:
        return
    try:
        replay.restore(checkpoint.state["replay"], checkpoint.arrays, "replay")
    except ValueError as error:
        raise CheckpointCorruptError(f"{error}: was the checkpoint's manifest.json edited?") from None


def load_off_policy(cls: type[Any], path: str | Path, env: EnvSource | None, options: dict) -> tuple[Any, ReplayCollector, Checkpoint]:
    """A model of `cls` from a checkpoint, without its networks yet, and the ReplayCollector it
    trains with (counters and replay buffer restored). The caller builds its networks and then
    restores them with `restore_torch(checkpoint, *split_parts(parts))`."""
    model, checkpoint, training_env = load_model(cls, path, env, options)
    model.training_env = training_env
    configure_threads(model.config.torch_threads)
    collector = ReplayCollector(model.training_env, model.config, cls.__name__, model.rng)
    collector.steps, collector.updates = checkpoint.counters["steps"], checkpoint.counters["updates"]
    restore_replay(collector.replay, checkpoint, options)
    restore_torch_generator(checkpoint, collector.torch_rng)
    return model, collector, checkpoint


# -- DDPG's and TD3's shared shape ----------------------------------------------------------------


@dataclass(frozen=True)
class DeterministicPolicyConfig(OffPolicyConfig):
    """OffPolicyConfig plus the exploration noise of a deterministic policy (DDPG, TD3)."""

    exploration_noise_std: float = 0.1
    """Standard deviation of the Gaussian noise added to mu(s) while collecting, in unit-action scale."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require_range("exploration_noise_std", self.exploration_noise_std, 0.0)


class DeterministicActorCritic(NamedTuple):
    """The networks of DDPG and TD3: actor mu, `n_critics` critics (a QEnsemble), target copies of
    both, and one Adam over the actor and the critics."""

    actor: DeterministicActor
    critics: QEnsemble
    target_actor: DeterministicActor
    target_critics: QEnsemble
    optimizer: torch.optim.Adam

    @classmethod
    def build(cls, collector: ReplayCollector, config: DeterministicPolicyConfig, n_critics: int) -> "DeterministicActorCritic":
        sizes = (collector.observation_size, collector.action_size)
        actor = DeterministicActor(*sizes, config.actor_hidden_sizes, config.activation).to(collector.device)
        critics = QEnsemble(*sizes, config.critic_hidden_sizes, n_critics, config.activation).to(collector.device)
        optimizer = adam((actor, config.actor_learning_rate), (critics, config.critic_learning_rate))
        return cls(actor, critics, frozen_copy(actor), frozen_copy(critics), optimizer)

    def parts(self) -> dict[str, Part]:
        """What a checkpoint holds, by name."""
        return self._asdict()

    def compiled(self, collector: ReplayCollector, config: DeterministicPolicyConfig) -> "CompiledDeterministicActorCritic | None":
        """The compiled update on these networks (networks/compiled_continuous.py) where it applies and
        the backend allows; None: PyTorch's (critic_step, deterministic_actor_step)."""
        threads = compiled_update(config, collector.device)
        if not threads:
            return None
        from rlfoundry.networks.compiled_continuous import CompiledDeterministicActorCritic

        return CompiledDeterministicActorCritic(
            self.actor, self.critics, self.target_actor, self.target_critics, self.optimizer, config.batch_size,
            collector.observation_size, config.activation, threads, config.matmul_precision == "bfloat16",
        )


def deterministic_actions(
    actor: DeterministicActor,
    compiled: "CompiledDeterministicActorCritic | None",
    collector: ReplayCollector,
    observations: np.ndarray,
    deterministic: bool,
    noise_std: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """mu(s), or clip(mu(s) + N(0, noise_std^2), -1, 1) with the noise drawn from `rng` (training's
    collector.rng, or predict's prediction_generator()): unit actions [N, A]. mu is the compiled
    update's act on the actor's parameters where the model has one, else the DeterministicActor."""
    if compiled is None:
        actions = collector.actions_of(actor, observations)
    else:
        actions = compiled.act(observations)
    if deterministic:
        return actions
    return gaussian_exploration(actions, noise_std, rng)
