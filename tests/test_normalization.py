"""Observation normalisation and reward scaling (run/normalization.py) against brute-force
statistics, and inside the actor-critic collectors: what the rollout holds, what predict sees,
exact resume."""

import numpy as np
import pytest
import torch
from gymnasium import spaces

import rlfoundry
from rlfoundry import A2C, PPO
from rlfoundry.envs.spaces import SpaceError
from rlfoundry.run.monitor import TrainingMonitor
from rlfoundry.run.normalization import CLIP, EPSILON, Normalization, RunningMeanStd

PRIOR = 1e-4  # the statistics start as if from a sample of this weight with mean 0 and variance 1


def brute_force_statistics(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the prior pseudo-sample together with samples [K, *shape]."""
    count = PRIOR + len(samples)
    mean = samples.sum(axis=0) / count
    var = (PRIOR * (1.0 + mean**2) + ((samples - mean) ** 2).sum(axis=0)) / count
    return mean, var


def test_running_statistics_equal_the_statistics_of_everything_seen():
    generator = np.random.default_rng(0)
    statistics = RunningMeanStd.of_shape((3,))
    seen = []
    for size in (1, 5, 2, 40, 7):
        batch = generator.normal(loc=[3.0, -1.0, 100.0], scale=[1.0, 0.01, 30.0], size=(size, 3))
        statistics.update(batch)
        seen.append(batch)
        mean, var = brute_force_statistics(np.concatenate(seen))
        np.testing.assert_allclose(statistics.mean, mean, rtol=1e-12)
        np.testing.assert_allclose(statistics.var, var, rtol=1e-10)
    assert statistics.count == pytest.approx(PRIOR + 55)


def test_rewards_are_scaled_by_the_running_std_of_the_discounted_return():
    generator = np.random.default_rng(1)
    gamma, n_envs = 0.9, 3
    normalization = Normalization(None, n_envs, gamma, observations=False, rewards=True)
    returns, seen = [0.0] * n_envs, []
    for _ in range(30):
        rewards = generator.normal(2.0, 5.0, size=n_envs).astype(np.float32)
        done = generator.random(n_envs) < 0.2
        scaled = normalization.rewards(rewards, done)
        for env in range(n_envs):  # one python float at a time
            returns[env] = gamma * returns[env] + float(rewards[env])
        seen.append(list(returns))
        _, var = brute_force_statistics(np.array(seen).reshape(-1))
        expected = np.clip(rewards / np.sqrt(var + EPSILON), -CLIP, CLIP)
        np.testing.assert_allclose(scaled, expected, rtol=1e-6)
        assert scaled.dtype == np.float32
        returns = [0.0 if done[env] else returns[env] for env in range(n_envs)]


def test_outliers_are_clipped_at_ten():
    # The brute-force tests above never reach the clip; these inputs are far beyond it.
    box = spaces.Box(-np.inf, np.inf, (3,), np.float32)
    normalization = Normalization(box, 2, 0.9, observations=True, rewards=True)
    # Fresh statistics (mean 0, variance 1): 50 standard deviations out is clipped to 10.
    observations = normalization.observations(np.array([[50.0, -50.0, 3.0]]))
    assert observations[0, :2].tolist() == [CLIP, -CLIP] and observations[0, 2] == pytest.approx(3.0)
    for _ in range(1000):  # returns of 0, each episode ending at once
        normalization.rewards(np.zeros(2, np.float32), np.array([True, True]))
    # Then rewards of +-1000: the std of all returns seen is about 31.6, so the scaled rewards, +-31.6, are clipped.
    scaled = normalization.rewards(np.array([1000.0, -1000.0], np.float32), np.array([True, True]))
    assert scaled.tolist() == [CLIP, -CLIP]


def test_off_means_untouched():
    normalization = Normalization(None, 2, 0.99, observations=False, rewards=False)
    rewards, observations = np.array([1.5, -2.0], np.float32), np.ones((2, 3), np.float32)
    assert normalization.rewards(rewards, np.array([True, False])) is rewards
    assert normalization.observe(observations) is observations


def record_collection(model):
    """Wrap the model's training env so that every raw observation, reward and done is kept."""
    env = model.collector.training_env
    start, step = env.start, env.step
    record = {"observations": [], "rewards": [], "done": [], "finals": []}

    def recording_start():
        resetting = env.observations is None
        observations = start()
        if resetting:
            record["observations"].append(observations.copy())
        return observations

    def recording_step(actions):
        result = step(actions)
        record["observations"].append(result[0].observations.copy())
        record["finals"].append(result[0].next_observations.copy())
        record["rewards"].append(result[0].rewards.copy())
        record["done"].append(result[0].done.copy())
        return result

    env.start, env.step = recording_start, recording_step
    return record


def test_the_rollout_holds_normalised_observations_and_scaled_rewards():
    n_envs, n_steps, gamma = 2, 24, 0.95
    model = PPO("Pendulum-v1", n_envs=n_envs, n_steps=n_steps, gamma=gamma, quiet=True,
                normalize_observations=True, normalize_rewards=True)
    record = record_collection(model)
    for _ in range(2):  # the second rollout starts from inputs the statistics have already seen
        model.collector.collect(TrainingMonitor(None, 1, quiet=True))
    observations = np.array(record["observations"])  # [1 + 2 n_steps, N, 3]: the reset, then each step's
    rollout = model.collector.rollout
    returns, seen_returns = np.zeros(n_envs), []
    for t in range(2 * n_steps):
        mean, var = brute_force_statistics(observations[: t + 1].reshape(-1, 3))
        expected = np.clip((observations[t] - mean) / np.sqrt(var + EPSILON), -CLIP, CLIP)
        returns = gamma * returns + record["rewards"][t]
        seen_returns.append(returns.copy())
        _, return_var = brute_force_statistics(np.array(seen_returns).reshape(-1))
        expected_rewards = np.clip(record["rewards"][t] / np.sqrt(return_var + EPSILON), -CLIP, CLIP)
        returns = np.where(record["done"][t], 0.0, returns)
        if t >= n_steps:  # the buffer holds the second rollout
            np.testing.assert_allclose(rollout.observations[t - n_steps], expected, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(rollout.rewards[t - n_steps], expected_rewards, rtol=1e-5)
    assert np.abs(rollout.observations).max() <= CLIP


def test_predict_normalises_with_the_statistics_and_does_not_move_them():
    model = PPO("Pendulum-v1", n_envs=2, n_steps=16, batch_size=32, n_epochs=1, quiet=True, normalize_observations=True)
    model.learn(64)
    statistics = model.collector.normalization.observation_statistics
    mean, var = statistics.mean.copy(), statistics.var.copy()
    raw = np.random.default_rng(2).normal(size=(4, 3)).astype(np.float32)
    inputs = np.clip((raw - mean) / np.sqrt(var + EPSILON), -CLIP, CLIP).astype(np.float32)
    with torch.no_grad():
        expected = model.network.distribution(torch.as_tensor(inputs)).mode().numpy()
    np.testing.assert_allclose(model.predict(raw), np.clip(expected, -2.0, 2.0), rtol=1e-6)
    assert np.array_equal(statistics.mean, mean) and np.array_equal(statistics.var, var)
    assert rlfoundry.evaluate(model, "Pendulum-v1", n_episodes=1).returns.shape == (1,)
    assert np.array_equal(statistics.mean, mean)


@pytest.mark.parametrize("algorithm", [PPO, A2C])
def test_save_load_resume_is_exact_with_normalisation(tmp_path, algorithm):
    options = dict(n_envs=2, n_steps=8, seed=4, quiet=True, normalize_observations=True, normalize_rewards=True)
    if algorithm is PPO:
        options.update(batch_size=16, n_epochs=2)
    straight = algorithm("Pendulum-v1", **options).learn(64)
    first = algorithm("Pendulum-v1", **options).learn(32)
    first.save(tmp_path / "checkpoint")
    resumed = rlfoundry.load(tmp_path / "checkpoint", quiet=True).learn(32)
    for name, tensor in straight.network.state_dict().items():
        assert torch.equal(tensor, resumed.network.state_dict()[name]), name
    for name in ("observation_statistics", "return_statistics"):
        left, right = getattr(straight.collector.normalization, name), getattr(resumed.collector.normalization, name)
        assert np.array_equal(left.mean, right.mean) and np.array_equal(left.var, right.var) and left.count == right.count
    assert np.array_equal(straight.collector.normalization.returns, resumed.collector.normalization.returns)


def test_normalising_discrete_observations_is_a_clear_error():
    with pytest.raises(SpaceError, match=r"normalize_observations=True needs float Box observations.*Discrete"):
        PPO("FrozenLake-v1", normalize_observations=True)
    PPO("FrozenLake-v1", normalize_rewards=True)  # rewards alone are fine


def test_the_mujoco_presets_normalise_and_run():
    from rlfoundry.presets import all_presets

    config = {**all_presets("ppo")["HalfCheetah-v5"].config, "n_steps": 16, "batch_size": 16, "n_epochs": 1}
    assert config["normalize_observations"] and config["normalize_rewards"]
    model = PPO("HalfCheetah-v5", quiet=True, **config).learn(32)
    statistics = model.collector.normalization.observation_statistics
    assert statistics.mean.shape == (17,) and statistics.count == pytest.approx(PRIOR + 33)  # the reset and 32 steps
    assert model.predict(np.zeros(17, np.float32)).shape == (6,)
