"""The replay buffer: wrap-around, valid sampling, the final-observation rule under autoreset,
n-step sums against a loop, Box actions, byte budgets and exact checkpoint round trips."""

from __future__ import annotations

import tracemalloc

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.wrappers import FrameStackObservation

from rlfoundry.data.replay import ESTIMATED_EPISODE_STEPS, INITIAL_FINAL_ENTRIES, ReplayBatch, ReplayBuffer
from rlfoundry.envs.spaces import SpaceError
from rlfoundry.envs.vector import make_env, step_vector
from rlfoundry.run.checkpoint import Checkpoint, NonFiniteError, load_checkpoint, save_checkpoint

GAMMA = 0.9


def short_cartpole(max_steps: int, stack: int = 0):
    """CartPole cut at `max_steps` (truncations) that random actions also end early (terminations)."""

    def factory():
        env = gym.make("CartPole-v1", max_episode_steps=max_steps)
        return FrameStackObservation(env, stack) if stack else env

    return factory


def record_steps(factory, n_envs: int, steps: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Random-action steps of a same-step-autoreset vector env, as the buffer receives them."""
    env = make_env(factory, n_envs=n_envs, seed=seed)
    observations, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    recorded = []
    for _ in range(steps):
        actions = (rng.random(n_envs) < 0.15).astype(np.int64)  # mostly left: the pole falls in ~9 steps
        step = step_vector(env, actions)
        recorded.append(
            {
                "observations": np.array(observations, copy=True),
                "actions": actions,
                "rewards": step.rewards * rng.uniform(0.5, 1.5, size=n_envs).astype(np.float32),
                "next_observations": np.array(step.next_observations, copy=True),
                "terminated": step.terminated,
                "truncated": step.truncated,
                "reset_observations": np.array(step.observations, copy=True),
            }
        )
        observations = step.observations
    env.close()
    return recorded


def fill(buffer: ReplayBuffer, recorded: list[dict[str, np.ndarray]]) -> None:
    for step in recorded:
        buffer.add(
            step["observations"],
            step["actions"],
            step["rewards"],
            step["next_observations"],
            step["terminated"],
            step["truncated"],
        )


def expected_transitions(buffer: ReplayBuffer, recorded: list[dict[str, np.ndarray]]) -> dict[bytes, tuple]:
    """Every transition the buffer may return, keyed by its observation, with n-step sums by a loop."""
    first_age, last_age = buffer.sampleable_ages
    oldest_step = len(recorded) - buffer.filled_rows
    last_step = oldest_step + last_age
    expected = {}
    for start in range(oldest_step + first_age, last_step + 1):
        for env in range(buffer.n_envs):
            total, steps = 0.0, 0
            while True:
                step = recorded[start + steps]
                total += GAMMA**steps * float(step["rewards"][env])
                steps += 1
                ended = step["terminated"][env] or step["truncated"][env]
                if ended or steps == buffer.n_step or start + steps > last_step:
                    break
            key = recorded[start]["observations"][env].tobytes()
            assert key not in expected, "observations must be unique for this test to identify transitions"
            expected[key] = (
                int(recorded[start]["actions"][env]),
                total,
                step["next_observations"][env],
                bool(step["terminated"][env]),
                bool(step["truncated"][env]),
                GAMMA**steps,
            )
    return expected


def check_samples(buffer: ReplayBuffer, expected: dict[bytes, tuple]) -> None:
    samples = 20 * len(expected)  # leaves each valid transition unsampled with probability e^-20
    batch = buffer.sample(samples, np.random.default_rng(1))
    seen = set()
    for index in range(samples):
        key = batch.observations[index].tobytes()
        assert key in expected, "sampled a transition that is not stored or not valid"
        seen.add(key)
        action, total, next_observation, terminated, truncated, discount = expected[key]
        assert batch.actions[index] == action
        assert batch.rewards[index] == pytest.approx(total, rel=1e-6)
        np.testing.assert_array_equal(batch.next_observations[index], next_observation)
        assert batch.terminated[index] == terminated
        assert batch.truncated[index] == truncated
        assert batch.discounts[index] == pytest.approx(discount, rel=1e-6)
    assert seen == set(expected), "some valid transitions were never sampled"


@pytest.mark.parametrize(
    ("storage", "stack", "capacity", "steps", "max_steps", "n_step"),
    [
        ("full", 0, 40, 31, 10, 1),
        ("full", 0, 40, 31, 10, 3),
        ("shared", 0, 40, 31, 10, 1),
        ("shared", 0, 40, 31, 10, 3),
        ("shared", 0, 800, 1000, 10, 2),  # about 80 live final observations: the side store grows
        ("frames", 3, 40, 31, 10, 1),
        ("frames", 3, 40, 31, 10, 3),
        ("frames", 4, 800, 1000, 10, 2),
        ("frames", 3, 1000, 120, 10, 4),  # not full yet: every stored step is sampleable
    ],
)
def test_samples_are_exactly_the_valid_stored_transitions(storage, stack, capacity, steps, max_steps, n_step):
    recorded = record_steps(short_cartpole(max_steps, stack), n_envs=2, steps=steps)
    assert any(step["truncated"].any() for step in recorded[-20:]), "the scenario needs truncations"
    assert any(step["terminated"].any() for step in recorded[-20:]), "the scenario needs terminations"
    space = gym.vector.SyncVectorEnv([short_cartpole(max_steps, stack)])
    buffer = ReplayBuffer(
        capacity, space.single_observation_space, space.single_action_space, 2, gamma=GAMMA, n_step=n_step, storage=storage
    )
    fill(buffer, recorded)
    check_samples(buffer, expected_transitions(buffer, recorded))


@pytest.mark.parametrize(("storage", "stack", "n_step"), [("full", 0, 3), ("shared", 0, 1), ("frames", 3, 2)])
def test_equal_sample_ids_are_the_same_transition_and_sample_draws_them(storage, stack, n_step):
    """DQN evaluates its target network once per distinct id of a burst (networks/q_networks.BlockedQValues)."""
    recorded = record_steps(short_cartpole(10, stack), n_envs=2, steps=31)
    space = gym.vector.SyncVectorEnv([short_cartpole(10, stack)])
    buffer = ReplayBuffer(40, space.single_observation_space, space.single_action_space, 2, gamma=GAMMA, n_step=n_step,
                          storage=storage)
    fill(buffer, recorded)
    ids = buffer.sample_ids(500, np.random.default_rng(3))
    batch = buffer.batch_at(ids)
    for field, sampled in zip(batch, buffer.sample(500, np.random.default_rng(3))):
        np.testing.assert_array_equal(field, sampled)
    _, first = np.unique(ids, return_index=True)
    assert len(first) < len(ids), "the scenario needs repeated ids"
    representative = first[np.searchsorted(ids[first], ids)]
    for field in batch:
        np.testing.assert_array_equal(field, field[representative])


def test_final_observation_is_the_true_one_not_the_reset_one():
    recorded = record_steps(short_cartpole(4), n_envs=1, steps=13)
    space = gym.make("CartPole-v1")
    for storage in ("full", "shared"):
        buffer = ReplayBuffer(100, space.observation_space, space.action_space, storage=storage)
        fill(buffer, recorded)
        batch = buffer.sample(400, np.random.default_rng(0))
        truncated_steps = [step for step in recorded if step["truncated"][0]]
        assert len(truncated_steps) >= 2
        for step in truncated_steps:
            final, reset = step["next_observations"][0], step["reset_observations"][0]
            assert not np.array_equal(final, reset)
            rows = np.flatnonzero((batch.observations == step["observations"][0]).all(axis=1))
            assert rows.size > 0
            for row in rows:
                np.testing.assert_array_equal(batch.next_observations[row], final)
                assert batch.truncated[row] and not batch.terminated[row]


def test_wrap_around_overwrites_the_oldest_rows():
    observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
    buffer = ReplayBuffer(5, observation_space, spaces.Discrete(3), n_envs=2)
    assert buffer.rows == 3 and buffer.capacity == 6  # capacity rounds up to whole rows
    for step in range(5):
        observations = np.array([[step, 0], [step, 1]], dtype=np.float32)
        buffer.add(observations, np.array([step % 3, 2]), np.array([step, -step]), observations + 0.5, [False] * 2, [False] * 2)
    assert len(buffer) == 6 and buffer.full and buffer.position == 2
    np.testing.assert_array_equal(buffer.observations[:, 0, 0], [3, 4, 2])
    batch = buffer.sample(500, np.random.default_rng(0))
    assert set(batch.observations[:, 0].tolist()) == {2.0, 3.0, 4.0}
    np.testing.assert_array_equal(batch.rewards, np.where(batch.observations[:, 1] == 0, 1, -1) * batch.observations[:, 0])
    np.testing.assert_array_equal(batch.next_observations, batch.observations + 0.5)


def test_box_actions_of_any_shape_are_stored_as_float32():
    observation_space = spaces.Box(-1, 1, (3,), np.float64)
    action_space = spaces.Box(-2, 2, (2, 2), np.float64)
    buffer = ReplayBuffer(10, observation_space, action_space, n_envs=2)
    for step in range(4):
        observations = np.full((2, 3), step, dtype=np.float64) + np.array([[0.0], [0.5]])
        actions = observations[:, :1, None] * np.ones((2, 2, 2))
        buffer.add(observations, actions, np.zeros(2), observations, [False] * 2, [False] * 2)
    batch = buffer.sample(50, np.random.default_rng(0))
    assert batch.observations.dtype == np.float32 and batch.actions.dtype == np.float32
    assert batch.actions.shape == (50, 2, 2)
    np.testing.assert_array_equal(batch.actions, batch.observations[:, :1, None] * np.ones((50, 2, 2)))
    tensors = batch.to_tensors("cpu")
    assert tensors.actions.dtype == torch.float32 and tensors.terminated.dtype == torch.bool
    halves = tensors.split(2)
    assert len(halves) == 2 and halves[1].actions.shape == (25, 2, 2)
    torch.testing.assert_close(halves[1].rewards, tensors.rewards[25:])


def test_byte_budget_of_one_million_atari_transitions():
    frames = spaces.Box(0, 255, (4, 84, 84), np.uint8)
    actions = spaces.Discrete(6)
    million = 1_000_000
    assert ReplayBuffer.bytes_needed(million, frames, actions, "full") == million * (2 * 28224 + 8 + 6)
    assert ReplayBuffer.bytes_needed(million, frames, actions, "shared") == million * (28224 + 8 + 14)
    assert ReplayBuffer.bytes_needed(million, frames, actions, "frames") == million * (7056 + 8 + 15)
    small = ReplayBuffer(1000, frames, actions, n_envs=4, storage="frames")
    # nbytes also counts the side store of final frames (64 to start with, it grows), the newest
    # step's next observations and each env's steps since its episode started.
    assert small.nbytes == ReplayBuffer.bytes_needed(1000, frames, actions, "frames") + 64 * 7056 + 4 * 28224 + 4


@pytest.mark.parametrize("storage", ["full", "shared", "frames"])
def test_bytes_when_full_are_the_arrays_of_a_new_buffer_plus_the_side_stores_growth(storage):
    frames, actions = spaces.Box(0, 255, (4, 6, 6), np.uint8), spaces.Box(-1, 1, (2,), np.float32)
    small = ReplayBuffer(1000, frames, actions, n_envs=3, storage=storage)  # 10 episodes: the first 64 entries hold them
    assert ReplayBuffer.bytes_when_full(1000, frames, actions, 3, storage) == small.nbytes
    grown = 4 * INITIAL_FINAL_ENTRIES * ESTIMATED_EPISODE_STEPS  # 256 episodes: 3 doublings of the side store
    side_entry = {"full": 0, "shared": 144, "frames": 36}[storage]
    assert ReplayBuffer.bytes_when_full(grown, frames, actions, 3, storage) == (
        ReplayBuffer(grown, frames, actions, n_envs=3, storage=storage).nbytes + 3 * INITIAL_FINAL_ENTRIES * side_entry
    )


def test_a_loaded_buffer_is_read_into_its_arrays_without_a_second_copy(tmp_path):
    """Traced allocations (numpy reports its arrays to tracemalloc): the load used to hold each
    array whole before copying it into the buffer, twice the buffer's memory at the peak."""
    observations, actions = spaces.Box(-1, 1, (16,), np.float32), spaces.Discrete(3)
    buffer = ReplayBuffer(150_000, observations, actions, n_envs=100)
    rng = np.random.default_rng(0)
    for _ in range(buffer.rows):
        states = rng.standard_normal((100, 16), dtype=np.float32)
        buffer.add(states, rng.integers(3, size=100), rng.standard_normal(100), states + 1, rng.random(100) < 0.01, [False] * 100)
    state, arrays = buffer.checkpoint_state()
    save_checkpoint(tmp_path / "checkpoint", Checkpoint("test", {}, {}, state={"replay": state}, arrays=arrays))
    restored = ReplayBuffer(150_000, observations, actions, n_envs=100)
    tracemalloc.start()
    try:
        loaded = load_checkpoint(tmp_path / "checkpoint")
        restored.restore(loaded.state["replay"], loaded.arrays)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < restored.nbytes / 4  # 21.3 MB of arrays; what is traced is the hashing's 1 MB blocks
    for name in ("observations", "next_observations", "actions", "rewards", "terminated", "truncated"):
        np.testing.assert_array_equal(getattr(restored, name), getattr(buffer, name), err_msg=name)


@pytest.mark.parametrize("storage", ["full", "shared", "frames"])
def test_checkpoint_round_trip_continues_exactly(tmp_path, storage):
    stack = 3 if storage == "frames" else 0
    recorded = record_steps(short_cartpole(5, stack), n_envs=2, steps=60)
    space = gym.vector.SyncVectorEnv([short_cartpole(5, stack)])
    settings = dict(gamma=GAMMA, n_step=2, storage=storage)
    original = ReplayBuffer(50, space.single_observation_space, space.single_action_space, 2, **settings)
    fill(original, recorded[:40])
    state, arrays = original.checkpoint_state()
    save_checkpoint(tmp_path / "checkpoint", Checkpoint("test", {}, {}, state={"replay": state}, arrays=arrays))
    loaded = load_checkpoint(tmp_path / "checkpoint")
    restored = ReplayBuffer(50, space.single_observation_space, space.single_action_space, 2, **settings)
    restored.restore(loaded.state["replay"], loaded.arrays)
    for buffer in (original, restored):
        fill(buffer, recorded[40:])
    first, second = (buffer.sample(300, np.random.default_rng(7)) for buffer in (original, restored))
    for name, left, right in zip(ReplayBatch._fields, first, second):
        np.testing.assert_array_equal(left, right, err_msg=name)


def test_restore_refuses_a_differently_configured_buffer():
    space = gym.make("CartPole-v1")
    saved = ReplayBuffer(20, space.observation_space, space.action_space, storage="shared")
    state, arrays = saved.checkpoint_state()
    other = ReplayBuffer(20, space.observation_space, space.action_space, storage="full")
    with pytest.raises(ValueError, match="storage='shared'"):
        other.restore(state, arrays)


def test_restore_refuses_arrays_of_another_dtype_or_shape():
    """They were cast or broadcast into the buffer without a word."""
    space = gym.make("CartPole-v1")
    saved = ReplayBuffer(20, space.observation_space, space.action_space)
    saved.add(np.ones((1, 4)), [1], [1.0], np.ones((1, 4)), [False], [False])
    state, arrays = saved.checkpoint_state()
    cases = {
        "replay.rewards": (arrays["replay.rewards"].astype(np.float64), "float64 values of shape (1, 1), where float32"),
        "replay.observations": (np.ones(4, np.float32), "float32 values of shape (4,), where float32 values of shape (1, 1, 4)"),
    }
    for name, (changed, message) in cases.items():
        other = ReplayBuffer(20, space.observation_space, space.action_space)
        with pytest.raises(ValueError) as raised:
            other.restore(state, {**arrays, name: changed})
        assert f"array {name!r} holds {message}" in str(raised.value)


def test_clear_errors():
    space = gym.make("CartPole-v1")
    buffer = ReplayBuffer(10, space.observation_space, space.action_space, n_envs=2, storage="shared")
    with pytest.raises(ValueError, match="too few to sample"):
        buffer.sample(4, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"observations has shape \(4,\)"):
        buffer.add(np.zeros(4), [0, 0], [0, 0], np.zeros((2, 4)), [False] * 2, [False] * 2)
    with pytest.raises(ValueError, match="storage='frames' needs stacked observations"):
        ReplayBuffer(10, space.observation_space, space.action_space, storage="frames")
    with pytest.raises(ValueError, match=r"capacity=3 .*raise it to 5 or more"):
        ReplayBuffer(3, spaces.Box(0, 255, (4, 8, 8), np.uint8), space.action_space, storage="frames")
    with pytest.raises(ValueError, match="storage='compact' is not allowed"):
        ReplayBuffer(10, space.observation_space, space.action_space, storage="compact")


def test_spaces_whose_values_are_not_arrays_are_clear_errors():
    """A Dict space has no shape (None): the buffer raised a TypeError about iterating None."""
    observations = spaces.Dict({"position": spaces.Box(-1, 1, (2,))})
    with pytest.raises(SpaceError, match=r"ReplayBuffer's observation_space takes arrays of one shape.*Dict\("):
        ReplayBuffer(10, observations, spaces.Discrete(2))
    with pytest.raises(SpaceError, match=r"ReplayBuffer's action_space takes arrays of one shape.*Tuple\("):
        ReplayBuffer.bytes_needed(10, spaces.Box(-1, 1, (2,)), spaces.Tuple((spaces.Discrete(2),)))


@pytest.mark.parametrize("storage", ["full", "shared", "frames"])
def test_restart_episodes_truncates_the_newest_row_and_keeps_its_true_next_observation(storage):
    """A resumed run that starts fresh episodes must not pair the old row with the new reset."""
    stack = 3 if storage == "frames" else 0
    recorded = record_steps(short_cartpole(50, stack), n_envs=2, steps=6)  # no episode ends
    restarted = record_steps(short_cartpole(50, stack), n_envs=2, steps=3, seed=7)
    space = gym.vector.SyncVectorEnv([short_cartpole(50, stack)])
    buffer = ReplayBuffer(100, space.single_observation_space, space.single_action_space, 2, gamma=GAMMA, n_step=3, storage=storage)
    fill(buffer, recorded)
    buffer.restart_episodes()
    fill(buffer, restarted)
    expected = expected_transitions(buffer, recorded[:5] + [dict(recorded[5], truncated=np.ones(2, bool))] + restarted)
    check_samples(buffer, expected)


@pytest.mark.parametrize("field", ["rewards", "observations", "next_observations"])
def test_a_non_finite_value_from_the_env_is_named_when_it_is_drawn(field):
    recorded = record_steps(short_cartpole(100), n_envs=1, steps=6)
    recorded[2][field] = np.full_like(recorded[2][field], np.nan)
    buffer = ReplayBuffer(10, gym.spaces.Box(-np.inf, np.inf, (4,), np.float32), spaces.Discrete(2))
    fill(buffer, recorded)
    word = "reward" if field == "rewards" else "observation"
    with pytest.raises(NonFiniteError, match=f"the env returned a NaN or infinite {word}"):
        buffer.sample(64, np.random.default_rng(0))  # 64 draws from 6 rows: row 2 among them
