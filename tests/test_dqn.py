"""DQN and Double DQN: targets by hand, n-step targets against rlfoundry.returns, the schedule of
target updates and gradient steps (also across save and load), exact resume in a new process,
clear errors, learning on CartPole and smoke runs on Atari Pong with the Nature CNN."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

import rlfoundry
from rlfoundry import PeriodicEvaluation
from rlfoundry.algorithms.dqn import DQN, crossings
from rlfoundry.data.replay import ReplayBuffer
from rlfoundry.envs.spaces import SpaceError
from rlfoundry.presets import load_preset
from rlfoundry.losses.dqn import double_dqn_targets, dqn_targets, q_value_loss
from rlfoundry.returns import n_step_targets
from rlfoundry.run.config import ConfigError
from test_replay import fill, record_steps, short_cartpole

TINY = dict(hidden_sizes=(16,), batch_size=8, learning_starts=16, buffer_size=500, quiet=True)


# -- targets and loss by hand ------------------------------------------------------------------


def test_dqn_targets_mask_termination_only():
    rewards = torch.tensor([1.0, 2.0, 3.0, -1.0])
    discounts = torch.tensor([0.9, 0.9, 0.81, 0.9])
    terminated = torch.tensor([False, True, False, False])  # the last one is a truncation: bootstrap
    next_q_values = torch.tensor([[1.0, 5.0], [2.0, 3.0], [-1.0, -2.0], [4.0, 0.0]])
    targets = dqn_targets(rewards, discounts, terminated, next_q_values)
    torch.testing.assert_close(targets, torch.tensor([1 + 0.9 * 5, 2.0, 3 + 0.81 * -1, -1 + 0.9 * 4]))


def test_double_dqn_selects_with_the_online_net_and_evaluates_with_the_target_net():
    rewards = torch.tensor([1.0, 0.0, 2.0])
    discounts = torch.full((3,), 0.5)
    terminated = torch.tensor([False, False, True])
    online = torch.tensor([[9.0, 0.0, 1.0], [0.0, 1.0, 7.0], [5.0, 0.0, 0.0]])
    target = torch.tensor([[2.0, 10.0, 3.0], [4.0, 8.0, -6.0], [1.0, 1.0, 1.0]])
    double = double_dqn_targets(rewards, discounts, terminated, online, target)
    # argmax by the online net: actions 0 and 2; their target-net values 2 and -6; the third is terminal.
    torch.testing.assert_close(double, torch.tensor([1 + 0.5 * 2, 0 + 0.5 * -6, 2.0]))
    torch.testing.assert_close(dqn_targets(rewards, discounts, terminated, target), torch.tensor([6.0, 4.0, 2.0]))


def test_double_q_removes_the_overestimation_of_a_max_over_noisy_estimates():
    """All true action values are 0; two independent noisy estimates (std 1) of 10 actions. The max
    over one estimate is biased up by E[max of 10 standard normals] = 1.5388; Double DQN's is not."""
    generator = torch.Generator().manual_seed(0)
    online = torch.randn(200_000, 10, generator=generator)
    target = torch.randn(200_000, 10, generator=generator)
    zeros, ones, never = torch.zeros(200_000), torch.ones(200_000), torch.zeros(200_000, dtype=torch.bool)
    single = dqn_targets(zeros, ones, never, target).mean().item()
    double = double_dqn_targets(zeros, ones, never, online, target).mean().item()
    assert single == pytest.approx(1.5388, abs=0.01)
    assert double == pytest.approx(0.0, abs=0.01)


def test_q_value_loss_by_hand_and_its_gradient():
    q_values = torch.tensor([[0.0, 1.0], [2.0, -1.0], [0.5, 0.0]], requires_grad=True)
    actions = torch.tensor([1, 0, 0])
    targets = torch.tensor([1.5, -1.0, 0.5])
    # errors Q - y: -0.5, 3.0, 0.0. Huber: 0.125, 2.5, 0; squared: 0.25, 9, 0.
    huber = q_value_loss(q_values, actions, targets, "huber")
    assert huber.item() == pytest.approx((0.125 + 2.5) / 3)
    huber.backward()
    expected_gradient = torch.tensor([[0.0, -0.5], [1.0, 0.0], [0.0, 0.0]]) / 3  # clip(Q - y, -1, 1) / B
    torch.testing.assert_close(q_values.grad, expected_gradient)
    assert q_value_loss(q_values, actions, targets, "squared").item() == pytest.approx((0.25 + 9.0) / 3)
    with pytest.raises(ValueError, match="loss='absolute' is not allowed"):
        q_value_loss(q_values, actions, targets, "absolute")


