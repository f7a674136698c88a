"""Experience replay for off-policy algorithms: a preallocated ring buffer over a vector env.

Storage is time-major, `[rows, n_envs, ...]` with rows = ceil(capacity / n_envs): each `add` writes
one row (one step of every env) and, once full, overwrites the oldest row. Every transition keeps
`terminated` and `truncated` apart and its TRUE next observation: where an episode ended, the
final observation from `step_vector`, never the next episode's reset observation.

Three ways to store observations (`storage`), from simplest to leanest, in bytes per transition
(o = bytes of one observation, f = bytes of its newest frame, a = bytes of one action):

    "full"    s_t and s_{t+1} both stored                      2 o + a + 6
    "shared"  s_{t+1} is the next row's s_t; the final           o + a + 14, plus o per episode
              observation of an ended episode goes to a side     that ended inside the buffer
              store
    "frames"  like "shared", and of a frame stack [K, ...] only  f + a + 15, plus f per episode
              the newest frame is kept; stacks are rebuilt from  that ended inside the buffer
              the K last frames of the episode

For 1M Atari transitions (4 x 84 x 84 uint8 stacks, Discrete actions stored as int64) that is
56.5 GB "full", 28.2 GB "shared" and 7.1 GB "frames" (`ReplayBuffer.bytes_needed` computes it;
`bytes_when_full` adds the side store and the newest step's next observations). The arrays are
committed page by page as they fill, so a buffer that would not fit in the memory available
(rlfoundry.run.memory) is refused at construction with an InsufficientMemoryError, before a run
is killed by the kernel hours in; `check_memory=False` skips that check. "shared" and
"frames" need consecutive `add` calls to be consecutive steps of the same vector env (what every
training loop does); "frames" also needs the stacking of Gymnasium's FrameStackObservation with
padding_type="reset" (the first stack of an episode repeats its first frame).

Sampling is uniform over the stored transitions whose inputs are all present, by numpy fancy
indexing (no Python loop per sample). With `n_step` > 1 a sample starting at t carries the
discounted sum of k rewards, k = n_step, or fewer where the episode ends first or the buffer holds
no later step, and bootstraps from s_{t+k} with discount gamma^k (see `ReplayBatch`).

`checkpoint_state` / `restore` put the whole buffer into an rlfoundry checkpoint (arrays as .npy,
read without pickle, straight into this buffer's arrays), so that off-policy training resumes exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from gymnasium import spaces

from rlfoundry.data.finite import require_finite_observations, require_finite_rewards
from rlfoundry.envs.spaces import array_layout
from rlfoundry.run.checkpoint import copy_array
from rlfoundry.run.config import ConfigError
from rlfoundry.run.memory import USABLE_FRACTION, InsufficientMemoryError, available_memory

Storage = Literal["full", "shared", "frames"]
STORAGES: tuple[Storage, ...] = ("full", "shared", "frames")
# Side-store entries allocated up front for "shared" / "frames"; doubled whenever full.
INITIAL_FINAL_ENTRIES = 64
ESTIMATED_EPISODE_STEPS = 100
"""Mean episode length that `bytes_when_full` assumes for the side store's growth (one final
observation per episode inside the buffer): Atari's episodes run hundreds to thousands of steps."""


class ReplayBatch(NamedTuple):
    """B transitions sampled from a ReplayBuffer (numpy arrays; torch tensors after to_tensors).

    observations:      [B, *obs]     s_t, in the observation space's dtype (uint8 images stay uint8)
    actions:           [B, *action]  a_t: int64 for Discrete actions, float32 for Box actions
    rewards:           [B] float32   sum_{j<k} gamma^j r_{t+j}  (just r_t when k = 1)
    next_observations: [B, *obs]     the true s_{t+k}: the final observation where the episode ended
    terminated:        [B] bool      s_{t+k} is terminal: the target must not bootstrap
    truncated:         [B] bool      the episode was cut at s_{t+k}: the target still bootstraps
    discounts:         [B] float32   gamma^k, the discount of the bootstrapped value

    A target is then  y = rewards + discounts * (1 - terminated) * V(next_observations).
    """

    observations: Any
    actions: Any
    rewards: Any
    next_observations: Any
    terminated: Any
    truncated: Any
    discounts: Any

    def to_tensors(self, device: torch.device | str = "cpu") -> "ReplayBatch":
        """The same batch as torch tensors on `device` (zero-copy on the CPU)."""
        if torch.device(device).type == "cpu":
            return ReplayBatch(*(torch.from_numpy(array) for array in self))
        return ReplayBatch(*(torch.from_numpy(array).to(device, non_blocking=True) for array in self))

    def split(self, count: int) -> list["ReplayBatch"]:
        """`count` equal consecutive minibatches (views, no copies) of a batch of count * B samples."""
        size = len(self.rewards)
        if size % count:
            raise ValueError(f"cannot split a batch of {size} transitions into {count} equal minibatches")
        if count == 1:
            return [self]
        step = size // count
        return [ReplayBatch(*(field[start : start + step] for field in self)) for start in range(0, size, step)]


