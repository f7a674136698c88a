"""Running observation normalisation and reward scaling for the actor-critic algorithms.

    observations:  x -> clip((x - mean) / sqrt(var + 1e-8), -10, 10)
                   mean, var: over every observation seen in training so far (resets included)
    rewards:       r_t -> clip(r_t / sqrt(var(R) + 1e-8), -10, 10),  R_t = gamma R_{t-1} (1 - done_{t-1}) + r_t
                   var(R): over every R_t seen in training so far, per env and step

This is what RL Baselines3 Zoo's `normalize: true` (Stable-Baselines3's VecNormalize) does, and the
zoo's MuJoCo hyperparameters for PPO, A2C and TRPO were tuned with it. Rewards are only divided,
never shifted, so a reward's sign (and the meaning of termination) stays. The statistics start at
mean 0, variance 1, count 1e-4 and move with every training step; acting and evaluation use them
without moving them, and checkpoints carry them so that a resumed run is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gymnasium import spaces

from rlfoundry.envs.spaces import SpaceError, describe

CLIP = 10.0
EPSILON = 1e-8


@dataclass
class RunningMeanStd:
    """Mean and variance of every sample seen so far, merged batch by batch (Chan et al., 1979).
    float64, so that millions of updates do not drift."""

    mean: np.ndarray
    var: np.ndarray
    count: float = 1e-4

    @classmethod
    def of_shape(cls, shape: tuple[int, ...]) -> "RunningMeanStd":
        return cls(np.zeros(shape, np.float64), np.ones(shape, np.float64))

    def update(self, batch: np.ndarray) -> None:
        """Merge the samples batch[0], batch[1], ... into the statistics."""
        batch = np.asarray(batch, dtype=np.float64)
        batch_mean, batch_var, batch_count = batch.mean(axis=0), batch.var(axis=0), batch.shape[0]
        total = self.count + batch_count
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * batch_count / total
        self.var = (self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total) / total
        self.count = total


class Normalization:
    """The statistics one training run keeps: observations (normalize_observations) and discounted
    returns (normalize_rewards), plus each env's running return R."""

    def __init__(self, observation_space: spaces.Space, n_envs: int, gamma: float, observations: bool, rewards: bool):
        self.observation_statistics = None
        if observations:
            if not (isinstance(observation_space, spaces.Box) and np.issubdtype(observation_space.dtype, np.floating)):
                raise SpaceError(
                    f"normalize_observations=True needs float Box observations, not {describe(observation_space)}: "
                    "set normalize_observations=False (one-hot and image observations are already on a fixed scale)"
                )
            self.observation_statistics = RunningMeanStd.of_shape(observation_space.shape)
        self.gamma = gamma
        self.return_statistics = RunningMeanStd.of_shape(()) if rewards else None
        self.returns = np.zeros(n_envs, np.float64)

    def observe(self, observations: np.ndarray) -> np.ndarray:
        """Training: merge observations [N, *obs] into the statistics, then normalise them."""
        if self.observation_statistics is not None:
            self.observation_statistics.update(observations)
        return self.observations(observations)

    def observations(self, observations: np.ndarray) -> np.ndarray:
        """Normalised observations (float32), the statistics unchanged; as they are when off."""
        statistics = self.observation_statistics
        if statistics is None:
            return observations
        normalised = (np.asarray(observations, dtype=np.float64) - statistics.mean) / np.sqrt(statistics.var + EPSILON)
        return np.clip(normalised, -CLIP, CLIP).astype(np.float32)

    def rewards(self, rewards: np.ndarray, done: np.ndarray) -> np.ndarray:
        """Training: rewards [N] scaled by the running std of the discounted return (float32); the
        return of an env whose episode ended starts again at 0. As they are when off."""
        if self.return_statistics is None:
            return rewards
        self.returns = self.returns * self.gamma + rewards
        self.return_statistics.update(self.returns)
        scaled = np.clip(rewards / np.sqrt(self.return_statistics.var + EPSILON), -CLIP, CLIP).astype(np.float32)
        self.returns[done] = 0.0
        return scaled

    def checkpoint_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """Every statistic as named arrays for a checkpoint."""
        arrays = {f"{prefix}.returns": self.returns}
        for name, statistics in (("observation", self.observation_statistics), ("return", self.return_statistics)):
            if statistics is not None:
                arrays[f"{prefix}.{name}_mean"] = statistics.mean
                arrays[f"{prefix}.{name}_var"] = statistics.var
                arrays[f"{prefix}.{name}_count"] = np.array(statistics.count)
        return arrays

    def restore(self, arrays: dict[str, np.ndarray], prefix: str) -> None:
        """Put checkpoint_arrays' output back."""
        self.returns = arrays[f"{prefix}.returns"].copy()
        for name, statistics in (("observation", self.observation_statistics), ("return", self.return_statistics)):
            if statistics is not None:
                statistics.mean = arrays[f"{prefix}.{name}_mean"].copy()
                statistics.var = arrays[f"{prefix}.{name}_var"].copy()
                statistics.count = float(arrays[f"{prefix}.{name}_count"])
