"""rlfoundry: reinforcement-learning algorithms that read like their equations.

    import rlfoundry
    model = rlfoundry.QLearning("CliffWalking-v1", learning_rate=0.5).learn(30_000)
    print(rlfoundry.evaluate(model, n_episodes=10).mean)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlfoundry.algorithms import (
    A2C,
    ALGORITHMS,
    DDPG,
    DQN,
    PPO,
    REINFORCE,
    SAC,
    SARSA,
    TD3,
    TRPO,
    ExpectedSARSA,
    OffPolicyPG,
    QLearning,
)
from rlfoundry.envs.registry import RegisteredEnv, register_optional_envs
from rlfoundry.envs.vector import EnvSource, make_env
from rlfoundry.run.checkpoint import CheckpointAlgorithmError, read_manifest
from rlfoundry.run.evaluation import EvaluationPoint, EvaluationResult, PeriodicEvaluation, evaluate
from rlfoundry.run.monitor import TrainingStatus
from rlfoundry.run.video import record_video
from rlfoundry.version import __version__

register_optional_envs()


def load(path: str | Path, env: EnvSource | None = None, **options: Any):
    """Load any rlfoundry checkpoint as an instance of the algorithm that wrote it.

    `env` (optional) replaces the env the checkpoint records (its id, with the keyword arguments it
    was made with); the options run_dir=..., quiet=..., checkpoint_every=..., evaluation=...,
    device=... (load onto another device than the one the model trained on, e.g. "cpu" for a model
    trained on a GPU), check_replay_memory=False (load a replay buffer that the memory check
    would refuse) and replay_buffer=False (leave a saved replay buffer unread: a policy to evaluate
    or watch; trained on, the model refills its buffer first, which the memory check still weighs)
    are passed on to the algorithm.

    Any other keyword changes a config field for the training that follows, e.g.
    `load(path, learning_rate=1e-4)` to fine-tune. It is checked as the constructor checks it (an
    unknown name, a value out of range), printed once unless quiet ("learning_rate 0.0003 ->
    0.0001"), kept in `model.config` (the next save records it) and, with a run directory, written
    into its config.json at the next learn(). Only fields that leave the saved state's shapes and
    meaning as they are can change: one in the algorithm's `Config.fixed_by_checkpoint` (network
    sizes, n_envs, buffer_size, observation normalisation, the seed, ...) raises a ConfigError
    that names it and says why, before anything is written. Schedules count the run's steps from
    its start, so a new start value applies from where the schedule stands: learning_rate=1e-4
    with learning_rate_schedule="linear" trains at step N at 1e-4 * (1 - N / H), H being
    schedule_steps or, without it, the step the learn() call ends at, not at 1e-4; and
    epsilon_start changed after epsilon_decay_steps changes nothing (raise epsilon_end to explore
    more).
    """
    algorithm = read_manifest(path)["algorithm"]
    if algorithm not in ALGORITHMS:
        raise CheckpointAlgorithmError(
            f"{path} was written by algorithm {algorithm!r}, which this rlfoundry does not have "
            f"(it has {', '.join(sorted(ALGORITHMS))})"
        )
    return ALGORITHMS[algorithm].load(path, env=env, **options)


__all__ = [
    "A2C",
    "ALGORITHMS",
    "DDPG",
    "DQN",
    "EvaluationPoint",
    "EvaluationResult",
    "ExpectedSARSA",
    "OffPolicyPG",
    "PPO",
    "PeriodicEvaluation",
    "QLearning",
    "REINFORCE",
    "RegisteredEnv",
    "SAC",
    "SARSA",
    "TD3",
    "TRPO",
    "TrainingStatus",
    "__version__",
    "evaluate",
    "load",
    "make_env",
    "record_video",
]
