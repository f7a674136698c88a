"""Deep Q-networks: DQN (Mnih et al., 2015) and Double DQN (van Hasselt et al., 2016); seed 003, section 5.

    L(theta) = mean (y - Q(s, a; theta))^2                                  (or the Huber loss)
    DQN:         y = r + gamma (1 - terminated) max_a' Q(s', a'; theta^-)
    Double DQN:  y = r + gamma (1 - terminated) Q(s', argmax_a' Q(s', a'; theta); theta^-)

A neural network replaces the Q table so that the state space may be large or continuous (Atari
frames, CartPole's four reals); the actions stay discrete, since the max over a' is taken by
enumerating them. theta^- is the target network: a copy of theta refreshed every
`target_update_interval` env steps (tau = 1, a hard copy; tau < 1, Polyak averaging
theta^- <- tau theta + (1 - tau) theta^-), so that the target does not chase every gradient step.

The loop: act epsilon-greedily in N envs at once and store each step in the replay buffer; every
`train_freq` env steps (after `learning_starts`), take `gradient_steps` gradient steps on uniformly
sampled minibatches. The target network only changes between these bursts, so a burst samples all
its minibatches at once and evaluates Q(s', .; theta^-) once per distinct sampled transition.

For MLPs with ReLU or tanh the gradient steps skip autograd: by default a burst is one call of
numba-compiled kernels (networks/compiled_q_network.py, to float32 rounding); backend="torch" runs
the written-out passes of networks/manual_mlp.py (bitwise autograd's). The CNN keeps autograd.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch

from rlfoundry.data.replay import STORAGES, ReplayBatch, ReplayBuffer, Storage
from rlfoundry.envs.spaces import observation_batch, require_discrete_actions
from rlfoundry.envs.vector import EnvSource
from rlfoundry.losses.continuous import polyak_update
from rlfoundry.losses.dqn import LOSSES, chosen_action_weights, double_dqn_targets, dqn_targets, q_value_loss_gradient
from rlfoundry.losses.dqn import td_error_loss, td_errors
from rlfoundry.networks.manual_mlp import ManualMLP, gradient_views
from rlfoundry.networks.policies import is_image_space
from rlfoundry.networks.q_networks import BlockedQValues, QNetwork
from rlfoundry.networks.torsos import ACTIVATIONS
from rlfoundry.run.backend import BACKENDS, compiled_backend, mlp_obstacle
from rlfoundry.run.checkpoint import NonFiniteError
from rlfoundry.run.config import require_choice, require_int, require_range
from rlfoundry.run.device import DEFAULT_TORCH_THREADS, configure_threads, denormals_flushed, resolve_device
from rlfoundry.run.lifecycle import initialise, load_model, restore_torch, save_model
from rlfoundry.run.monitor import TrainingCallback, TrainingMonitor
from rlfoundry.run.off_policy import FIXED_WITH_REPLAY, crossings, note_warm_up, require_widths, restore_replay
from rlfoundry.run.optimizer_step import clear_gradients, clip_gradient_norm, step_optimizer
from rlfoundry.run.schedules import LinearSchedule
from rlfoundry.run.seeding import prediction_generator
from rlfoundry.run.training_env import TrainingEnv
from rlfoundry.run.evaluation import PeriodicEvaluation

if TYPE_CHECKING:  # numba loads only when a model compiles its kernels
    from rlfoundry.networks.compiled_q_network import CompiledQNetwork

@dataclass(frozen=True)
class DQNConfig:
    """Hyperparameters of DQN; the defaults are Stable-Baselines3's (after the Nature DQN's Atari settings)."""

    seed: int = 0
    """Seeds python, numpy, torch and the environments."""
    n_envs: int = 1
    """Parallel environments, acted in by one batched forward pass."""
    learning_rate: float = 1e-4
    """Adam's step size."""
    buffer_size: int = 1_000_000
    """Transitions the replay buffer keeps (rounded up to a multiple of n_envs)."""
    check_replay_memory: bool = True
    """Refuse a replay buffer that would not fit in the memory available (rlfoundry.run.memory); False skips the check."""
    replay_storage: Literal["auto", "full", "shared", "frames"] = "auto"
    """How the buffer stores observations (rlfoundry.data.replay); 'auto': 'frames' for make_env's ALE stacks, 'shared' for other images, else 'full'."""
    learning_starts: int = 100
    """Env steps of uniformly random actions before the first gradient step."""
    batch_size: int = 32
    """Transitions per minibatch."""
    gamma: float = 0.99
    """Discount factor, in [0, 1]."""
    n_step: int = 1
    """Rewards summed per target (n-step returns); 1 is the seed's one-step target."""
    train_freq: int = 4
    """Env steps (over all envs) between bursts of gradient steps."""
    gradient_steps: int = 1
    """Gradient steps per burst, i.e. per train_freq env steps."""
    target_update_interval: int = 10_000
    """Env steps (over all envs) between target-network updates."""
    tau: float = 1.0
    """Target update theta^- <- tau theta + (1 - tau) theta^-, in (0, 1]; 1 is a hard copy."""
    double_q: bool = False
    """True: Double DQN, the online network picks argmax_a' and the target network values it."""
    loss: Literal["huber", "squared"] = "huber"
    """'huber' (Nature DQN's error clipping) or 'squared' (the seed's (y - Q)^2)."""
    max_grad_norm: float | None = 10.0
    """Clip the global gradient norm to this before each step; None: no clipping."""
    epsilon_start: float = 1.0
    """Exploration probability at step 0, in [0, 1]."""
    epsilon_end: float = 0.05
    """Exploration probability after epsilon_decay_steps, in [0, 1]."""
    epsilon_decay_steps: int = 100_000
    """Env steps (over all envs) of epsilon's linear decay; absolute, so resumed runs continue it."""
    clip_rewards: bool = False
    """Learn from sign(r) instead of r (the Atari convention); reported returns stay unclipped."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Widths of the MLP's hidden layers (unused for image observations: the Nature CNN)."""
    activation: str = "relu"
    """Activation of the MLP's hidden layers."""
    device: str = "auto"
    """'auto' (CPU for MLPs, CUDA for images when present), 'cpu' or 'cuda'."""
    torch_threads: int | None = None
    """torch intra-op threads; None uses rlfoundry's measured default (1). With the compiled backend, 2 splits each minibatch between two kernel threads (torch then keeps one)."""
    backend: Literal["auto", "compiled", "torch"] = "auto"
    """'compiled': numba-compiled gradient steps and greedy actions for MLPs with relu or tanh on the CPU; 'torch': PyTorch only; 'auto': compiled where it applies (rlfoundry.run.backend)."""

    # Fields that shape or give meaning to saved state: a loaded model keeps the checkpoint's (run/config.py).
    fixed_by_checkpoint: ClassVar[frozenset[str]] = FIXED_WITH_REPLAY | {
        "replay_storage", "n_step", "clip_rewards", "hidden_sizes", "activation",
    }

    def __post_init__(self) -> None:
        require_int("seed", self.seed, 0)
        require_int("n_envs", self.n_envs, 1)
        require_range("learning_rate", self.learning_rate, 0.0, low_inclusive=False)
        require_int("buffer_size", self.buffer_size, 1)
        require_choice("check_replay_memory", self.check_replay_memory, (True, False))
        require_choice("replay_storage", self.replay_storage, ("auto",) + STORAGES)
        require_int("learning_starts", self.learning_starts, 0)
        require_int("batch_size", self.batch_size, 1)
        require_range("gamma", self.gamma, 0.0, 1.0)
        require_int("n_step", self.n_step, 1)
        require_int("train_freq", self.train_freq, 1)
        require_int("gradient_steps", self.gradient_steps, 1)
        require_int("target_update_interval", self.target_update_interval, 1)
        require_range("tau", self.tau, 0.0, 1.0, low_inclusive=False)
        require_choice("double_q", self.double_q, (True, False))
        require_choice("loss", self.loss, LOSSES)
        if self.max_grad_norm is not None:
            require_range("max_grad_norm", self.max_grad_norm, 0.0, low_inclusive=False)
        require_range("epsilon_start", self.epsilon_start, 0.0, 1.0)
        require_range("epsilon_end", self.epsilon_end, 0.0, 1.0)
        require_int("epsilon_decay_steps", self.epsilon_decay_steps, 0)
        require_choice("clip_rewards", self.clip_rewards, (True, False))
        require_widths(self, "hidden_sizes")
        require_choice("activation", self.activation, ACTIVATIONS)
        require_choice("device", self.device.split(":")[0], ("auto", "cpu", "cuda"))
        if self.torch_threads is not None:
            require_int("torch_threads", self.torch_threads, 1)
        require_choice("backend", self.backend, BACKENDS)


