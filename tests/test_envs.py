"""The autoreset / final-observation rule, env ids, and env state capture."""

from typing import NamedTuple

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

import rlfoundry
from rlfoundry.envs import state as env_state
from rlfoundry.envs.registry import UnknownEnvironmentError, check_env_id
from rlfoundry.envs.vector import (
    AutoresetModeError,
    CartPoleSameStep,
    EpisodeTracker,
    make_env,
    step_vector,
    steps_directly,
)


class CounterEnv(gym.Env):
    """Observes how many steps the episode has taken; terminates at `terminate_at` if set."""

    observation_space = spaces.Box(0, 1000, shape=(1,), dtype=np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, terminate_at=None):
        self.terminate_at = terminate_at
        self.count = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.count = 0
        return np.array([0.0], dtype=np.float32), {}

    def step(self, action):
        self.count += 1
        terminated = self.terminate_at is not None and self.count >= self.terminate_at
        return np.array([self.count], dtype=np.float32), 1.0, terminated, False, {}


@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_truncation_keeps_the_true_final_observation(vectorization):
    env = make_env(lambda: gym.wrappers.TimeLimit(CounterEnv(), 3), n_envs=2, seed=0, vectorization=vectorization)
    tracker = EpisodeTracker(2)
    observations, _ = env.reset(seed=0)
    seen = []
    for _ in range(7):
        step = step_vector(env, np.zeros(2, dtype=np.int64))
        returns, lengths = tracker.update(step.rewards, step.done)
        seen.append((step.next_observations[:, 0].tolist(), step.observations[:, 0].tolist(), step.truncated.tolist()))
        if step.done.any():
            assert returns.tolist() == [3.0, 3.0] and lengths.tolist() == [3, 3]
    env.close()
    # Step 3 ends by truncation: s_{t+1} is the 3rd observation, the next one to act on is a reset.
    assert seen[2] == ([3.0, 3.0], [0.0, 0.0], [True, True])
    assert seen[0] == ([1.0, 1.0], [1.0, 1.0], [False, False])
    assert seen[5] == ([3.0, 3.0], [0.0, 0.0], [True, True])


class InfoEnv(CounterEnv):
    """A CounterEnv whose steps and resets report infos, and that ends episodes at random lengths."""

    def reset(self, *, seed=None, options=None):
        observation, _ = super().reset(seed=seed, options=options)
        self.terminate_at = int(self.np_random.integers(1, 5))
        return observation, {"reset_count": self.count, "nested": {"flag": True}}

    def step(self, action):
        observation, reward, terminated, truncated, _ = super().step(action)
        return observation, reward, terminated, truncated, {"count": self.count, "action": int(action)}


def same(first, second) -> bool:
    """Equal values, arrays elementwise (object arrays too), dicts key by key."""
    if isinstance(first, dict):
        return isinstance(second, dict) and first.keys() == second.keys() and all(same(first[key], second[key]) for key in first)
    if isinstance(first, np.ndarray):
        return (isinstance(second, np.ndarray) and first.dtype == second.dtype and first.shape == second.shape
                and all(same(a, b) for a, b in zip(first.ravel(), second.ravel())))
    return bool(np.all(first == second))


@pytest.mark.parametrize(("source", "n_envs"), [("CartPole-v1", 3), ("Pendulum-v1", 2), (InfoEnv, 3), (InfoEnv, 1)])
def test_stepping_a_sync_vector_env_directly_equals_its_step(source, n_envs):
    """step_vector steps a plain SyncVectorEnv itself (step_sync_directly); through a wrapper it
    calls env.step. Both must give the same steps, infos and env state."""
    direct, wrapped = (make_env(source, n_envs=n_envs) for _ in range(2))
    assert steps_directly(direct)
    wrapped = gym.vector.VectorWrapper(wrapped)
    assert not steps_directly(wrapped)
    first = [env.reset(seed=3)[0] for env in (direct, wrapped)]
    assert np.array_equal(*first)
    direct.action_space.seed(4)
    episodes = 0
    for _ in range(250):
        actions = direct.action_space.sample()
        step, expected = step_vector(direct, actions), step_vector(wrapped, actions)
        for field in ("observations", "next_observations", "rewards", "terminated", "truncated"):
            assert same(getattr(step, field), getattr(expected, field)), field
        assert same(step.infos, expected.infos)
        episodes += int(step.done.sum())
    assert episodes >= 2
    assert env_state.capture(direct) == env_state.capture(wrapped.env)
    # A step through the vector env's own method afterwards carries on from the same state.
    actions = direct.action_space.sample()
    assert same(direct.step(actions)[0], wrapped.step(actions)[0])


