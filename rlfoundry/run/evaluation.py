"""Evaluation: run a trained model for a fixed number of whole episodes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import VectorEnv

from rlfoundry.envs.vector import EnvSource, EpisodeTracker, make_env, step_vector


@dataclass(frozen=True)
class EvaluationResult:
    """Per-episode returns and lengths, in the order the episodes were assigned to envs."""

    returns: np.ndarray
    lengths: np.ndarray

    @property
    def mean(self) -> float:
        return float(self.returns.mean())

    @property
    def std(self) -> float:
        return float(self.returns.std())

    def __str__(self) -> str:
        return f"mean return {self.mean:.2f} +/- {self.std:.2f} over {self.returns.size} episodes"


def evaluate(
    model: Any,
    env: EnvSource | None = None,
    n_episodes: int = 20,
    deterministic: bool = True,
    seed: int | None = None,
    max_envs: int = 8,
) -> EvaluationResult:
    """Run `n_episodes` whole episodes with model.predict and return their returns.

    `env` defaults to the env id the model was trained on. Episodes are spread over up to
    `max_envs` parallel envs with a fixed quota per env, so that short episodes are not
    over-counted (taking the first n episodes to finish would bias the mean towards them).
    """
    if isinstance(n_episodes, bool) or not isinstance(n_episodes, int) or n_episodes < 1:
        raise ValueError(f"n_episodes={n_episodes!r} is out of range: allowed integers >= 1")
    env = model.env_id if env is None else env
    if env is None:
        raise ValueError("this model does not know its environment id: pass env=... to evaluate")
    if isinstance(env, VectorEnv):
        n_envs = env.num_envs
    elif isinstance(env, gym.Env):
        n_envs = 1
    else:
        n_envs = min(n_episodes, max_envs)
    vector_env = make_env(env, n_envs=n_envs, seed=seed)
    quotas = np.full(n_envs, n_episodes // n_envs)
    quotas[: n_episodes % n_envs] += 1
    observations, _ = vector_env.reset(seed=seed)
    tracker = EpisodeTracker(n_envs)
    returns: list[list[float]] = [[] for _ in range(n_envs)]
    lengths: list[list[int]] = [[] for _ in range(n_envs)]
    try:
        while any(len(returns[index]) < quotas[index] for index in range(n_envs)):
            actions = model.predict(observations, deterministic=deterministic)
            step = step_vector(vector_env, actions)
            finished_returns, finished_lengths = tracker.update(step.rewards, step.done)
            for position, index in enumerate(np.flatnonzero(step.done)):
                if len(returns[index]) < quotas[index]:
                    returns[index].append(float(finished_returns[position]))
                    lengths[index].append(int(finished_lengths[position]))
            observations = step.observations
    finally:
        if vector_env is not env:
            vector_env.close()
    return EvaluationResult(
        returns=np.array([value for per_env in returns for value in per_env]),
        lengths=np.array([value for per_env in lengths for value in per_env]),
    )
