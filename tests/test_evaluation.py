"""evaluate(): whole episodes, fixed quotas per env, any env source."""

import gymnasium as gym
import numpy as np
import pytest

import rlfoundry
from rlfoundry import QLearning
from rlfoundry.envs.chain import ChainEnv
from rlfoundry.envs.spaces import SpaceError
from rlfoundry.run.evaluation import episode_step_cap, vector_env_specs


def right_always():
    model = QLearning("rlfoundry/Chain-v0", gamma=0.9, learning_rate=0.5, epsilon_start=0.0, epsilon_end=0.0,
                      tie_break="first", quiet=True)
    return model.learn(20)


@pytest.mark.parametrize(
    "source",
    [
        None,
        "rlfoundry/Chain-v0",
        ChainEnv(),
        ChainEnv,
        rlfoundry.make_env("rlfoundry/Chain-v0", n_envs=3),
    ],
    ids=["model's env", "env id", "env instance", "factory", "vector env"],
)
def test_every_env_source_gives_exactly_n_whole_episodes(source):
    result = rlfoundry.evaluate(right_always(), source, n_episodes=7, seed=0)
    assert result.returns.tolist() == [1.0] * 7 and result.lengths.tolist() == [2] * 7


class FixedLength(gym.Env):
    """Every episode lasts `length` steps with reward 1 per step."""

    observation_space = gym.spaces.Discrete(10)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, length):
        self.length, self.count = length, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.count = 0
        return 0, {}

    def step(self, action):
        self.count += 1
        return self.count, 1.0, self.count >= self.length, False, {}


class ZeroPolicy:
    env_id = None

    def predict(self, observations, deterministic=True):
        return np.zeros(len(observations), dtype=np.int64)


