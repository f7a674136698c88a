"""Action-value networks for discrete actions: Q(s, .; theta) over the shared torsos.

    q_network = QNetwork(observation_space, n_actions, hidden_sizes=(256, 256))
    q_values = q_network(torch.as_tensor(observations))      # [B, n_actions]

The torso is `make_torso`'s: an MLP over flattened Box observations (one-hot for Discrete ones) or
the Nature CNN over [C, H, W] uint8 frames, then one Linear layer with an output per action.
Weights keep PyTorch's default initialisation, as in the DQN papers' and Stable-Baselines3's Q
networks (orthogonal initialisation is an on-policy convention).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from rlfoundry.networks.manual_mlp import ManualMLP
from rlfoundry.networks.policies import make_torso


class QNetwork(nn.Module):
    """Q(s, a; theta) for every action a: observations [B, *obs] -> [B, n_actions]."""

    def __init__(
        self,
        observation_space: spaces.Space,
        n_actions: int,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "relu",
    ):
        super().__init__()
        self.torso = make_torso(observation_space, hidden_sizes, activation)
        self.head = nn.Linear(self.torso.output_size, n_actions)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.head(self.torso(observations))


class BlockedQValues:
    """Q(s, .) of a QNetwork for many rows at once (a DQN burst's next observations), in blocks of
    `block_rows` rows: one pass over a whole burst (8,192 rows on CartPole) works on activations
    larger than the cache and took 1.4x as long (RESULTS.md, DQN). For MLPs the written-out forward
    pass reuses one workspace for every block instead of allocating fresh activations (about 1,850
    page faults a burst); `manual` is None for the CNN and other activations (the module runs)."""

    def __init__(self, network: QNetwork, block_rows: int = 1024):
        self.network = network
        self.block_rows = block_rows
        self.manual = ManualMLP.of(network.torso, network.head)
        self.workspace = [] if self.manual is None else self.manual.workspace(block_rows)
        # Set by DQN on two kernel threads: CompiledQNetwork.target_values, the same blocks on both threads.
        self.forward: Callable[[torch.Tensor], torch.Tensor] | None = None

    @torch.no_grad()
    def __call__(self, observations: torch.Tensor, keys: np.ndarray | None = None) -> torch.Tensor:
        """Q(s, .) [N, A] for observations [N, *obs]. Rows with equal `keys` [N] (replay sample ids)
        hold equal observations: each distinct one is evaluated once. A burst draws with
        replacement, so early on (1,280 transitions stored, 8,192 drawn) most rows repeat."""
        if keys is not None:
            _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
            return self(observations[torch.from_numpy(first).to(observations.device)])[torch.from_numpy(inverse).to(observations.device)]
        if self.forward is not None:
            return self.forward(observations)
        blocks = observations.split(self.block_rows)
        if self.manual is None:
            return torch.cat([self.network(rows) for rows in blocks])
        return torch.cat([self.manual.forward(rows, self.workspace)[-1] for rows in blocks])
