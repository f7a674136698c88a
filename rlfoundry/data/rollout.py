"""On-policy rollout storage: T steps of N parallel envs in preallocated [T, N] arrays.

One rollout is collected with a fixed policy, turned into advantages and returns, trained on, and
thrown away. The buffer keeps `terminated` and `truncated` apart and fills `next_values` so that
`rlfoundry.returns` gets exactly what its docstring asks for:

    next_values[t, n] = V(s'_t), the value of the TRUE next observation of step t:
        values[t + 1, n]                         inside an episode,
        V(final observation of the episode)      where the episode was truncated at t (time limit),
        V(observation after the last step)       at t = T - 1,
        anything (masked by `terminated`)        where the episode terminated at t.

The final observation of a truncated episode is not the observation the env returns (that one
already starts the next episode, same-step autoreset): `add` copies it from
`VectorStep.next_observations`, and `finish` evaluates all of them in one batched call.

    buffer = RolloutBuffer(n_steps, n_envs, observation_space, action_space)
    for _ in range(n_steps):
        ... act: actions, log_probs (and values, or None) for training_env.observations ...
        step, _, _ = training_env.step(actions)
        buffer.add(observations, actions, log_probs, values, step)
    buffer.fill_values(value_function)                          # where add was given values=None
    buffer.finish(training_env.observations, value_function)   # fills next_values
    advantages, returns = generalized_advantages(buffer.rewards, buffer.values, buffer.next_values,
                                                 buffer.terminated, buffer.truncated, gamma, lam)
    batch = buffer.training_batch(advantages, returns, device)
    buffer.reset()
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields

import numpy as np
import torch
from gymnasium import spaces

from rlfoundry.envs.spaces import SpaceError, describe
from rlfoundry.envs.vector import VectorStep
from rlfoundry.data.finite import require_finite_observations, require_finite_rewards

ValueFunction = Callable[[np.ndarray], np.ndarray]
"""observations [M, *obs] (numpy) -> V(s) [M] (numpy): the critic, evaluated without gradients."""


def space_layout(space: spaces.Space) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of one element of a space as stored in a rollout.

    Discrete -> () int64; MultiDiscrete -> (K,) int64; Box -> its shape, float32 unless integer.
    """
    if isinstance(space, spaces.Discrete):
        return (), np.dtype(np.int64)
    if isinstance(space, spaces.MultiDiscrete):
        return tuple(space.shape), np.dtype(np.int64)
    if isinstance(space, spaces.Box):
        dtype = space.dtype if np.issubdtype(space.dtype, np.integer) else np.dtype(np.float32)
        return tuple(space.shape), np.dtype(dtype)
    raise SpaceError(f"a rollout cannot store elements of {describe(space)}: supported are Discrete, MultiDiscrete, Box")


@dataclass(frozen=True)
class RolloutBatch:
    """A flat training batch of B = T * N on-policy steps, as torch tensors on the training device.

    observations:  [B, *obs]  s_t
    actions:       [B, *act]  a_t as sampled (Gaussian samples unclipped)
    old_log_probs: [B]        log pi_old(a_t|s_t) when the action was taken
    old_values:    [B]        V_old(s_t) when the action was taken
    advantages:    [B]        A_t (not normalised)
    returns:       [B]        the value target, e.g. A_t + V_old(s_t) for GAE
    """

    observations: torch.Tensor
    actions: torch.Tensor
    old_log_probs: torch.Tensor
    old_values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor

    def __len__(self) -> int:
        return self.advantages.shape[0]

    def select(self, indices: torch.Tensor) -> "RolloutBatch":
        """The rows at `indices` (a 1-D int64 tensor)."""
        return RolloutBatch(*(getattr(self, field.name)[indices] for field in fields(self)))

    def minibatches(self, minibatch_size: int, rng: np.random.Generator) -> Iterator["RolloutBatch"]:
        """A random partition into minibatches of `minibatch_size` rows (the last may be smaller).

        When one minibatch holds the whole batch it is the batch itself, unshuffled and without
        drawing from `rng`: the loss is a mean over rows, which no permutation changes.
        """
        size = len(self)
        if minibatch_size >= size:
            yield self
            return
        permutation = torch.from_numpy(rng.permutation(size)).to(self.advantages.device)
        for start in range(0, size, minibatch_size):
            yield self.select(permutation[start : start + minibatch_size])


