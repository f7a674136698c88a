"""DDPG: its target on a hand-built batch against a per-sample loop (terminal masking, truncation
bootstrapping), one actor and target update per critic update, and learning on Pendulum."""

from __future__ import annotations

import copy

import pytest
import torch

import rlfoundry.algorithms.ddpg as ddpg_module
from learning_checks import preset_returns
from off_policy_checks import TINY, captured_targets, hand_batch, loop_q_values, silent_monitor
from rlfoundry import DDPG


@pytest.mark.parametrize("backend", ["torch", "compiled"])
def test_ddpg_target_on_a_hand_built_batch_equals_a_per_sample_loop(monkeypatch, backend):
    model = DDPG("Pendulum-v1", backend=backend, gamma=0.8, **TINY)
    targets = captured_targets(monkeypatch, ddpg_module, "q_target")  # torch's; the kernels leave theirs in compiled.targets
    batch = hand_batch(3, 1, gamma=0.8)
    before = copy.deepcopy(model)  # the update moves the networks after using them
    model.update(batch, silent_monitor())
    computed = targets[0] if backend == "torch" else torch.from_numpy(model.compiled.targets[0].copy())
    with torch.no_grad():
        next_actions = before.target_actor(batch.next_observations).double().numpy()
    next_q_values = loop_q_values(before.target_critics, batch.next_observations.double().numpy(), next_actions)[0]
    for index in range(6):
        bootstrap = 0.0 if batch.terminated[index] else 0.8 * next_q_values[index]
        assert float(computed[index]) == pytest.approx(float(batch.rewards[index]) + bootstrap, abs=1e-5)


def test_actor_and_targets_update_with_every_critic_update():
    model = DDPG("Pendulum-v1", **{**TINY, "learning_starts": 10}).learn(30)
    steps = {int(state["step"]) for state in model.optimizer.state.values()}
    assert model.collector.updates == 20 and steps == {20}


@pytest.mark.slow
def test_ddpg_learns_pendulum_within_20k_steps_on_two_of_three_seeds():
    returns = preset_returns("ddpg", "Pendulum-v1", steps=20_000)
    assert sum(value >= -250 for value in returns) >= 2, returns
