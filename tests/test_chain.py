"""The notes' 3-state chain: registration, dynamics, and agreement with chain_mdp."""

from __future__ import annotations

import gymnasium
import numpy as np

from rlfoundry.envs.chain import LEFT, RIGHT, STATE_NAMES, ChainEnv, chain_mdp, register_chain_env
from rlfoundry.mdp import FiniteMDP


def make_chain() -> gymnasium.Env:
    register_chain_env()
    register_chain_env()  # idempotent
    return gymnasium.make("rlfoundry/Chain-v0")


def test_registered_id_makes_a_time_limited_chain_env():
    env = make_chain()
    assert isinstance(env.unwrapped, ChainEnv)
    assert env.spec.max_episode_steps == 100
    assert env.observation_space == gymnasium.spaces.Discrete(3)
    assert env.action_space == gymnasium.spaces.Discrete(2)
    assert (RIGHT, LEFT, STATE_NAMES) == (0, 1, ("S1", "S2", "S3"))
    env.close()


def test_right_right_pays_zero_then_one_and_terminates():
    env = make_chain()
    for seed in range(3):
        assert env.reset(seed=seed)[0] == 0
        assert env.step(RIGHT)[:4] == (1, 0.0, False, False)
        assert env.step(RIGHT)[:4] == (2, 1.0, True, False)


def test_left_moves_back_and_stays_at_s1():
    env = make_chain()
    env.reset(seed=0)
    assert env.step(LEFT)[:4] == (0, 0.0, False, False)
    assert env.step(RIGHT)[:4] == (1, 0.0, False, False)
    assert env.step(LEFT)[:4] == (0, 0.0, False, False)


def test_always_left_is_truncated_at_100_steps():
    env = make_chain()
    env.reset(seed=0)
    for step in range(1, 101):
        state, reward, terminated, truncated, _ = env.step(LEFT)
        assert (state, reward, terminated) == (0, 0.0, False)
        assert truncated == (step == 100)


def test_from_gymnasium_of_chain_equals_chain_mdp():
    expected = chain_mdp(gamma=0.9)
    for source in (make_chain(), "rlfoundry/Chain-v0", ChainEnv()):
        mdp = FiniteMDP.from_gymnasium(source, 0.9)
        for name in ("transitions", "rewards", "expected_rewards", "initial_distribution", "terminal_states"):
            np.testing.assert_array_equal(getattr(mdp, name), getattr(expected, name), err_msg=name)
        assert mdp.gamma == expected.gamma


def test_ansi_render_marks_the_current_state():
    env = ChainEnv(render_mode="ansi")
    env.reset(seed=0)
    env.step(RIGHT)
    assert env.render() == " S1  [S2]  S3   (Right)\n"