def test_n_step_targets_from_the_buffer_match_rlfoundry_returns():
    """Sampled n-step batches put through dqn_targets give n_step_targets' [T, N] answer."""
    gamma, n_step, steps, n_envs = 0.9, 3, 40, 2
    recorded = record_steps(short_cartpole(10), n_envs=n_envs, steps=steps)
    space = gym.make("CartPole-v1")
    buffer = ReplayBuffer(1000, space.observation_space, space.action_space, n_envs, gamma=gamma, n_step=n_step)
    fill(buffer, recorded)
    torch.manual_seed(0)
    network = torch.nn.Linear(4, 2)

    def max_q(observations):
        with torch.no_grad():
            return network(torch.as_tensor(observations)).max(dim=-1).values.double().numpy()

    stacked = {name: np.stack([step[name] for step in recorded]) for name in recorded[0]}
    expected = n_step_targets(
        stacked["rewards"].astype(np.float64),
        max_q(stacked["next_observations"]),
        stacked["terminated"],
        stacked["truncated"],
        gamma,
        n_step,
    )
    batch = buffer.sample(4000, np.random.default_rng(0)).to_tensors()
    with torch.no_grad():
        targets = dqn_targets(batch.rewards, batch.discounts, batch.terminated, network(batch.next_observations))
    index = {stacked["observations"][t, env].tobytes(): (t, env) for t in range(steps) for env in range(n_envs)}
    sampled = [index[observation.tobytes()] for observation in batch.observations.numpy()]
    assert len(set(sampled)) == steps * n_envs
    reference = np.array([expected[t, env] for t, env in sampled])
    np.testing.assert_allclose(targets.numpy(), reference, rtol=1e-5, atol=1e-5)


# -- the schedule of target updates and gradient steps -----------------------------------------


def expected_counts(total_steps: int, n_envs: int, train_freq: int, interval: int, gradient_steps: int, starts: int):
    """Target updates and gradient steps, by a plain loop over vector steps."""
    steps = updates = gradient = 0
    while steps < total_steps:
        before, steps = steps, steps + n_envs
        updates += sum(1 for value in range(before + 1, steps + 1) if value % interval == 0)
        bursts = sum(1 for value in range(before + 1, steps + 1) if value % train_freq == 0)
        if steps > starts:
            gradient += bursts * gradient_steps
    return updates, gradient


def test_crossings_counts_multiples_in_a_half_open_interval():
    assert [crossings(before, before + 4, 3) for before in range(0, 12, 4)] == [1, 1, 2]  # 3 | 6 | 9, 12
    assert crossings(9, 10, 10) == 1 and crossings(10, 19, 10) == 0


@pytest.mark.parametrize(
    ("n_envs", "train_freq", "interval", "gradient_steps"),
    [(1, 4, 10, 1), (3, 4, 10, 2), (4, 3, 7, 1), (8, 16, 5, 3)],
)
def test_target_updates_and_gradient_steps_are_exactly_as_configured_also_after_save_and_load(
    tmp_path, n_envs, train_freq, interval, gradient_steps
):
    settings = dict(n_envs=n_envs, train_freq=train_freq, target_update_interval=interval, gradient_steps=gradient_steps)
    first, second = 61, 45
    model = DQN("CartPole-v1", **TINY, **settings).learn(first)
    done = math.ceil(first / n_envs) * n_envs
    assert (model.target_updates, model.gradient_steps_done) == expected_counts(done, n_envs, train_freq, interval, gradient_steps, 16)
    model.save(tmp_path / "model")
    resumed = rlfoundry.load(tmp_path / "model").learn(second)
    total = done + math.ceil(second / n_envs) * n_envs
    assert resumed.steps == total
    assert (resumed.target_updates, resumed.gradient_steps_done) == expected_counts(
        total, n_envs, train_freq, interval, gradient_steps, 16
    )


