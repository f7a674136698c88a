"""Atari preprocessing options: FIRE pressed for the agent after a reset and after a lost life."""

import ale_py
import gymnasium as gym
import numpy as np
import pytest

import rlfoundry
from rlfoundry.envs.atari import PressFire, make_atari_env
from rlfoundry.run.config import ConfigError

NOOP, FIRE = 0, 1
gym.register_envs(ale_py)  # for gym.make of ALE ids here; make_env registers them itself


class ScriptedGame(gym.Env):
    """A stand-in for an ALE game: step t gives rewards[t] and leaves lives[t] lives, its `ale`
    reports them, and it records every action it is given."""

    observation_space = gym.spaces.Discrete(100)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, rewards, lives, terminated_at=None):
        self.rewards, self.lives_after, self.terminated_at = rewards, lives, terminated_at
        self.ale = self
        self.actions, self.t = [], 0

    def lives(self):
        return self.lives_after[self.t - 1] if self.t else 3

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return 0, {}

    def step(self, action):
        self.actions.append(int(action))
        self.t += 1
        return self.t, self.rewards[self.t - 1], self.t == self.terminated_at, False, {}


def test_fire_at_reset_counts_its_reward_in_the_first_step():
    game = ScriptedGame(rewards=[5.0, 1.0, 0.0], lives=[3, 3, 3])
    env = PressFire(game, FIRE, on_reset=True, on_life_loss=False)
    assert env.reset() == (1, {})  # the observation after FIRE
    assert env.step(NOOP)[:2] == (2, 6.0)
    assert env.step(NOOP)[:2] == (3, 0.0)
    assert game.actions == [FIRE, NOOP, NOOP]


def test_fire_after_a_lost_life_adds_its_step_to_the_agents():
    # Step 2 loses a life (3 -> 2): FIRE is step 3, its reward added; step 5 loses one and ends the
    # episode: no FIRE then.
    game = ScriptedGame(rewards=[0.0, 1.0, 10.0, 0.0, 0.0], lives=[3, 2, 2, 2, 1], terminated_at=5)
    env = PressFire(game, FIRE, on_reset=False, on_life_loss=True)
    env.reset()
    assert env.step(NOOP)[:3] == (1, 0.0, False)
    assert env.step(NOOP)[:3] == (3, 11.0, False)
    assert env.step(NOOP)[:3] == (4, 0.0, False)
    assert env.step(NOOP)[:3] == (5, 0.0, True)
    assert game.actions == [NOOP, NOOP, FIRE, NOOP, NOOP]


class ActionSpy(gym.Wrapper):
    """Records the actions the ALE is given, frame by frame."""

    def __init__(self, env):
        super().__init__(env)
        self.actions = []

    def step(self, action):
        self.actions.append(int(action))
        return self.env.step(action)


def breakout(**options):
    """Breakout without sticky actions or no-op starts (both random), the ALE's actions spied on."""
    env = make_atari_env("ALE/Breakout-v5", noop_max=0, repeat_action_probability=0.0, **options)
    preprocessing = env.env.env if options.get("fire_on_reset") or options.get("fire_on_life_loss") else env.env
    preprocessing.env = spy = ActionSpy(preprocessing.env)
    return env, spy


def play_noop(env, steps):
    """Lives left after each of up to `steps` NOOP steps, until the episode ends."""
    lives = []
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(NOOP)
        lives.append(env.unwrapped.ale.lives())
        if terminated or truncated:
            break
    return lives


def test_breakout_gets_fire_after_reset_and_after_each_lost_life():
    env, spy = breakout(fire_on_reset=True, fire_on_life_loss=True)
    assert env.unwrapped.get_action_meanings()[FIRE] == "FIRE"
    env.reset(seed=0)
    assert spy.actions == [FIRE] * 4  # one agent step: 4 frames
    lives = play_noop(env, 200)
    # A policy that never presses FIRE misses each ball served for it, and the game ends.
    assert sorted(set(lives), reverse=True) == [5, 4, 3, 2, 1, 0] and len(lives) < 200
    assert spy.actions.count(FIRE) == 4 * 5  # at the reset and after the 4 lives lost before the last
    env.close()


def test_without_fire_after_a_lost_life_breakout_waits():
    env, spy = breakout(fire_on_reset=True)
    env.reset(seed=0)
    lives = play_noop(env, 200)
    assert lives[-1] == 4 and len(lives) == 200 and spy.actions.count(FIRE) == 4
    plain, plain_spy = breakout()
    plain.reset(seed=0)
    assert play_noop(plain, 100) == [5] * 100 and FIRE not in plain_spy.actions
    env.close()
    plain.close()