class RolloutBuffer:
    """Preallocated storage for one rollout of `n_steps` steps of `n_envs` envs ([T, N] arrays).

    Arrays (row t is written by the t-th `add`):
        observations [T, N, *obs]  s_t            actions   [T, N, *act]  a_t
        rewards      [T, N] f32    r_t            log_probs [T, N] f32    log pi(a_t|s_t)
        terminated   [T, N] bool   s_{t+1} terminal    truncated [T, N] bool  episode cut after t
        values       [T, N] f32    V(s_t)         next_values [T, N] f32  V(s'_t), filled by `finish`
    """

    def __init__(self, n_steps: int, n_envs: int, observation_space: spaces.Space, action_space: spaces.Space):
        if n_steps < 1 or n_envs < 1:
            raise ValueError(f"a rollout needs n_steps >= 1 and n_envs >= 1, got {n_steps} and {n_envs}")
        self.n_steps = n_steps
        self.n_envs = n_envs
        observation_shape, observation_dtype = space_layout(observation_space)
        action_shape, action_dtype = space_layout(action_space)
        shape = (n_steps, n_envs)
        self.observations = np.zeros(shape + observation_shape, dtype=observation_dtype)
        self.actions = np.zeros(shape + action_shape, dtype=action_dtype)
        self.rewards = np.zeros(shape, dtype=np.float32)
        self.terminated = np.zeros(shape, dtype=bool)
        self.truncated = np.zeros(shape, dtype=bool)
        self.log_probs = np.zeros(shape, dtype=np.float32)
        self.values = np.zeros(shape, dtype=np.float32)
        self.next_values = np.zeros(shape, dtype=np.float32)
        self.position = 0
        # (t, env indices, their true final observations) for every step with a truncation.
        self._truncations: list[tuple[int, np.ndarray, np.ndarray]] = []

    @property
    def size(self) -> int:
        """T * N, the number of steps in a full rollout."""
        return self.n_steps * self.n_envs

    @property
    def full(self) -> bool:
        return self.position == self.n_steps

    def reset(self) -> None:
        """Start a new rollout (the arrays are overwritten, not reallocated)."""
        self.position = 0
        self._truncations.clear()

    def add(
        self,
        observations: np.ndarray,
        actions: np.ndarray,
        log_probs: np.ndarray,
        values: np.ndarray | None,
        step: VectorStep,
    ) -> None:
        """Record one step of every env: the observations acted on, what was sampled, and the step.

        observations [N, *obs], actions [N, *act], log_probs [N], values [N] (None: `fill_values`
        evaluates them after the rollout); `step` is what the env returned for these actions
        (`rlfoundry.envs.vector.step_vector`).
        """
        t = self.position
        if t == self.n_steps:
            raise RuntimeError(f"the rollout already holds {self.n_steps} steps: call reset() before adding more")
        self.observations[t] = observations
        self.actions[t] = actions
        self.log_probs[t] = log_probs
        if values is not None:
            self.values[t] = values
        self.rewards[t] = step.rewards
        self.terminated[t] = step.terminated
        self.truncated[t] = step.truncated
        bootstrapped = step.truncated & ~step.terminated
        if bootstrapped.any():
            indices = np.flatnonzero(bootstrapped)
            self._truncations.append((t, indices, np.array(step.next_observations[indices])))
        self.position = t + 1

    def fill_values(self, value_function: ValueFunction) -> None:
        """values[t] = V(observations[t]) for every row added so far, in one batched call: a critic
        that does not change while the policy acts need not be evaluated step by step."""
        rows = self.position
        flat = self.observations[:rows].reshape(rows * self.n_envs, *self.observations.shape[2:])
        self.values[:rows] = np.asarray(value_function(flat), dtype=np.float32).reshape(rows, self.n_envs)

    def finish(
        self, last_observations: np.ndarray, value_function: ValueFunction | None, stopped_early: bool = False
    ) -> None:
        """Fill `next_values` (see the module docstring) once the rollout is full.

        last_observations [N, *obs]: what the envs show after the last step. value_function=None
        bootstraps from 0 everywhere (pure Monte-Carlo returns: a truncated episode counts as if
        its rewards stopped, and the rollout's last step as if the episode ended there).
        stopped_early=True finishes a rollout that ended after `position` >= 1 rows (REINFORCE
        stops once every env's episode is over); only rows [0, position) are filled.
        """
        if not (self.full or (stopped_early and self.position > 0)):
            raise RuntimeError(f"finish() needs a full rollout: it holds {self.position} of {self.n_steps} steps")
        self._require_finite()
        if value_function is None:
            self.next_values[:] = 0.0
            return
        last = self.position - 1
        self.next_values[:last] = self.values[1 : last + 1]
        # One batched critic call for the last observations and every truncated final observation.
        pieces = [np.asarray(last_observations)] + [observations for _, _, observations in self._truncations]
        bootstrap_observations = np.concatenate(pieces)
        require_finite_observations(bootstrap_observations)
        bootstrap_values = np.asarray(value_function(bootstrap_observations), dtype=np.float32)
        self.next_values[last] = bootstrap_values[: self.n_envs]
        start = self.n_envs
        for t, indices, _ in self._truncations:
            self.next_values[t, indices] = bootstrap_values[start : start + indices.size]
            start += indices.size

    def training_batch(self, advantages: np.ndarray, returns: np.ndarray, device: torch.device | str = "cpu") -> RolloutBatch:
        """The rollout flattened to B = T * N rows (a copy), with the given [T, N] advantages and returns."""
        if advantages.shape != (self.n_steps, self.n_envs) or returns.shape != advantages.shape:
            raise ValueError(
                f"advantages and returns must be [T, N] = {(self.n_steps, self.n_envs)}, "
                f"got {advantages.shape} and {returns.shape}"
            )

        def flat(array: np.ndarray, dtype: torch.dtype | None = None) -> torch.Tensor:
            rows = array.reshape(self.size, *array.shape[2:])
            return torch.tensor(rows, dtype=dtype, device=device)

        return RolloutBatch(
            observations=flat(self.observations),
            actions=flat(self.actions),
            old_log_probs=flat(self.log_probs),
            old_values=flat(self.values),
            advantages=flat(advantages, torch.float32),
            returns=flat(returns, torch.float32),
        )

    def _require_finite(self) -> None:
        require_finite_rewards(self.rewards)
        require_finite_observations(self.observations)