def test_the_target_update_of_a_step_comes_before_its_gradient_steps():
    """At step 100 the target is copied; with train_freq 10 gradient steps follow at the same step
    (target != online afterwards), with train_freq 8 none do (target == online)."""
    for train_freq, equal in ((8, True), (10, False)):
        model = DQN("CartPole-v1", **TINY, train_freq=train_freq, target_update_interval=20, learning_rate=1e-2).learn(100)
        same = all(torch.equal(a, b) for a, b in zip(model.q_network.parameters(), model.target_network.parameters()))
        assert same == equal


def test_polyak_updates_average_the_weights():
    model = DQN("CartPole-v1", **TINY, tau=0.25)
    with torch.no_grad():
        for parameter in model.q_network.parameters():
            parameter.fill_(1.0)
        for parameter in model.target_network.parameters():
            parameter.fill_(0.0)
    model._update_target(1)
    assert all(torch.allclose(parameter, torch.full_like(parameter, 0.25)) for parameter in model.target_network.parameters())
    model._update_target(2)  # two updates at once: 1 - 0.75^3 of the way in all
    assert all(
        torch.allclose(parameter, torch.full_like(parameter, 1 - 0.75**3)) for parameter in model.target_network.parameters()
    )
    assert model.target_updates == 3


# -- exact resume, saving, errors --------------------------------------------------------------

RESUME_SETTINGS = dict(TINY, seed=3, n_envs=2, train_freq=4, gradient_steps=2, target_update_interval=12, n_step=2)
RESUME_SCRIPT = """
import json, sys, torch, rlfoundry
model = rlfoundry.load(sys.argv[1], quiet=True).learn(int(sys.argv[2]))
print(json.dumps({name: tensor.tolist() for name, tensor in model.q_network.state_dict().items()}))
"""


def train_half_and_resume(tmp_path, in_new_process: bool) -> tuple[DQN, dict[str, torch.Tensor]]:
    """(a model trained 200 steps straight, the weights of one trained 100 + save/load + 100)."""
    straight = DQN("CartPole-v1", **RESUME_SETTINGS).learn(200)
    DQN("CartPole-v1", **RESUME_SETTINGS).learn(100).save(tmp_path / "half")
    if not in_new_process:
        return straight, rlfoundry.load(tmp_path / "half", quiet=True).learn(100).q_network.state_dict()
    command = [sys.executable, "-c", RESUME_SCRIPT, str(tmp_path / "half"), "100"]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    weights = json.loads(output.strip().splitlines()[-1])
    return straight, {name: torch.tensor(values) for name, values in weights.items()}


@pytest.mark.parametrize("in_new_process", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_training_resumes_exactly(tmp_path, in_new_process):
    straight, resumed = train_half_and_resume(tmp_path, in_new_process)
    for name, tensor in straight.q_network.state_dict().items():
        assert torch.equal(resumed[name], tensor), name


def test_loaded_model_predicts_the_same_actions(tmp_path):
    model = DQN("CartPole-v1", **TINY).learn(50)
    model.save(tmp_path / "model")
    loaded = rlfoundry.load(tmp_path / "model")
    observations = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(observations), model.predict(observations))
    assert loaded.predict(observations[0]) == model.predict(observations)[0]
    assert set(np.unique(model.predict(observations, deterministic=False))) <= {0, 1}


def test_box_actions_are_refused_with_a_suggestion():
    with pytest.raises(SpaceError, match=r"Box\(-2\.0, 2\.0, \(1,\), float32\).*SAC or TD3"):
        DQN("Pendulum-v1")


