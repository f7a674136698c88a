"""Env keyword arguments: they reach the env, are checked against it, and are read back from env objects."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from rlfoundry import RegisteredEnv, make_env
from rlfoundry.envs.atari import make_atari_env
from rlfoundry.envs.registry import parse_env_kwargs
from rlfoundry.envs.vector import env_id_of, env_kwargs_of, step_vector
from rlfoundry.run.config import ConfigError


@pytest.mark.parametrize("source", ["id with kwargs", "RegisteredEnv"])
def test_keyword_arguments_reach_the_env(source):
    kwargs = {"max_episode_steps": 3, "sutton_barto_reward": True}
    if source == "RegisteredEnv":
        env = make_env(RegisteredEnv("CartPole-v1", kwargs), n_envs=2, seed=0)
    else:
        env = make_env("CartPole-v1", n_envs=2, seed=0, **kwargs)
    steps = [step_vector(env, np.zeros(2, dtype=np.int64)) for _ in range(3)]
    # Cut at the third step (CartPole-v1's own limit is 500); Sutton and Barto's reward is 0 until a fall.
    assert [step.truncated.tolist() for step in steps] == [[False, False], [False, False], [True, True]]
    assert all(step.rewards.tolist() == [0.0, 0.0] for step in steps)


def test_atari_keyword_arguments_reach_the_ale_and_the_preprocessing():
    env = make_env(RegisteredEnv("ALE/Breakout-v5", {"repeat_action_probability": 0.0, "full_action_space": True, "frame_stack": 2}))
    ale = env.envs[0].unwrapped.ale
    assert ale.getFloat("repeat_action_probability") == 0.0
    assert env.single_action_space.n == 18 and env.single_observation_space.shape == (2, 84, 84)
    env.close()


@pytest.mark.parametrize(
    "env_id, kwargs, message",
    [
        ("CartPole-v1", {"max_episode_step": 3}, "unknown keyword argument of CartPole-v1 'max_episode_step'; did you mean max_episode_steps"),
        ("ALE/Breakout-v5", {"repeat_action_probabilty": 0.0}, "did you mean repeat_action_probability"),
        ("ALE/Breakout-v5", {"frameskip": 4}, "ALE/Breakout-v5 does not take frameskip: AtariPreprocessing skips 4 frames itself"),
        ("ALE/Breakout-v5", {"max_episode_steps": 100}, "would count emulator frames.*use max_num_frames_per_episode"),
        # The env's own refusal, as one line naming the arguments.
        ("ALE/Breakout-v5", {"mode": 99}, r"ALE/Breakout-v5 cannot be made with mode=99: RuntimeError: Invalid game mode"),
        ("FrozenLake-v1", {"map_name": "9x9"}, r"FrozenLake-v1 cannot be made with map_name='9x9': KeyError"),
    ],
)
def test_keyword_arguments_the_env_does_not_take_are_named(env_id, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        make_env(env_id, **kwargs)


def test_keyword_arguments_go_only_with_an_id():
    with pytest.raises(TypeError, match=r"keyword arguments \(max_episode_steps=3\) make an env from an id, not from a function"):
        make_env(lambda: gym.make("CartPole-v1"), max_episode_steps=3)
    with pytest.raises(TypeError, match="inside the RegisteredEnv"):
        make_env(RegisteredEnv("CartPole-v1"), max_episode_steps=3)


@pytest.mark.parametrize("value", [(1, 0, 0), float("nan"), {1: 2}, np.int64(3)])
def test_a_registered_env_holds_only_what_a_checkpoint_can_record(value):
    with pytest.raises(ConfigError, match=r"cannot be recorded in a checkpoint, which holds JSON values"):
        RegisteredEnv("FrozenLake-v1", {"reward_schedule": value})


def test_a_registered_env_keeps_its_own_copy_of_the_arguments():
    kwargs = {"is_slippery": False}
    env = RegisteredEnv("FrozenLake-v1", kwargs)
    kwargs["is_slippery"] = True
    assert env.kwargs == {"is_slippery": False} and str(env) == "FrozenLake-v1(is_slippery=False)"


def test_command_line_values_take_the_types_the_env_annotates_or_the_first_that_fits():
    assert parse_env_kwargs("ALE/Breakout-v5", ["repeat_action_probability=0", "full_action_space=true", "mode=none", "fire_on_reset=yes"]) == {
        "repeat_action_probability": 0.0, "full_action_space": True, "mode": None, "fire_on_reset": True,
    }
    # Pendulum's g has no annotation: an int, else a float, else a bool, else a string.
    assert parse_env_kwargs("Pendulum-v1", ["g=9.5", "max_episode_steps=1_000"]) == {"g": 9.5, "max_episode_steps": 1000}
    with pytest.raises(ConfigError, match="is_slippery expects true or false, got 'maybe'"):
        parse_env_kwargs("FrozenLake-v1", ["is_slippery=maybe"])


def test_command_line_values_take_the_annotated_types_of_a_constructor_that_takes_any_keyword():
    """MuJoCo constructors annotate their own keywords and pass the others (**kwargs) on: their
    annotations were ignored, so forward_reward_weight=fast reached HalfCheetah as a string and the
    first step failed (rlf train: a traceback after the run directory was written)."""
    parsed = parse_env_kwargs("HalfCheetah-v5", ["forward_reward_weight=2", "frame_skip=4.0", "width=64"])
    assert repr(parsed) == repr({"forward_reward_weight": 2.0, "frame_skip": 4, "width": 64})  # the types too
    with pytest.raises(ConfigError, match="forward_reward_weight expects a number, got 'fast'"):
        parse_env_kwargs("HalfCheetah-v5", ["forward_reward_weight=fast"])
    with pytest.raises(ConfigError, match="exclude_current_positions_from_observation expects true or false, got 'maybe'"):
        parse_env_kwargs("HalfCheetah-v5", ["exclude_current_positions_from_observation=maybe"])


def test_a_command_line_tuple_becomes_a_list_that_checkpoints_record():
    """Hopper annotates healthy_z_range as tuple[float, float]: parsed as a tuple, it was refused as
    a value a checkpoint cannot record, with a remedy (pass a function) the command line has not."""
    kwargs = parse_env_kwargs("Hopper-v5", ["healthy_z_range=0.5,2"])
    assert repr(kwargs) == repr({"healthy_z_range": [0.5, 2.0]})
    env = make_env(RegisteredEnv("Hopper-v5", kwargs))
    assert env.envs[0].unwrapped._healthy_z_range == [0.5, 2.0]
    env.close()


def autoreset_vector(env_id, **kwargs):
    return gym.make_vec(env_id, 2, vectorization_mode="sync", vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP}, **kwargs)


@pytest.mark.parametrize(
    "make, env_id, kwargs",
    [
        (lambda: gym.make("CartPole-v1"), "CartPole-v1", {}),
        (lambda: gym.make("CartPole-v1", max_episode_steps=1000, sutton_barto_reward=True), "CartPole-v1",
         {"max_episode_steps": 1000, "sutton_barto_reward": True}),
        # How it draws is not what it does.
        (lambda: gym.make("FrozenLake-v1", is_slippery=False, render_mode="rgb_array"), "FrozenLake-v1", {"is_slippery": False}),
        (lambda: autoreset_vector("CartPole-v1", max_episode_steps=7), "CartPole-v1", {"max_episode_steps": 7}),
        (lambda: make_env("CartPole-v1", n_envs=4), "CartPole-v1", {}),
        # What the id cannot rebuild: extra wrappers, an ALE object (make_env adds rlfoundry's
        # preprocessing to ALE ids, whatever the object had), a factory.
        (lambda: gym.wrappers.RecordEpisodeStatistics(gym.make("CartPole-v1")), "CartPole-v1", None),
        (lambda: make_atari_env("ALE/Pong-v5"), "ALE/Pong-v5", None),
        (lambda: lambda: gym.make("CartPole-v1"), None, None),
    ],
)
def test_env_objects_give_the_keyword_arguments_they_were_made_with(make, env_id, kwargs):
    env = make()
    assert (env_id_of(env), env_kwargs_of(env)) == (env_id, kwargs)