def test_termination_reports_final_observation_and_resets():
    env = make_env(lambda: CounterEnv(terminate_at=2), n_envs=1, seed=0)
    env.reset(seed=0)
    step_vector(env, np.zeros(1, dtype=np.int64))
    step = step_vector(env, np.zeros(1, dtype=np.int64))
    assert step.terminated.tolist() == [True] and step.truncated.tolist() == [False]
    assert step.next_observations[0, 0] == 2.0 and step.observations[0, 0] == 0.0


def test_cartpole_uses_the_native_vector_env_only_from_four_copies():
    assert isinstance(make_env("CartPole-v1", n_envs=3, seed=0).unwrapped, gym.vector.SyncVectorEnv)
    assert isinstance(make_env("CartPole-v1", n_envs=4, seed=0), CartPoleSameStep)
    assert isinstance(make_env("CartPole-v1", n_envs=8, seed=0, vectorization="sync").unwrapped, gym.vector.SyncVectorEnv)


def test_native_cartpole_is_adapted_to_same_step_autoreset():
    env = make_env("CartPole-v1", n_envs=4, seed=0)
    assert isinstance(env, CartPoleSameStep)
    assert env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    rng = np.random.default_rng(0)
    observations, _ = env.reset(seed=0)
    endings = 0
    for _ in range(400):
        step = step_vector(env, rng.integers(2, size=4))
        for index in np.flatnonzero(step.done):
            endings += 1
            final = step.next_observations[index]
            # Terminated because the cart or the pole left its bounds; a fresh episode follows.
            assert abs(final[0]) > 2.4 or abs(final[2]) > 12 * 2 * np.pi / 360
            assert np.all(np.abs(step.observations[index]) <= 0.05)
        continuing = ~step.done
        np.testing.assert_array_equal(step.next_observations[continuing], step.observations[continuing])
    assert endings > 10


def test_native_cartpole_truncates_at_its_time_limit():
    native = gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="vector_entry_point", max_episode_steps=5)
    env = CartPoleSameStep(native)
    env.reset(seed=1)
    tracker = EpisodeTracker(2)
    for _ in range(4):
        step = step_vector(env, np.array([0, 1]))
        tracker.update(step.rewards, step.done)
        assert not step.done.any()
    step = step_vector(env, np.array([0, 1]))
    returns, lengths = tracker.update(step.rewards, step.done)
    assert step.truncated.tolist() == [True, True] and lengths.tolist() == [5, 5]
    assert not np.array_equal(step.next_observations, step.observations)
    # The step after a reset is a real step of the new episode, not a wasted reset step.
    step = step_vector(env, np.array([0, 1]))
    assert step.rewards.tolist() == [1.0, 1.0]


def test_native_cartpole_resets_only_the_copies_of_a_reset_mask():
    """Evaluation's step cap resets the copies it cut, as SyncVectorEnv does with a reset_mask."""
    env = make_env("CartPole-v1", n_envs=4, seed=0)
    env.reset(seed=0)
    for _ in range(3):
        before = step_vector(env, np.array([0, 1, 0, 1])).observations
    mask = np.array([True, False, True, False])
    observations, _ = env.reset(options={"reset_mask": mask})
    np.testing.assert_array_equal(observations[~mask], before[~mask])
    assert not np.array_equal(observations[mask], before[mask])
    assert np.all(np.abs(observations[mask]) <= 0.05)
    assert env.unwrapped.steps.tolist() == [0, 3, 0, 3]
    with pytest.raises(ValueError, match="pass seed=None with a reset_mask"):
        env.reset(seed=1, options={"reset_mask": mask})


def test_next_step_autoreset_vector_envs_are_refused_with_a_fix():
    env = gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")
    with pytest.raises(AutoresetModeError, match="SAME_STEP.*rlfoundry.make_env"):
        make_env(env)


