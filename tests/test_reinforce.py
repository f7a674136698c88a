"""REINFORCE: its update against a hand-written estimator, its episodes, resume, learning.

The exact statistical tests of the estimator (unbiasedness against FiniteMDP.policy_gradient)
are in test_policy_gradient_exact.py; the time-limit test is in test_truncation.py.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import rlfoundry
from rlfoundry import REINFORCE
from rlfoundry.envs.chain import RIGHT
from rlfoundry.losses.reinforce import reinforce_loss
from rlfoundry.run.checkpoint import NonFiniteError
from rlfoundry.run.config import ConfigError
from rlfoundry.run.monitor import TrainingMonitor

from learning_checks import preset_returns
from test_evaluation import FixedLength

SOLVED = 475.0


def quiet_monitor() -> TrainingMonitor:
    return TrainingMonitor(None, 1, quiet=True)


def hand_written_loss(model: REINFORCE) -> torch.Tensor:
    """-(1/m) sum_i sum_t log pi(a_t|s_t) Psi_t, walking each env's first episode with python floats.

    Reads only the raw rollout (rewards, flags, observations, actions) and the env's current
    observations; returns, baselines and gamma^t are recomputed here one step at a time.
    """
    config, rollout = model.config, model.collector.rollout
    n_envs, gamma = config.n_envs, config.gamma

    def value(observation: np.ndarray) -> float:
        with torch.no_grad():
            return float(model.value_function(torch.as_tensor(observation[None]))[0])

    episodes = []  # per env: (steps, rewards, returns G_t)
    for env in range(n_envs):
        rewards, t = [], 0
        while True:
            rewards.append(float(rollout.rewards[t, env]))
            if rollout.terminated[t, env] or rollout.truncated[t, env] or t == rollout.position - 1:
                break
            t += 1
        # An episode cut by max_episode_steps continues from the env's current observation.
        cut = not (rollout.terminated[t, env] or rollout.truncated[t, env])
        following = value(model.training_env.observations[env]) if cut and model.value_function else 0.0
        returns = [0.0] * len(rewards)
        for k in reversed(range(len(rewards))):
            following = rewards[k] + gamma * following
            returns[k] = following
        if config.returns == "trajectory":
            returns = [returns[0]] * len(rewards)
        episodes.append(returns)
    total = torch.zeros(())
    for env, returns in enumerate(episodes):
        others = [np.mean(other) for index, other in enumerate(episodes) if index != env]
        for t, step_return in enumerate(returns):
            observation = rollout.observations[t, env]
            if config.baseline == "value":
                baseline = value(observation)
            elif config.baseline == "batch_mean":
                baseline = float(np.mean(others))
            else:
                baseline = 0.0
            weight = step_return - baseline
            if config.returns == "reward_to_go" and config.gamma_weighting == "discounted":
                weight *= gamma**t
            distribution = model.policy(torch.as_tensor(observation[None]))
            total = total + distribution.log_prob(torch.as_tensor(rollout.actions[t, env][None]))[0] * weight
    return -total / n_envs


@pytest.mark.parametrize(
    "options",
    [
        dict(returns="reward_to_go", gamma_weighting="discounted", baseline="value", max_episode_steps=12),
        dict(returns="reward_to_go", gamma_weighting="undiscounted", baseline="batch_mean"),
        dict(returns="trajectory", baseline="none", max_episode_steps=12),
        dict(returns="trajectory", baseline="batch_mean"),
    ],
    ids=["gamma^t (G - V), cut episodes", "G - mean", "R(tau), cut episodes", "R(tau) - mean"],
)
def test_the_update_is_the_estimator_written_out_by_hand(options):
    model = REINFORCE("CartPole-v1", quiet=True, seed=4, n_envs=3, gamma=0.9, **options)
    mask = model.collector.collect(quiet_monitor())
    batch = model.collector.batch(mask)
    library = torch.autograd.grad(
        reinforce_loss(model.collector.log_probs(batch), batch.weights, batch.mask), list(model.policy.parameters())
    )
    by_hand = torch.autograd.grad(hand_written_loss(model), list(model.policy.parameters()))
    for library_gradient, hand_gradient in zip(library, by_hand):
        torch.testing.assert_close(library_gradient, hand_gradient, rtol=1e-4, atol=1e-6)


def test_the_loss_by_hand_ignores_nan_on_padding():
    # Episode 1 ends after one step; its padding row holds a NaN log-probability (garbage from an
    # observation past the episode's end), which must not reach the loss or the gradient.
    log_probs = torch.tensor([[-1.0, -2.0], [-0.5, float("nan")]], requires_grad=True)
    weights = torch.tensor([[2.0, 4.0], [1.0, 0.0]])
    mask = torch.tensor([[True, True], [True, False]])
    loss = reinforce_loss(log_probs, weights, mask)
    assert loss.item() == -(-1.0 * 2.0 - 2.0 * 4.0 - 0.5 * 1.0) / 2  # -(1/m) sum over the 3 steps, m = 2
    loss.backward()
    assert log_probs.grad.tolist() == [[-1.0, -2.0], [-0.5, 0.0]]  # -Psi / m


def test_each_update_trains_on_one_whole_fresh_episode_per_env():
    model = REINFORCE("CartPole-v1", quiet=True, seed=1, n_envs=4, baseline="none")
    for _ in range(3):
        mask = model.collector.collect(quiet_monitor())
        rollout = model.collector.rollout
        ends = rollout.terminated[: len(mask)] | rollout.truncated[: len(mask)]
        lengths = mask.sum(axis=0)
        # Row 0 is a reset: CartPole starts every state variable within +-0.05.
        assert np.all(np.abs(rollout.observations[0]) <= 0.05)
        for env, length in enumerate(lengths):
            assert mask[:length, env].all() and not mask[length:, env].any()
            assert ends[length - 1, env] and not ends[: length - 1, env].any()
        # Collection stops as soon as the longest episode is over.
        assert len(mask) == lengths.max()


def test_the_logged_episodes_are_those_trained_on_not_the_short_ones_played_while_waiting():
    """Copy 0's episodes last 2 steps, copy 1's 6: while copy 1 plays its episode, copy 0 plays
    three. Logging all four would put a mean return of 3 in progress.csv for a batch of mean 4:
    the episodes that end while the others wait are the short ones, and the long ones never end
    before the next batch resets them."""
    vector_env = gym.vector.SyncVectorEnv(
        [lambda: FixedLength(2), lambda: FixedLength(6)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )
    model = REINFORCE(vector_env, quiet=True, seed=0, n_envs=2)
    monitor = quiet_monitor()
    mask = model.collector.collect(monitor)
    assert mask.sum(axis=0).tolist() == [2, 6]
    assert sorted(monitor.interval_returns) == [2.0, 6.0] and sorted(monitor.interval_lengths) == [2, 6]
    assert monitor.episode_count == 2


def test_an_episode_cut_at_max_episode_steps_is_logged_with_its_return_so_far():
    """The next batch resets its env, so the cut ends the episode: without it in the log, a policy
    whose episodes all outlast max_episode_steps would leave progress.csv with no returns."""
    vector_env = gym.vector.SyncVectorEnv(
        [lambda: FixedLength(3), lambda: FixedLength(10)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )
    model = REINFORCE(vector_env, quiet=True, seed=0, n_envs=2, max_episode_steps=5)
    monitor = quiet_monitor()
    assert model.collector.collect(monitor).sum(axis=0).tolist() == [3, 5]
    assert monitor.interval_returns == [3.0, 5.0] and monitor.interval_lengths == [3, 5]


def test_learns_the_seed_chain_exactly():
    """On the seeds' 3-state chain (gamma 0.9), the learned policy moves Right in S1 and S2."""
    model = REINFORCE("rlfoundry/Chain-v0", quiet=True, seed=0, n_envs=4, gamma=0.9, learning_rate=0.02).learn(3000)
    with torch.no_grad():
        probabilities = model.policy(torch.tensor([0, 1])).probabilities
    assert (probabilities[:, RIGHT] > 0.95).all()
    assert model.predict(np.array([0, 1])).tolist() == [RIGHT, RIGHT]
    assert model.predict(0) == RIGHT


