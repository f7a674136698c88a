"""SAC: the soft target on a hand-built batch against a per-sample loop (seeded policy samples,
entropy term, twin minimum, terminal masking), the entropy temperature's direction and target
-dim(A), a fixed alpha, and learning on Pendulum."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

import rlfoundry.algorithms.sac as sac_module
from learning_checks import preset_returns
from off_policy_checks import TINY, captured_targets, hand_batch, loop_q_values, silent_monitor
from rlfoundry import SAC


@pytest.mark.parametrize("backend", ["torch", "compiled"])
def test_soft_target_on_a_hand_built_batch_equals_a_per_sample_loop(monkeypatch, backend):
    model = SAC("Pendulum-v1", backend=backend, gamma=0.9, alpha=0.5, **TINY)
    targets = captured_targets(monkeypatch, sac_module, "soft_q_target")  # torch's; the kernels leave theirs in compiled.targets
    batch = hand_batch(3, 1, gamma=0.9)
    model.collector.torch_rng.manual_seed(5)  # the model's own generator draws the samples
    before = copy.deepcopy(model)  # the update moves the networks after using them
    model.update(batch, silent_monitor())
    computed = targets[0] if backend == "torch" else torch.from_numpy(model.compiled.targets[0].copy())
    replay = torch.Generator().manual_seed(5)
    torch.randn(6, 1, generator=replay)  # the first draw samples a ~ pi(.|s) for the actor and temperature losses
    noise = torch.randn(6, 1, generator=replay).double().numpy()[:, 0]  # the second samples a' ~ pi(.|s')
    with torch.no_grad():
        mean, log_std = (value.double().numpy()[:, 0] for value in before.actor.distribution(batch.next_observations))
    for index in range(6):
        pre_tanh = mean[index] + math.exp(log_std[index]) * noise[index]
        gaussian = -0.5 * noise[index] ** 2 - log_std[index] - 0.5 * math.log(2 * math.pi)
        log_prob = gaussian - math.log(1 - math.tanh(pre_tanh) ** 2)
        next_observation = batch.next_observations[index : index + 1].double().numpy()
        next_q = loop_q_values(before.target_critics, next_observation, np.array([[math.tanh(pre_tanh)]]))[:, 0]
        soft_value = 0.0 if batch.terminated[index] else 0.9 * (min(next_q) - 0.5 * log_prob)
        assert float(computed[index]) == pytest.approx(float(batch.rewards[index]) + soft_value, abs=1e-5)


@pytest.mark.parametrize("env_id, action_size", [("Pendulum-v1", 1), ("LunarLanderContinuous-v3", 2), ("HalfCheetah-v5", 6)])
def test_target_entropy_is_minus_the_number_of_action_dimensions(env_id, action_size):
    assert SAC(env_id, **TINY).target_entropy == -action_size


@pytest.mark.parametrize("target_entropy, rises", [(5.0, True), (-20.0, False)])
def test_alpha_rises_below_the_target_entropy_and_falls_above_it(target_entropy, rises):
    # A squashed Gaussian on [-1, 1] has entropy at most log 2: 5 nats is out of reach, -20 always exceeded.
    model = SAC("Pendulum-v1", target_entropy=target_entropy, alpha_learning_rate=0.01, **TINY).learn(100)
    assert (model.alpha > 1.0) == rises and model.alpha != 1.0


def test_a_fixed_alpha_stays_fixed():
    model = SAC("Pendulum-v1", learn_alpha=False, alpha=0.2, **TINY).learn(100)
    assert model.alpha == pytest.approx(0.2, rel=1e-7)
    assert model.temperature.log_alpha not in model.optimizer.state  # never stepped


@pytest.mark.slow
def test_sac_learns_pendulum_within_15k_steps_on_two_of_three_seeds():
    returns = preset_returns("sac", "Pendulum-v1", steps=15_000)
    assert sum(value >= -250 for value in returns) >= 2, returns