def test_bad_config_values_are_named():
    with pytest.raises(ConfigError, match="tau=0"):
        DQN("CartPole-v1", tau=0.0)
    with pytest.raises(ConfigError, match="loss='l1' is not allowed"):
        DQN("CartPole-v1", loss="l1")
    with pytest.raises(ConfigError, match="config key 'target_update'; did you mean target_update_interval"):
        DQN("CartPole-v1", target_update=5)
    # The buffer's own word, capacity, is not a field the user can set.
    with pytest.raises(ConfigError, match=r"capacity=3 \(an algorithm's buffer_size\) gives 1 rows of 4 envs.*raise it to 8"):
        DQN("CartPole-v1", buffer_size=3, n_envs=4)


def test_epsilon_greedy_draws_one_env_as_it_draws_several():
    """Per call: one uniform per env (explore below epsilon), then one random action per env. A
    single env draws scalars; the numbers and what is left in the generator must be the same."""
    model = DQN("Acrobot-v1", **TINY)  # three actions
    generator, reference = np.random.default_rng(7), np.random.default_rng(7)
    for count, epsilon in [(1, 0.5)] * 40 + [(3, 0.5), (1, 1.0), (1, 0.0), (2, 0.3)] * 10:
        observations = np.random.default_rng(count).normal(size=(count, 6)).astype(np.float32)
        explore = reference.random(count) < epsilon
        expected = np.where(explore, reference.integers(3, size=count), model._greedy(observations))
        actions = model._epsilon_greedy(observations, epsilon, generator)
        assert actions.dtype == np.int64 and actions.tolist() == expected.tolist()
    assert generator.random() == reference.random()


# -- learning ----------------------------------------------------------------------------------

def best_evaluation_within(total_steps: int, every: int, evaluation_seed: int, **config) -> float:
    """Train DQN on CartPole `total_steps` steps, evaluating the greedy policy on 10 episodes every
    `every` steps: the best mean, which is the policy RUN_DIR/checkpoints/best would hold."""
    evaluation = PeriodicEvaluation(every=every, episodes=10, seed=evaluation_seed)
    model = DQN("CartPole-v1", evaluation=evaluation, **config).learn(total_steps)
    return max(point.result.mean for point in model.evaluations)


FAST_CARTPOLE = dict(
    learning_rate=2.3e-3,
    batch_size=64,
    buffer_size=20_000,
    learning_starts=500,
    train_freq=64,
    gradient_steps=32,
    target_update_interval=10,
    epsilon_decay_steps=3000,
    epsilon_end=0.04,
    hidden_sizes=(64, 64),
    quiet=True,
)


def test_dqn_solves_cartpole_quickly_with_a_small_network():
    """The preset's recipe scaled down (64x64, 32 gradient steps per 64 env steps): 12k steps, on 2
    of 3 seeds. One seed is not enough: which seed passes moves with the machine's float rounding
    (seed 0 peaked at 470.1 on an AMD EPYC, at 500 on the machine the test was written on)."""
    best = [best_evaluation_within(12_000, 2_000, evaluation_seed=100, **{**FAST_CARTPOLE, "seed": seed}) for seed in range(3)]
    assert sum(value >= 475 for value in best) >= 2, best


@pytest.mark.slow
@pytest.mark.parametrize("double_q", [False, True])
def test_dqn_solves_cartpole_within_50k_steps_on_two_of_three_seeds(double_q):
    """The preset (RL Zoo's, the benchmark's settings) with a greedy evaluation every 10k steps
    (PeriodicEvaluation): DQN on CartPole oscillates, so the last policy is not always the best."""
    preset = load_preset("dqn", "CartPole-v1")
    assert preset.steps == 50_000
    best = []
    for seed in range(3):
        config = {**preset.config, "double_q": double_q, "seed": seed, "quiet": True}
        best.append(best_evaluation_within(preset.steps, 10_000, evaluation_seed=1000 + seed, **config))
    assert sum(value >= 475 for value in best) >= 2, best


# -- Atari -------------------------------------------------------------------------------------


