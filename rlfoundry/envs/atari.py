"""Atari for DQN: Gymnasium's AtariPreprocessing and frame stacking for every `ALE/...` id.

`make_env("ALE/Pong-v5", n_envs)` builds each copy with `make_atari_env`:

    gym.make(id, frameskip=1)     ALE v5 defaults kept: sticky actions (repeat_action_probability
                                  0.25) and the full action set off, episodes cut at 108k frames
    AtariPreprocessing            up to 30 no-op actions at reset, max-pooled frame skip of 4,
                                  84 x 84 grayscale frames, episodes end at game over (not at a
                                  lost life), pixels stay uint8
    PressFire (opt-in)            FIRE pressed for the agent after a reset and after a lost life
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
from typing import TYPE_CHECKING, Any, cast

import gymnasium as gym
from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

from rlfoundry.run.config import ConfigError

if TYPE_CHECKING:
    from ale_py import AtariEnv

ATARI_PREFIX = "ALE/"
FRAME_SKIP = 4
EMULATOR_FRAMES_PER_SECOND = 60
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
FIRE = "FIRE"


def ale_env(env: gym.Env) -> AtariEnv:
    """The ALE env under the wrappers (its action meanings, its emulator's lives)."""
    return cast("AtariEnv", env.unwrapped)


def is_atari_id(env_id: str) -> bool:
    """Whether an env id names an Arcade Learning Environment game."""
    return env_id.startswith(ATARI_PREFIX)


def agent_steps_per_second(env: gym.Env) -> float | None:
    """Agent steps per second of game time for an env over the ALE: 60 emulator frames a second over
    the frames one step takes (the ALE's own frameskip times AtariPreprocessing's frame_skip); None
    for an env that is not an ALE game. The ALE's render_fps (30) does not count the frames skipped."""
    frames_per_step = 1.0
    layer = env
    while isinstance(layer, gym.Wrapper):
        if isinstance(layer, AtariPreprocessing):
            frames_per_step *= layer.frame_skip
        layer = layer.env
    if type(layer).__module__.split(".")[0] != "ale_py":
        return None
    skip = getattr(layer, "_frameskip", 1)
    # A stochastic frameskip (low, high) draws from range(low, high): its mean.
    frames_per_step *= (skip[0] + skip[1] - 1) / 2 if isinstance(skip, tuple) else skip
    return EMULATOR_FRAMES_PER_SECOND / frames_per_step


def make_atari_env(
    env_id: str,
    frame_stack: int = FRAME_STACK,
    noop_max: int = 30,
    terminal_on_life_loss: bool = False,
    fire_on_reset: bool = False,
    fire_on_life_loss: bool = False,
    **make_kwargs: Any,
) -> gym.Env:
    """One Atari env with the standard DQN preprocessing (see the module docstring).

    terminal_on_life_loss: end the episode at a lost life; Gymnasium's AtariPreprocessing then
    starts a new game at the reset, so every episode is a first life.
    fire_on_reset, fire_on_life_loss: press FIRE for the agent after every reset, and after every
    lost life that does not end the episode (see PressFire); only for games with a FIRE action.
    """
    import ale_py  # imported (slow) and its ids registered only when an Atari env is made

    gym.register_envs(ale_py)
    if fire_on_life_loss and terminal_on_life_loss:
        raise ConfigError(
            "fire_on_life_loss=True presses FIRE when a life is lost and the episode goes on, but with "
            "terminal_on_life_loss=True it ends there: use fire_on_reset=True, which presses it as the next episode starts"
        )
    if make_kwargs.get("obs_type") == "ram":
        # AtariPreprocessing reads the screen into a buffer shaped like the ALE's observations,
        # which for RAM have no second axis: its first reset would fail.
        raise ConfigError(
            f"{env_id} with obs_type='ram' observes the console's 128 bytes of RAM, which the preprocessing "
            f"({SCREEN_SIZE} x {SCREEN_SIZE} frames of the screen) cannot take: leave obs_type out (the frames come "
            f"from the screen with 'rgb' and 'grayscale' alike), or for RAM observations pass a function that makes "
            f"the env, e.g. lambda: gymnasium.make({env_id!r}, obs_type='ram')"
        )
    if make_kwargs.get("continuous") and (noop_max > 0 or fire_on_reset or fire_on_life_loss):
        # The ALE asserts that a continuous action is a float32 array; the first reset would fail.
        raise ConfigError(
            f"{env_id} with continuous=True acts with joystick arrays [strength, angle, fire], but the no-op starts "
            "(noop_max) step it with the discrete action 0 and fire_on_reset and fire_on_life_loss with FIRE's index: "
            "pass noop_max=0 with continuous=True, and leave the fire options out"
        )
    # AtariPreprocessing skips (and max-pools) frames itself, so the ALE must not skip any.
    env = gym.make(env_id, frameskip=1, **make_kwargs)
    meanings = ale_env(env).get_action_meanings()
    if (fire_on_reset or fire_on_life_loss) and FIRE not in meanings:
        env.close()
        raise ConfigError(
            f"{env_id} has no {FIRE} action (its actions: {', '.join(meanings)}): leave fire_on_reset and "
            "fire_on_life_loss out, they are for games that wait for FIRE (Breakout)"
        )
    env = AtariPreprocessing(
        env,
        noop_max=noop_max,
        frame_skip=FRAME_SKIP,
        screen_size=SCREEN_SIZE,
        terminal_on_life_loss=terminal_on_life_loss,
        grayscale_obs=True,
        scale_obs=False,
    )
    if fire_on_reset or fire_on_life_loss:
        env = PressFire(env, meanings.index(FIRE), on_reset=fire_on_reset, on_life_loss=fire_on_life_loss)
    return FrameStackObservation(env, frame_stack, padding_type="reset")


class PressFire(gym.Wrapper):
    """Press FIRE for the agent, one agent step (FRAME_SKIP frames) long: after every reset
    (`on_reset`, after the no-op starts) and after every step that loses a life without ending the
    episode (`on_life_loss`). Breakout serves the ball only on FIRE, at the start and after each
    lost life: a policy that has not learnt to press it waits until the ALE's frame limit.

    The agent sees the observation after FIRE. Its reward counts: at a reset it is added to the
    agent's first step's, after a lost life to that step's, so returns stay game scores. With sticky
    actions the ALE may repeat the previous action instead of FIRE in all four frames
    (0.25^4 = 0.4%): then the agent has to press it itself.
    """

    def __init__(self, env: gym.Env, fire_action: int, on_reset: bool, on_life_loss: bool):
        super().__init__(env)
        self.fire_action = fire_action
        self.on_reset = on_reset
        self.on_life_loss = on_life_loss
        self.lives = 0
        self.reward_at_reset = 0.0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        observation, info = self.env.reset(seed=seed, options=options)
        self.reward_at_reset = 0.0
        if self.on_reset:
            # A game does not end in its first frames (nor an episode, unless max_num_frames_per_episode
            # is below the no-op start plus 4 frames): what this step says of the episode's end is not needed.
            observation, reward, _, _, info = self.env.step(self.fire_action)
            self.reward_at_reset = float(reward)
        self.lives = ale_env(self.env).ale.lives()
        return observation, info

    def step(self, action: Any):
        observation, reward, terminated, truncated, info = self.env.step(action)
        reward = float(reward) + self.reward_at_reset
        self.reward_at_reset = 0.0
        lives = ale_env(self.env).ale.lives()
        if self.on_life_loss and lives < self.lives and not (terminated or truncated):
            observation, fire_reward, terminated, truncated, info = self.env.step(self.fire_action)
            reward += float(fire_reward)
            lives = ale_env(self.env).ale.lives()
        self.lives = lives
        return observation, reward, terminated, truncated, info


def atari_factory(env_id: str, **options: Any) -> Callable[[], gym.Env]:
    """A function that builds one preprocessed copy of `env_id` (what vector envs need)."""
    return functools.partial(make_atari_env, env_id, **options)