class ReplayBuffer:
    """A preallocated ring buffer of the transitions of an `n_envs` vector env.

    capacity:          transitions kept (rounded up to a multiple of n_envs)
    observation_space: the single env's observation space (any Box, Discrete or MultiDiscrete)
    action_space:      the single env's action space (Discrete, or Box of any shape, ...)
    n_envs:            environments stepped together; each `add` takes one step of each
    gamma:             discount used for n-step sums and the `discounts` of sampled batches
    n_step:            rewards summed per sample (1: one-step transitions)
    storage:           "full", "shared" or "frames" (see the module docstring)
    check_memory:      refuse (InsufficientMemoryError) a buffer whose `bytes_when_full` exceeds
                       USABLE_FRACTION of the memory available; False skips the check
    """

    def __init__(
        self,
        capacity: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        n_envs: int = 1,
        *,
        gamma: float = 0.99,
        n_step: int = 1,
        storage: Storage = "full",
        check_memory: bool = True,
    ):
        _require_positive_int("capacity", capacity)
        _require_positive_int("n_envs", n_envs)
        _require_positive_int("n_step", n_step)
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma={gamma!r} is out of range: allowed [0, 1]")
        if storage not in STORAGES:
            raise ValueError(f"storage={storage!r} is not allowed: choose one of {', '.join(map(repr, STORAGES))}")
        self.observation_space = observation_space
        self.action_space = action_space
        self.n_envs = n_envs
        self.gamma = float(gamma)
        self.n_step = n_step
        self.storage = storage
        self.rows = math.ceil(capacity / n_envs)
        self.observation_shape, self.action_shape = _shapes(observation_space, action_space)
        self.observation_dtype = stored_dtype(observation_space)
        self.action_dtype = stored_dtype(action_space)
        self.stack = self.observation_shape[0] if storage == "frames" else 1
        if storage == "frames" and (len(self.observation_shape) < 2 or self.stack < 2):
            raise ValueError(
                f"storage='frames' needs stacked observations [K >= 2, ...], got shape {self.observation_shape}: "
                "use storage='shared' for observations that are not frame stacks"
            )
        minimum_rows = self.stack + 1
        if self.rows < minimum_rows:
            raise ConfigError(
                f"capacity={capacity} (an algorithm's buffer_size) gives {self.rows} rows of {n_envs} envs; this "
                f"buffer needs at least {minimum_rows} rows: raise it to {minimum_rows * n_envs} or more"
            )
        if check_memory:
            self._require_memory(minimum_rows)
        rows_envs = (self.rows, n_envs)
        # "frames" keeps only the newest frame of each stack; the others keep whole observations.
        self.piece_shape = self.observation_shape[1:] if storage == "frames" else self.observation_shape
        self.observations = np.zeros(rows_envs + self.piece_shape, dtype=self.observation_dtype)
        if storage == "full":
            self.next_observations = np.zeros(rows_envs + self.observation_shape, dtype=self.observation_dtype)
        self.actions = np.zeros(rows_envs + self.action_shape, dtype=self.action_dtype)
        self.rewards = np.zeros(rows_envs, dtype=np.float32)
        self.terminated = np.zeros(rows_envs, dtype=bool)
        self.truncated = np.zeros(rows_envs, dtype=bool)
        if storage != "full":
            # Final observations of ended episodes, in a FIFO side store addressed by ever-growing
            # ids (entry = id % len(store)); final_ids[row, env] = -1 where the episode went on.
            self.final_ids = np.full(rows_envs, -1, dtype=np.int64)
            self.final_store = np.zeros((INITIAL_FINAL_ENTRIES,) + self.piece_shape, dtype=self.observation_dtype)
            self.next_final_id = 0
            self.oldest_final_id = 0
            # The newest row's s_{t+1}, kept until the next add in case the stream of steps breaks.
            self.pending_next_observations = np.zeros((n_envs,) + self.observation_shape, dtype=self.observation_dtype)
        if storage == "frames":
            # Steps since the episode's first observation, capped at K - 1: frames older than the
            # episode's start are replaced by its first frame, as FrameStackObservation pads.
            self.steps_since_start = np.zeros(rows_envs, dtype=np.uint8)
            self.running_steps_since_start = np.zeros(n_envs, dtype=np.uint8)
        self.position = 0
        self.filled_rows = 0

    # -- sizes ------------------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """Transitions the buffer can hold (rows x n_envs)."""
        return self.rows * self.n_envs

    def __len__(self) -> int:
        """Transitions stored so far (at most `capacity`)."""
        return self.filled_rows * self.n_envs

    @property
    def full(self) -> bool:
        return self.filled_rows == self.rows

    def warmed_up(self, learning_starts: int) -> bool:
        """Whether more than `learning_starts` transitions are stored (or the buffer is full), and
        one can be sampled ("shared" and "frames" cannot sample their only row). In a run trained
        from step 0 this holds exactly when more than learning_starts env steps were taken (and,
        with those storages, a second row was added); a model loaded from a checkpoint saved
        without its buffer (`save(path, replay_buffer=False)`) collects that many again before it
        trains on."""
        first, last = self.sampleable_ages
        return (len(self) > learning_starts or self.full) and last >= first

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffer's arrays now (the side store grows with ended episodes)."""
        arrays = [self.observations, self.actions, self.rewards, self.terminated, self.truncated]
        if self.storage == "full":
            arrays.append(self.next_observations)
        else:
            arrays += [self.final_ids, self.final_store, self.pending_next_observations]
        if self.storage == "frames":
            arrays += [self.steps_since_start, self.running_steps_since_start]
        return sum(array.nbytes for array in arrays)

    @staticmethod
    def bytes_needed(
        capacity: int, observation_space: spaces.Space, action_space: spaces.Space, storage: Storage = "full"
    ) -> int:
        """Bytes a buffer of `capacity` transitions needs, side store for ended episodes excluded."""
        _, action_shape = _shapes(observation_space, action_space)
        observation_bytes, piece_bytes = _observation_bytes(observation_space, storage)
        action_bytes = int(np.prod(action_shape)) * stored_dtype(action_space).itemsize
        per_transition = {
            "full": 2 * observation_bytes + action_bytes + 4 + 1 + 1,
            "shared": observation_bytes + action_bytes + 4 + 1 + 1 + 8,
            "frames": piece_bytes + action_bytes + 4 + 1 + 1 + 8 + 1,
        }[storage]
        return capacity * per_transition

    @staticmethod
    def bytes_when_full(
        capacity: int, observation_space: spaces.Space, action_space: spaces.Space, n_envs: int = 1, storage: Storage = "full"
    ) -> int:
        """Bytes a buffer takes once full: `bytes_needed` of its capacity (rounded up to a multiple
        of n_envs), and for "shared" and "frames" the newest step's next observations and the side
        store as episodes of ESTIMATED_EPISODE_STEPS steps grow it (what `nbytes` then reaches)."""
        capacity = math.ceil(capacity / n_envs) * n_envs
        total = ReplayBuffer.bytes_needed(capacity, observation_space, action_space, storage)
        if storage != "full":
            observation_bytes, piece_bytes = _observation_bytes(observation_space, storage)
            entries = grown_size(INITIAL_FINAL_ENTRIES, capacity // ESTIMATED_EPISODE_STEPS)
            total += n_envs * observation_bytes + entries * piece_bytes
        if storage == "frames":
            total += n_envs  # the steps since each env's episode started
        return total

    def _require_memory(self, minimum_rows: int) -> None:
        """InsufficientMemoryError if the full buffer would take more than USABLE_FRACTION of the
        memory available, naming the largest capacity that fits (and for images, leaner storages)."""
        available = available_memory()
        if available is None:
            return
        budget = USABLE_FRACTION * available.bytes

        def size(rows: int, storage: Storage = self.storage) -> int:
            return ReplayBuffer.bytes_when_full(rows * self.n_envs, self.observation_space, self.action_space, self.n_envs, storage)

        if size(self.rows) <= budget:
            return
        fits, too_many = minimum_rows - 1, self.rows  # bisect for the most rows that fit
        while too_many - fits > 1:
            middle = (fits + too_many) // 2
            fits, too_many = (middle, too_many) if size(middle) <= budget else (fits, middle)
        largest = (
            f"buffer_size={fits * self.n_envs:_} is the largest that fits"
            if fits >= minimum_rows
            else "not even the smallest buffer fits: free memory first"
        )
        leaner = []
        if len(self.observation_shape) > 1:  # images: DQN's replay_storage
            for storage in STORAGES[STORAGES.index(self.storage) + 1 :]:
                if storage == "shared" or self.observation_shape[0] > 1:
                    stacks = " if the observations are frame stacks [K, ...]" if storage == "frames" else ""
                    leaner.append(f"replay_storage={storage!r} ({_readable_size(size(self.rows, storage))}{stacks})")
        raise InsufficientMemoryError(
            f"a replay buffer of {self.capacity:_} transitions of {self.observation_shape} {self.observation_dtype} "
            f"observations ({self.storage!r} storage) takes {_readable_size(size(self.rows))} once full, more than "
            f"{USABLE_FRACTION:.0%} of the {_readable_size(available.bytes)} of memory available ({available.source}): "
            f"{largest}{''.join(f', or {option}' for option in leaner)}. To skip this check (with swap, say, or "
            "memory freed later): check_replay_memory=False, a config field (rlf train --set check_replay_memory=false) "
            "and for a checkpoint a load option (rlfoundry.load(path, check_replay_memory=False), rlf resume "
            "--no-memory-check)"
        )

    # -- writing ----------------------------------------------------------------------------------

    def add(
        self,
        observations: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_observations: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
    ) -> None:
        """Store one step of every env: s_t [N, *obs], a_t [N, *action], r_t [N], the true s_{t+1}
        [N, *obs] (VectorStep.next_observations), terminated [N] and truncated [N]."""
        observations = np.asarray(observations)
        next_observations = np.asarray(next_observations)
        expected = (self.n_envs,) + self.observation_shape
        for name, array in (("observations", observations), ("next_observations", next_observations)):
            if array.shape != expected:
                raise ValueError(f"{name} has shape {array.shape}; this buffer stores {expected} per step")
        row = self.position
        if self.storage != "full" and self.full:
            self._release_final_observations(row)
        if self.storage == "frames":
            self._check_frame_stacks(observations)
            self.observations[row] = observations[:, -1]
            self.steps_since_start[row] = self.running_steps_since_start
        else:
            self.observations[row] = observations
        if self.storage == "full":
            self.next_observations[row] = next_observations
        else:
            self.pending_next_observations[:] = next_observations
        self.actions[row] = np.asarray(actions).reshape((self.n_envs,) + self.action_shape)
        self.rewards[row] = rewards
        self.terminated[row] = terminated
        self.truncated[row] = truncated
        ended = self.terminated[row] | self.truncated[row]
        if self.storage != "full" and ended.any():
            self._store_final_observations(row, ended, next_observations[ended])
        if self.storage == "frames":
            grown = np.minimum(self.running_steps_since_start + 1, self.stack - 1)
            self.running_steps_since_start = np.where(ended, 0, grown).astype(np.uint8)
        self.position = (row + 1) % self.rows
        self.filled_rows = min(self.filled_rows + 1, self.rows)

    def restart_episodes(self) -> None:
        """Declare that the next add does not continue the episodes of the newest row (a resumed
        run whose env position could not be restored starts new episodes): the newest row becomes
        truncated, so its targets bootstrap from its true next observations and n-step sums stop."""
        if self.filled_rows == 0:
            return
        row = (self.position - 1) % self.rows
        going_on = ~(self.terminated[row] | self.truncated[row])
        self.truncated[row] |= going_on
        if self.storage != "full" and going_on.any():
            self._store_final_observations(row, going_on, self.pending_next_observations[going_on])
        if self.storage == "frames":
            self.running_steps_since_start[:] = 0

    def _check_frame_stacks(self, observations: np.ndarray) -> None:
        """"frames" storage keeps one frame per step: check the stacks really overlap that way."""
        starting = self.running_steps_since_start == 0
        continuing = ~starting  # none before the first add: every env starts an episode
        previous_newest = self.observations[(self.position - 1) % self.rows]
        overlaps = (observations[continuing, -2] == previous_newest[continuing]).all()
        padded = (observations[starting, 0] == observations[starting, -1]).all()
        if not (overlaps and padded):
            raise ValueError(
                "storage='frames' needs frame stacks [K, ...] whose newest frame is last, that shift by one "
                "frame per step and start each episode with K copies of its first frame (Gymnasium's "
                "FrameStackObservation); these observations are not: use storage='shared' (DQN's replay_storage='shared')"
            )

    def _store_final_observations(self, row: int, ended: np.ndarray, final_observations: np.ndarray) -> None:
        count = len(final_observations)
        live = self.next_final_id - self.oldest_final_id
        if live + count > len(self.final_store):
            self._grow_final_store(live + count)
        ids = np.arange(self.next_final_id, self.next_final_id + count)
        pieces = final_observations[:, -1] if self.storage == "frames" else final_observations
        self.final_store[ids % len(self.final_store)] = pieces
        self.final_ids[row, ended] = ids
        self.next_final_id += count

    def _grow_final_store(self, needed: int) -> None:
        size = grown_size(len(self.final_store), needed)
        store = np.zeros((size,) + self.piece_shape, dtype=self.observation_dtype)
        live = np.arange(self.oldest_final_id, self.next_final_id)
        store[live % size] = self.final_store[live % len(self.final_store)]
        self.final_store = store

    def _release_final_observations(self, row: int) -> None:
        """The row is about to be overwritten: its side-store entries (the oldest ones) die."""
        ids = self.final_ids[row]
        if (ids >= 0).any():
            self.oldest_final_id = int(ids.max()) + 1
            ids[:] = -1

    # -- sampling ---------------------------------------------------------------------------------

    @property
    def sampleable_ages(self) -> tuple[int, int]:
        """(first, last) ages, counted in rows from the oldest stored row, that can be sampled.

        "shared" and "frames" cannot sample the newest row (its s_{t+1} arrives with the next add);
        a full "frames" buffer cannot sample the K - 1 oldest rows (their earlier frames are gone).
        """
        first = self.stack - 1 if self.storage == "frames" and self.full else 0
        last = self.filled_rows - 1 if self.storage == "full" else self.filled_rows - 2
        return first, last

    def sample(self, batch_size: int, generator: np.random.Generator) -> ReplayBatch:
        """`batch_size` transitions drawn uniformly (with replacement) with `generator`."""
        return self.batch_at(self.sample_ids(batch_size, generator))

    def sample_ids(self, batch_size: int, generator: np.random.Generator) -> np.ndarray:
        """`batch_size` sample ids drawn uniformly (with replacement) with `generator`: int64 [B]
        positions among the transitions that can be sampled, for `batch_at` before the next `add`.
        Equal ids are the same transition, so a caller can evaluate each distinct one once."""
        _require_positive_int("batch_size", batch_size)
        first, last = self.sampleable_ages
        if last < first:
            raise ValueError(
                f"the buffer holds {len(self)} transitions, too few to sample from: add more steps first "
                "(start learning after a few steps, e.g. learning_starts > 0)"
            )
        return generator.integers((last - first + 1) * self.n_envs, size=batch_size)

    def batch_at(self, ids: np.ndarray) -> ReplayBatch:
        """The transitions of sample ids from `sample_ids` (drawn since the last `add`)."""
        first, last = self.sampleable_ages
        batch = self._gather(first + ids // self.n_envs, ids % self.n_envs, last)
        # Checked as they are drawn, once per batch: a NaN from the env is named before a loss uses it.
        require_finite_rewards(batch.rewards)
        require_finite_observations(batch.observations)
        require_finite_observations(batch.next_observations)
        return batch

    def _row(self, ages: np.ndarray) -> np.ndarray:
        oldest = self.position if self.full else 0
        return (oldest + ages) % self.rows

    def _gather(self, ages: np.ndarray, envs: np.ndarray, last_age: int) -> ReplayBatch:
        rows = self._row(ages)
        if self.n_step == 1:
            # Each sample is one step: r_t, s_{t+1} at the same row, discount gamma (the common case, kept short).
            rewards, last_rows, discounts = self.rewards[rows, envs], rows, np.full(len(ages), self.gamma, np.float32)
        else:
            rewards, last_rows, discounts = self._n_step_sums(rows, ages, envs, last_age)
        return ReplayBatch(
            observations=self._observations_at(rows, envs),
            actions=self.actions[rows, envs],
            rewards=rewards,
            next_observations=self._next_observations_at(last_rows, envs),
            terminated=self.terminated[last_rows, envs],
            truncated=self.truncated[last_rows, envs],
            discounts=discounts,
        )

    def _n_step_sums(
        self, rows: np.ndarray, ages: np.ndarray, envs: np.ndarray, last_age: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sum_{j<k} gamma^j r_{t+j}, the row of step t+k-1, gamma^k) of each sample: k grows up to
        n_step while the episode goes on and later steps exist."""
        rewards = self.rewards[rows, envs]
        steps = np.ones(len(ages), dtype=np.int64)
        going_on = ~(self.terminated[rows, envs] | self.truncated[rows, envs])
        for offset in range(1, self.n_step):
            going_on &= ages + offset <= last_age
            later_rows = self._row(ages + offset)
            rewards += np.where(going_on, self.gamma**offset * self.rewards[later_rows, envs], 0.0).astype(np.float32)
            steps += going_on
            going_on &= ~(self.terminated[later_rows, envs] | self.truncated[later_rows, envs])
        return rewards, self._row(ages + steps - 1), (self.gamma**steps).astype(np.float32)

    def _observations_at(self, rows: np.ndarray, envs: np.ndarray) -> np.ndarray:
        if self.storage != "frames":
            return self.observations[rows, envs]
        return self._frame_stacks(rows, envs, self.steps_since_start[rows, envs])

    def _next_observations_at(self, rows: np.ndarray, envs: np.ndarray) -> np.ndarray:
        if self.storage == "full":
            return self.next_observations[rows, envs]
        following = (rows + 1) % self.rows
        if self.storage == "frames":
            since_start = np.minimum(self.steps_since_start[rows, envs].astype(np.int64) + 1, self.stack - 1)
            next_observations = self._frame_stacks(following, envs, since_start)
            newest = next_observations[:, -1]
        else:
            next_observations = self.observations[following, envs]
            newest = next_observations
        ids = self.final_ids[rows, envs]
        ended = ids >= 0
        if ended.any():
            newest[ended] = self.final_store[ids[ended] % len(self.final_store)]
        return next_observations

    def _frame_stacks(self, rows: np.ndarray, envs: np.ndarray, since_start: np.ndarray) -> np.ndarray:
        """[B, K, ...] stacks ending at `rows`: lag j reads row - min(j, steps since the start)."""
        lags = np.arange(self.stack - 1, -1, -1)
        source_rows = (rows[:, None] - np.minimum(lags[None, :], since_start[:, None])) % self.rows
        return self.observations[source_rows, envs[:, None]]

    # -- checkpoints ------------------------------------------------------------------------------

    def checkpoint_state(
        self, prefix: str = "replay", transitions: bool = True
    ) -> tuple[dict[str, Any] | None, dict[str, np.ndarray]]:
        """(JSON, arrays) for a checkpoint; only the filled rows are written. transitions=False:
        (None, {}), a checkpoint without the buffer, which `restore` reads back as an empty one."""
        if not transitions:
            return None, {}
        filled = slice(0, self.filled_rows)
        state: dict[str, Any] = {
            "capacity": self.capacity,
            "n_envs": self.n_envs,
            "storage": self.storage,
            "n_step": self.n_step,
            "position": self.position,
            "filled_rows": self.filled_rows,
        }
        arrays = {
            f"{prefix}.observations": self.observations[filled],
            f"{prefix}.actions": self.actions[filled],
            f"{prefix}.rewards": self.rewards[filled],
            f"{prefix}.terminated": self.terminated[filled],
            f"{prefix}.truncated": self.truncated[filled],
        }
        if self.storage == "full":
            arrays[f"{prefix}.next_observations"] = self.next_observations[filled]
        else:
            live = np.arange(self.oldest_final_id, self.next_final_id)
            arrays[f"{prefix}.final_ids"] = self.final_ids[filled]
            arrays[f"{prefix}.final_store"] = self.final_store[live % len(self.final_store)]
            arrays[f"{prefix}.pending_next_observations"] = self.pending_next_observations
            state["next_final_id"] = self.next_final_id
            state["oldest_final_id"] = self.oldest_final_id
        if self.storage == "frames":
            arrays[f"{prefix}.steps_since_start"] = self.steps_since_start[filled]
            arrays[f"{prefix}.running_steps_since_start"] = self.running_steps_since_start
        return state, arrays

    def restore(self, state: dict[str, Any] | None, arrays: Mapping[str, np.ndarray], prefix: str = "replay") -> None:
        """Load what checkpoint_state wrote into this (empty, identically configured) buffer; a
        checkpoint saved without its transitions (state None) leaves it empty. gamma stays this
        buffer's own: the rewards are stored raw and discounted when sampled, so a model loaded
        with another gamma discounts the saved transitions with it. Each array must have the shape
        and dtype of the rows it fills (else ValueError); a loaded checkpoint's arrays are read
        from their files straight into this buffer, never held whole beside it."""
        if state is None:
            return
        for name in ("capacity", "n_envs", "storage", "n_step"):
            if state[name] != getattr(self, name):
                raise ValueError(
                    f"the saved replay buffer has {name}={state[name]!r} but this one has {getattr(self, name)!r}: "
                    "build the buffer with the saved settings before restoring it"
                )
        self.position = state["position"]
        self.filled_rows = state["filled_rows"]
        filled = slice(0, self.filled_rows)
        names = ["observations", "actions", "rewards", "terminated", "truncated"]
        names += ["next_observations"] if self.storage == "full" else ["final_ids"]
        names += ["steps_since_start"] if self.storage == "frames" else []
        for name in names:
            copy_array(arrays, f"{prefix}.{name}", getattr(self, name)[filled])
        if self.storage != "full":
            self.next_final_id = state["next_final_id"]
            self.oldest_final_id = state["oldest_final_id"]
            live = np.arange(self.oldest_final_id, self.next_final_id)
            if len(live) > len(self.final_store):
                self._grow_final_store(len(live))
            self.final_store[live % len(self.final_store)] = arrays[f"{prefix}.final_store"]
            copy_array(arrays, f"{prefix}.pending_next_observations", self.pending_next_observations)
        if self.storage == "frames":
            self.running_steps_since_start = arrays[f"{prefix}.running_steps_since_start"].copy()


def grown_size(size: int, needed: int) -> int:
    """The side store's length after doubling `size` until it holds `needed` entries."""
    while size < needed:
        size *= 2
    return size


def _observation_bytes(observation_space: spaces.Space, storage: Storage) -> tuple[int, int]:
    """(bytes of one observation, bytes of what a row keeps of it: the newest frame for "frames")."""
    observation_shape, _ = array_layout(observation_space, "ReplayBuffer's observation_space")
    observation_bytes = int(np.prod(observation_shape)) * stored_dtype(observation_space).itemsize
    if storage != "frames":
        # Only frame stacks [K, ...] have a first axis to split: a Discrete observation has no axis.
        return observation_bytes, observation_bytes
    return observation_bytes, observation_bytes // max(observation_shape[0], 1)


def _readable_size(count: float) -> str:
    """A byte count for a message: in GB from 1 GB up, else in MB."""
    return f"{count / 1e9:.1f} GB" if count >= 1e9 else f"{count / 1e6:.1f} MB"


def stored_dtype(space: spaces.Space) -> np.dtype:
    """The dtype a space's values are stored in: float32 for floats, int64 for Discrete, else as is."""
    if isinstance(space, spaces.Discrete):
        return np.dtype(np.int64)
    dtype = np.dtype(space.dtype)
    return np.dtype(np.float32) if dtype.kind == "f" else dtype


def _shapes(observation_space: spaces.Space, action_space: spaces.Space) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The shapes of one observation and one action; SpaceError for a space of other values (a Dict, say)."""
    observation_shape, _ = array_layout(observation_space, "ReplayBuffer's observation_space")
    action_shape, _ = array_layout(action_space, "ReplayBuffer's action_space")
    return observation_shape, action_shape


def _require_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}={value!r} is out of range: allowed integers >= 1")