def test_save_load_and_resume_equal_a_straight_run(tmp_path):
    options = dict(seed=3, n_envs=4, baseline="value", hidden_sizes=(16,))
    straight = REINFORCE("CartPole-v1", quiet=True, **options).learn(1200)
    first = REINFORCE("CartPole-v1", quiet=True, **options).learn(600)
    first.save(tmp_path / "half")
    torch.manual_seed(12345)  # the checkpoint must restore torch's generator, not rely on it
    resumed = rlfoundry.load(tmp_path / "half")
    assert isinstance(resumed, REINFORCE) and resumed.steps == first.steps
    resumed.learn(600)
    assert resumed.steps == straight.steps
    for name, module in (("policy", "policy"), ("value", "value_function")):
        expected, actual = getattr(straight, module).state_dict(), getattr(resumed, module).state_dict()
        for key in expected:
            assert torch.equal(expected[key], actual[key]), f"{name}.{key} differs after resuming"


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(returns="trajectory", gamma_weighting="undiscounted"), "only applies to returns='reward_to_go'"),
        (dict(returns="trajectory", baseline="value"), "baseline='value' needs returns='reward_to_go'"),
        (dict(baseline="batch_mean", n_envs=1), "needs n_envs >= 2"),
        (dict(baseline="mean"), "baseline='mean' is not allowed"),
        (dict(gamma=1.5), r"gamma=1.5 is out of range"),
        (dict(max_episode_steps=0), "max_episode_steps=0 is out of range"),
        (dict(learning_rate=0.0), "learning_rate=0.0 is out of range"),
        (dict(hidden_sizes=(0,)), "hidden_sizes must be a tuple of integers >= 1"),
        (dict(gamma_weigting="discounted"), "did you mean gamma_weighting"),
    ],
)
def test_bad_config_is_a_clear_error(options, message):
    with pytest.raises(ConfigError, match=message):
        REINFORCE("CartPole-v1", **options)


def test_a_diverged_policy_is_a_clear_error():
    model = REINFORCE("CartPole-v1", quiet=True, baseline="none")
    with torch.no_grad():
        for parameter in model.policy.parameters():
            parameter.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match="the policy has diverged"):
        model.update_policy(model.collector.batch(model.collector.collect(quiet_monitor())), quiet_monitor())


@pytest.mark.slow
def test_solves_cartpole_on_two_of_three_seeds():
    returns = preset_returns("reinforce", "CartPole-v1")
    print(f"evaluation means on seeds 1, 2, 3: {returns}")
    assert sum(value >= SOLVED for value in returns) >= 2, returns