@pytest.mark.parametrize("double_q", [False, True])
def test_pong_smoke_run_with_the_nature_cnn(tmp_path, double_q):
    model = DQN(
        "ALE/Pong-v5",
        buffer_size=400,
        learning_starts=100,
        batch_size=8,
        train_freq=8,
        target_update_interval=50,
        double_q=double_q,
        clip_rewards=True,
        quiet=True,
    ).learn(300)
    assert model.replay.storage == "frames"
    assert type(model.q_network.torso).__name__ == "NatureCNN"
    assert (model.target_updates, model.gradient_steps_done) == expected_counts(300, 1, 8, 50, 1, 100)
    batch = model.replay.sample(4, model.rng)
    assert batch.observations.shape == (4, 4, 84, 84) and batch.observations.dtype == np.uint8
    model.save(tmp_path / "pong")
    loaded = rlfoundry.load(tmp_path / "pong")
    observations = batch.observations
    np.testing.assert_array_equal(loaded.predict(observations), model.predict(observations))


def test_progress_has_one_row_per_step_when_the_last_step_is_a_report(tmp_path):
    """The last step falls on a report: learn()'s closing epsilon must not add a second row there."""
    DQN("CartPole-v1", run_dir=tmp_path, quiet=True, hidden_sizes=(16,), learning_starts=100, train_freq=4).learn(400)
    with open(tmp_path / "progress.csv") as handle:
        rows = list(csv.DictReader(handle))
    steps = [int(row["step"]) for row in rows]
    assert steps[-1] == 400 and len(steps) == len(set(steps))
    assert rows[-1]["train/epsilon"] != ""


class ColourPicture(gym.Env):
    """A 3-channel 36 x 36 image, channels first: colour, not a stack of frames."""

    observation_space = gym.spaces.Box(0, 255, (3, 36, 36), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.count = 0
        return self.np_random.integers(0, 256, (3, 36, 36), dtype=np.uint8), {}

    def step(self, action):
        self.count += 1
        picture = self.np_random.integers(0, 256, (3, 36, 36), dtype=np.uint8)
        return picture, 1.0, False, self.count >= 20, {}


def test_auto_storage_stores_images_that_are_not_frame_stacks_whole():
    """`auto` used to pick `frames` for any channels-first image, which failed on its first add."""
    model = DQN(ColourPicture, buffer_size=100, learning_starts=20, batch_size=4, train_freq=4, quiet=True).learn(40)
    assert model.replay.storage == "shared" and model.steps == 40


@pytest.mark.parametrize("storage", ["shared", "full"])
def test_learning_starts_below_n_envs_trains_once_a_transition_can_be_sampled(storage):
    """"shared" storage cannot sample its newest row (its s_{t+1} comes with the next add): with
    learning_starts=3 and 4 envs, the first burst fell after one row and raised "too few to sample from"."""
    model = DQN("CartPole-v1", **{**TINY, "learning_starts": 3}, n_envs=4, train_freq=1, replay_storage=storage).learn(20)
    # 5 vector steps of 4 env steps, 4 gradient steps each once the buffer can be sampled: "full"
    # from the first row, "shared" from the second.
    assert model.gradient_steps_done == (20 if storage == "full" else 16)


@pytest.mark.parametrize("hidden_sizes, activation", [((16, 16), "relu"), ((8,), "gelu")], ids=["written-out", "module"])
def test_the_target_pass_evaluates_each_distinct_sample_once(hidden_sizes, activation, monkeypatch):
    from rlfoundry.networks.manual_mlp import ManualMLP
    from rlfoundry.networks.q_networks import BlockedQValues, QNetwork

    network = QNetwork(gym.spaces.Box(-1.0, 1.0, (4,)), 3, hidden_sizes, activation)
    blocked = BlockedQValues(network, block_rows=8)
    keys = np.random.default_rng(0).integers(5, size=40)
    observations = torch.randn(5, 4)[torch.from_numpy(keys)]
    expected = blocked(observations)
    evaluated = []
    for owner in (QNetwork, ManualMLP):
        def counted(self, rows, *workspace, forward=owner.forward):
            evaluated.append(len(rows))
            return forward(self, rows, *workspace)

        monkeypatch.setattr(owner, "forward", counted)
    torch.testing.assert_close(blocked(observations, keys), expected, rtol=1e-6, atol=1e-7)
    assert evaluated == [len(np.unique(keys))]
