"""evaluate(): whole episodes, fixed quotas per env, any env source."""

import gymnasium as gym
import numpy as np
import pytest

import rlfoundry
from rlfoundry import QLearning
from rlfoundry.envs.chain import ChainEnv


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
