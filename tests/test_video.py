"""record_video and `rlf eval --video`: the recorded episode is the one evaluate() plays, every
step is a frame, and mistakes are refused before anything is played or written."""

import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image, ImageSequence

import rlfoundry
from rlfoundry.cli import main
from rlfoundry.run.config import ConfigError
from test_evaluation import Endless, ZeroPolicy


@pytest.fixture(scope="module")
def cartpole_ppo():
    return rlfoundry.PPO("CartPole-v1", quiet=True, n_envs=2, n_steps=64, hidden_sizes=(16,), seed=2).learn(1024)


class CountedCloses(gym.Wrapper):
    closes = 0

    def close(self):
        self.closes += 1
        super().close()


def frame_durations(path) -> list[int]:
    with Image.open(path) as image:
        return [frame.info["duration"] for frame in ImageSequence.Iterator(image)]


def test_one_recorded_episode_is_evaluates_episode_with_a_frame_per_step(tmp_path, cartpole_ppo):
    model = cartpole_ppo
    recorded = rlfoundry.record_video(model, tmp_path / "videos" / "cartpole.gif", seed=3)
    played = rlfoundry.evaluate(model, n_episodes=1, seed=3)
    np.testing.assert_array_equal(recorded.returns, played.returns)
    np.testing.assert_array_equal(recorded.lengths, played.lengths)
    assert recorded.lengths[0] > 10
    # CartPole renders at 50 fps: 20 ms a frame, the reset frame plus one per step. (The GIF
    # writer merges identical neighbouring frames and adds up their durations.)
    assert sum(frame_durations(tmp_path / "videos" / "cartpole.gif")) == 20 * (recorded.lengths[0] + 1)
    with Image.open(tmp_path / "videos" / "cartpole.gif") as image:
        assert image.size == (600, 400)


def test_several_episodes_follow_one_another_and_an_env_object_stays_open(tmp_path, cartpole_ppo):
    model = cartpole_ppo
    env = CountedCloses(gym.make("CartPole-v1", render_mode="rgb_array"))
    recorded = rlfoundry.record_video(model, tmp_path / "three.gif", env=env, n_episodes=2, seed=0)
    assert recorded.returns.shape == (2,)
    assert sum(frame_durations(tmp_path / "three.gif")) == 20 * int(recorded.lengths.sum() + 2)
    assert env.closes == 0  # the caller's env
    # The first episode is seeded, the next ones go on from the env's generator.
    first = rlfoundry.record_video(model, tmp_path / "one.gif", n_episodes=1, seed=0)
    assert recorded.returns[0] == first.returns[0]


def test_continuous_actions_and_a_normalising_policy(tmp_path):
    model = rlfoundry.PPO("Pendulum-v1", quiet=True, normalize_observations=True, hidden_sizes=(8,), n_steps=64)
    model.learn(128)
    recorded = rlfoundry.record_video(model, tmp_path / "pendulum.gif", seed=1)
    played = rlfoundry.evaluate(model, n_episodes=1, seed=1)
    assert recorded.lengths.tolist() == played.lengths.tolist() == [200]
    # evaluate() sums float32 rewards; the recording sums the env's float64 ones.
    assert recorded.returns[0] == pytest.approx(played.returns[0], rel=1e-6)


def test_max_steps_cuts_each_episode(tmp_path, cartpole_ppo):
    recorded = rlfoundry.record_video(cartpole_ppo, tmp_path / "short.gif", n_episodes=2, seed=3, max_steps=5)
    assert recorded.lengths.tolist() == [5, 5] and recorded.returns.tolist() == [5.0, 5.0]
    assert sum(frame_durations(tmp_path / "short.gif")) == 20 * 12


def test_mistakes_are_refused_before_anything_is_written(tmp_path, cartpole_ppo):
    model = cartpole_ppo
    with pytest.raises(ValueError, match=r"must end in \.gif"):
        rlfoundry.record_video(model, tmp_path / "cartpole.mp4")
    with pytest.raises(ValueError, match="render_mode='rgb_array'"):
        rlfoundry.record_video(model, tmp_path / "a.gif", env=gym.make("CartPole-v1"))
    with pytest.raises(ValueError, match="n_episodes=0 is out of range"):
        rlfoundry.record_video(model, tmp_path / "a.gif", n_episodes=0)
    with pytest.raises(ConfigError, match="max_steps=0 is out of range"):
        rlfoundry.record_video(model, tmp_path / "a.gif", max_steps=0)
    with pytest.raises(TypeError, match="env must be an env id"):
        rlfoundry.record_video(model, tmp_path / "a.gif", env=lambda: gym.make("CartPole-v1"))
    assert not any(tmp_path.iterdir())


def test_rlf_eval_video_records_the_first_evaluation_seed(tmp_path, capsys, cartpole_ppo):
    model = cartpole_ppo
    model.save(tmp_path / "checkpoint")
    assert main(["eval", str(tmp_path / "checkpoint"), "--episodes", "1", "--seed", "4", "--video", str(tmp_path / "run.gif")]) == 0
    output = capsys.readouterr().out
    played = rlfoundry.evaluate(model, n_episodes=1, seed=4)
    assert f"video: {tmp_path / 'run.gif'} (return {played.returns[0]:g}, {played.lengths[0]} steps)" in output
    assert (tmp_path / "run.gif").is_file()
    assert main(["eval", str(tmp_path / "checkpoint"), "--video", str(tmp_path / "run.mp4")]) == 2
    assert "--video=" in capsys.readouterr().err and not (tmp_path / "run.mp4").exists()
    assert main(["eval", str(tmp_path / "checkpoint"), "--episodes", "1", "--video", str(tmp_path / "cut.gif"),
                 "--video-steps", "7"]) == 0
    assert "(return 7, 7 steps)" in capsys.readouterr().out  # CartPole pays 1 a step
    assert sum(frame_durations(tmp_path / "cut.gif")) == 20 * 8
    for wrong in (["--video-steps", "0", "--video", str(tmp_path / "zero.gif")], ["--video-steps", "5"]):
        assert main(["eval", str(tmp_path / "checkpoint"), *wrong]) == 2
        assert "--video-steps=" in capsys.readouterr().err
    assert not (tmp_path / "zero.gif").exists()


