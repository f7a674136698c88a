"""TD3: its target on a hand-built batch against a per-sample loop (seeded smoothing noise, twin
minimum, terminal masking, truncation bootstrapping), the delayed actor and target updates, and
learning on Pendulum."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rlfoundry.algorithms.td3 as td3_module
from learning_checks import preset_returns
from off_policy_checks import TINY, captured_targets, hand_batch, loop_q_values, silent_monitor
from rlfoundry import TD3


@pytest.mark.parametrize("backend", ["torch", "compiled"])
def test_td3_target_on_a_hand_built_batch_equals_a_per_sample_loop(monkeypatch, backend):
    model = TD3("Pendulum-v1", backend=backend, gamma=0.9, target_policy_noise=0.4, target_noise_clip=0.3, **TINY)
    targets = captured_targets(monkeypatch, td3_module, "q_target")  # torch's; the kernels leave theirs in compiled.targets
    batch = hand_batch(3, 1, gamma=0.9)
    model.collector.updates = 1
    model.collector.torch_rng.manual_seed(11)  # the model's own generator draws the noise
    model.update(batch, silent_monitor())
    computed = targets[0] if backend == "torch" else torch.from_numpy(model.compiled.targets[0].copy())
    noise = 0.4 * torch.randn(6, 1, generator=torch.Generator().manual_seed(11))  # the update's first draw: the smoothing noise
    with torch.no_grad():
        target_actions = model.target_actor(batch.next_observations).double().numpy()
    smoothed = np.clip(target_actions + np.clip(noise.double().numpy(), -0.3, 0.3), -1.0, 1.0)
    next_q_values = loop_q_values(model.target_critics, batch.next_observations.double().numpy(), smoothed)
    for index in range(6):
        bootstrap = 0.0 if batch.terminated[index] else 0.9 * min(next_q_values[:, index])
        assert float(computed[index]) == pytest.approx(float(batch.rewards[index]) + bootstrap, abs=1e-5)
    # Transition 2 is truncated, not terminated: its target still bootstraps.
    assert float(computed[2]) != pytest.approx(float(batch.rewards[2]), abs=1e-3)


@pytest.mark.parametrize("backend", ["torch", "compiled"])
def test_actor_and_targets_update_exactly_every_policy_delay_critic_updates(monkeypatch, backend):
    model = TD3("Pendulum-v1", policy_delay=3, backend=backend, **{**TINY, "learning_starts": 10})
    polyak_calls: list[int] = []
    original = td3_module.polyak_update

    def counting(targets, sources, tau):
        polyak_calls.append(model.collector.updates)
        original(targets, sources, tau)

    monkeypatch.setattr(td3_module, "polyak_update", counting)
    target_before = [parameter.clone() for parameter in model.target_actor.parameters()]
    model.learn(40)  # 30 critic updates, after steps 11 to 40
    assert model.collector.updates == 30
    # Two Polyak calls (actor targets, critic targets) at every third update (the kernels' are their own).
    assert polyak_calls == ([update for update in range(3, 31, 3) for _ in range(2)] if backend == "torch" else [])
    actor_steps = {int(model.optimizer.state[parameter]["step"]) for parameter in model.actor.parameters()}
    critic_steps = {int(model.optimizer.state[parameter]["step"]) for parameter in model.critics.parameters()}
    assert actor_steps == {10} and critic_steps == {30}
    assert not any(torch.equal(before, after) for before, after in zip(target_before, model.target_actor.parameters()))


@pytest.mark.slow
def test_td3_learns_pendulum_within_15k_steps_on_two_of_three_seeds():
    returns = preset_returns("td3", "Pendulum-v1", steps=15_000)
    assert sum(value >= -250 for value in returns) >= 2, returns