@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_vector_envs_that_overwrite_their_observations_are_refused_with_a_fix(vectorization):
    """A copy=False vector env returns one observation buffer that its next step overwrites: the
    rollout and the replay buffer stored s_{t+1} where s_t belonged, without a word."""
    env = gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode=vectorization,
                       vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP, "copy": False})
    with pytest.raises(ValueError, match="copy=False.*overwrites.*copy=True"):
        rlfoundry.PPO(env, quiet=True, n_envs=2)
    env.close()


def test_a_vector_env_must_match_n_envs():
    """It used to fail inside numpy broadcasting at the first step."""
    env = gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync",
                       vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP})
    with pytest.raises(ValueError, match="this vector env runs 2 envs but n_envs=1: pass n_envs=2"):
        rlfoundry.PPO(env, quiet=True)
    model = rlfoundry.PPO(env, quiet=True, n_envs=2, n_steps=16).learn(32)
    assert model.steps == 32


def test_unknown_env_id_names_the_closest():
    with pytest.raises(UnknownEnvironmentError, match="unknown environment id 'CartPol-v1'; did you mean CartPole-v1"):
        check_env_id("CartPol-v1")
    with pytest.raises(UnknownEnvironmentError) as raised:
        check_env_id("ALE/Pongg-v5")
    assert "did you mean ALE/Pong-v5" in str(raised.value)
    assert "pip install" not in str(raised.value), "ale-py is installed: no hint to install it"


def test_single_env_instance_cannot_be_copied():
    with pytest.raises(ValueError, match="n_envs=2 needs a way to build 2 copies"):
        make_env(gym.make("CartPole-v1"), n_envs=2)


@pytest.mark.parametrize(
    "source, n_envs",
    [("CartPole-v1", 3), ("FrozenLake-v1", 2), ("CliffWalking-v1", 1), ("rlfoundry/Chain-v0", 2), ("Pendulum-v1", 2)],
)
def test_env_state_capture_restores_the_future(source, n_envs):
    rng = np.random.default_rng(0)
    env = make_env(source, n_envs=n_envs, seed=3)
    env.reset(seed=3)
    actions = [env.action_space.sample() for _ in range(60)]
    for action in actions[:25]:
        step_vector(env, action)
    snapshot = env_state.capture(env)
    assert snapshot is not None
    future = [step_vector(env, action) for action in actions[25:]]
    twin = make_env(source, n_envs=n_envs, seed=99)
    twin.reset(seed=99)
    env_state.restore(twin, snapshot)
    replay = [step_vector(twin, action) for action in actions[25:]]
    for original, repeated in zip(future, replay):
        np.testing.assert_array_equal(original.observations, repeated.observations)
        np.testing.assert_array_equal(original.next_observations, repeated.next_observations)
        np.testing.assert_array_equal(original.rewards, repeated.rewards)
        np.testing.assert_array_equal(original.truncated, repeated.truncated)
    del rng


class LastStep(NamedTuple):
    action: int
    reward: float


class RemembersLastStep(gym.Wrapper):
    """A wrapper whose state is a named tuple: restored as a plain tuple, its fields would be gone."""

    def __init__(self, env):
        super().__init__(env)
        self.last = LastStep(0, 0.0)

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.last = LastStep(int(action), float(reward))
        return observation, reward, terminated, truncated, info


def test_env_state_held_in_a_tuple_subclass_is_not_captured():
    env = make_env(lambda: RemembersLastStep(gym.make("CartPole-v1")), n_envs=1, seed=0)
    step_vector(env, np.array([1]))
    assert env_state.capture(env) is None
    plain = make_env(lambda: gym.make("CartPole-v1"), n_envs=1, seed=0)
    step_vector(plain, np.array([1]))
    assert env_state.capture(plain) is not None


def test_env_state_of_native_code_envs_is_not_captured():
    env = make_env("CartPole-v1", n_envs=2, vectorization="async")
    assert env_state.capture(env) is None
    env.close()


def test_a_stable_baselines_atari_id_points_to_the_ale_names():
    with pytest.raises(UnknownEnvironmentError, match=r"Atari games are named ALE/<Game>-v5 here"):
        check_env_id("BreakoutNoFrameskip-v9")