def test_recording_without_a_display_prints_no_sdl_error(tmp_path):
    """pygame's SDL looks for a display on a headless machine and prints an error about
    XDG_RUNTIME_DIR; record_video asks SDL for its off-screen driver there. A fresh process, as
    pygame may have been set up already in this one."""
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER", "XDG_RUNTIME_DIR")}
    script = (
        "import numpy as np, rlfoundry\n"
        "class Left:\n"
        "    env_id = 'CartPole-v1'\n"
        "    def predict(self, observations, deterministic=True):\n"
        "        return np.zeros(len(observations), dtype=np.int64)\n"
        f"rlfoundry.record_video(Left(), {str(tmp_path / 'left.gif')!r}, seed=0)\n"
    )
    finished = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert "XDG_RUNTIME_DIR" not in finished.stderr
    assert (tmp_path / "left.gif").is_file()


class EndlessPicture(Endless):
    """Endless, seen as a 4 x 4 black frame at 50 fps."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}
    render_mode = "rgb_array"

    def render(self):
        return np.zeros((4, 4, 3), dtype=np.uint8)


def test_an_env_without_a_time_limit_is_recorded_up_to_the_default_cap(tmp_path):
    recorded = rlfoundry.record_video(ZeroPolicy(), tmp_path / "endless.gif", env=EndlessPicture(), seed=0)
    assert recorded.lengths.tolist() == [1_000] and recorded.returns.tolist() == [-1_000.0]
    assert recorded.cut.tolist() == [True]
    assert sum(frame_durations(tmp_path / "endless.gif")) == 20 * 1_001
    shorter = rlfoundry.record_video(ZeroPolicy(), tmp_path / "short.gif", env=EndlessPicture(), seed=0, max_steps=6)
    assert shorter.lengths.tolist() == [6] and shorter.cut.tolist() == [True]


class EndlessBlank(Endless):
    """Says it renders RGB frames, but render() returns nothing."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}
    render_mode = "rgb_array"

    def render(self):
        return None


def test_an_env_that_renders_no_frame_is_a_clear_error(tmp_path):
    """PIL raised an AttributeError about None's __array_interface__."""
    with pytest.raises(ValueError, match=r"render\(\) returned NoneType, not an RGB frame.*render_mode is 'rgb_array'"):
        rlfoundry.record_video(ZeroPolicy(), tmp_path / "blank.gif", env=EndlessBlank(), seed=0)
    assert not any(tmp_path.iterdir())


class AtariNoop(ZeroPolicy):
    env_id = "ALE/Pong-v5"


def test_an_atari_recording_plays_at_the_agents_fifteen_steps_a_second(tmp_path):
    """A step is 4 emulator frames at 60 a second; ALE's render_fps of one frame played it twice as fast."""
    recorded = rlfoundry.record_video(AtariNoop(), tmp_path / "pong.gif", seed=0, max_steps=5)
    assert recorded.lengths.tolist() == [5]
    # 6 frames of 1/15 s (equal frames merge; GIF durations are whole centiseconds).
    assert abs(sum(frame_durations(tmp_path / "pong.gif")) - 6 * 1000 / 15) <= 10


def test_an_atari_env_object_plays_at_its_agents_steps_a_second(tmp_path):
    """Only an ALE id got the agent's speed; an env object played at the ALE's render_fps of 30."""
    from rlfoundry.envs.atari import agent_steps_per_second, make_atari_env

    env = make_atari_env("ALE/Pong-v5", render_mode="rgb_array")
    rlfoundry.record_video(AtariNoop(), tmp_path / "wrapped.gif", env=env, seed=0, max_steps=5)
    env.close()
    assert abs(sum(frame_durations(tmp_path / "wrapped.gif")) - 6 * 1000 / 15) <= 10
    raw = gym.make("ALE/Pong-v5", render_mode="rgb_array", frameskip=2)  # 2 frames a step: 30 steps a second
    assert agent_steps_per_second(raw) == 30.0 and agent_steps_per_second(gym.make("CartPole-v1")) is None
    raw.close()


def test_rlf_eval_records_a_mujoco_video_without_a_display_or_mujoco_gl(tmp_path):
    """MuJoCo picks its OpenGL platform when first imported; without a display it found none and
    rlf eval --video failed with mujoco.FatalError. rlf now asks for EGL's off-screen one."""
    model = rlfoundry.SAC("HalfCheetah-v5", learning_starts=20, actor_hidden_sizes=(8,), critic_hidden_sizes=(8,),
                          batch_size=8, quiet=True)
    model.learn(30).save(tmp_path / "cheetah")
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("DISPLAY", "WAYLAND_DISPLAY", "MUJOCO_GL", "PYOPENGL_PLATFORM")}
    command = (f"from rlfoundry.cli import main; raise SystemExit(main(['eval', {str(tmp_path / 'cheetah')!r}, "
               f"'--episodes', '1', '--video', {str(tmp_path / 'cheetah.gif')!r}, '--video-steps', '3']))")
    finished = subprocess.run([sys.executable, "-c", command], env=environment, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert len(frame_durations(tmp_path / "cheetah.gif")) >= 1
