"""Shared by the DDPG, TD3 and SAC tests: brute-force critics, hand-built batches, captured targets."""

from __future__ import annotations

import numpy as np
import torch

from rlfoundry.data.replay import ReplayBatch
from rlfoundry.networks.continuous import QEnsemble
from rlfoundry.run.monitor import TrainingMonitor

# Small networks and batches: the tests check the plumbing and the math, not the learning.
TINY = dict(actor_hidden_sizes=(16, 16), critic_hidden_sizes=(16, 16), batch_size=16, learning_starts=50, buffer_size=2000)


def loop_q_values(critics: QEnsemble, observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """Q_k(s_i, a_i) [K, B] by explicit loops over critics, samples and units, in float64 (ReLU)."""
    weights = [weight.detach().double().numpy() for weight in critics.weights]
    biases = [bias.detach().double().numpy() for bias in critics.biases]
    values = np.zeros((critics.n_critics, len(observations)))
    for critic in range(critics.n_critics):
        for sample in range(len(observations)):
            hidden = list(observations[sample]) + list(actions[sample])
            for layer, (weight, bias) in enumerate(zip(weights, biases)):
                outputs = [
                    bias[critic, 0, unit] + sum(hidden[i] * weight[critic, i, unit] for i in range(len(hidden)))
                    for unit in range(weight.shape[2])
                ]
                hidden = outputs if layer == len(weights) - 1 else [max(output, 0.0) for output in outputs]
            values[critic, sample] = hidden[0]
    return values


def hand_batch(observation_size: int, action_size: int, gamma: float = 0.99, seed: int = 0) -> ReplayBatch:
    """Six transitions: #1 and #4 terminated, #2 truncated (it must still bootstrap), the rest going on."""
    generator = torch.Generator().manual_seed(seed)
    size = 6
    terminated = torch.tensor([False, True, False, False, True, False])
    truncated = torch.tensor([False, False, True, False, False, False])
    return ReplayBatch(
        observations=torch.randn(size, observation_size, generator=generator),
        actions=torch.rand(size, action_size, generator=generator) * 2 - 1,
        rewards=torch.randn(size, generator=generator),
        next_observations=torch.randn(size, observation_size, generator=generator),
        terminated=terminated,
        truncated=truncated,
        discounts=torch.full((size,), gamma),
    )


def captured_targets(monkeypatch, module, target_function: str) -> list[torch.Tensor]:
    """Record every target that `module` (an algorithm module) computes with `target_function`."""
    targets: list[torch.Tensor] = []
    original = getattr(module, target_function)

    def recording(*arguments):
        targets.append(original(*arguments))
        return targets[-1]

    monkeypatch.setattr(module, target_function, recording)
    return targets


def silent_monitor() -> TrainingMonitor:
    return TrainingMonitor(None, 1, quiet=True)