def test_quotas_do_not_favour_short_episodes():
    # Env 0's episodes last 1 step, env 1's last 5. Keeping the first 4 episodes to finish would
    # give four 1-step episodes; a fixed quota of 2 per env gives both kinds.
    vector_env = gym.vector.SyncVectorEnv(
        [lambda: FixedLength(1), lambda: FixedLength(5)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )
    result = rlfoundry.evaluate(ZeroPolicy(), vector_env, n_episodes=4, seed=0)
    assert result.lengths.tolist() == [1, 1, 5, 5]
    assert result.returns.tolist() == [1.0, 1.0, 5.0, 5.0]
    assert (result.mean, result.std) == (3.0, 2.0)


class CountedResets(FixedLength):
    resets = 0

    def __init__(self):
        super().__init__(length=3)

    def reset(self, *, seed=None, options=None):
        CountedResets.resets += 1
        return super().reset(seed=seed, options=options)


def test_each_env_copy_is_reset_once_before_its_first_episode():
    """Two episodes of 3 steps in each of two copies: one reset per copy before them, then the
    vector env's autoreset at each episode's end. A reset more costs an Atari game its no-op steps."""
    CountedResets.resets = 0
    result = rlfoundry.evaluate(ZeroPolicy(), CountedResets, n_episodes=4, seed=0, max_envs=2)
    assert result.lengths.tolist() == [3, 3, 3, 3]
    assert CountedResets.resets == 2 + 2 * 2


def test_bad_episode_count():
    with pytest.raises(ValueError, match="n_episodes=0 is out of range"):
        rlfoundry.evaluate(right_always(), n_episodes=0)


class CountedCloses(ChainEnv):
    closes = 0

    def close(self):
        CountedCloses.closes += 1
        super().close()


def test_env_objects_stay_open_and_envs_made_for_the_evaluation_are_closed():
    """An env or vector env object is the caller's: evaluate() leaves it open (it closed a single
    env through its vector wrapper before); envs it builds from a factory or an id it closes."""
    model = right_always()
    single = CountedCloses()
    vector_env = gym.vector.SyncVectorEnv([CountedCloses, CountedCloses], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    for source in (single, vector_env):
        CountedCloses.closes = 0
        rlfoundry.evaluate(model, source, n_episodes=2, seed=0)
        rlfoundry.evaluate(model, source, n_episodes=2, seed=1)
        assert CountedCloses.closes == 0
    CountedCloses.closes = 0
    rlfoundry.evaluate(model, CountedCloses, n_episodes=3, seed=0)
    assert CountedCloses.closes == 3  # one env per episode here (up to max_envs)


class Endless(gym.Env):
    """Never ends an episode by itself and has no spec (so no registered time limit): -1 a step."""

    observation_space = gym.spaces.Discrete(1)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return 0, {}

    def step(self, action):
        return 0, -1.0, False, False, {}


class LeftPolicy(ZeroPolicy):
    """In CliffWalking, LEFT (3) from the start state walks into the wall: -1 a step, forever."""

    def predict(self, observations, deterministic=True):
        return np.full(len(observations), 3, dtype=np.int64)


@pytest.mark.parametrize(
    "policy, source",
    [(LeftPolicy(), "CliffWalking-v1"), (ZeroPolicy(), Endless)],
    ids=["registered without a time limit", "env without a spec"],
)
def test_an_env_without_a_time_limit_is_cut_at_the_default_cap(policy, source):
    """These episodes never end by themselves; evaluation used to loop forever on them."""
    result = rlfoundry.evaluate(policy, source, n_episodes=3, seed=0)
    assert result.lengths.tolist() == [10_000] * 3
    assert result.returns.tolist() == [-10_000.0] * 3
    assert result.cut.tolist() == [True] * 3
    assert str(result).endswith("over 3 episodes (3 cut at the step cap, counted with their return so far)")


def test_an_explicit_cap_cuts_before_the_time_limit_and_not_after_it():
    limited = gym.make("CliffWalking-v1", max_episode_steps=100)
    by_time_limit = rlfoundry.evaluate(LeftPolicy(), limited, n_episodes=2, seed=0)
    assert by_time_limit.lengths.tolist() == [100, 100] and by_time_limit.returns.tolist() == [-100.0, -100.0]
    assert by_time_limit.cut.tolist() == [False, False] and "cut" not in str(by_time_limit)
    shorter = rlfoundry.evaluate(LeftPolicy(), limited, n_episodes=2, seed=0, max_episode_steps=30)
    assert shorter.lengths.tolist() == [30, 30] and shorter.returns.tolist() == [-30.0, -30.0]
    assert shorter.cut.tolist() == [True, True]
    longer = rlfoundry.evaluate(LeftPolicy(), limited, n_episodes=2, seed=0, max_episode_steps=500)
    assert longer.lengths.tolist() == [100, 100] and longer.cut.tolist() == [False, False]


def test_a_cut_env_copy_starts_a_new_episode_beside_the_others():
    # Env 0's episodes last 2 steps, env 1's 5: a cap of 3 cuts only env 1's, which then starts
    # over from a reset while env 0 goes on; an episode the env ends at the cap is not cut.
    vector_env = gym.vector.SyncVectorEnv(
        [lambda: FixedLength(2), lambda: FixedLength(5)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )
    result = rlfoundry.evaluate(ZeroPolicy(), vector_env, n_episodes=6, seed=0, max_episode_steps=3)
    assert result.lengths.tolist() == [2, 2, 2, 3, 3, 3]
    assert result.returns.tolist() == [2.0, 2.0, 2.0, 3.0, 3.0, 3.0]
    assert result.cut.tolist() == [False, False, False, True, True, True]
    at_the_cap = rlfoundry.evaluate(ZeroPolicy(), lambda: FixedLength(3), n_episodes=2, seed=0, max_episode_steps=3)
    assert at_the_cap.lengths.tolist() == [3, 3] and at_the_cap.cut.tolist() == [False, False]


def test_native_cartpole_copies_are_cut_and_reset():
    # 8 episodes: 8 copies of the numpy-batched CartPole, whose time limit (500) a cap of 4 undercuts.
    result = rlfoundry.evaluate(ZeroPolicy(), "CartPole-v1", n_episodes=16, seed=0, max_episode_steps=4)
    assert result.lengths.tolist() == [4] * 16 and result.returns.tolist() == [4.0] * 16
    assert result.cut.all()


@pytest.mark.parametrize(
    "cap, message",
    [(0, "max_episode_steps=0 is out of range"), (-5, "max_episode_steps=-5 is out of range"),
     (2.5, "max_episode_steps must be an integer, got 2.5"), (True, "max_episode_steps must be an integer, got True")],
)
def test_bad_step_caps_are_refused(cap, message):
    with pytest.raises(ValueError, match=message):
        rlfoundry.evaluate(right_always(), n_episodes=1, max_episode_steps=cap)
    with pytest.raises(ValueError, match=f"evaluation {message}"):
        rlfoundry.PeriodicEvaluation(every=10, max_episode_steps=cap)


@pytest.mark.parametrize(
    "options, message",
    [(dict(max_envs=0), "max_envs=0 is out of range"), (dict(max_envs=2.5), "max_envs must be an integer, got 2.5"),
     (dict(seed=-1), "seed=-1 is out of range"), (dict(seed=1.5), "seed must be an integer, got 1.5"),
     (dict(deterministic="no"), "deterministic must be True or False, got 'no'")],
)
def test_bad_evaluation_options_are_named(options, message, tmp_path):
    """Not gymnasium's words for another name (n_envs=0, a float seed's missing len()), nor a
    truthy string read as deterministic=True."""
    with pytest.raises(ValueError, match=message):
        rlfoundry.evaluate(right_always(), n_episodes=2, **options)
    if "max_envs" not in options:
        with pytest.raises(ValueError, match=message):
            rlfoundry.record_video(right_always(), tmp_path / "chain.gif", **options)
        assert list(tmp_path.iterdir()) == []


def test_an_env_with_other_spaces_than_the_model_is_named_before_playing():
    model = QLearning("FrozenLake-v1", quiet=True)  # 16 states, 4 actions
    with pytest.raises(SpaceError, match=r"this env observes Discrete\(500\) and acts in Discrete\(6\), but the model "
                       r"was trained on observations Discrete\(16\) and actions Discrete\(4\)"):
        rlfoundry.evaluate(model, "Taxi-v4", n_episodes=1)
    taxi = gym.make("Taxi-v4")
    with pytest.raises(SpaceError, match="pass an env with the same spaces"):
        rlfoundry.evaluate(model, taxi, n_episodes=1)
    taxi.reset(seed=0)  # an env object passed in stays open


def test_the_summary_counts_episodes_in_words():
    from rlfoundry.run.evaluation import EvaluationResult

    one = EvaluationResult(returns=np.array([1.0]), lengths=np.array([3]), cut=np.array([False]))
    assert str(one) == "mean return 1.00 +/- 0.00 over 1 episode"
    two = EvaluationResult(returns=np.array([1.0, 2.0]), lengths=np.array([3, 3]), cut=np.array([False, True]))
    assert str(two) == "mean return 1.50 +/- 0.50 over 2 episodes (1 cut at the step cap, counted with their return so far)"


@pytest.mark.parametrize("frames, cap", [(108_000, None), (0, 10_000), (-1, 10_000)])
def test_an_ale_game_is_left_uncut_only_under_a_frame_limit(frames, cap):
    """The ALE ends episodes at max_num_frames_per_episode only when it is positive; a negative one
    was taken for a limit, and an evaluation of a Breakout policy that never serves played forever."""
    env = rlfoundry.make_env("ALE/Breakout-v5", max_num_frames_per_episode=frames)
    assert episode_step_cap(None, vector_env_specs(env)) == cap
    env.close()