def test_fire_options_are_refused_for_a_game_without_fire():
    assert "FIRE" not in gym.make("ALE/Freeway-v5").unwrapped.get_action_meanings()
    with pytest.raises(ConfigError, match=r"ALE/Freeway-v5 has no FIRE action \(its actions: NOOP, UP, DOWN\)"):
        rlfoundry.make_env("ALE/Freeway-v5", fire_on_reset=True)
    with pytest.raises(ConfigError, match="fire_on_life_loss=True presses FIRE when a life is lost and the episode goes on"):
        make_atari_env("ALE/Breakout-v5", fire_on_life_loss=True, terminal_on_life_loss=True)


def test_ram_observations_are_refused_when_the_env_is_made():
    """The preprocessing reads the screen and the ALE's RAM observations have no frame to resize:
    obs_type='ram' was accepted, the env claimed [4, 84, 84] frames, and its first reset raised
    "Expected a numpy array with two dimensions" from inside AtariPreprocessing."""
    with pytest.raises(ConfigError, match=r"ALE/Pong-v5 with obs_type='ram' observes the console's 128 bytes of RAM"):
        rlfoundry.make_env("ALE/Pong-v5", obs_type="ram")
    for obs_type in ("rgb", "grayscale"):  # the frames come from the screen either way
        env = rlfoundry.make_env("ALE/Pong-v5", obs_type=obs_type, noop_max=0, repeat_action_probability=0.0)
        observations, _ = env.reset(seed=0)
        assert observations.shape == (1, 4, 84, 84)
        env.close()


def test_continuous_actions_are_refused_with_the_discrete_actions_the_preprocessing_takes():
    """The no-op starts step the ALE with action 0 and PressFire with FIRE's index, which an ALE made
    with continuous=True refuses (a bare AssertionError from ale_py at the first reset)."""
    for options in ({}, {"noop_max": 0, "fire_on_reset": True}, {"noop_max": 0, "fire_on_life_loss": True}):
        with pytest.raises(ConfigError, match="continuous=True acts with joystick arrays"):
            rlfoundry.make_env("ALE/Breakout-v5", continuous=True, **options)
    env = rlfoundry.make_env("ALE/Breakout-v5", continuous=True, noop_max=0)
    env.reset(seed=0)
    env.step(np.zeros((1, 3), dtype=np.float32))
    env.close()


def test_a_dqn_on_breakout_with_fire_loads_onto_the_same_env(tmp_path):
    env = rlfoundry.RegisteredEnv("ALE/Breakout-v5", {"fire_on_reset": True, "repeat_action_probability": 0.0})
    rlfoundry.DQN(env, quiet=True, buffer_size=64, learning_starts=100, device="cpu").learn(8).save(tmp_path / "dqn")
    loaded = rlfoundry.load(tmp_path / "dqn", quiet=True)
    assert loaded.training_env.rebuild_source == env
    loaded.learn(4)
    (copy,) = loaded.training_env.env.envs
    assert isinstance(copy.env, PressFire) and copy.unwrapped.ale.getFloat("repeat_action_probability") == 0.0
    assert np.asarray(loaded.training_env.observations).shape == (1, 4, 84, 84)


def test_dqn_stores_frames_apart_only_where_make_env_stacked_them():
    """An ALE env object is not known to hold frame stacks (RGB channels, say), nor is a stack of
    one frame: "auto" used to choose "frames" for both, which refused them (at the first add, and
    on construction)."""
    channels_first = gym.wrappers.TransformObservation(
        gym.make("ALE/Breakout-v5"), lambda frame: frame.transpose(2, 0, 1), gym.spaces.Box(0, 255, (3, 210, 160), np.uint8)
    )
    sources = {
        "shared": [channels_first, rlfoundry.RegisteredEnv("ALE/Breakout-v5", {"frame_stack": 1})],
        "frames": [rlfoundry.RegisteredEnv("ALE/Breakout-v5", {"frame_stack": 2})],
    }
    for storage, envs in sources.items():
        for env in envs:
            assert rlfoundry.DQN(env, quiet=True, buffer_size=64, device="cpu").replay.storage == storage


def test_a_loaded_dqn_keeps_its_saved_buffer_layout_whatever_env_the_load_passes(tmp_path):
    """"auto" stores the stacks of an ALE env object (or vector env) whole and those make_env builds
    for an ALE id as frames: a checkpoint of one loaded with the other as env= used to build the
    other layout and refuse the saved buffer as corrupt ("was the manifest.json edited?")."""
    settings = dict(quiet=True, buffer_size=64, learning_starts=100, device="cpu")
    rlfoundry.DQN(rlfoundry.make_env("ALE/Breakout-v5", n_envs=1), **settings).learn(8).save(tmp_path / "shared")
    rlfoundry.DQN("ALE/Breakout-v5", **settings).learn(8).save(tmp_path / "frames")
    (env_object,) = rlfoundry.make_env("ALE/Breakout-v5", n_envs=1).envs
    for storage, env in (("shared", "ALE/Breakout-v5"), ("frames", env_object)):
        loaded = rlfoundry.load(tmp_path / storage, env, quiet=True)
        assert (loaded.replay.storage, len(loaded.replay)) == (storage, 8)
        loaded.learn(4)