class DQN:
    """DQN and, with double_q=True, Double DQN; see the module docstring."""

    name = "dqn"
    Config = DQNConfig
    # Set by initialise or load_model (run/lifecycle.py).
    config: DQNConfig
    rng: np.random.Generator
    run_dir: Path | None

    def __init__(self, env: EnvSource | None, *, run_dir: str | Path | None = None, quiet: bool = False,
                 checkpoint_every: int | None = None, evaluation: PeriodicEvaluation | None = None, **config: Any):
        self._build(initialise(self, env, run_dir, quiet, config, checkpoint_every, evaluation))

    def _build(self, training_env: TrainingEnv, saved_storage: Storage | None = None) -> None:
        config = self.config
        configure_threads(config.torch_threads)
        self.training_env = training_env
        self.observation_space = training_env.observation_space
        self.action_space = training_env.action_space
        self.n_actions = require_discrete_actions(
            self.action_space, type(self).__name__, "SAC or TD3 (continuous actions), or PPO"
        )
        uses_images = is_image_space(self.observation_space)
        self.device = resolve_device(config.device, uses_images=uses_images)
        self.q_network = QNetwork(self.observation_space, self.n_actions, config.hidden_sizes, config.activation).to(self.device)
        self.target_network = QNetwork(self.observation_space, self.n_actions, config.hidden_sizes, config.activation)
        self.target_network.to(self.device).load_state_dict(self.q_network.state_dict())
        self.target_network.requires_grad_(False)
        self.online_parameters = list(self.q_network.parameters())
        self.target_parameters = list(self.target_network.parameters())
        # None (autograd) for the CNN and for activations without a written-out derivative.
        self.manual_mlp = ManualMLP.of(self.q_network.torso, self.q_network.head)
        # Q(s', .; theta^-) over a whole burst, in blocks that stay in the cache.
        self.target_q_values = BlockedQValues(self.target_network)
        # The written-out gradients as views of one tensor: clipping measures and scales it in one operation.
        self.flat_gradient = None if self.manual_mlp is None else gradient_views(self.online_parameters)
        # fused: one kernel for the whole update instead of a handful per parameter tensor.
        self.optimizer = torch.optim.Adam(self.online_parameters, lr=config.learning_rate, fused=True)
        # Where they apply (and backend allows), numba-compiled kernels take the gradient steps and
        # the greedy actions on the same parameters (networks/compiled_q_network.py).
        self.compiled: CompiledQNetwork | None = None
        uncovered = None if self.manual_mlp is not None else mlp_obstacle(uses_images, config.activation, config.hidden_sizes)
        if compiled_backend(config.backend, self.device, uncovered):
            from rlfoundry.networks.compiled_q_network import CompiledQNetwork

            assert self.manual_mlp is not None  # covered
            threads = min(2, DEFAULT_TORCH_THREADS if config.torch_threads is None else config.torch_threads)
            # On two threads the target network's passes go through the kernels too, and torch keeps
            # one thread: its idle threads would spin on the core the kernels' second thread needs.
            target = self.target_q_values.manual if threads == 2 else None
            self.compiled = CompiledQNetwork(self.manual_mlp, config.batch_size, self.optimizer, self.flat_gradient, threads,
                                             target, self.target_q_values.block_rows)
            if target is not None:
                configure_threads(1)
                self.target_q_values.forward = self.compiled.target_values
        # A loaded buffer keeps its saved layout, whatever env a load passes; "auto" picks frame stacks
        # only where make_env stacked ALE frames, and stores other images (RGB channels, say) whole.
        storage = saved_storage or config.replay_storage
        if storage == "auto":
            storage = "frames" if training_env.stacks_atari_frames else "shared" if uses_images else "full"
        self.replay = ReplayBuffer(
            config.buffer_size, self.observation_space, self.action_space, config.n_envs,
            gamma=config.gamma, n_step=config.n_step, storage=storage, check_memory=config.check_replay_memory,
        )
        self.steps = 0
        self.gradient_steps_done = 0
        self.target_updates = 0

    @property
    def env_id(self) -> str | None:
        return self.training_env.env_id

    # -- acting -------------------------------------------------------------------------------

    def epsilon(self) -> float:
        """The exploration probability at the current step."""
        config = self.config
        return LinearSchedule(config.epsilon_start, config.epsilon_end, config.epsilon_decay_steps)(self.steps)

    def _greedy(self, observations: np.ndarray) -> np.ndarray:
        """argmax_a Q(s, a; theta) for a batch of observations [B, *obs] (lowest index on ties)."""
        if self.compiled is not None:
            return self.compiled.greedy(observations)
        with torch.no_grad():
            return self._q_values(torch.as_tensor(observations, device=self.device)).argmax(dim=1).cpu().numpy()

    def _q_values(self, observations: torch.Tensor) -> torch.Tensor:
        """Q(s, .; theta) [B, n_actions]; call under torch.no_grad()."""
        return self.q_network(observations) if self.manual_mlp is None else self.manual_mlp.forward(observations)[-1]

    def _epsilon_greedy(self, observations: np.ndarray, epsilon: float, rng: np.random.Generator) -> np.ndarray:
        """A uniformly random action with probability epsilon, else the greedy one, per observation."""
        count = len(observations)
        if count == 1:  # one env: scalar draws, the same numbers as arrays of one in a third of the time
            explore_one, random_action = rng.random() < epsilon, rng.integers(self.n_actions)
            return np.array([random_action]) if explore_one else self._greedy(observations)
        explore = rng.random(count) < epsilon
        random_actions = rng.integers(self.n_actions, size=count)
        if explore.all():  # no forward pass needed: the common case early on
            return random_actions
        return np.where(explore, random_actions, self._greedy(observations))

    def _behaviour(self, observations: np.ndarray) -> np.ndarray:
        """Epsilon-greedy actions for the N envs; uniformly random ones before learning_starts."""
        return self._epsilon_greedy(observations, 1.0 if self.steps < self.config.learning_starts else self.epsilon(), self.rng)

    def predict(self, observations: Any, deterministic: bool = True) -> Any:
        """Greedy actions for observations [B, *obs] (or one unbatched observation); epsilon-greedy ones
        when not deterministic (current epsilon; drawn from torch's global generator, not training's)."""
        batch, single = observation_batch(observations, self.observation_space)
        rng = None if deterministic else prediction_generator()  # drawn only when sampling
        actions = self._greedy(batch) if rng is None else self._epsilon_greedy(batch, self.epsilon(), rng)
        return actions[0] if single else actions

    # -- learning -----------------------------------------------------------------------------

    def learn(self, total_steps: int, callback: TrainingCallback | None = None) -> "DQN":
        """Train for `total_steps` more env steps (rounded up to a multiple of n_envs).
        callback(status) runs at each point between updates (rlfoundry.TrainingStatus); False ends it."""
        require_int("total_steps", total_steps, 1)
        config, training_env = self.config, self.training_env
        monitor = TrainingMonitor.of(self, total_steps, self.steps, callback)
        note_warm_up(monitor, self.replay, self.steps, total_steps, config.learning_starts)
        if not training_env.resumed_exactly:
            # Fresh episodes begin: the stored ones must not run on into them.
            self.replay.restart_episodes()
        observations = training_env.start()
        with denormals_flushed():
            self._run(math.ceil(total_steps / config.n_envs), observations, monitor)
        if self.steps > monitor.last_dump_step:
            # The last row's epsilon (bursts record it too); none when a row was just written here.
            monitor.record("train/epsilon", self.epsilon())
        monitor.close(self.steps)
        if self.run_dir is not None:
            self.save(self.run_dir / "checkpoints" / "final")
        return self

    def _run(self, vector_steps: int, observations: np.ndarray, monitor: TrainingMonitor) -> None:
        """The loop: act, store, update the target network when due, train when due."""
        config, training_env = self.config, self.training_env
        for _ in range(vector_steps):
            actions = self._behaviour(observations)
            step, finished_returns, finished_lengths = training_env.step(actions)
            rewards = np.sign(step.rewards) if config.clip_rewards else step.rewards
            self.replay.add(observations, actions, rewards, step.next_observations, step.terminated, step.truncated)
            observations = step.observations
            before, self.steps = self.steps, self.steps + config.n_envs
            # As in Stable-Baselines3: the target update of a step comes before its gradient steps.
            self._update_target(crossings(before, self.steps, config.target_update_interval))
            bursts = crossings(before, self.steps, config.train_freq)
            if bursts and self.steps > config.learning_starts and self.replay.warmed_up(config.learning_starts):
                self._train(bursts * config.gradient_steps, monitor)
            monitor.episodes(self.steps, finished_returns, finished_lengths)
            monitor.step(self.steps)
            if monitor.stop_requested:
                return

    def _update_target(self, count: int) -> None:
        """`count` target updates at once: Polyak averaging applied count times is one average
        with weight 1 - (1 - tau)^count (a hard copy when tau = 1)."""
        if count == 0:
            return
        polyak_update(self.target_parameters, self.online_parameters, 1.0 - (1.0 - self.config.tau) ** count)
        self.target_updates += count

    def _train(self, gradient_steps: int, monitor: TrainingMonitor) -> None:
        """`gradient_steps` minibatch gradient steps on the loss; the target network is fixed throughout."""
        config = self.config
        size = config.batch_size
        ids = self.replay.sample_ids(size * gradient_steps, self.rng)
        batch = self.replay.batch_at(ids).to_tensors(self.device)
        next_q_values_target = self.target_q_values(batch.next_observations, ids)
        action_index = batch.actions.long().unsqueeze(-1)
        if self.compiled is not None:
            # The burst's gradient steps in one compiled call; Double DQN's targets are made in it, step by step.
            columns = (batch.rewards, batch.discounts, batch.terminated)
            double_q = (*columns, batch.next_observations, next_q_values_target) if config.double_q else None
            targets = None if config.double_q else dqn_targets(*columns, next_q_values_target)
            errors = self.compiled.gradient_steps(batch.observations, action_index, targets, size, config.loss == "huber",
                                                  config.max_grad_norm, double_q)
        else:
            # Whatever a step needs per sample is prepared for the whole burst at once and split into
            # the steps' views in one call per tensor; the steps' TD errors are stacked once.
            weights = [None] * gradient_steps if self.manual_mlp is None else chosen_action_weights(action_index, self.n_actions, size).split(size)
            step_targets = self._step_targets(batch, next_q_values_target, size)
            minibatches = zip(batch.observations.split(size), action_index.split(size), weights, step_targets)
            errors = torch.stack([self._gradient_step(*minibatch) for minibatch in minibatches])
        self.gradient_steps_done += gradient_steps
        mean_loss = float(td_error_loss(errors, config.loss))
        if not math.isfinite(mean_loss):
            raise NonFiniteError(
                f"the DQN loss became {mean_loss} at env step {self.steps}: lower learning_rate, keep "
                "max_grad_norm set, or check the env's rewards and observations for NaN or huge values"
            )
        monitor.record("train/loss", mean_loss)
        monitor.record("train/epsilon", self.epsilon())

    def _step_targets(self, batch: ReplayBatch, next_q_values_target: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
        """The targets [B, 1] of the burst's minibatches, in order. Double DQN's are made just before
        their step: the online network that picks the next actions changes with every step."""
        columns = (batch.rewards, batch.discounts, batch.terminated)
        if not self.config.double_q:
            yield from dqn_targets(*columns, next_q_values_target).unsqueeze(-1).split(size)
            return
        minibatches = zip(*(column.split(size) for column in (*columns, batch.next_observations, next_q_values_target)))
        for rewards, discounts, terminated, next_observations, next_target in minibatches:
            with torch.no_grad():  # not around the yield: the step taken there needs autograd
                targets = double_dqn_targets(rewards, discounts, terminated, self._q_values(next_observations), next_target)
            yield targets.unsqueeze(-1)

    def _gradient_step(self, observations: torch.Tensor, action_index: torch.Tensor, weights: torch.Tensor | None,
                       targets: torch.Tensor) -> torch.Tensor:
        """One Adam step on the loss of a minibatch (action_index and targets [B, 1], weights the
        chosen_action_weights [B, A] for the written-out pass); returns its TD errors [B, 1] before the step."""
        config = self.config
        if self.manual_mlp is None:
            errors = td_errors(self.q_network(observations), action_index, targets)
            clear_gradients(self.optimizer)
            td_error_loss(errors, config.loss).backward()
            errors = errors.detach()
        else:
            with torch.no_grad():
                outputs = self.manual_mlp.forward(observations)
                errors = td_errors(outputs[-1], action_index, targets)
                assert weights is not None  # made for the written-out pass (_train)
                self.manual_mlp.backward(outputs, q_value_loss_gradient(errors, weights, config.loss))
        if config.max_grad_norm is not None:
            clip_gradient_norm(self.online_parameters, config.max_grad_norm, self.flat_gradient)
        step_optimizer(self.optimizer)
        return errors

    # -- saving -------------------------------------------------------------------------------

    def save(self, path: str | Path, replay_buffer: bool = True) -> Path:
        """Write a checkpoint directory (networks, optimiser, replay buffer, RNGs, env position)
        that `rlfoundry.load` reads back exactly. replay_buffer=False leaves the buffer out (a
        policy checkpoint, as checkpoints/best; an Atari buffer takes gigabytes): a model loaded
        from it refills learning_starts transitions before it trains on."""
        replay_json, replay_arrays = self.replay.checkpoint_state("replay", transitions=replay_buffer)
        return save_model(
            self,
            path,
            counters={"steps": self.steps, "gradient_steps": self.gradient_steps_done, "target_updates": self.target_updates},
            modules={"q_network": self.q_network, "target_network": self.target_network},
            optimizers={"optimizer": self.optimizer},
            state={"replay": replay_json},
            arrays=replay_arrays,
        )

    @classmethod
    def load(cls, path: str | Path, env: EnvSource | None = None, **options: Any) -> "DQN":
        """Load a checkpoint of this algorithm; training resumes exactly where it stopped when the
        env state could be saved (classic-control envs), else with fresh episodes."""
        model, checkpoint, training_env = load_model(cls, path, env, options)
        model._build(training_env, checkpoint.state["replay"] and checkpoint.state["replay"]["storage"])
        counters = checkpoint.counters
        model.steps = counters["steps"]
        model.gradient_steps_done = counters["gradient_steps"]
        model.target_updates = counters["target_updates"]
        restore_torch(
            checkpoint,
            {"q_network": model.q_network, "target_network": model.target_network},
            {"optimizer": model.optimizer},
        )
        restore_replay(model.replay, checkpoint, options)
        return model
