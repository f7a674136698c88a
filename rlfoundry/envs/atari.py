"""Atari for DQN: Gymnasium's AtariPreprocessing and frame stacking for every `ALE/...` id.

`make_env("ALE/Pong-v5", n_envs)` builds each copy with `make_atari_env`:

    gym.make(id, frameskip=1)     ALE v5 defaults kept: sticky actions (repeat_action_probability
                                  0.25) and the full action set off, episodes cut at 108k frames
    AtariPreprocessing            up to 30 no-op actions at reset, max-pooled frame skip of 4,
                                  84 x 84 grayscale frames, episodes end at game over (not at a
                                  lost life), pixels stay uint8
    FrameStackObservation(4)      observations [4, 84, 84] uint8, the newest frame last; an
                                  episode's first stack repeats its first frame

Rewards are not clipped here, so reported returns are game scores; DQN clips the rewards it
learns from with its `clip_rewards` option. make_atari_env's options and gym.make's keyword
arguments reach it through make_env(id, **kwargs) or rlfoundry.RegisteredEnv(id, kwargs) (`rlf
train --env-kwarg key=value`); pass your own factory to make_env for other settings.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import gymnasium as gym
from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

ATARI_PREFIX = "ALE/"
FRAME_SKIP = 4
# The emulator runs 60 frames a second, so an agent step of FRAME_SKIP frames lasts 1/15 s.
STEPS_PER_SECOND = 60 / FRAME_SKIP
FRAME_STACK = 4
SCREEN_SIZE = 84
# gym.make's keyword arguments that the preprocessing sets itself, and what to use instead.
FIXED_MAKE_KWARGS = {
    "frameskip": f"AtariPreprocessing skips {FRAME_SKIP} frames itself (max-pooling the last two), so the ALE runs with frameskip=1",
    "max_episode_steps": (
        "its time limit would count emulator frames (the ALE runs with frameskip=1 under the preprocessing): use "
        f"max_num_frames_per_episode, in frames ({FRAME_SKIP} an agent step; ALE v5's default is 108000)"
    ),
}


def is_atari_id(env_id: str) -> bool:
    """Whether an env id names an Arcade Learning Environment game."""
    return env_id.startswith(ATARI_PREFIX)


def make_atari_env(
    env_id: str,
    frame_stack: int = FRAME_STACK,
    noop_max: int = 30,
    terminal_on_life_loss: bool = False,
    **make_kwargs: Any,
) -> gym.Env:
    """One Atari env with the standard DQN preprocessing (see the module docstring)."""
    import ale_py  # imported (slow) and its ids registered only when an Atari env is made

    gym.register_envs(ale_py)
    # AtariPreprocessing skips (and max-pools) frames itself, so the ALE must not skip any.
    env = gym.make(env_id, frameskip=1, **make_kwargs)
    env = AtariPreprocessing(
        env,
        noop_max=noop_max,
        frame_skip=FRAME_SKIP,
        screen_size=SCREEN_SIZE,
        terminal_on_life_loss=terminal_on_life_loss,
        grayscale_obs=True,
        scale_obs=False,
    )
    return FrameStackObservation(env, frame_stack, padding_type="reset")


def atari_factory(env_id: str, **options: Any) -> Callable[[], gym.Env]:
    """A function that builds one preprocessed copy of `env_id` (what vector envs need)."""
    return functools.partial(make_atari_env, env_id, **options)
